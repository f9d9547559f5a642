# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""`glotok generate`: class-conditional images from a GloTok pipeline, as a grid and/or one PNG per image."""

import argparse
import random
import re
from pathlib import Path

from ..loading import DEFAULT_PIPELINE_ENV
from ..utils import atomic_write, resolve_source
from . import add_model_arguments, check_output, image_path, positive_int

DESCRIPTION = f"""Generate class-conditional images with a GloTok pipeline (AR prior + GloTok tokenizer).

Class labels are ids or names; a name is one argument ("seven", or "tench" for "tench, Tinca tinca"; quote names
with spaces). Image i of the run uses seed SEED + i, so an image does not depend on --batch-size or on the other
labels. Without --pipeline the pipeline embedded in the glotok-hf checkout is used (pipelines/glotok-digits, or
${DEFAULT_PIPELINE_ENV})."""

EPILOG = """examples:
  glotok generate --class-labels 3 7 seven --num-images-per-label 4 --seed 0 --output grid.png
  glotok generate --class-labels 0 1 2 --output-dir samples/ --guidance-scale 4 --top-k 100
  glotok generate --pipeline user/glotok-imagenet --trust-remote-code --device cuda --dtype bfloat16 \\
      --class-labels "golden retriever" 207 --output dogs.png
"""


def register(subparsers) -> None:
    summary = "generate class-conditional images"
    parser = subparsers.add_parser("generate", help=summary, description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--class-labels", nargs="+", required=True, metavar="LABEL", help="class ids and/or names")
    parser.add_argument("--num-images-per-label", type=positive_int, default=1, metavar="N", help="default: 1")
    parser.add_argument("--output", type=image_path, metavar="FILE", help="write a grid: one row per label")
    parser.add_argument("--output-dir", type=Path, metavar="DIR",
                        help="write one PNG per image, named <classid>_<label>_<n>.png (never overwritten)")  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    parser.add_argument("--pipeline", metavar="PATH_OR_REPO", help="pipeline folder or Hub repo id")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="run the pipeline code shipped with a Hub-layout pipeline (read it first)")  # fmt: skip
    parser.add_argument("--guidance-scale", type=float, default=2.0, help="classifier-free guidance (default: 2.0)")
    parser.add_argument("--temperature", type=float, default=1.0, help="default: 1.0")
    parser.add_argument("--top-k", type=int, default=None, help="sample among the K most likely codes (default: all)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling threshold (default: 1.0, off)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the first image (default: random, printed)")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="images per forward pass (default: 16)")
    add_model_arguments(parser)
    parser.set_defaults(func=run)


def per_image_paths(folder: Path, label_ids: list[int], per_label: int, id2label: dict | None) -> list[Path]:
    """`<classid>_<label>_<n>.png` for every image; `n` skips numbers whose file exists, so nothing is overwritten."""
    taken, paths = set(), []
    for label in label_ids:
        name = id2label[label].split(",")[0].strip().lower() if id2label else ""  # "tench, Tinca tinca" -> "tench"
        slug = re.sub(r"[^a-z0-9]+", "-", name).strip("-")  # file-name safe
        stem = f"{label}_{slug}" if slug else str(label)
        n = 0
        for _ in range(per_label):
            while (path := folder / f"{stem}_{n}.png") in taken or path.exists():
                n += 1
            taken.add(path)
            paths.append(path)
    return paths


def run(args: argparse.Namespace) -> int:
    if args.output is None and args.output_dir is None:
        raise ValueError("nothing to write: pass --output FILE (a grid) and/or --output-dir DIR (one PNG per image).")
    check_output(args.output, args.overwrite)
    if args.output_dir is not None and args.output_dir.exists() and not args.output_dir.is_dir():
        raise NotADirectoryError(f"--output-dir {args.output_dir} exists and is not a folder.")
    if args.pipeline is not None:
        resolve_source(args.pipeline, "--pipeline")  # a typo in a local path fails at once, before torch is imported
    import torch

    from ..data import image_grid
    from ..loading import load_pipeline
    from ..sampling import available_memory_bytes

    pipe = load_pipeline(args.pipeline, device=args.device, dtype=getattr(torch, args.dtype),
                         trust_remote_code=args.trust_remote_code)  # fmt: skip
    label_ids = pipe.get_label_ids(args.class_labels)
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    per_label = args.num_images_per_label
    count, size = len(label_ids) * per_label, pipe.vqmodel.config.sample_size
    needed = count * size * size * 3 * (2 if args.output else 1)  # kept until written (twice, with a grid)
    available = available_memory_bytes("cpu")
    if available is not None and needed > available:
        raise ValueError(
            f"{count} images of {size}x{size} pixels need {needed / 2**30:.3g} GiB of memory until they are written, "
            f"more than the {available / 2**30:.3g} GiB available: ask for fewer images per call."
        )
    labels = [label for label in label_ids for _ in range(per_label)]
    images = []
    for start in range(0, len(labels), args.batch_size):
        chunk = labels[start : start + args.batch_size]
        generator = [torch.Generator().manual_seed(seed + start + i) for i in range(len(chunk))]
        images += pipe(chunk, generator=generator, guidance_scale=args.guidance_scale, temperature=args.temperature,
                       top_k=args.top_k, top_p=args.top_p, output_type="pil").images  # fmt: skip

    print(f"Generated {len(images)} images of classes {label_ids} (seeds {seed}..{seed + len(images) - 1}).")
    if args.output is not None:
        atomic_write(args.output, image_grid(images, cols=per_label).save)
        print(f"Wrote {args.output}: one row per label, {per_label} image{'s' if per_label > 1 else ''} per row.")
    if args.output_dir is not None:
        paths = per_image_paths(args.output_dir, label_ids, per_label, pipe.id2label)
        for image, path in zip(images, paths):
            atomic_write(path, image.save, overwrite=False)
        print(f"Wrote {len(paths)} images to {args.output_dir}/ ({paths[0].name}, ...).")
    return 0
