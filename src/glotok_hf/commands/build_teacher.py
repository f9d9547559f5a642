# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""`glotok build-teacher`: build the fixed teacher histogram of GloTok's histogram relation learning: the soft
histogram of pairwise cosine similarities of a token set (k-means centres of backbone features, an existing codebook,
or a control), saved with its bin centres, alpha and metadata in one safetensors file."""

import json

from ..utils import resolve_source
from . import add_dataset_arguments, add_model_arguments, check_output, options_for

EPILOG = """sources:
  backbone   k-means centres of a vision backbone's patch features over an image dataset (the paper's teacher)
  codebook   an existing codebook: a GloTok checkpoint's semantic codebook, or a tensor in a .safetensors file
  random     control: a random isotropic codebook of --size vectors of dimension --dim
  uniform    control: the uniform histogram

examples:
  # DINOv2 patch features of layer 8, pooled 4x4, 100 k-means centres per class (VQGAN-LC's recipe)
  glotok build-teacher --source backbone --model ./dinov2-base --train-data-dir ./imagenet/train \\
      --layer 8 --pool-size 4 --num-clusters 100 --per-class --output teacher-dinov2.safetensors

  # the semantic codebook of a trained GloTok tokenizer, or a tensor in any .safetensors file
  glotok build-teacher --source codebook --codebook ./glotok-tokenizer --output teacher-codebook.safetensors
  glotok build-teacher --source codebook --codebook fqgan.safetensors --key semantic_codebook --output t.safetensors

  # controls: is the gain semantic at all?
  glotok build-teacher --source random --size 4096 --dim 8 --seed 0 --output teacher-random.safetensors
  glotok build-teacher --source uniform --output teacher-uniform.safetensors

Train with the same --num-bins and --alpha; the training script checks them against the file.
"""


def register(subparsers) -> None:
    summary = "Build a histogram relation learning teacher (backbone k-means, codebook, random or uniform)."
    parser = subparsers.add_parser("build-teacher", help=summary, description=__doc__, epilog=EPILOG)
    parser.add_argument("--source", required=True, choices=["backbone", "codebook", "random", "uniform"])
    parser.add_argument("--output", required=True, help="The .safetensors file to write.")
    parser.add_argument("--overwrite", action="store_true", help="Replace --output if it exists.")
    parser.add_argument("--num-bins", type=int, default=40, help="Bin centres on [-1, 1] (default 40).")
    parser.add_argument("--alpha", type=float, help="Kernel sharpness (default: bandwidth = bin spacing, 190.125).")
    add_model_arguments(parser)  # --device for features and histogram, --dtype of the backbone
    parser.add_argument("--seed", type=int, default=0, help="Seed of the random codebook, image subset, k-means.")
    parser.add_argument("--save-tokens", action="store_true", help="Also store the token set (centres, codebook).")

    backbone = parser.add_argument_group("--source backbone")
    backbone.add_argument("--model", help="Backbone folder or Hub id with its image processor (DINOv2, CLIP ...).")
    add_dataset_arguments(backbone)
    backbone.add_argument("--label-column", default="label", help="Class column for --per-class (default 'label').")
    backbone.add_argument("--layer", type=int, default=-1, help="Hidden state index: 0 embeddings, -1 last (default).")
    backbone.add_argument("--pool-size", type=int, help="Average-pool the patch grid to PxP tokens per image.")
    backbone.add_argument("--num-clusters", type=int, default=4096, help="k-means centres (per class: --per-class).")
    backbone.add_argument("--per-class", action="store_true", help="Cluster each class separately (VQGAN-LC).")
    backbone.add_argument("--normalize-features", action="store_true", help="l2-normalise features before k-means.")
    backbone.add_argument("--max-images", type=int, help="Use a seeded random subset of N images.")
    backbone.add_argument("--batch-size", type=int, default=32, help="Images per forward pass (default 32).")
    backbone.add_argument("--num-workers", type=int, default=0, help="Image decoding workers (default 0).")
    backbone.add_argument("--cache-dir", help="Cache folder for datasets and transformers.")
    backbone.add_argument("--no-progress", action="store_true", help="Hide the progress bar.")

    codebook = parser.add_argument_group("--source codebook")
    codebook.add_argument("--codebook", help="GloTok checkpoint folder / Hub id, or a .safetensors file.")
    codebook.add_argument("--key", help="Tensor name inside a .safetensors file.")
    codebook.add_argument("--branch", choices=["semantic", "visual"], default="semantic", help="Checkpoint codebook.")

    random = parser.add_argument_group("--source random")
    random.add_argument("--size", type=int, help="Number of random vectors (e.g. the semantic codebook size).")
    random.add_argument("--dim", type=int, help="Their dimension (e.g. the code dimension, 8).")
    parser.set_defaults(func=run)


def run(args) -> int:
    output = check_output(args.output, args.overwrite)
    needs = {"random": ["size", "dim"], "codebook": ["codebook"], "backbone": ["model"]}.get(args.source, [])
    missing = [f"--{name}" for name in needs if getattr(args, name) is None]
    if missing:
        raise ValueError(f"--source {args.source} needs {' and '.join(missing)}.")
    if args.source in ("codebook", "backbone"):  # a typo in a local path fails at once, before torch is imported
        resolve_source(getattr(args, needs[0]), f"--{needs[0]}")
    if args.source == "backbone" and args.train_data_dir is None and args.dataset_name is None:
        raise ValueError("--source backbone needs exactly one of --train-data-dir or --dataset-name.")
    import torch

    from .. import teacher as teachers

    names = {"uniform": "uniform_teacher", "random": "random_codebook_teacher", "codebook": "teacher_from_codebook"}
    build = getattr(teachers, names.get(args.source, "teacher_from_backbone"))
    dtype, progress = getattr(torch, args.dtype), not args.no_progress
    teacher = build(**options_for(build, args, model_name_or_path=args.model, dtype=dtype, progress=progress))
    teacher.save(output, overwrite=args.overwrite, include_tokens=args.save_tokens)
    print(f"Saved the {teacher.metadata['source']} teacher histogram to {output}")
    print(teacher.summary())
    print(json.dumps({"num_bins": teacher.num_bins, "alpha": teacher.alpha, **teacher.metadata}, default=str))
    return 0
