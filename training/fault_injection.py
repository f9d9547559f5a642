#!/usr/bin/env python
# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""Fault injection: `kill -9` training runs at random moments and check that `--resume_from_checkpoint latest`
recovers every time.

    python training/fault_injection.py                                  # 12 trials, JSON summary on stdout
    python training/fault_injection.py --trials 4 --seed 1 --work_dir /tmp/faults --keep

Each trial launches `accelerate launch training/train.py` (tiny model, generated images, a checkpoint every 2 updates,
`--checkpoints_total_limit 2`) for one stage on one or two processes and SIGKILLs the process tree at a random moment:
`step`, just after an odd update (no checkpoint) was logged, or `save`, inside a save. A `save` trial trains through
this script (`--train-with-save-pause SECONDS <train.py arguments>`): `install_save_pause` pauses every save once the
models are written and again before the rename, so the kill finds `.tmp-checkpoint-<n>` half written, complete but
not renamed, or just renamed (production code has no pause).

The resume (`--resume_from_checkpoint latest`) must start from the newest complete checkpoint, lose or change no
checkpoint but those pruned after newer ones, reach `--max_train_steps` without `.tmp-*` / `.trash-*` leftovers, and
end with the weights of an uninterrupted run, bit for bit. The JSON summary (stdout, `--output`) lists every trial;
the exit code is 1 if any trial failed. `--fsdp_trials` (default 2) adds 2-process prior trials with `--sharding fsdp`
(sharded DCP checkpoints; a third pause before the shards are written; the consolidated final model is compared).
"""

import argparse
import contextlib
import functools
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import torch
from accelerate.utils import write_basic_config
from PIL import Image

from glotok_hf import GloTokConfig, GloTokModel
from glotok_hf.codes import extract_codes
from glotok_hf.data import load_image_dataset
from glotok_hf.training import checkpointing
from glotok_hf.training.checkpointing import TMP_PREFIX, checkpoint_step, list_checkpoints
from glotok_hf.training.tracking import METRICS_FILE, read_metrics

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAIN_SCRIPT = REPO_ROOT / "training" / "train.py"
SAVE_PAUSE_FLAG = "--train-with-save-pause"  # run training with paused saves (see `install_save_pause`)

STAGES = ("tokenizer", "prior")
PHASES = ("step", "save")
TINY_TOKENIZER = {
    "block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4, "latent_channels": 8,
    "adapter_depth": 1, "adapter_num_heads": 2, "semantic_codebook_size": 12, "visual_codebook_size": 16,
    "codebook_dim": 4, "residual_hidden_size": 8, "residual_num_heads": 2, "sample_size": 16,
}  # fmt: skip
TINY_DISCRIMINATOR = {"base_channels": 4, "num_layers": 2, "norm_type": "group", "norm_num_groups": 2}
TINY_PRIOR = {"num_hidden_layers": 2, "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2,
              "num_key_value_heads": 2}  # fmt: skip
CHECKPOINTING_STEPS, TOTAL_LIMIT = 2, 2
TIMEOUT = 300.0  # seconds a run may take


@dataclass(eq=False)  # hashed by identity: `reference` caches per setup
class Setup:
    """What the trials share: `root` (generated images/, a tiny tokenizer/ and its codes/), accelerate configs per
    process count and the runs' environment."""

    root: Path
    configs: dict[int, Path]
    env: dict[str, str]
    max_train_steps: int = 12
    save_pause: float = 0.6


