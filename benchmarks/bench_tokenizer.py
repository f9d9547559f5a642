"""Tokenizer encode + decode throughput (images/s) of GloTok against diffusers' `VQModel` with the same CNN, in one
run, in fp32 and under bf16 autocast; prints one JSON object.

    PYTHONPATH=src python benchmarks/bench_tokenizer.py [--device cuda --resolution 256 --block-out-channels 128 128 256 256 512 --layers-per-block 2 --latent-channels 256]

Matched between the models: `block_out_channels`, `layers_per_block`, `latent_channels`, GroupNorm groups, attention
in the mid blocks and after every ResNet of the lowest-resolution level (`AttnDownEncoderBlock2D` /
`AttnUpDecoderBlock2D` in diffusers, as in VQGAN), the token grid (`resolution / 2**(levels - 1)`), the number of codes
(16,384 in total) and the code dimension (8). Three models run:

- `vqmodel`: diffusers `VQModel` (one codebook of 16,384 codes of dimension 8),
- `glotok_single`: GloTok with one 16,384-code codebook, no adapter, no residual module (the same architecture as
  `vqmodel`: compares the implementations),
- `glotok`: the paper's GloTok (4,096 semantic + 12,288 visual codes, two 6-layer transformer adapters, residual
  modules): what the dual-codebook design costs.

Encode + decode is `decode(**encode(x).indices)` for GloTok (images -> token ids -> images) and
`decode(encode(x).latents)` for `VQModel` (which quantizes in `decode`). The models are timed in turns, repeat by
repeat, so load on a shared machine affects them alike; the ratio is computed per repeat, then the median is taken.
"""

import argparse
import json
import os
import platform
import statistics
import time

import torch
from diffusers import VQModel

from glotok_hf import GloTokConfig, GloTokModel


def build_models(args) -> dict[str, torch.nn.Module]:
    levels = len(args.block_out_channels)
    common = dict(
        block_out_channels=tuple(args.block_out_channels),
        layers_per_block=args.layers_per_block,
        norm_num_groups=args.norm_num_groups,
        latent_channels=args.latent_channels,
        mid_block_add_attention=True,
        lowest_resolution_attention=True,
        codebook_dim=8,
        sample_size=args.resolution,
    )
    torch.manual_seed(0)
    models = {
        "vqmodel": VQModel(
            down_block_types=("DownEncoderBlock2D",) * (levels - 1) + ("AttnDownEncoderBlock2D",),
            up_block_types=("AttnUpDecoderBlock2D",) + ("UpDecoderBlock2D",) * (levels - 1),
            block_out_channels=tuple(args.block_out_channels),
            layers_per_block=args.layers_per_block,
            latent_channels=args.latent_channels,
            num_vq_embeddings=16384,
            vq_embed_dim=8,
            norm_num_groups=args.norm_num_groups,
            sample_size=args.resolution,
            mid_block_add_attention=True,
        ),
        "glotok_single": GloTokModel(
            GloTokConfig(**common, semantic_codebook_size=0, visual_codebook_size=16384, use_residual=False)
        ),
        "glotok": GloTokModel(GloTokConfig(**common, semantic_codebook_size=4096, visual_codebook_size=12288)),
    }
    return {name: model.to(args.device).eval() for name, model in models.items()}


def encode_decode(name: str, model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    if name == "vqmodel":
        return model.decode(model.encode(images).latents).sample
    return model.decode(**model.encode(images).indices).sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--block-out-channels", type=int, nargs="+", default=[64, 128, 128])
    parser.add_argument("--layers-per-block", type=int, default=1)
    parser.add_argument("--latent-channels", type=int, default=64)
    parser.add_argument("--norm-num-groups", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    models = build_models(args)
    torch.manual_seed(0)
    images = torch.rand(args.batch_size, 3, args.resolution, args.resolution, device=device) * 2 - 1
    grid = args.resolution // 2 ** (len(args.block_out_channels) - 1)
    result = {
        "benchmark": "tokenizer_encode_decode",
        "config": {k: v for k, v in vars(args).items() if k not in ("device",)},
        "token_grid": [grid, grid],
        "params_millions": {
            name: round(sum(p.numel() for p in m.parameters()) / 1e6, 3) for name, m in models.items()
        },
        "results": {},
    }
    for dtype in args.dtypes:
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16")
        wall = {name: [] for name in models}
        cpu = {name: [] for name in models}
        with torch.no_grad(), autocast:
            for name, model in models.items():
                for _ in range(args.warmup):
                    encode_decode(name, model, images)
            for _ in range(args.repeats):
                for name, model in models.items():
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    start, start_cpu = time.perf_counter(), time.process_time()
                    encode_decode(name, model, images)
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    wall[name].append(time.perf_counter() - start)
                    cpu[name].append(time.process_time() - start_cpu)
        entry = {}
        for name in models:
            entry[name] = {
                "images_per_s": round(args.batch_size / statistics.median(wall[name]), 3),
                "wall_s_per_batch": round(statistics.median(wall[name]), 4),
            }
            if device.type == "cpu":
                entry[name]["cpu_s_per_batch"] = round(statistics.median(cpu[name]), 4)
        for name in ("glotok_single", "glotok"):
            ratios = [v / g for v, g in zip(wall["vqmodel"], wall[name])]
            entry[f"{name}_vs_vqmodel_throughput"] = round(statistics.median(ratios), 3)
            if device.type == "cpu":  # process CPU time: less sensitive to other jobs on a shared machine
                ratios = [v / g for v, g in zip(cpu["vqmodel"], cpu[name])]
                entry[f"{name}_vs_vqmodel_cpu_time"] = round(statistics.median(ratios), 3)
        result["results"][dtype] = entry
    result["machine"] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
