# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""`glotok convert`: public LlamaGen VQ / FQGAN-Dual checkpoints -> GloTok tokenizer folders (and back), LlamaGen c2i
GPT / FQGAN FAR checkpoints -> GloTok prior folders."""

import argparse
from pathlib import Path

from . import check_output, positive_int

FORMATS = ("llamagen-vq", "fqgan-dual")
PRIOR_FORMATS = ("llamagen-gpt", "fqgan-far")

DESCRIPTION = """Convert a public ImageNet tokenizer checkpoint into a GloTok tokenizer folder (save_pretrained layout:
safetensors, config.json, model card), exactly: the converted model gives the same codes and reconstructions.

  llamagen-vq  LlamaGen's VQ (vq_ds16_c2i.pt, vq_ds8_c2i.pt): one codebook, no adapters.
  fqgan-dual   FQGAN-Dual (fqgan_dual_ds16.pt, fqgan_dual_ds8.pt): semantic + visual codebooks with adapters;
               GloTok without the histogram loss and the residual module. It accepts only 256x256 images.

Downsampling, channels, z_channels, codebook sizes and dimension are read off the tensors. The file is read with
torch.load(weights_only=True). With --to, a GloTok folder without residual modules is written back as a checkpoint in
the source layout ({"model": state_dict}) for LlamaGen's / FQGAN's own scripts.

  llamagen-gpt LlamaGen's class-conditional GPT (c2i_B_256.pt ... c2i_3B_384.pt) -> GloTokPriorForCausalLM.
  fqgan-far    FQGAN's factorized AR prior (FAR) -> GloTokPriorForCausalLM with its factorized head.
               Priors need --preset or --num-attention-heads (the heads cannot be read off the tensors)."""

EPILOG = """examples:
  glotok convert fqgan-dual fqgan_dual_ds16.pt fqgan-dual-ds16
  glotok convert llamagen-vq vq_ds16_c2i.pt llamagen-vq-ds16
  glotok convert llamagen-vq checkpoints/0250000.pt my-vq --ema
  glotok convert --to fqgan-dual fqgan-dual-ds16 fqgan_dual_ds16_export.pt
  glotok convert llamagen-gpt c2i_B_256.pt gpt-b --preset GPT-B
  glotok convert llamagen-gpt c2i_L_384.pt gpt-l-384 --preset GPT-L --grid-size 24
  glotok convert fqgan-far far_b.pt far-b --num-attention-heads 16
prior presets: GPT-B, GPT-L, GPT-XL, GPT-XXL, GPT-3B (LlamaGen), FAR-B, FAR-L (FQGAN)
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert LlamaGen / FQGAN tokenizer and prior checkpoints to GloTok folders (and back with --to)",
        description=DESCRIPTION,
        epilog=EPILOG,
    )
    formats = " or ".join(FORMATS + PRIOR_FORMATS)
    parser.add_argument("format", nargs="?", metavar="FORMAT", help=f"source layout: {formats}")
    parser.add_argument("source", metavar="SOURCE", help="the .pt checkpoint (with --to: the GloTok folder)")
    parser.add_argument("output", metavar="OUTPUT", help="the folder to write (with --to: the .pt file)")
    parser.add_argument("--to", choices=(*FORMATS, "llamagen"), help="export a GloTok folder to this layout instead "
                        "(llamagen = llamagen-vq)")  # fmt: skip
    parser.add_argument("--ema", action="store_true", help="convert the 'ema' weights of a training checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT")
    parser.add_argument(
        "--norm-num-groups", type=positive_int, default=32, help="GroupNorm groups (default: 32, published)"
    )
    parser.add_argument("--adapter-num-heads", type=positive_int, default=8,
                        help="FQGAN adapters' attention heads (default: 8, published)")  # fmt: skip
    parser.add_argument("--no-codebook-l2-norm", dest="codebook_l2_norm", action="store_false",
                        help="the source looked codes up without l2 normalisation (published: with)")  # fmt: skip
    parser.add_argument("--sample-size", type=positive_int, default=256,
                        help="LlamaGen VQ training resolution (default: 256; FQGAN's is read off its tensors)")  # fmt: skip
    parser.add_argument("--preset", help="priors: the model size, which fixes the attention heads (e.g. GPT-B)")
    parser.add_argument("--num-attention-heads", type=positive_int, help="priors: attention heads, for other sizes")
    parser.add_argument("--grid-size", type=positive_int, default=16, help="priors: token grid side (default: 16)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if (args.to is None) == (args.format is None):
        raise ValueError(
            f"Give either a source FORMAT ({' or '.join(FORMATS)}) to convert, or --to FORMAT to export (exactly one)."
        )
    if args.format is not None and args.format not in FORMATS + PRIOR_FORMATS:
        raise ValueError(f"Unknown FORMAT {args.format!r}; expected one of {', '.join(FORMATS + PRIOR_FORMATS)}.")
    if args.format in PRIOR_FORMATS:
        return convert_prior(args)
    from ..convert import convert_checkpoint, export_checkpoint
    from ..loading import load_tokenizer

    if args.to is not None:
        args.to = "llamagen-vq" if args.to == "llamagen" else args.to
        check_output(args.output, args.overwrite)
        path = export_checkpoint(load_tokenizer(args.source, device="cpu"), args.to, args.output, overwrite=True)
        print(f"Wrote {path} ({args.to} layout).")
        return 0
    kwargs = {"norm_num_groups": args.norm_num_groups, "adapter_num_heads": args.adapter_num_heads,
              "codebook_l2_norm": args.codebook_l2_norm}  # fmt: skip
    if args.format == "llamagen-vq":
        kwargs["sample_size"] = args.sample_size
    model = convert_checkpoint(args.format, args.source, args.output, ema=args.ema, overwrite=args.overwrite, **kwargs)
    config = model.config
    print(f"Wrote {Path(args.output)}: GloTokModel, {config.downsample_factor}x downsampling at {config.sample_size} px, "
          f"codebooks semantic={config.semantic_codebook_size} visual={config.visual_codebook_size}. Try: glotok "
          f"reconstruct photo.png --tokenizer {args.output} --output recon.png")  # fmt: skip
    return 0


def convert_prior(args: argparse.Namespace) -> int:
    if (args.preset is None) == (args.num_attention_heads is None):
        raise ValueError(f"{args.format}: give exactly one of --preset or --num-attention-heads.")
    from ..convert_gpt import convert_checkpoint

    path = convert_checkpoint(args.format, args.source, args.output, preset=args.preset,
                              num_attention_heads=args.num_attention_heads, grid_size=args.grid_size,
                              overwrite=args.overwrite)  # fmt: skip
    print(f"Wrote {path}: GloTokPriorForCausalLM converted from {args.format}.")
    return 0
