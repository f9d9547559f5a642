# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""`glotok extract-codes`: encode an image dataset with a frozen GloTok tokenizer into a code dataset for the prior."""

import argparse

from ..utils import resolve_source
from . import add_dataset_arguments, options_for, positive_int

DESCRIPTION = """Encode every image of a dataset (resized and center-cropped) with a frozen GloTok tokenizer and save
the codes, in the prior's token layout, as a datasets Dataset with columns index, label, flipped and codes, plus a
glotok_codes.json metadata file. Resumable by shard; multi-process under `accelerate launch`."""

EPILOG = """examples:
  glotok extract-codes --tokenizer out/tokenizer --train-data-dir imagenet/train --output-dir codes/imagenet-256 --flip
  glotok extract-codes --tokenizer my-pipeline --subfolder vqmodel --dataset-name saved/dataset --output-dir codes/x
  accelerate launch -m glotok_hf.cli extract-codes --tokenizer out/tokenizer --train-data-dir imagenet/train \\
      --output-dir codes/imagenet-256 --batch-size 128 --num-workers 8 --mixed-precision bf16

Run the same command again to resume an interrupted extraction (finished shards are kept). The folder opens with
glotok_hf.codes.load_code_dataset (or datasets.load_from_disk) and feeds `training/train.py --stage prior`.
"""


def register(subparsers) -> None:
    summary = "encode an image dataset into GloTok codes (a datasets Dataset) for training the prior"
    parser = subparsers.add_parser("extract-codes", help=summary, description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--tokenizer", required=True, help="folder (or Hub id) of a saved GloTokModel or pipeline")
    parser.add_argument("--subfolder", default="", help="subfolder of --tokenizer holding the model, e.g. vqmodel")
    add_dataset_arguments(parser, required=True)
    parser.add_argument("--label-column", default="label", help="class-label column or 'none' (default: %(default)s)")
    parser.add_argument("--cache-dir", default=None, help="datasets cache directory")
    parser.add_argument("--output-dir", required=True, help="output folder (new, empty, or an unfinished run)")
    parser.add_argument("--resolution", type=positive_int, help="crop side (default: the tokenizer's sample_size)")
    parser.add_argument("--flip", action="store_true", help="add the codes of each horizontally flipped image")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default: %(default)s)")
    parser.add_argument("--shard-size", type=int, default=10_000, help="images per shard (default: %(default)s)")
    parser.add_argument("--num-workers", type=int, default=4, help="image-decoding workers (default: %(default)s)")
    parser.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"], default="no", help="encoder autocast")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    resolve_source(args.tokenizer, "--tokenizer")  # a typo in a local path fails at once, before torch is imported
    from accelerate import PartialState

    from ..codes import extract_codes, load_code_dataset
    from ..data import load_image_dataset
    from ..loading import load_tokenizer

    label_column = None if args.label_column.lower() == "none" else args.label_column
    model = load_tokenizer(args.tokenizer, subfolder=args.subfolder, device="cpu")  # extract_codes places it
    dataset = load_image_dataset(**options_for(load_image_dataset, args, label_column=label_column))
    options = options_for(extract_codes, args, label_column=label_column, progress=not args.no_progress)
    output_dir = extract_codes(model, dataset, **options)
    state = PartialState()
    if state.is_main_process:
        _, metadata = load_code_dataset(output_dir)
        processes = f"{state.num_processes} process" + ("es" if state.num_processes > 1 else "")
        print(
            f"wrote {metadata['num_rows']} rows ({metadata['num_images']} images, {metadata['num_skipped']} skipped, "
            f"{metadata['num_image_tokens']} tokens each) to {output_dir} with {processes}"
        )
    return 0
