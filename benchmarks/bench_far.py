# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""Images/s of the factorized prior (FAR: one backbone step per grid position) against the interleaved prior.

Both priors have the same backbone (depth, width, heads, SwiGLU width) and the paper's GloTok vocabulary (12,288
visual + 4,096 semantic codes, 1,000 classes + null) over a 16x16 grid; all sample the same batch with classifier-free
guidance (scale 2, temperature 1, no top-k/top-p). Each method: one warm-up, then the median of `--repeats` runs
(all of them listed), with the 1-minute load average before and after it (the machine may be shared):

- `factorized`: `GloTokPriorForCausalLM` (FAR's head of `--head-layers` layers) through `sample_image_tokens`:
  256 backbone steps of 2B rows;
- `interleaved`: a `LlamaForCausalLM` over `[class, v0, s0, ...]` through `sample_image_tokens`: 512 steps;
- `interleaved_generate_cfg`: the same Llama through `generate(guidance_scale=...)` (bench_sampler.py's
  `generate_cfg`: a second, unconditional forward per step).

It also times one training update (forward + backward of the loss, no optimizer step) of each prior on the same
batch of random codes (`train_update_seconds`).

Usage: `PYTHONPATH=src python benchmarks/bench_far.py [--layers 4 --width 256 --head-layers 3 --batch-size 8
--grid 16 --threads 1 --repeats 1 --cache dynamic|static --skip-generate]`; prints JSON.
"""

import argparse
import json
import os
import statistics
import time

import torch
from bench_sampler import generate_cfg, machine_info  # this folder is on sys.path when the script runs
from transformers import LlamaForCausalLM

from glotok_hf import GloTokConfig, GloTokPriorConfig, GloTokPriorForCausalLM
from glotok_hf.prior import prior_config
from glotok_hf.sampling import TokenLayout, sample_image_tokens


def build_priors(layers: int, width: int, head_layers: int, grid: int):
    """`(layout, interleaved, factorized)`: the paper's token layout, and a `LlamaForCausalLM` and a
    `GloTokPriorForCausalLM` of the same backbone over it (seeded, eval mode)."""
    layout = TokenLayout(visual_codebook_size=12288, semantic_codebook_size=4096, num_classes=1000)
    torch.manual_seed(0)
    interleaved = LlamaForCausalLM(
        prior_config("B", GloTokConfig(), 1000, num_positions=grid * grid, hidden_size=width, num_hidden_layers=layers)
    ).eval()
    llama = interleaved.config
    factorized = GloTokPriorForCausalLM(
        GloTokPriorConfig(
            codebook_sizes=[12288, 4096],
            num_classes=1000,
            grid_size=grid,
            hidden_size=width,
            intermediate_size=llama.intermediate_size,
            num_hidden_layers=layers,
            num_attention_heads=llama.num_attention_heads,
            head_layers=head_layers,
        )  # fmt: skip
    ).eval()
    return layout, interleaved, factorized


def add_prior_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the priors `build_priors` makes and of their batch (shared with profile_far.py)."""
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--head-layers", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_prior_arguments(parser)
    parser.add_argument("--grid", type=int, default=16)
    parser.add_argument("--guidance-scale", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--cache", choices=["dynamic", "static"], default="dynamic", help="the samplers' KV cache")
    parser.add_argument("--skip-generate", action="store_true", help="leave out generate(guidance_scale=...)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    layout, interleaved, factorized = build_priors(args.layers, args.width, args.head_layers, args.grid)
    llama, positions = interleaved.config, args.grid * args.grid
    labels = torch.arange(args.batch_size) * 7 % layout.num_classes

    def sampler(prior):
        @torch.no_grad()  # sample_image_tokens does so itself only since main's eea6fc8
        def sample(generators):
            return sample_image_tokens(prior, layout, labels, positions, guidance_scale=args.guidance_scale,
                                       generator=generators, cache_implementation=args.cache)  # fmt: skip

        return sample

    methods = {"factorized": sampler(factorized), "interleaved": sampler(interleaved)}
    if not args.skip_generate:
        methods["interleaved_generate_cfg"] = lambda g: generate_cfg(
            interleaved, layout, labels, positions, args.guidance_scale, g
        )
    results = {}
    for name, fn in methods.items():
        before = round(os.getloadavg()[0], 2)
        fn([torch.Generator().manual_seed(i) for i in range(args.batch_size)])  # warm-up
        seconds = []
        for _ in range(args.repeats):
            generators = [torch.Generator().manual_seed(i) for i in range(args.batch_size)]
            start = time.perf_counter()
            tokens = fn(generators)
            seconds.append(time.perf_counter() - start)
        layout.validate_tokens(tokens)
        assert tokens.shape == (args.batch_size, layout.num_image_tokens(positions)), (name, tokens.shape)
        median = statistics.median(seconds)
        results[name] = {"seconds": round(median, 3), "images_per_s": round(args.batch_size / median, 4),
                         "all_seconds": [round(s, 3) for s in seconds],
                         "load_average_before_after": [before, round(os.getloadavg()[0], 2)]}  # fmt: skip

    # one training update (forward + backward, no optimizer) of each prior on the same batch of codes
    g = torch.Generator().manual_seed(0)
    codes = torch.stack([torch.randint(0, 12288, (args.batch_size, positions), generator=g),
                         torch.randint(0, 4096, (args.batch_size, positions), generator=g)], -1)  # fmt: skip
    tokens = torch.cat([layout.class_token_ids(labels)[:, None], layout.to_tokens(codes[..., 0], codes[..., 1])], 1)
    updates = {
        "factorized": lambda: factorized(codes, labels, labels=codes).loss.backward(),
        "interleaved": lambda: interleaved(input_ids=tokens, labels=tokens).loss.backward(),
    }
    for name, fn in updates.items():
        before = round(os.getloadavg()[0], 2)
        fn()  # warm-up
        start = time.perf_counter()
        fn()
        results[name]["train_update_seconds"] = round(time.perf_counter() - start, 3)
        results[name]["train_update_load_average_before_after"] = [before, round(os.getloadavg()[0], 2)]

    speed = {name: r["images_per_s"] for name, r in results.items()}
    ratios = {"factorized_vs_interleaved": round(speed["factorized"] / speed["interleaved"], 2),
              "train_update_interleaved_vs_factorized": round(results["interleaved"]["train_update_seconds"]
                                                              / results["factorized"]["train_update_seconds"], 2)}  # fmt: skip
    if "interleaved_generate_cfg" in speed:
        ratios["factorized_vs_generate_cfg"] = round(speed["factorized"] / speed["interleaved_generate_cfg"], 2)
    report = {
        "benchmark": "prior sampling images/s, factorized (FAR) vs interleaved",
        "machine": machine_info(),
        "setup": {
            "backbone": f"{args.layers} layers, width {args.width}, {llama.num_attention_heads} heads, SwiGLU "
            f"{llama.intermediate_size}",
            "factorized_head_layers": args.head_layers,
            "parameters": {
                "factorized": sum(p.numel() for p in factorized.parameters()),
                "interleaved": sum(p.numel() for p in interleaved.parameters()),
            },  # fmt: skip
            "grid": f"{args.grid}x{args.grid}",
            "batch_size": args.batch_size,
            "guidance_scale": args.guidance_scale,
            "cache_implementation": args.cache,
            "repeats": args.repeats,
        },
        "results": results,
        "ratios": ratios,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
