# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""`glotok convert-lpips`: convert torchvision's VGG16 checkpoint and the LPIPS v0.1 VGG linear heads into the one
safetensors file that the perceptual loss (glotok_hf.losses.LPIPS) loads, so nothing is ever downloaded at training
time. Both .pth files are read with torch.load(weights_only=True)."""

import argparse

EPILOG = """where to get the inputs (download them once, by hand):
  VGG16:  https://download.pytorch.org/models/vgg16-397923af.pth  (torchvision's ImageNet VGG16)
  heads:  the `lpips` package's lpips/weights/v0.1/vgg.pth; by default the copy of the same heads that torchmetrics ships
          (torchmetrics/functional/image/lpips_models/vgg.pth) is used

examples:
  glotok convert-lpips --vgg16 vgg16-397923af.pth --output weights/lpips_vgg16.safetensors
  glotok convert-lpips --vgg16 vgg16-397923af.pth --heads lpips/weights/v0.1/vgg.pth --output lpips_vgg16.safetensors
then point GloTokLossConfig.perceptual_model_path (the training script's perceptual model path) at the file.
"""


def register(subparsers) -> None:
    summary = "convert VGG16 + LPIPS heads (.pth) into the safetensors file of the perceptual loss"
    parser = subparsers.add_parser("convert-lpips", help=summary, description=__doc__, epilog=EPILOG)
    parser.add_argument("--vgg16", required=True, help="torchvision's vgg16-397923af.pth")
    parser.add_argument("--heads", help="LPIPS v0.1 VGG heads vgg.pth (default: the copy shipped with torchmetrics)")
    parser.add_argument("--output", default="lpips_vgg16.safetensors", help="output file (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..losses.lpips import LPIPS, convert_lpips_checkpoint

    path = convert_lpips_checkpoint(args.vgg16, args.heads, args.output, overwrite=args.overwrite)
    LPIPS.from_pretrained(path)  # check that the file loads
    print(f"wrote {path}")
    return 0
