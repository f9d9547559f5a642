# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""Tokens/s of the prior's sampler against transformers' own CFG in `generate` and against a loop without KV cache.

All methods sample the same model (a small Llama with the paper's GloTok vocabulary: 12,288 visual + 4,096 semantic
codes + 1,000 classes + null), the same batch and length, with classifier-free guidance, no top-k/top-p, temperature 1,
and the id range of each step enforced:

- `sampler_dynamic` / `sampler_static`: `glotok_hf.sampling.sample_image_tokens` with `DynamicCache` / `StaticCache`
  (conditional and unconditional rows in one forward of 2B rows per step);
- `generate_cfg`: `LlamaForCausalLM.generate(guidance_scale=s, negative_prompt_ids=null)`, whose
  `UnbatchedClassifierFreeGuidanceLogitsProcessor` runs a second, unconditional forward each step, plus a logits
  processor masking the ids the step does not allow;
- `no_cache`: the same batched guidance as the sampler, but every step re-runs the whole prefix (no KV cache).

Usage: `python benchmarks/bench_sampler.py [--batch-size 8] [--positions 64] [--threads 1] [--repeats 3]`; prints JSON.
"""

import argparse
import json
import os
import platform
import statistics
import time

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM, LogitsProcessor, LogitsProcessorList

from glotok_hf.sampling import TokenLayout, draw_uniforms, sample_from_logits, sample_image_tokens


class AllowedRange(LogitsProcessor):
    """Mask every id the layout does not allow at the current step (prompt = the class token)."""

    def __init__(self, layout: TokenLayout, prompt_length: int = 1):
        self.layout, self.prompt_length = layout, prompt_length

    def __call__(self, input_ids, scores):
        lo, hi = self.layout.allowed_range(input_ids.shape[1] - self.prompt_length)
        masked = torch.full_like(scores, float("-inf"))
        masked[:, lo:hi] = scores[:, lo:hi]
        return masked


@torch.no_grad()
def no_cache_loop(prior, layout, labels, num_positions, scale, generator):
    """Batched CFG without a KV cache: the full prefix of all 2B rows goes through the model at every step."""
    batch = labels.shape[0]
    num_steps = layout.num_image_tokens(num_positions)
    uniforms = draw_uniforms(generator, batch, num_steps, labels.device)
    class_ids = layout.class_token_ids(labels)
    sequences = torch.cat([class_ids, torch.full_like(class_ids, layout.null_class_id)])[:, None]
    for step in range(num_steps):
        lo, hi = layout.allowed_range(step)
        logits = prior(input_ids=sequences, logits_to_keep=1).logits[:, -1, lo:hi].float()
        cond, uncond = logits.chunk(2)
        token = sample_from_logits(uncond + scale * (cond - uncond), uniforms[:, step]) + lo
        sequences = torch.cat([sequences, token.repeat(2)[:, None]], dim=1)
    return sequences[:batch, 1:]


def machine_info() -> dict:
    """The machine and versions a sampling figure was measured with (bench_sampler.py and bench_far.py)."""
    return {
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def generate_cfg(prior, layout, labels, num_positions, scale, generator):
    num_steps = layout.num_image_tokens(num_positions)
    torch.manual_seed(generator[0].initial_seed())
    out = prior.generate(
        input_ids=layout.class_token_ids(labels)[:, None],
        attention_mask=torch.ones(labels.shape[0], 1, dtype=torch.long),
        negative_prompt_ids=torch.full((labels.shape[0], 1), layout.null_class_id),
        guidance_scale=scale,
        do_sample=True,
        top_k=0,
        top_p=1.0,
        temperature=1.0,
        max_new_tokens=num_steps,
        min_new_tokens=num_steps,
        logits_processor=LogitsProcessorList([AllowedRange(layout)]),
    )
    return out[:, 1:]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--positions", type=int, default=64, help="grid positions (2 tokens each)")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--guidance-scale", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    layout = TokenLayout(visual_codebook_size=12288, semantic_codebook_size=4096, num_classes=1000)
    config = LlamaConfig(
        vocab_size=layout.vocab_size,
        hidden_size=args.width,
        intermediate_size=4 * args.width,
        num_hidden_layers=args.layers,
        num_attention_heads=args.width // 64,
        num_key_value_heads=args.width // 64,
        max_position_embeddings=layout.sequence_length(args.positions),
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    prior = LlamaForCausalLM(config).eval()
    labels = torch.arange(args.batch_size) * 7 % layout.num_classes
    num_tokens = args.batch_size * layout.num_image_tokens(args.positions)

    def run_sampler(cache):
        def fn(g):
            return sample_image_tokens(
                prior, layout, labels, args.positions, guidance_scale=args.guidance_scale, generator=g,
                cache_implementation=cache,
            )  # fmt: skip

        return fn

    methods = {
        "sampler_dynamic": run_sampler("dynamic"),
        "sampler_static": run_sampler("static"),
        "generate_cfg": lambda g: generate_cfg(prior, layout, labels, args.positions, args.guidance_scale, g),
        "no_cache": lambda g: no_cache_loop(prior, layout, labels, args.positions, args.guidance_scale, g),
    }
    results = {}
    for name, fn in methods.items():
        generators = [torch.Generator().manual_seed(i) for i in range(args.batch_size)]
        tokens = fn(generators)  # warm-up, and a check that every method emits valid layouts
        layout.validate_tokens(tokens)
        assert tokens.shape == (args.batch_size, layout.num_image_tokens(args.positions)), (name, tokens.shape)
        seconds = []
        for _ in range(args.repeats):
            generators = [torch.Generator().manual_seed(i) for i in range(args.batch_size)]
            start = time.perf_counter()
            fn(generators)
            seconds.append(time.perf_counter() - start)
        median = statistics.median(seconds)
        results[name] = {"seconds": round(median, 4), "tokens_per_s": round(num_tokens / median, 1)}

    speed = {name: r["tokens_per_s"] for name, r in results.items()}
    report = {
        "benchmark": "prior sampler tokens/s (image tokens generated per second, whole batch)",
        "machine": machine_info(),
        "setup": {
            "model": f"LlamaForCausalLM {args.layers} layers, width {args.width}, vocab {layout.vocab_size}",
            "parameters": sum(p.numel() for p in prior.parameters()),
            "batch_size": args.batch_size,
            "image_tokens_per_sample": layout.num_image_tokens(args.positions),
            "guidance_scale": args.guidance_scale,
            "repeats": args.repeats,
        },
        "results": results,
        "ratios": {
            "sampler_dynamic_vs_generate_cfg": round(speed["sampler_dynamic"] / speed["generate_cfg"], 2),
            "sampler_dynamic_vs_no_cache": round(speed["sampler_dynamic"] / speed["no_cache"], 2),
            "sampler_static_vs_dynamic": round(speed["sampler_static"] / speed["sampler_dynamic"], 2),
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
