#!/usr/bin/env python
"""`--sharding fsdp` vs `ddp` on 2 CPU processes (gloo, `accelerate launch`, the tests' launch): peak resident memory
per process, seconds per update and checkpoint size on disk (sharded DCP folder vs the consolidated
`save_pretrained` folder), for an interleaved prior of about 100M parameters (GPT-B width, 14 layers) on synthetic
codes. Prints JSON.

    python benchmarks/bench_fsdp.py [--steps 4] [--layers 14] [--batch_size 2]

Each process reports `ru_maxrss` (peak RSS, which includes building the full model before it is sharded) and the
seconds per update come from the logged images/s of the updates after the first (data loading included).
"""

import argparse
import json
import math
import os
import platform
import resource
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKER_FLAG = "--bench-worker"


def worker(argv: list[str]) -> None:
    """Run train.py's `main` in this process, then write its peak RSS next to the run."""
    from glotok_hf.training import main

    run = main(argv)
    rank = run.stage.accelerator.process_index
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    (Path(run.args.output_dir) / f"peak_rss_{rank}.json").write_text(json.dumps({"peak_rss_mib": peak_mib}))


def folder_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--layers", type=int, default=14)
    parser.add_argument("--batch_size", type=int, default=2)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    from train_utils import accelerate_config, extract_tiny_codes, launch, make_imagefolder, save_tiny_tokenizer

    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1",
           "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"}  # fmt: skip
    results = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
               "load_average": os.getloadavg()[0], "processes": 2, "steps": args.steps}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        images = make_imagefolder(tmp / "images", per_class=8, size=20)
        codes = extract_tiny_codes(save_tiny_tokenizer(tmp / "tokenizer"), images, tmp / "codes")
        config = accelerate_config(tmp / "accelerate.json", num_processes=2)
        model_config = json.dumps({"num_hidden_layers": args.layers})
        for sharding in ("ddp", "fsdp"):
            out = tmp / sharding
            argv = ["--stage", "prior", "--codes_dir", str(codes), "--output_dir", str(out), "--prior_size", "B",
                    "--model_config", model_config, "--train_batch_size", str(args.batch_size),
                    "--max_train_steps", str(args.steps), "--checkpointing_steps", str(args.steps),
                    "--report_to", "none", "--sharding", sharding]  # fmt: skip
            launch(config, [WORKER_FLAG, *argv], env, tmp / f"{sharding}.log", Path(__file__).resolve())
            rows = [json.loads(line) for line in (out / "logs" / "metrics.jsonl").read_text().splitlines()]
            global_batch = 2 * args.batch_size
            per_update = [global_batch / r["images_per_second"] for r in rows[1:]]
            checkpoint = out / f"checkpoint-{args.steps}"
            results[sharding] = {
                "peak_rss_mib_per_process": [
                    round(json.loads((out / f"peak_rss_{r}.json").read_text())["peak_rss_mib"]) for r in range(2)
                ],  # fmt: skip
                "seconds_per_update": round(sorted(per_update)[len(per_update) // 2], 3),
                "checkpoint_mib": round(folder_mib(checkpoint), 1),
                "consolidated_model_safetensors_mib": round((out / "model.safetensors").stat().st_size / 2**20, 1),
            }
        from safetensors import safe_open

        with safe_open(str(tmp / "fsdp" / "model.safetensors"), framework="pt") as f:
            shapes = [f.get_slice(k).get_shape() for k in f.keys()]
        results["prior_parameters"] = sum(math.prod(shape) for shape in shapes)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    if sys.argv[1:2] == [WORKER_FLAG]:
        worker(sys.argv[2:])
    else:
        main()