def make_images(root: Path, per_class: int = 8, classes=("cat", "dog"), size: int = 20, seed: int = 0) -> Path:
    """A tiny imagefolder of smooth random RGB images, one sub-folder per class."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
            image.resize((size, size), Image.Resampling.BICUBIC).save(folder / f"{c}_{i:03d}.png")
    return root


def accelerate_config(path: Path, num_processes: int) -> Path:
    """A local accelerate config; 2 processes use the torchrun path on CPU (gloo), which needs no MPI."""
    write_basic_config(mixed_precision="no", save_location=str(path))
    config = json.loads(path.read_text())
    multi = num_processes > 1
    config.update({"num_processes": num_processes, "num_machines": 1, "machine_rank": 0, "gpu_ids": "all",
                   "distributed_type": "MULTI_GPU" if multi else "NO", "use_cpu": not multi})  # fmt: skip
    path.write_text(json.dumps(config))
    return path


def save_tiny_tokenizer(folder: Path, seed: int = 0) -> Path:
    """The tiny GloTok of the trials (random weights), saved with `save_pretrained`."""
    torch.manual_seed(seed)
    GloTokModel(GloTokConfig(**TINY_TOKENIZER)).save_pretrained(folder)
    return folder


def extract_tiny_codes(tokenizer_dir: Path, images_dir: Path, output_dir: Path) -> Path:
    """Codes of an imagefolder at 16x16 (8x8 grid), as `glotok extract-codes` writes them."""
    model = GloTokModel.from_pretrained(tokenizer_dir)
    extract_codes(model, load_image_dataset(train_data_dir=images_dir), output_dir, resolution=16, progress=False)
    return output_dir


def prepare(root: Path, max_train_steps: int = 12, save_pause: float = 0.6, processes=(1, 2)) -> Setup:
    images, tokenizer = make_images(root / "images"), save_tiny_tokenizer(root / "tokenizer")
    if not (root / "codes").exists():
        extract_tiny_codes(tokenizer, images, root / "codes")
    configs = {n: accelerate_config(root / f"accelerate-{n}.json", n) for n in processes}
    env = {key: value for key, value in os.environ.items() if key != "HF_TOKEN"}
    env.update(
        OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TQDM_DISABLE="1"
    )
    return Setup(root, configs, env, max_train_steps=max_train_steps, save_pause=save_pause)


def train_argv(setup: Setup, stage: str, output_dir: Path, num_processes: int, sharding: str = "ddp") -> list[str]:
    """Arguments of a tiny run with the same global batch (4) on 1 or 2 processes (`fsdp`: sharded, without EMA)."""
    common = [
        "--stage", stage, "--output_dir", str(output_dir), "--train_batch_size", str(4 // num_processes),
        "--max_train_steps", str(setup.max_train_steps), "--checkpointing_steps", str(CHECKPOINTING_STEPS),
        "--checkpoints_total_limit", str(TOTAL_LIMIT), "--validation_steps", str(setup.max_train_steps),
        "--num_validation_images", "2", "--learning_rate", "1e-3", "--report_to", "none", "--seed", "0",
    ]  # fmt: skip
    common += ["--sharding", "fsdp"] if sharding == "fsdp" else ["--use_ema", "--ema_decay", "0.9"]
    if stage == "tokenizer":
        return common + [
            "--train_data_dir", str(setup.root / "images"), "--model_config", json.dumps(TINY_TOKENIZER),
            "--discriminator_config", json.dumps(TINY_DISCRIMINATOR), "--resolution", "16", "--disc_start", "4",
            "--perceptual_weight", "0", "--histogram_weight", "0", "--usage_window", "4", "--random_flip",
        ]  # fmt: skip
    return common + [
        "--codes_dir", str(setup.root / "codes"), "--tokenizer_name_or_path", str(setup.root / "tokenizer"),
        "--model_config", json.dumps(TINY_PRIOR), "--class_dropout_prob", "0.25",
    ]  # fmt: skip


def launch(config: Path, argv: list[str], env: dict, log: Path, script: Path = TRAIN_SCRIPT, pause=None):
    """Start `accelerate launch --config_file config script argv` on CPU in a new session, its output in `log`; with
    `pause`, train.py's run goes through this script with paused saves."""
    script = [str(Path(__file__).resolve()), SAVE_PAUSE_FLAG, str(pause)] if pause else [str(script)]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), *script, *argv]
    with log.open("w") as out:
        return subprocess.Popen(cmd, env={**env, "ACCELERATE_USE_CPU": "true"}, stdout=out, stderr=subprocess.STDOUT,
                                cwd=str(REPO_ROOT), start_new_session=True)  # fmt: skip


def run_to_end(config: Path, argv: list[str], env: dict, log: Path, script: Path = TRAIN_SCRIPT) -> None:
    """[`launch`] and wait; raises with the end of `log` if the run fails or takes over `TIMEOUT` seconds."""
    proc = launch(config, argv, env, log, script)
    try:
        code = proc.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        kill_tree(proc)
        raise RuntimeError(f"{log.parent.name}: the run did not finish in {TIMEOUT:.0f} s; see {log}") from None
    if code != 0:
        raise RuntimeError(f"{log.parent.name}: the run failed with exit code {code}:\n{log.read_text()[-3000:]}")


