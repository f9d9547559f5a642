# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""Conversion time of a LlamaGen c2i GPT checkpoint of the real shapes (random values, LlamaGen's key names, saved
as the training script does: `{"model": ..., "args": Namespace}`) with `glotok convert llamagen-gpt`.

Usage: `PYTHONPATH=src python benchmarks/bench_convert_gpt.py [--preset GPT-B] [--workdir /tmp/bench_convert]`;
prints JSON.
"""

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import torch

from glotok_hf.configuration_glotok_prior import PRIOR_PRESETS
from glotok_hf.convert_gpt import convert_checkpoint


def llamagen_state_dict(preset: str, vocab: int = 16384, classes: int = 1000) -> dict[str, torch.Tensor]:
    layers, width, _, _, _ = PRIOR_PRESETS[preset]
    ffn = -(-int(8 * width / 3) // 256) * 256
    sd = {"cls_embedding.embedding_table.weight": torch.randn(classes + 1, width) * 0.02,
          "tok_embeddings.weight": torch.randn(vocab, width) * 0.02, "norm.weight": torch.ones(width),
          "output.weight": torch.randn(vocab, width) * 0.02}  # fmt: skip
    for i in range(layers):
        sd |= {f"layers.{i}.attention.wqkv.weight": torch.randn(3 * width, width) * 0.02,
               f"layers.{i}.attention.wo.weight": torch.randn(width, width) * 0.02,
               f"layers.{i}.feed_forward.w1.weight": torch.randn(ffn, width) * 0.02,
               f"layers.{i}.feed_forward.w3.weight": torch.randn(ffn, width) * 0.02,
               f"layers.{i}.feed_forward.w2.weight": torch.randn(width, ffn) * 0.02,
               f"layers.{i}.attention_norm.weight": torch.ones(width),
               f"layers.{i}.ffn_norm.weight": torch.ones(width)}  # fmt: skip
    return sd


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="GPT-B", choices=[k for k in PRIOR_PRESETS if k.startswith("GPT")])
    parser.add_argument("--workdir", default="/tmp/bench_convert_gpt")
    args = parser.parse_args()
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    torch.manual_seed(0)
    state_dict = llamagen_state_dict(args.preset)
    torch.save({"model": state_dict, "args": argparse.Namespace(gpt_model=args.preset)}, work / "c2i.pt")
    start = time.perf_counter()
    convert_checkpoint("llamagen-gpt", work / "c2i.pt", work / "prior", preset=args.preset)
    seconds = time.perf_counter() - start
    report = {
        "benchmark": f"glotok convert llamagen-gpt, {args.preset} of the real shapes (random values)",
        "parameters": sum(v.numel() for v in state_dict.values()),
        "checkpoint_mb": round((work / "c2i.pt").stat().st_size / 2**20, 1),
        "conversion_seconds": round(seconds, 2),
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
