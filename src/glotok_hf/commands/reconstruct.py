# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""`glotok reconstruct`: encode images to GloTok tokens and decode them back; originals and reconstructions side
by side, and the PSNR of each."""

import argparse
import sys
from pathlib import Path

from ..loading import DEFAULT_PIPELINE_ENV
from ..utils import atomic_write, resolve_source
from . import add_model_arguments, check_output, image_path, positive_int

DESCRIPTION = f"""Reconstruct images with a GloTok tokenizer: encode each to its codebook indices, decode them, write
a grid with the original (left) and the reconstruction (right) of every image, and print the PSNR.

Images of any mode (grayscale, RGBA, 16-bit, palette, CMYK, ...) are converted to RGB, resized so the shorter side is
the tokenizer's sample_size (with a warning when it is 4x that or more) and center-cropped. Without --model the
tokenizer of the pipeline embedded in the glotok-hf checkout is used (pipelines/glotok-digits/vqmodel, or
${DEFAULT_PIPELINE_ENV}): it knows only 24x24 handwritten digits."""

EPILOG = """examples:
  glotok reconstruct photo.png --output recon.png
  glotok reconstruct data/*.png --model path/to/pipeline --output recon.png --overwrite
  glotok reconstruct cat.jpg --model user/glotok-imagenet --device cuda --output cat_recon.png
"""


def register(subparsers) -> None:
    summary = "encode and decode images with a GloTok tokenizer"
    parser = subparsers.add_parser("reconstruct", help=summary, description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files")
    parser.add_argument("--output", type=image_path, required=True, metavar="FILE",
                        help="grid with one row per image: original | reconstruction")  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    parser.add_argument("--model", "--tokenizer", dest="model", metavar="PATH_OR_REPO",
                        help="GloTok tokenizer folder or Hub repo, or a pipeline (its vqmodel is used)")  # fmt: skip
    parser.add_argument("--batch-size", type=positive_int, default=16, help="images per forward pass (default: 16)")
    add_model_arguments(parser)
    parser.set_defaults(func=run)


def warn(message: str) -> None:
    print(f"glotok reconstruct: warning: {message}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    check_output(args.output, args.overwrite)
    for path in args.images:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such image file.")
    if args.model is not None:
        resolve_source(args.model, "--model")  # a typo in a local path fails at once, before torch is imported
    import torch

    from ..data import ImageTransform, decode_image, image_grid, tensor_to_pil
    from ..evaluation.reconstruction import reconstruct
    from ..loading import default_pipeline_path, embedded_pipeline_path, load_tokenizer

    model = load_tokenizer(args.model, device=args.device, dtype=getattr(torch, args.dtype))
    size = model.config.sample_size
    transform = ImageTransform(size, center_crop=True)
    pixels, large = [], False
    for path in args.images:
        image = decode_image(path)
        if image is None:
            raise ValueError(f"{path}: cannot read this file as an image (corrupt, truncated or not an image).")
        if min(image.size) >= 4 * size:  # most of its detail is lost before the tokenizer sees it
            large = True
            warn(
                f"{path} is {image.width}x{image.height}: resized down to {size}x{size}, the tokenizer's sample_size."
            )
        pixels.append(transform(image))
    if large and args.model is None and default_pipeline_path().resolve() == embedded_pipeline_path():
        warn("the default tokenizer knows only handwritten digits; for other images train your own (training/README.md) "
             "or pass --model with a converted public tokenizer (ImageNet ones, once available).")  # fmt: skip

    originals, reconstructions, psnr = [], [], []
    for start in range(0, len(pixels), args.batch_size):
        batch = torch.stack(pixels[start : start + args.batch_size]).to(model.device, model.dtype)
        _, decoded, values = reconstruct(model, batch)  # the images come from the user: encode checks their range
        originals.append(batch.float().cpu())
        reconstructions.append(decoded)
        psnr += values
    originals, reconstructions = torch.cat(originals), torch.cat(reconstructions)
    for path, value in zip(args.images, psnr):
        print(f"{path}: PSNR {value:.2f} dB")
    if len(psnr) > 1:
        print(f"mean PSNR over {len(psnr)} images: {sum(psnr) / len(psnr):.2f} dB")

    pairs = [image for o, r in zip(originals, reconstructions) for image in tensor_to_pil(torch.stack([o, r]))]
    atomic_write(args.output, image_grid(pairs, cols=2).save)
    rows = f"{len(args.images)} row{'s' if len(args.images) > 1 else ''}"
    print(f"Wrote {args.output} ({rows}: original | reconstruction).")
    return 0
