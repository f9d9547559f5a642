#!/usr/bin/env python
"""`--sharding fsdp` vs `ddp` on 2 CPU processes (gloo, `accelerate launch`, the tests' launch): peak resident memory
per process, seconds per update and checkpoint size on disk (sharded DCP folder vs the consolidated
`save_pretrained` folder), for an interleaved prior of about 100M parameters (GPT-B width, 14 layers) on synthetic
codes. Prints JSON.

    python benchmarks/bench_fsdp.py [--steps 4] [--layers 14] [--batch_size 2]

Per process: the bytes of parameters + gradients + Adam states it holds at an optimizer step, its resident memory
then, and its peak RSS over the whole run (`ru_maxrss`: building the full model before sharding and the final gather
on the main process included). Seconds per update come from the logged images/s of the updates after the first
(data loading included).
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


def local_bytes(tensors) -> int:
    """Bytes this process holds of `tensors` (its shard of a DTensor)."""
    local = [t.to_local() if hasattr(t, "to_local") else t for t in tensors if t is not None]
    return sum(t.numel() * t.element_size() for t in local)


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def worker(argv: list[str]) -> None:
    """Run train.py's `main` in this process; at each optimizer step (gradients and, after the first, Adam states
    present) record the resident memory and the bytes of parameters + gradients + optimizer states this process
    holds; write them and the peak RSS of the whole run (model building and the final gather included)."""
    import glotok_hf.training.stage as stage_module
    from glotok_hf.training import main

    guarded_update, seen = stage_module.guarded_update, []

    def measured_update(accelerator, model, optimizer, *args, **kwargs):
        params = list(model.parameters())
        states = [t for state in optimizer.state.values() for t in state.values() if hasattr(t, "numel")]
        seen.append((rss_mib(), local_bytes([*params, *(p.grad for p in params), *states]) / 2**20))
        return guarded_update(accelerator, model, optimizer, *args, **kwargs)

    stage_module.guarded_update = measured_update
    run = main(argv)
    figures = {
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
        "rss_at_step_mib": max(rss for rss, _ in seen[1:]),
        "params_grads_adam_mib": max(held for _, held in seen[1:]),
    }
    (Path(run.args.output_dir) / f"memory_{run.stage.accelerator.process_index}.json").write_text(json.dumps(figures))


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
            memory = [json.loads((out / f"memory_{r}.json").read_text()) for r in range(2)]
            results[sharding] = {
                **{f"{key}_per_process": [round(memory[r][key]) for r in range(2)] for key in memory[0]},
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
