#!/usr/bin/env python
"""Images per second of one training update of each stage, through the training script's own code path
(`TokenizerStage` / `PriorStage` built from the tiny CPU recipes, `forward_backward` + `update`), on synthetic data of
the recipes' shapes. Prints JSON.

    python benchmarks/bench_train_step.py [--threads 1] [--steps 10] [--batch_size 32]

The tokenizer is timed before the GAN starts (generator only) and after (generator + discriminator). Times are the
median of `--steps` updates after 2 warm-up updates; the load average is reported because shared machines vary.
"""

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TQDM_DISABLE", "1")


def make_images(root: Path, count: int, size: int) -> Path:
    rng = np.random.default_rng(0)
    for i in range(count):
        folder = root / f"class{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


def time_updates(stage, accelerator, batch, global_step: int, steps: int) -> list[float]:
    times = []
    for i in range(steps + 2):
        start = time.perf_counter()
        with accelerator.accumulate(*stage.accumulate_models):
            stage.forward_backward(batch, global_step)
        stage.update()
        if i >= 2:
            times.append(time.perf_counter() - start)
    return times


def reset_accelerate() -> None:
    from accelerate.state import AcceleratorState, GradientState, PartialState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()


def bench_tokenizer(tmp: Path, args) -> dict:
    from glotok_hf.training import parse_args
    from glotok_hf.training.runtime import build_accelerator
    from glotok_hf.training.stage_tokenizer import TokenizerStage

    images = make_images(tmp / "images", 2 * args.batch_size, 24)
    train_args = parse_args(["--config", str(ROOT / "training/recipes/tiny_cpu.json"), "--train_data_dir", str(images),
                             "--output_dir", str(tmp / "tok"), "--report_to", "none", "--num_validation_images", "0",
                             "--train_batch_size", str(args.batch_size)])  # fmt: skip
    accelerator = build_accelerator(train_args)
    stage = TokenizerStage(train_args, accelerator)
    batch = next(iter(stage.loader))
    before = time_updates(stage, accelerator, batch, 0, args.steps)
    after = time_updates(stage, accelerator, batch, train_args.loss.disc_start, args.steps)
    reset_accelerate()
    return {
        "recipe": "tiny_cpu.json",
        "batch": args.batch_size,
        "resolution": 24,
        "parameters": sum(p.numel() for p in stage.bare.parameters()),
        "update_seconds_generator_only": statistics.median(before),
        "images_per_second_generator_only": args.batch_size / statistics.median(before),
        "update_seconds_with_gan": statistics.median(after),
        "images_per_second_with_gan": args.batch_size / statistics.median(after),
    }


def bench_prior(tmp: Path, args) -> dict:
    from glotok_hf import GloTokConfig, GloTokModel
    from glotok_hf.codes import extract_codes
    from glotok_hf.data import load_image_dataset
    from glotok_hf.training import parse_args
    from glotok_hf.training.runtime import build_accelerator
    from glotok_hf.training.stage_prior import PriorStage

    recipe = json.loads((ROOT / "training/recipes/tiny_cpu.json").read_text())
    GloTokModel(GloTokConfig(**recipe["model_config"])).save_pretrained(tmp / "tokenizer")
    images = make_images(tmp / "prior_images", 64, 24)
    extract_codes(GloTokModel.from_pretrained(tmp / "tokenizer"), load_image_dataset(train_data_dir=images),
                  tmp / "codes", resolution=24, progress=False)  # fmt: skip
    train_args = parse_args(["--config", str(ROOT / "training/recipes/tiny_prior_cpu.json"), "--codes_dir",
                             str(tmp / "codes"), "--tokenizer_name_or_path", str(tmp / "tokenizer"), "--output_dir",
                             str(tmp / "prior"), "--report_to", "none"])  # fmt: skip
    accelerator = build_accelerator(train_args)
    stage = PriorStage(train_args, accelerator)
    batch = next(iter(stage.loader))
    times = time_updates(stage, accelerator, batch, 0, args.steps)
    reset_accelerate()
    return {
        "recipe": "tiny_prior_cpu.json",
        "batch": train_args.train_batch_size,
        "sequence_length": stage.layout.sequence_length(stage.num_positions),
        "parameters": sum(p.numel() for p in stage.bare.parameters()),
        "update_seconds": statistics.median(times),
        "images_per_second": train_args.train_batch_size / statistics.median(times),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch_size", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        results = {"tokenizer": bench_tokenizer(Path(tmp), args), "prior": bench_prior(Path(tmp), args)}
    results["machine"] = {
        "cpu_count": os.cpu_count(),
        "torch_threads": args.threads,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "platform": platform.platform(),
        "load_average_1min_before_after": [load_before[0], os.getloadavg()[0]],
        "torch": torch.__version__,
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
