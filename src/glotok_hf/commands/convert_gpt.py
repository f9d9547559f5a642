# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""`glotok convert-gpt`: convert a LlamaGen c2i GPT or FQGAN FAR checkpoint (.pt) exactly into a GloTok prior
folder (GloTokPriorForCausalLM), read with torch.load(weights_only=True)."""

import argparse

from . import positive_int

EPILOG = """examples:
  glotok convert-gpt llamagen-gpt c2i_B_256.pt gpt-b --preset GPT-B
  glotok convert-gpt llamagen-gpt c2i_L_384.pt gpt-l-384 --preset GPT-L --grid-size 24
  glotok convert-gpt fqgan-far far_b.pt far-b --num-attention-heads 16
presets: GPT-B, GPT-L, GPT-XL, GPT-XXL, GPT-3B (LlamaGen), FAR-B, FAR-L (FQGAN)
"""


def register(subparsers) -> None:
    summary = "convert a LlamaGen c2i GPT / FQGAN FAR checkpoint into a GloTok prior folder"
    parser = subparsers.add_parser("convert-gpt", help=summary, description=__doc__, epilog=EPILOG)
    parser.add_argument("kind", choices=["llamagen-gpt", "fqgan-far"], help="the checkpoint's model")
    parser.add_argument("checkpoint", help="the .pt checkpoint")
    parser.add_argument("output_dir", help="the folder to write (save_pretrained layout)")
    heads = parser.add_mutually_exclusive_group(required=True)
    heads.add_argument("--preset", help="the model size, which fixes the attention heads (e.g. GPT-B)")
    heads.add_argument("--num-attention-heads", type=positive_int, help="attention heads, for other sizes")
    parser.add_argument("--grid-size", type=positive_int, default=16, help="token grid side (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..convert_gpt import convert_checkpoint

    path = convert_checkpoint(args.kind, args.checkpoint, args.output_dir, preset=args.preset,
                              num_attention_heads=args.num_attention_heads, grid_size=args.grid_size,
                              overwrite=args.overwrite)  # fmt: skip
    print(f"wrote {path}")
    return 0
