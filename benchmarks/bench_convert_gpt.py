# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""Conversion time of a LlamaGen c2i GPT checkpoint of the real shapes (random values, LlamaGen's key names, saved
as the training script does: `{"model": ..., "args": Namespace}`) with `glotok convert llamagen-gpt`.

With `--images`, a LlamaGen VQ-16 checkpoint of the real shapes (random values, bench_convert.py's builder) is
converted too (`glotok convert llamagen-vq`), both are put in a `GloTokPipeline`, and
`pipe(class_labels, guidance_scale=4.0, generator=[one per image], output_type="np")` is timed at 256 px (16x16
grid) for every `--dtypes` x `--threads` x `--batch-sizes` case: one warm-up, then the median of `--repeats` calls.
`bf16` casts the whole pipeline (`pipe.to(torch.bfloat16)`, as `glotok generate --dtype bfloat16` loads it). Each
case reports images/s, seconds per image split into prior sampling and VQ decode (`vqmodel.decode` is timed; the
prior's share is the rest), the process's peak RSS during the case (VmHWM, reset before it), and the 1-minute load
average before and after it (the machine may be shared).

Usage: `PYTHONPATH=src python benchmarks/bench_convert_gpt.py [--preset GPT-B] [--workdir /tmp/bench_convert_gpt]
[--images --dtypes fp32 bf16 --threads 1 --batch-sizes 1 4 --repeats 2]`; prints JSON.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import time
from pathlib import Path

import torch
from bench_convert import source_config  # this folder is on sys.path when the script runs

from glotok_hf import GloTokModel, GloTokPipeline, GloTokPriorForCausalLM
from glotok_hf.configuration_glotok_prior import PRIOR_PRESETS
from glotok_hf.convert import convert_checkpoint as convert_vq
from glotok_hf.convert import from_glotok
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


def peak_rss_mib(reset: bool = False) -> float:
    """The process's peak RSS (VmHWM) in MiB; `reset` starts a new peak from the current RSS (Linux)."""
    if reset:
        Path("/proc/self/clear_refs").write_text("5")
    return int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text())[1]) / 1024


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def convert_timed(convert, source: dict, path: Path, output: Path, **kwargs) -> dict:
    torch.save(source, path)
    start = time.perf_counter()
    convert(path, output, **kwargs)
    seconds = time.perf_counter() - start
    parameters = sum(v.numel() for v in source["model"].values())
    return {"state_dict_values": parameters, "checkpoint_mb": round(path.stat().st_size / 2**20, 1),
            "conversion_seconds": round(seconds, 2)}  # fmt: skip


def time_images(pipe: GloTokPipeline, batch_size: int, repeats: int) -> dict:
    decode, decode_seconds = pipe.vqmodel.decode, []

    def timed_decode(*args, **kwargs):
        start = time.perf_counter()
        out = decode(*args, **kwargs)
        decode_seconds.append(time.perf_counter() - start)
        return out

    pipe.vqmodel.decode = timed_decode
    labels = [i * 7 % pipe.num_classes for i in range(batch_size)]
    before, seconds = load_average(), []
    peak_rss_mib(reset=True)
    for _ in range(1 + repeats):  # the first call is the warm-up
        generators = [torch.Generator().manual_seed(i) for i in range(batch_size)]
        start = time.perf_counter()
        images = pipe(class_labels=labels, guidance_scale=4.0, generator=generators, output_type="np").images
        seconds.append(time.perf_counter() - start)
    del pipe.vqmodel.decode
    assert images.shape == (batch_size, 256, 256, 3), images.shape
    total, decoded = statistics.median(seconds[1:]), statistics.median(decode_seconds[1:])
    return {"batch_size": batch_size, "seconds": round(total, 2), "all_seconds": [round(s, 2) for s in seconds[1:]],
            "images_per_s": round(batch_size / total, 4),
            "seconds_per_image": {"total": round(total / batch_size, 2), "prior": round((total - decoded) / batch_size, 2),
                                  "vq_decode": round(decoded / batch_size, 2)},
            "peak_rss_mib": round(peak_rss_mib()), "load_average_before": before,
            "load_average_after": load_average()}  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="GPT-B", choices=[k for k in PRIOR_PRESETS if k.startswith("GPT")])
    parser.add_argument("--workdir", default="/tmp/bench_convert_gpt")
    parser.add_argument("--images", action="store_true", help="also convert a VQ-16 and time the pipeline")
    parser.add_argument("--dtypes", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"])
    parser.add_argument("--threads", nargs="+", type=int, default=[1])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    torch.manual_seed(0)
    gpt = {"model": llamagen_state_dict(args.preset), "args": argparse.Namespace(gpt_model=args.preset)}
    report = {
        "benchmark": f"glotok convert llamagen-gpt, {args.preset} of the real shapes (random values)",
        **convert_timed(lambda *a: convert_checkpoint("llamagen-gpt", *a, preset=args.preset), gpt, work / "c2i.pt",
                        work / "prior"),
        "cpu_count": os.cpu_count(),
        "load_average_1min": load_average(),
    }  # fmt: skip
    del gpt
    if args.images:
        vq = {"model": from_glotok(GloTokModel(source_config("llamagen-vq", False)), "llamagen-vq"),
              "args": argparse.Namespace(vq_model="VQ-16")}  # fmt: skip
        report["vq16"] = convert_timed(lambda *a: convert_vq("llamagen-vq", *a), vq, work / "vq.pt", work / "vq")
        del vq
        cases = []
        for dtype in args.dtypes:
            pipe = GloTokPipeline(vqmodel=GloTokModel.from_pretrained(work / "vq").eval(),
                                  prior=GloTokPriorForCausalLM.from_pretrained(work / "prior").eval())  # fmt: skip
            pipe.set_progress_bar_config(disable=True)
            if dtype == "bf16":
                pipe.to(torch.bfloat16)
            for threads in args.threads:
                torch.set_num_threads(threads)
                for batch_size in args.batch_sizes:
                    case = {"dtype": dtype, "threads": threads, **time_images(pipe, batch_size, args.repeats)}
                    print(json.dumps(case), flush=True)  # progress on stdout; the report below holds it too
                    cases.append(case)
        report["images_256px"] = {"guidance_scale": 4.0, "repeats": args.repeats, "cases": cases}
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