def install_save_pause(seconds: float) -> None:
    """Make every checkpoint save of `glotok_hf.training` pause `seconds` twice on the main process: once the models
    are written (before accelerate writes the optimizer, scheduler and RNG files) and once everything is written but
    not yet flushed and renamed."""
    save_hook, fsync_tree = checkpointing.CheckpointHooks.save_hook, checkpointing._fsync_tree

    def paused_save_hook(self, *args) -> None:
        save_hook(self, *args)
        if self.accelerator.is_main_process:
            time.sleep(seconds)

    def paused_fsync_tree(root: Path) -> None:
        time.sleep(seconds)
        fsync_tree(root)

    def paused_save_sharded(*args) -> None:  # --sharding fsdp: the shards are written between the two pauses
        time.sleep(seconds / 2)
        save_sharded(*args)

    save_sharded = checkpointing.save_sharded
    checkpointing.CheckpointHooks.save_hook = paused_save_hook
    checkpointing._fsync_tree = paused_fsync_tree
    checkpointing.save_sharded = paused_save_sharded


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the launcher and every descendant (torchrun runs each worker in a session of its own)."""
    with contextlib.suppress(psutil.NoSuchProcess):
        launcher = psutil.Process(proc.pid)
        for process in [*launcher.children(recursive=True), launcher]:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
    proc.wait()


def last_logged_step(output_dir: Path) -> int:
    return max((row["step"] for row in read_metrics(output_dir / "logs" / METRICS_FILE)), default=0)


def hashes(folder: Path, pattern: str = "*") -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob(pattern)) if p.is_file()}  # fmt: skip


def snapshot(output_dir: Path) -> dict[int, dict[str, str]]:
    """`{step: {relative file: sha256}}` of the complete checkpoints in `output_dir`."""
    return {checkpoint_step(checkpoint): hashes(checkpoint) for checkpoint in list_checkpoints(output_dir)}


def leftovers(output_dir: Path) -> list[Path]:
    return [p for p in sorted(output_dir.iterdir()) if p.name.startswith((".tmp-", ".trash-"))]


def final_weights(setup: Setup, out: Path, sharding: str) -> dict[str, str]:
    """Hashes of every safetensors file of the last checkpoint (model, EMA, discriminator); with `fsdp` (sharded
    checkpoints) of the consolidated final model."""
    if sharding == "fsdp":
        return hashes(out, "model.safetensors")
    return hashes(out / f"checkpoint-{setup.max_train_steps}", "*.safetensors")


@functools.cache
def reference(setup: Setup, stage: str, num_processes: int, sharding: str = "ddp") -> dict[str, str]:
    """The [`final_weights`] of an uninterrupted run, computed once per stage, process count and sharding."""
    out = setup.root / f"reference-{stage}-{num_processes}-{sharding}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    argv = train_argv(setup, stage, out, num_processes, sharding)
    run_to_end(setup.configs[num_processes], argv, setup.env, out / "run.log")
    return final_weights(setup, out, sharding)


def kill_at_random_moment(setup: Setup, proc, output_dir: Path, phase: str, rng: random.Random) -> dict:
    """Wait for a random moment of `phase`, kill the run, and describe the moment."""
    deadline = time.monotonic() + TIMEOUT
    if phase == "step":  # an update that saves no checkpoint (odd step), then a random time inside the next one
        target = rng.randrange(1, setup.max_train_steps - 2, 2)
        while last_logged_step(output_dir) < target and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, 0.05))  # a tiny update takes 30-100 ms on a CPU
        moment = {"after_logged_step": target}
    else:  # anywhere in the save's two pauses, or just after
        target = rng.choice(range(CHECKPOINTING_STEPS, setup.max_train_steps, CHECKPOINTING_STEPS))
        tmp = output_dir / f"{TMP_PREFIX}{target}"
        while not tmp.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, 2.2 * setup.save_pause))
        moment = {"during_save_of_step": target}
    if proc.poll() is not None:
        raise RuntimeError(f"the run ended (exit code {proc.returncode}) before the kill at {moment}")
    kill_tree(proc)
    moment["last_logged_step"] = last_logged_step(output_dir)
    moment["leftovers"] = {p.name: sorted(hashes(p)) for p in leftovers(output_dir)}
    return moment


def run_trial(setup: Setup, index: int, stage: str, phase: str, num_processes: int, seed: int, compare: bool = True,
              sharding: str = "ddp") -> dict:  # fmt: skip
    """One kill and resume; `compare=False` skips the comparison with an uninterrupted run (two launches fewer)."""
    rng = random.Random(seed)
    out = setup.root / f"trial-{index:02d}-{stage}-{phase}-{num_processes}p-{sharding}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    result = {"trial": index, "stage": stage, "processes": num_processes, "sharding": sharding, "kill_phase": phase}
    started = time.monotonic()
    try:
        argv, config = train_argv(setup, stage, out, num_processes, sharding), setup.configs[num_processes]
        proc = launch(config, argv, setup.env, out / "killed.log", pause=setup.save_pause if phase == "save" else None)
        result["killed"] = kill_at_random_moment(setup, proc, out, phase, rng)
        before = snapshot(out)
        result["complete_at_kill"] = sorted(before)
        run_to_end(config, [*argv, "--resume_from_checkpoint", "latest"], setup.env, out / "resumed.log")
        match = re.search(r"Resuming from (\S+)", (out / "resumed.log").read_text())
        result["resumed_from"] = resumed_from = checkpoint_step(Path(match.group(1))) if match else None
        after = snapshot(out)
        result["complete_after_resume"] = sorted(after)
        lost = [s for s in before if s not in after and sum(t > s for t in after) < TOTAL_LIMIT]
        changed = [s for s in before if s in after and after[s] != before[s]]
        result["pruned_after_resume"] = sorted(s for s in before if s not in after and s not in lost)
        result["checks"] = checks = {
            "resumed_from_newest_complete": resumed_from == max(before, default=None),
            "nothing_saved_was_lost": not lost and not changed,
            "reached_max_train_steps": setup.max_train_steps in after and (out / "model.safetensors").is_file(),
            "no_leftovers": not leftovers(out),
        }
        if compare:
            weights = final_weights(setup, out, sharding)
            checks["final_weights_equal_uninterrupted_run"] = weights == reference(
                setup, stage, num_processes, sharding
            )
        failed = [name for name, ok in checks.items() if not ok]
        details = {"lost": lost, "changed": changed} if lost or changed else {}
        result["outcome"] = "ok" if not failed else f"FAILED: {', '.join(failed)} {details}".strip()
    except Exception as err:  # report the trial, go on with the others
        result["outcome"] = f"FAILED: {type(err).__name__}: {err}"
    result["seconds"] = round(time.monotonic() - started, 1)
    return result


def trial_plan(trials: int, two_process_trials: int, fsdp_trials: int = 0) -> list[tuple]:
    """(stage, phase, processes[, sharding]) for every trial: stages and phases alternate; the last trials use 2
    processes; then `fsdp_trials` 2-process prior trials with `--sharding fsdp`, phases alternating from `save`."""
    two_from = trials - two_process_trials
    plan = [(STAGES[i % 2], PHASES[(i // 2) % 2], 2 if i >= two_from else 1) for i in range(trials)]
    return plan + [("prior", PHASES[1 - i % 2], 2, "fsdp") for i in range(fsdp_trials)]


def run_trials(setup: Setup, trials: int = 12, two_process_trials: int = 2, seed: int = 0, compare: bool = True,
               plan=None, fsdp_trials: int = 0) -> dict:  # fmt: skip
    """Run the trials of `plan` (default [`trial_plan`]) and summarise them."""
    started = time.monotonic()
    plan = plan or trial_plan(trials, two_process_trials, fsdp_trials)
    results = [run_trial(setup, i, *trial[:3], seed * 1000 + i, compare, *trial[3:]) for i, trial in enumerate(plan)]
    return {
        "trials": len(results),
        "passed": sum(r["outcome"] == "ok" for r in results),
        "failed": sum(r["outcome"] != "ok" for r in results),
        **{f"kills_during_{phase}s": sum(r["kill_phase"] == phase for r in results) for phase in PHASES},
        "partial_checkpoints_left_by_kills": sum(bool(r.get("killed", {}).get("leftovers")) for r in results),
        "max_train_steps": setup.max_train_steps,
        "checkpointing_steps": CHECKPOINTING_STEPS,
        "checkpoints_total_limit": TOTAL_LIMIT,
        "seconds": round(time.monotonic() - started, 1),
        "results": results,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=12, help="number of trials (default 12)")
    parser.add_argument("--two_process_trials", type=int, default=2, help="how many of them run on 2 processes")
    parser.add_argument(
        "--fsdp_trials", type=int, default=2, help="2-process prior trials with --sharding fsdp, added"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--max_train_steps", type=int, default=12)
    parser.add_argument("--work_dir", default=None, help="where the runs go (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--output", default=None, help="also write the JSON summary to this file")
    args = parser.parse_args(argv)
    if args.trials < 1 or not 0 <= args.two_process_trials <= args.trials:
        parser.error("--trials must be >= 1 and --two_process_trials in [0, trials]")
    root = Path(args.work_dir or tempfile.mkdtemp(prefix="glotok-faults-"))
    processes = (1, 2) if args.two_process_trials or args.fsdp_trials else (1,)
    try:
        setup = prepare(root, max_train_steps=args.max_train_steps, processes=processes)
        summary = run_trials(setup, args.trials, args.two_process_trials, args.seed, fsdp_trials=args.fsdp_trials)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    text = json.dumps(summary, indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")
    return 0 if summary["failed"] == 0 else 1


if __name__ == "__main__":
    if sys.argv[1:2] == [SAVE_PAUSE_FLAG]:  # launched by `launch` for a `save` trial
        install_save_pause(float(sys.argv[2]))
        from glotok_hf.training import main as train

        train(sys.argv[3:])
        sys.exit(0)
    sys.exit(main())
