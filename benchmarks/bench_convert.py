"""Cost of `glotok convert` on a full-size checkpoint, and encode + decode throughput of the converted model next to
the original code; prints one JSON object.

    PYTHONPATH=src python benchmarks/bench_convert.py [--format fqgan-dual|llamagen-vq] [--source-code FILE] [--dry-run]

1. A randomly initialised model of the published shapes (FQGAN-Dual VQ-16: 128 x (1, 1, 2, 2, 4) channels, two
   ResNets per level, z_channels 256, two 16,384 x 8 codebooks, two 6-layer adapters of width 512 on a 16x16 grid,
   111,294,355 parameters; LlamaGen VQ-16: the same CNN with one codebook, 71,883,403) is written as a training
   checkpoint in the source layout (`{"model", "args"}`), and `convert_checkpoint` runs on it in a child process:
   its wall time (with the torch import), the time of the conversion itself, and the child's peak RSS.
2. encode + decode images/s of the converted model at 256 px, batch 4, fp32 and bf16 autocast.
3. With `--source-code` (the source's own model file from a local clone: FQGAN `tokenizer/vq_model_dual.py`, LlamaGen
   `tokenizer/tokenizer_image/vq_model.py`; it imports einops), the original `VQ_16` model loads the same state dict
   strictly (so the exported layout is checked at full size), is timed in turns with the converted one, and its
   codes and `decode_code` output are compared with the converted model's (fp32). Nothing of it is copied here.

`--dry-run` shrinks every size so the script runs in seconds.
"""

import argparse
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from glotok_hf import GloTokConfig, GloTokModel
from glotok_hf.convert import from_glotok

CHILD = """
import json, sys, time
start = time.perf_counter()
from glotok_hf.convert import convert_checkpoint
imported = time.perf_counter()
convert_checkpoint(sys.argv[1], sys.argv[2], sys.argv[3], norm_num_groups=int(sys.argv[4]))
print(json.dumps({"import_s": imported - start, "convert_s": time.perf_counter() - imported}))
"""


def source_config(fmt: str, dry_run: bool) -> GloTokConfig:
    codes = 64 if dry_run else 16384
    sizes = {"semantic_codebook_size": codes if fmt == "fqgan-dual" else 0, "visual_codebook_size": codes}
    small = {"block_out_channels": (32, 32, 64), "latent_channels": 32, "norm_num_groups": 8, "adapter_depth": 1,
             "sample_size": 32} if dry_run else {}  # fmt: skip
    return GloTokConfig(use_residual=False, **sizes, **small)


def encode_decode(model, images):
    return model.decode(**model.encode(images).indices).sample


def original_encode_decode(original, images, fmt):
    if fmt == "fqgan-dual":
        quant_sem, quant_vis, info_sem, info_vis = original.encode(images)
        shape = (images.shape[0], quant_sem.shape[1], *quant_sem.shape[2:])
        return original.decode_code(info_sem[2], info_vis[2], shape, shape), {
            "semantic": info_sem[2],
            "visual": info_vis[2],
        }
    quant, _, info = original.encode(images)
    return original.decode_code(info[2], tuple(quant.shape)), {"visual": info[2]}


def load_original(path: str, fmt: str, state: dict, config: GloTokConfig):
    spec = importlib.util.spec_from_file_location("source_vq_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    mult = [c // config.block_out_channels[0] for c in config.block_out_channels]
    args = module.ModelArgs(codebook_size=config.visual_codebook_size, codebook_embed_dim=config.codebook_dim,
                            encoder_ch_mult=mult, decoder_ch_mult=mult, z_channels=config.latent_channels)  # fmt: skip
    original = module.VQModel(args)
    original.load_state_dict(state, strict=True)
    return original.eval()


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--format", choices=["fqgan-dual", "llamagen-vq"], default="fqgan-dual")
    parser.add_argument("--source-code", help="the source's model file (see above) to compare with")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    config = source_config(args.format, args.dry_run)
    model = GloTokModel(config).eval()
    state = from_glotok(model, args.format)
    result = {"format": args.format, "parameters": sum(p.numel() for p in model.parameters()),
              "device": "cpu", "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
              "torch_threads": torch.get_num_threads(), "torch": torch.__version__}  # fmt: skip

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "source.pt"
        torch.save({"model": state, "args": argparse.Namespace(vq_model="VQ-16")}, checkpoint)
        result["checkpoint_mib"] = round(checkpoint.stat().st_size / 2**20, 1)
        start = time.perf_counter()
        child = subprocess.run([sys.executable, "-c", CHILD, args.format, str(checkpoint), str(Path(tmp) / "out"),
                                str(config.norm_num_groups)], capture_output=True, text=True, check=True)  # fmt: skip
        wall = time.perf_counter() - start
        inner = json.loads(child.stdout.strip().splitlines()[-1])
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
        result["conversion"] = {"process_wall_s": round(wall, 2), "import_s": round(inner["import_s"], 2),
                                "convert_s": round(inner["convert_s"], 2), "peak_rss_mib": round(peak)}  # fmt: skip
        converted = GloTokModel.from_pretrained(Path(tmp) / "out").eval()

    size = config.sample_size
    images = torch.rand(args.batch_size, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    original = load_original(args.source_code, args.format, state, config) if args.source_code else None
    runs = {"converted": lambda: encode_decode(converted, images)}
    if original is not None:
        runs["original"] = lambda: original_encode_decode(original, images, args.format)[0]
    throughput = {}
    for precision in ("fp32", "bf16"):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            for fn in runs.values():
                fn()  # warm-up
            seconds = {name: [] for name in runs}
            for _ in range(args.repeats):  # in turns, so machine load affects both alike
                for name, fn in runs.items():
                    seconds[name].append(timed(fn, 1))
        for name, values in seconds.items():
            throughput[f"{name}_{precision}_images_per_s"] = round(args.batch_size / statistics.median(values), 3)
    result["encode_decode"] = {"resolution": size, "batch_size": args.batch_size, **throughput}

    if original is not None:
        with torch.no_grad():
            reference, codes = original_encode_decode(original, images, args.format)
            enc = converted.encode(images)
            grid = enc.visual_indices.shape
            decoded = converted.decode(**{f"{n}_indices": c.view(grid) for n, c in codes.items()}).sample
        same = {name: float((getattr(enc, f"{name}_indices").flatten() == c.flatten()).float().mean())
                for name, c in codes.items()}  # fmt: skip
        result["exactness_fp32"] = {"fraction_of_equal_codes": same,
                                    "decode_max_abs_diff": float((decoded - reference).abs().max()),
                                    "output_range": float(reference.max() - reference.min())}  # fmt: skip
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
