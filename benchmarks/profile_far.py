# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""Where the factorized sampler's time goes: `sample_image_tokens` on bench_far.py's `GloTokPriorForCausalLM`
(paper vocabulary, batch 8, guidance 2, 1 thread), once under cProfile (Python functions, by own time) and once
under torch.profiler (operators, by self CPU time; matrix products also by shape), after one warm-up; prints the top
entries of each, and the cumulative time of the sampler's pieces (`PIECES`), as JSON.

Usage: `PYTHONPATH=src python benchmarks/profile_far.py [--layers 4 --width 256 --head-layers 3 --positions 64
--cache static --top 10]`; prints JSON.
"""

import argparse
import cProfile
import json
import pstats
import time

import torch
from bench_far import add_prior_arguments, build_priors  # this folder is on sys.path when the script runs

from glotok_hf.sampling import sample_image_tokens

# pieces of the sampler by cProfile label (`file:line(function)`): the cumulative time of the outermost match
PIECES = {"backbone step": "(backbone)", "head": "(head_states)", "causal masks": "(create_causal_mask)",
          "kv cache update": "(update)", "all linear layers": "torch._C._nn.linear",
          "sample_from_logits": "(sample_from_logits)", "logits processors": "logits_process.py"}  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_prior_arguments(parser)
    parser.add_argument("--positions", type=int, default=64, help="grid positions sampled (of a 16x16 grid)")
    parser.add_argument("--cache", choices=["dynamic", "static"], default="static")
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)
    layout, _, prior = build_priors(args.layers, args.width, args.head_layers, 16)
    labels = torch.arange(args.batch_size) * 7 % layout.num_classes

    def sample():
        generators = [torch.Generator().manual_seed(i) for i in range(args.batch_size)]
        return sample_image_tokens(prior, layout, labels, args.positions, guidance_scale=2.0, generator=generators,
                                   cache_implementation=args.cache)  # fmt: skip

    sample()  # warm-up
    start = time.perf_counter()
    sample()
    seconds = time.perf_counter() - start
    profile = cProfile.Profile()
    profile.runcall(sample)
    stats = pstats.Stats(profile)
    total = stats.total_tt
    rows = sorted(stats.stats.items(), key=lambda item: -item[1][2])[: args.top]  # by own (total) time
    python = [{"function": f"{file.split('site-packages/')[-1]}:{line}({name})", "calls": calls,
               "own_s": round(own, 3), "cumulative_s": round(cumulative, 3)}
              for (file, line, name), (_, calls, own, cumulative, _) in rows]  # fmt: skip
    labels_of = {f"{file}:{line}({name})": (calls, cumulative) for (file, line, name), (_, calls, _, cumulative, _)
                 in stats.stats.items()}  # fmt: skip
    pieces = {piece: max((v for k, v in labels_of.items() if match in k), default=(0, 0.0), key=lambda v: v[1])
              for piece, match in PIECES.items()}  # fmt: skip
    pieces = {
        piece: {"calls": calls, "cumulative_s": round(cumulative, 3)} for piece, (calls, cumulative) in pieces.items()
    }
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
        sample()
    ops_total = sum(e.self_cpu_time_total for e in prof.key_averages())

    def top(events, **fields):
        events = sorted(events, key=lambda e: -e.self_cpu_time_total)[: args.top]
        return [{"op": e.key, **{k: str(getattr(e, v)) for k, v in fields.items()}, "calls": e.count,
                 "self_s": round(e.self_cpu_time_total / 1e6, 3),
                 "self_share": round(e.self_cpu_time_total / ops_total, 3)} for e in events]  # fmt: skip

    by_shape = [e for e in prof.key_averages(group_by_input_shape=True) if e.key in ("aten::mm", "aten::addmm")]
    report = {
        "benchmark": "profile of GloTokPriorForCausalLM.sample_factorized (sample_image_tokens)",
        "setup": {"backbone": f"{args.layers} layers, width {args.width}", "head_layers": args.head_layers,
                  "batch_size": args.batch_size, "positions": args.positions, "cache": args.cache, "threads": 1},
        "seconds_unprofiled": round(seconds, 3),
        "cprofile": {"total_s": round(total, 3), "top_by_own_time": python, "pieces": pieces},
        "torch_profiler": {"self_cpu_total_s": round(ops_total / 1e6, 3), "top_by_self_cpu": top(prof.key_averages()),
                           "matrix_products_by_shape": top(by_shape, shapes="input_shapes")},
    }  # fmt: skip
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
