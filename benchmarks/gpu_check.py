# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""The GPU check of issue 17: what the first GPU run has to show, in one JSON file and a short table.

    bash benchmarks/gpu_check.sh             # on a GPU machine (installs what is missing, then runs this file)
    python benchmarks/gpu_check.py --dry-run # the same code on CPU, every size shrunk (tests/test_gpu_check.py)

Sections (one function each; each catches its own failure, records it and the next section runs):

- `cuda_tests`: `pytest -k cuda` (the CUDA-gated tests and any test module or test named for CUDA);
- `histogram`: the soft cosine histogram at 4,096 and 16,384 codes, CUDA fp32 against CPU fp64 (value and gradient,
  rtol 1e-4) with TF32 off and on (`torch.backends.cuda.matmul.allow_tf32`, what `--allow_tf32` sets), time, peak
  memory, host syncs;
- `tokenizer_update`: one update of the paper's tokenizer recipe (256 px, batch 30, bf16, BatchNorm discriminator
  active, LPIPS with random weights, a uniform teacher) through the training stage's own code: time, images/s, MFU from
  counted FLOPs, peak memory, host syncs and where they happen; again with gradient checkpointing and channels-last;
- `train_script`: `accelerate launch training/train.py`, one process with a process group (NCCL on GPU, gloo on CPU),
  bf16, histogram, LPIPS, BatchNorm discriminator: half the steps, then resumed to 4 steps;
- `sampling`: images/s of a random GPT-B prior on the ImageNet layout (12,288 + 4,096 codes, 1,000 classes, 16x16
  grid), batch 32 and 256, fp32 and bf16, dynamic vs static cache, static cache + `torch.compile`, and transformers'
  `generate(guidance_scale=...)`;
- `factorized_prior`: images/s of a random FAR prior (GPT-B backbone, 3 head layers) on the same layout, batch 32 and
  256, bf16 and fp32, dynamic vs static cache;
- `fsdp`: with two GPUs, `--sharding fsdp` prior runs on 2 processes (NCCL, bf16): half the steps, resumed from the
  sharded checkpoint, the consolidated final folder loaded; skipped with its reason otherwise;
- `decode_fp16`: decoding in float16 (the paper-size tokenizer with random weights and the embedded digits
  tokenizer): finite or not, and the difference to fp32.

Host syncs are counted on CUDA with `torch.cuda.set_sync_debug_mode("warn")` (one warning per synchronising call,
attributed to the innermost line of `src/` or `training/`); on CPU (dry run) the calls made by those lines that would
synchronise on CUDA (`item()`, `nonzero`, `bincount`, ...) are counted instead. Timings synchronise the device around
each call. Every section has a time budget inside the whole check's (`--budget`, 8 minutes counted from the start of
gpu_check.sh, install included); what no longer fits is recorded as skipped. The exit status is 1 when a section
failed (raised, ran past its budget, or one of its `checks` is false), else 0.
"""

import argparse
import contextlib
import copy
import datetime
import functools
import gc
import importlib.metadata
import json
import math
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = "glotok-gpu-check/1"
PROJECT_DIRS = (str(ROOT / "src") + os.sep, str(ROOT / "training") + os.sep)

# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's data sheets, in TFLOP/s; first matching name fragment wins.
PEAK_BF16_TFLOPS = (
    ("H200", 989.4),
    ("H100 NVL", 835.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.4),
    ("A100", 312.0),
    ("L40S", 362.1),
    ("L4", 121.0),
)

# What each run measures. The dry run keeps every code path and shrinks every size.
FULL = dict(
    test_paths=["tests"],
    histogram_codes=(4096, 16384),
    warmup=2,
    repeats=3,
    resolution=256,
    batch=30,
    model_config=None,
    discriminator_config=None,
    train_steps=4,
    train_batch=8,
    prior_overrides={},
    num_classes=1000,
    num_positions=None,
    sampling_batches=(32, 256),
    compile_backend="inductor",
    decode_batch=4,
    budgets=dict(
        cuda_tests=150,
        histogram=90,
        tokenizer_update=150,
        train_script=150,
        sampling=240,
        factorized_prior=90,
        fsdp=150,
        decode_fp16=60,
    ),
)
TINY_TOKENIZER = dict(
    block_out_channels=[8, 16],
    layers_per_block=1,
    norm_num_groups=4,
    latent_channels=8,
    adapter_depth=1,
    adapter_num_heads=2,
    semantic_codebook_size=12,
    visual_codebook_size=16,
    codebook_dim=4,
    residual_hidden_size=8,
    residual_num_heads=2,
    sample_size=16,
)
DRY = dict(
    FULL,
    test_paths=["tests/test_pipeline_glotok.py"],
    histogram_codes=(64, 256),
    warmup=0,
    repeats=1,
    resolution=16,
    batch=2,
    model_config=TINY_TOKENIZER,
    discriminator_config={"base_channels": 8, "num_layers": 2},
    train_steps=2,
    train_batch=2,
    prior_overrides=dict(num_hidden_layers=2, hidden_size=64),
    num_classes=10,
    num_positions=4,
    sampling_batches=(2,),
    compile_backend="eager",
    decode_batch=2,
    budgets={name: 120 for name in FULL["budgets"]},
)


class Skip(Exception):
    """A section that cannot run here, with the reason."""


class SectionTimeout(Exception):
    """A section ran past its time budget."""


@dataclass
class Context:
    dry_run: bool
    device: torch.device
    workdir: Path
    deadline: float  # time.monotonic() at which the whole check must end
    sizes: dict = field(default_factory=dict)
    section_deadline: float = math.inf  # and the running section
    _files: dict = field(default_factory=dict)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def left(self) -> float:
        """Seconds left to the running section (its budget, within the whole check's)."""
        return min(self.deadline, self.section_deadline) - time.monotonic()

    def env(self, **extra) -> dict:
        """Environment of the subprocesses: this checkout's sources first, offline, no progress bars."""
        path = os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))
        return {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", **extra}


# ----------------------------------------------------------------------------------------------------------- helpers
def synchronize(ctx: Context) -> None:
    if ctx.cuda:
        torch.cuda.synchronize()


def timed(ctx: Context, fn) -> tuple[float, object]:
    """(seconds, result) of `fn()`, the device synchronised before and after."""
    synchronize(ctx)
    start = time.perf_counter()
    result = fn()
    synchronize(ctx)
    return time.perf_counter() - start, result


def reset_peak(ctx: Context) -> None:
    if ctx.cuda:
        torch.cuda.reset_peak_memory_stats()


def peak_mib(ctx: Context) -> float | None:
    """`torch.cuda.max_memory_allocated` since the last `reset_peak`, in MiB (None on CPU)."""
    return round(torch.cuda.max_memory_allocated() / 2**20, 1) if ctx.cuda else None


def release_memory(ctx: Context) -> None:
    gc.collect()
    if ctx.cuda:
        torch.cuda.empty_cache()


def peak_tflops(device_name: str) -> float | None:
    return next((peak for key, peak in PEAK_BF16_TFLOPS if key in device_name), None)


def project_site(filename: str, lineno: int) -> str:
    """The innermost line of the project's `src/` or `training/` on the current stack (else the given location)."""
    for frame in reversed(traceback.extract_stack()):
        if frame.filename.startswith(PROJECT_DIRS):
            return f"{Path(frame.filename).relative_to(ROOT)}:{frame.lineno}"
    return f"{filename.split('site-packages' + os.sep)[-1]}:{lineno}"


class _CpuSyncCounter(TorchDispatchMode):
    """Counts the calls made by the project's own lines (`src/`, `training/`) that synchronise the host with a CUDA
    device (`item()`, `float(t)`, `bool(t)`, boolean-mask indexing, `bincount`, ...). Calls made inside torch or other
    libraries are left out: on CPU they include conversions that never happen on CUDA (e.g. 0-d tensor operands)."""

    OPS = {"_local_scalar_dense", "nonzero", "bincount", "masked_select", "unique", "_unique2", "unique_consecutive"}
    PLUMBING = (
        __file__,
        "/torch/_ops.py",
        "/torch/_compile.py",
        "/torch/utils/_python_dispatch.py",
        "/torch/_dynamo/eval_frame.py",
    )  # frames between the caller and this mode

    def __init__(self, sites: Counter):
        super().__init__()
        self.sites = sites

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ in self.OPS:
            caller = next(f for f in reversed(traceback.extract_stack()) if not f.filename.endswith(self.PLUMBING))
            if caller.filename.startswith(PROJECT_DIRS):
                self.sites[f"{Path(caller.filename).relative_to(ROOT)}:{caller.lineno}"] += 1
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def count_syncs(ctx: Context):
    """Yields a `Counter` of host-sync sites filled while the block runs (see the module docstring)."""
    sites = Counter()
    if not ctx.cuda:
        with _CpuSyncCounter(sites):
            yield sites
        return
    torch.cuda.synchronize()
    with warnings.catch_warnings():
        warnings.filterwarnings("always", message=".*synchroniz")
        show = warnings.showwarning

        def record(message, category, filename, lineno, file=None, line=None):
            if "synchroniz" in str(message):
                sites[project_site(filename, lineno)] += 1
            else:
                show(message, category, filename, lineno, file, line)

        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield sites
        finally:
            torch.cuda.set_sync_debug_mode(0)
            torch.cuda.synchronize()


def sync_summary(ctx: Context, sites: Counter) -> dict:
    method = "torch.cuda.set_sync_debug_mode('warn')" if ctx.cuda else "CPU proxy: sync calls made by src/, training/"
    return {"syncs": sum(sites.values()), "sync_method": method, "sync_sites": dict(sites.most_common(15))}


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise `SectionTimeout` in the main thread after `seconds` (subprocesses are killed by `run_command`)."""

    def stop(signum, frame):
        raise SectionTimeout(f"stopped after its time budget of {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_command(ctx: Context, command: list, log: Path, env: dict | None = None) -> tuple[int, float]:
    """Run `command` in its own process group with its output in `log`; the whole group is killed if the section
    stops (time budget) or the check's time runs out. Returns (exit status, seconds)."""
    start = time.perf_counter()
    with log.open("w") as out:
        process = subprocess.Popen(
            [str(c) for c in command],
            cwd=ROOT,
            env=env or ctx.env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            return process.wait(timeout=max(1.0, ctx.left())), time.perf_counter() - start
        except BaseException:  # out of time, or the section's budget (SectionTimeout)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise


def log_tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.is_file() else ""


def write_images(folder: Path, count: int, size: int, seed: int = 0) -> Path:
    """`count` smooth random RGB PNGs in two class folders (an imagefolder)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(count):
        (folder / f"class{i % 2}").mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 256, (max(2, size // 8),) * 2 + (3,), dtype=np.uint8)
        Image.fromarray(small).resize((size, size), Image.BILINEAR).save(folder / f"class{i % 2}" / f"{i}.png")
    return folder


def loss_files(ctx: Context) -> dict[str, Path]:
    """LPIPS weights (random, heads made non-negative) and a uniform teacher histogram, written once."""
    if not ctx._files:
        from safetensors.torch import save_file

        from glotok_hf.losses.lpips import LPIPS
        from glotok_hf.teacher import uniform_teacher

        torch.manual_seed(0)
        weights = {k: v.abs() if k.startswith("heads.") else v for k, v in LPIPS().state_dict().items()}
        save_file(weights, ctx.workdir / "lpips_vgg16.safetensors")
        uniform_teacher(40).save(ctx.workdir / "uniform_teacher.safetensors", overwrite=True)
        ctx._files = {
            "lpips": ctx.workdir / "lpips_vgg16.safetensors",
            "teacher": ctx.workdir / "uniform_teacher.safetensors",
        }
    return ctx._files


def tokenizer_argv(ctx: Context, images: Path, output_dir: Path, batch: int, **extra) -> list[str]:
    """train.py arguments: the paper's tokenizer recipe with LPIPS, the teacher and the discriminator from step 0
    (`extra`: more options)."""
    files = loss_files(ctx)
    options = {
        "config": ROOT / "training/recipes/glotok_imagenet256.json",
        "train_data_dir": images,
        "output_dir": output_dir,
        "report_to": "none",
        "perceptual_model_path": files["lpips"],
        "teacher_histogram": files["teacher"],
        "disc_start": 0,
        "train_batch_size": batch,
        "resolution": ctx.sizes["resolution"],
        "mixed_precision": "bf16",
        **extra,
    }
    argv = [item for name, value in options.items() for item in (f"--{name}", value)]
    if ctx.sizes["model_config"]:
        argv += ["--model_config", json.dumps(ctx.sizes["model_config"])]
        argv += ["--discriminator_config", json.dumps(ctx.sizes["discriminator_config"])]
    if ctx.dry_run:
        argv += ["--dataloader_num_workers", "0"]
    return [str(a) for a in argv]


def reset_accelerate() -> None:
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()


# ---------------------------------------------------------------------------------------------------------- sections
def section_cuda_tests(ctx: Context, out: dict) -> None:
    """`pytest -k cuda`: every test gated on CUDA carries `cuda` in its name (or its module's)."""
    xml, log = ctx.workdir / "cuda_tests.xml", ctx.workdir / "cuda_tests.log"
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-k",
        "cuda",
        "-q",
        "-p",
        "no:cacheprovider",
        "-rs",
        f"--junitxml={xml}",
    ]
    command += ctx.sizes["test_paths"]
    rc, seconds = run_command(ctx, command, log)
    cases = ET.parse(xml).getroot().iter("testcase") if xml.is_file() else []
    outcome = {}
    for case in cases:
        name = f"{case.get('classname')}::{case.get('name')}"
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        outcome[name] = kinds[0] if kinds else "passed"
        if kinds == ["skipped"]:
            outcome[name] = "skipped: " + (case.find("skipped").get("message") or "")
    counts = Counter(v.split(":")[0] for v in outcome.values())
    out.update(
        command=" ".join(map(str, command[1:])),
        exit_status=rc,
        seconds_pytest=round(seconds, 1),
        passed=counts["passed"],
        failed=counts["failure"] + counts["error"],
        skipped=counts["skipped"],
        tests={k: v for k, v in outcome.items() if v != "passed"},
    )
    out["checks"] = {"pytest_exit_ok": rc in (0, 5), "no_failures": out["failed"] == 0}
    if ctx.cuda:
        out["checks"]["some_ran_on_cuda"] = out["passed"] > 0
    if rc not in (0, 5):
        out["log_tail"] = log_tail(log)
    out["summary"] = f"{out['passed']} passed, {out['failed']} failed, {out['skipped']} skipped"


def _histogram_value_and_grad(vectors: torch.Tensor, weights: torch.Tensor):
    from glotok_hf.losses.histogram import soft_cosine_histogram

    leaf = vectors.detach().clone().requires_grad_(True)
    histogram = soft_cosine_histogram(leaf)
    (histogram * weights).sum().backward()
    return histogram.detach(), leaf.grad


@contextlib.contextmanager
def tf32_matmul(enabled: bool):
    """What train.py's `--allow_tf32` sets (`torch.backends.cuda.matmul.allow_tf32`), restored afterwards."""
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


def section_histogram(ctx: Context, out: dict) -> None:
    """Soft cosine histogram: device fp32 (TF32 off / on) against CPU fp64, time, peak memory, syncs."""
    worst = {}
    for n in ctx.sizes["histogram_codes"]:
        generator = torch.Generator().manual_seed(n)
        vectors, weights = torch.randn(n, 8, generator=generator), torch.randn(40, generator=generator)
        start = time.perf_counter()
        ref_value, ref_grad = _histogram_value_and_grad(vectors.double(), weights.double())
        case = out[f"codes_{n}"] = {
            "pairs": n * (n + 1) // 2,
            "cpu_fp64_seconds": round(time.perf_counter() - start, 3),
        }
        x, w = vectors.to(ctx.device), weights.to(ctx.device)
        for tf32 in (False, True):
            with tf32_matmul(tf32):
                value, grad = _histogram_value_and_grad(x, w)  # also the warm-up
                reset_peak(ctx)
                times = [
                    timed(ctx, lambda x=x, w=w: _histogram_value_and_grad(x, w))[0]
                    for _ in range(ctx.sizes["repeats"])
                ]
                memory = peak_mib(ctx)
                with count_syncs(ctx) as sites:
                    _histogram_value_and_grad(x, w)
            errors = {
                "value": float((value.cpu().double() - ref_value).abs().max() / ref_value.abs().max()),
                "gradient": float((grad.cpu().double() - ref_grad).abs().max() / ref_grad.abs().max()),
            }
            name = "tf32_on" if tf32 else "tf32_off"
            case[name] = {
                "forward_backward_seconds": round(statistics.median(times), 4),
                "peak_memory_mib": memory,
                "max_error_over_max_reference": errors,
                **sync_summary(ctx, sites),
            }
            for kind, error in errors.items():
                out.setdefault("checks", {})[f"{n}_{name}_{kind}_rtol_1e-4"] = error <= 1e-4
                worst[name] = max(worst.get(name, 0.0), error)
    if not ctx.cuda:
        out["note"] = "CPU: TF32 does not apply, both rows are plain fp32"
    largest = out[f"codes_{ctx.sizes['histogram_codes'][-1]}"]["tf32_off"]
    out["summary"] = (
        f"{ctx.sizes['histogram_codes'][-1]} codes: {largest['forward_backward_seconds']} s, "
        f"{largest['syncs']} syncs; max rel err {worst['tf32_off']:.1e} (TF32 on: {worst['tf32_on']:.1e})"
    )


def _measure_update(ctx: Context, argv: list[str], channels_last: bool, flops_reference: float | None) -> dict:
    """One tokenizer update (forward_backward + update of the training stage) timed, profiled and FLOP-counted."""
    from glotok_hf.training import build_stage, parse_args
    from glotok_hf.training.runtime import build_accelerator

    reset_accelerate()
    args = parse_args(argv)
    accelerator = build_accelerator(args)
    stage = build_stage(args, accelerator)
    batch = next(iter(stage.loader))
    if channels_last:
        for module in (*stage.accumulate_models, getattr(stage, "objective", None)):
            if module is not None:
                module.to(memory_format=torch.channels_last)
        batch["pixel_values"] = batch["pixel_values"].contiguous(memory_format=torch.channels_last)
    steps = iter(range(10**6))

    def update():
        with accelerator.accumulate(*stage.accumulate_models):
            stage.forward_backward(batch, next(steps))
        stage.update()

    for _ in range(ctx.sizes["warmup"]):
        update()
    reset_peak(ctx)
    times = [timed(ctx, update)[0] for _ in range(ctx.sizes["repeats"])]
    memory = peak_mib(ctx)
    with FlopCounterMode(display=False) as counter, count_syncs(ctx) as sites:  # the sync counter sees calls first
        update()
    seconds, flops = statistics.median(times), counter.get_total_flops()
    model_flops = flops_reference or flops  # recomputation (checkpointing) is not useful work
    peak = peak_tflops(torch.cuda.get_device_name()) if ctx.cuda else None
    record = {
        "tokenizer_parameters": sum(p.numel() for p in stage.accumulate_models[0].parameters()),
        "discriminator_norm": getattr(getattr(stage.accumulate_models[-1], "config", None), "norm_type", None),
        "batch": len(batch["pixel_values"]),
        "resolution": args.resolution,
        "update_seconds": round(seconds, 4),
        "images_per_second": round(len(batch["pixel_values"]) / seconds, 2),
        "counted_tflops_per_update": round(flops / 1e12, 4),
        "mfu": round(model_flops / seconds / (peak * 1e12), 4) if peak else None,
        "peak_memory_mib": memory,
        **sync_summary(ctx, sites),
    }
    return record


def section_tokenizer_update(ctx: Context, out: dict) -> None:
    """The paper's tokenizer update, plain, with gradient checkpointing and with channels-last."""
    batch, size = ctx.sizes["batch"], ctx.sizes["resolution"]
    images = write_images(ctx.workdir / "tokenizer_images", batch, size)
    argv = tokenizer_argv(ctx, images, ctx.workdir / "tokenizer_run", batch)
    out["peak_bf16_tflops"] = peak_tflops(torch.cuda.get_device_name()) if ctx.cuda else None
    reference = None
    for variant, extra in (
        ("plain", []),
        ("gradient_checkpointing", ["--gradient_checkpointing"]),
        ("channels_last", []),
    ):
        if ctx.cuda and ctx.left() < 45:
            out[variant] = {"skipped": "not enough time left in the section's budget"}
            continue
        out[variant] = _measure_update(ctx, argv + extra, variant == "channels_last", reference)
        reset_accelerate()
        release_memory(ctx)
        reference = reference or out[variant]["counted_tflops_per_update"] * 1e12
    plain = out["plain"]
    if "images_per_second" in plain:
        mfu = f", MFU {plain['mfu']:.1%}" if plain["mfu"] else ""
        out["summary"] = (
            f"{plain['images_per_second']} img/s{mfu}, {plain['peak_memory_mib']} MiB, {plain['syncs']} syncs"
        )


def _accelerate_config(ctx: Context, path: Path) -> Path:
    from accelerate.utils import write_basic_config

    write_basic_config(mixed_precision="bf16", save_location=str(path))
    config = json.loads(path.read_text())
    # One process with a process group: torchrun (MULTI_GPU, NCCL) on GPU; on CPU, gloo via the rank variables.
    config.update(
        num_processes=1,
        num_machines=1,
        machine_rank=0,
        gpu_ids="all",
        use_cpu=not ctx.cuda,
        distributed_type="MULTI_GPU" if ctx.cuda else "MULTI_CPU",
        main_process_port=_free_port(),
    )
    path.write_text(json.dumps(config))
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def section_train_script(ctx: Context, out: dict) -> None:
    """`accelerate launch training/train.py`: half the steps, then `--resume_from_checkpoint latest` to the end."""
    total, batch = ctx.sizes["train_steps"], ctx.sizes["train_batch"]
    images = write_images(ctx.workdir / "train_images", batch * total, ctx.sizes["resolution"], seed=1)
    output_dir = ctx.workdir / "train_run"
    config = _accelerate_config(ctx, ctx.workdir / "accelerate.json")
    env = ctx.env()
    if not ctx.cuda:
        env.update(
            LOCAL_RANK="0",
            RANK="0",
            WORLD_SIZE="1",
            LOCAL_WORLD_SIZE="1",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(_free_port()),
        )
    half = total // 2
    argv = tokenizer_argv(
        ctx,
        images,
        output_dir,
        batch,
        checkpointing_steps=half,
        validation_steps=half,
        num_validation_images=2,
        usage_window=2,
    )
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", config, ROOT / "training/train.py"]
    for run, extra in (
        ("first", ["--max_train_steps", str(half)]),
        ("resumed", ["--max_train_steps", str(total), "--resume_from_checkpoint", "latest"]),
    ):
        log = ctx.workdir / f"train_{run}.log"
        rc, seconds = run_command(ctx, launch + argv + extra, log, env)
        text = log.read_text(errors="replace")
        found = re.search(r"Distributed environment: (\S+)\s+Backend: (\S+)", text)
        out[run] = {
            "exit_status": rc,
            "seconds": round(seconds, 1),
            "distributed_type": found and found[1],
            "backend": found and found[2],
        }
        if rc != 0:
            out[run]["log_tail"] = log_tail(log)
            raise RuntimeError(f"the {run} run exited with status {rc} (log_tail in the JSON)")
    rows = [json.loads(line) for line in (output_dir / "logs/metrics.jsonl").read_text().splitlines() if line.strip()]
    losses = {k: v for k, v in rows[-1].items() if "loss" in k}
    expected_backend = "nccl" if ctx.cuda else "gloo"
    out.update(last_logged_losses=losses, checkpoints=sorted(p.name for p in output_dir.glob("checkpoint-*")))
    out["checks"] = {
        "logged_steps_1_to_n": [row["step"] for row in rows] == list(range(1, total + 1)),
        "losses_finite": all(
            math.isfinite(v) for row in rows for k, v in row.items() if "loss" in k and v is not None
        ),
        "discriminator_histogram_lpips_logged": all(
            k in losses for k in ("discriminator/loss", "generator/histogram_loss", "generator/perceptual_loss")
        ),
        f"backend_{expected_backend}": all(out[run]["backend"] == expected_backend for run in ("first", "resumed")),
        "final_model_saved": (output_dir / "config.json").is_file(),
        "batchnorm_discriminator": json.loads((output_dir / "discriminator/config.json").read_text())["norm_type"]
        == "batch",
        "resumed_from_checkpoint": bool(
            re.search(
                rf"Resuming from \S*checkpoint-{half}\b",
                (ctx.workdir / "train_resumed.log").read_text(errors="replace"),
            )
        ),
    }
    out["summary"] = (
        f"{total} steps ({out['first']['backend']}), {out['first']['seconds']} s + resumed "
        f"{out['resumed']['seconds']} s"
    )


def _generate_with_cfg(prior, layout, labels, num_positions: int, guidance_scale: float):
    """transformers' own CFG: `generate(guidance_scale=s, negative_prompt_ids=null class)` with the step's id range
    enforced by a logits processor."""
    from transformers import LogitsProcessor, LogitsProcessorList

    class AllowedRange(LogitsProcessor):
        def __call__(self, input_ids, scores):
            lo, hi = layout.allowed_range(input_ids.shape[1] - 1)
            masked = torch.full_like(scores, float("-inf"))
            masked[:, lo:hi] = scores[:, lo:hi]
            return masked

    class_ids = layout.class_token_ids(labels)[:, None]
    steps = layout.num_image_tokens(num_positions)
    torch.manual_seed(0)
    return prior.generate(
        input_ids=class_ids,
        attention_mask=torch.ones_like(class_ids),
        guidance_scale=guidance_scale,
        negative_prompt_ids=torch.full_like(class_ids, layout.null_class_id),
        do_sample=True,
        top_k=0,
        top_p=1.0,
        temperature=1.0,
        max_new_tokens=steps,
        min_new_tokens=steps,
        logits_processor=LogitsProcessorList([AllowedRange()]),
    )[:, 1:]


def section_sampling(ctx: Context, out: dict) -> None:
    """Images/s of a random GPT-B prior on the ImageNet layout (guidance 2.0, one generator per image)."""
    from glotok_hf import GloTokConfig
    from glotok_hf.prior import build_prior, layout_from_configs, prior_config

    tokenizer = GloTokConfig(**(ctx.sizes["model_config"] or {}))
    positions = ctx.sizes["num_positions"] or tokenizer.latent_grid_size**2
    config = prior_config(
        "B", tokenizer, ctx.sizes["num_classes"], num_positions=positions, **ctx.sizes["prior_overrides"]
    )
    layout = layout_from_configs(tokenizer, config)
    out["setup"] = {
        "prior": "GPT-B" if not ctx.dry_run else "GPT-B shrunk",
        "vocab_size": layout.vocab_size,
        "image_tokens": layout.num_image_tokens(positions),
        "guidance_scale": 2.0,
    }
    torch.manual_seed(0)
    base = build_prior(config).eval()
    out["setup"]["parameters"] = sum(p.numel() for p in base.parameters())
    # the most telling first: each case runs only if it still fits in the section's time
    order = (
        ("dynamic", "bf16"),
        ("static", "bf16"),
        ("generate", "bf16"),
        ("dynamic", "fp32"),
        ("static", "fp32"),
        ("static_compiled", "bf16"),
        ("generate", "fp32"),
    )
    _time_sampling(ctx, out, base, layout, positions, order)


def _time_sampling(ctx: Context, out: dict, base, layout, positions: int, order) -> None:
    """Time `sample_image_tokens` (or `generate`) for every (method, dtype) of `order` and batch size: `out["cases"]`,
    `out["summary"]` and `out["checks"]`."""
    from glotok_hf.sampling import sample_image_tokens

    cases = [(method, dtype, batch) for method, dtype in order for batch in ctx.sizes["sampling_batches"]]
    results = out.setdefault("cases", {})
    for method, dtype, batch in cases:
        name = f"{method}_{dtype}_batch{batch}"
        if ctx.cuda and ctx.left() < (120 if method == "static_compiled" else 30):
            results[name] = {"skipped": "not enough time left in the section's budget"}
            continue
        prior = copy.deepcopy(base).to(ctx.device, torch.bfloat16 if dtype == "bf16" else torch.float32)
        labels = torch.arange(batch, device=ctx.device) * 7 % ctx.sizes["num_classes"]

        def sample(num_positions, prior=prior, batch=batch, labels=labels, method=method):
            if method == "generate":
                return _generate_with_cfg(prior, layout, labels, num_positions, 2.0)
            generators = [torch.Generator(ctx.device).manual_seed(i) for i in range(batch)]
            return sample_image_tokens(
                prior,
                layout,
                labels,
                num_positions,
                guidance_scale=2.0,
                generator=generators,
                cache_implementation="dynamic" if method == "dynamic" else "static",
            )

        try:
            with torch.inference_mode():
                if method == "static_compiled":
                    prior.forward = torch.compile(prior.forward, backend=ctx.sizes["compile_backend"], dynamic=False)
                    first = timed(ctx, functools.partial(sample, positions))[0]  # compiles
                else:
                    first = None
                    sample(max(1, min(positions // 4, 4)))  # warm-up (a few positions): kernels, allocator
                reset_peak(ctx)
                seconds, tokens = timed(ctx, functools.partial(sample, positions))
                layout.validate_tokens(tokens)
            results[name] = {
                "seconds": round(seconds, 3),
                "images_per_second": round(batch / seconds, 2),
                "peak_memory_mib": peak_mib(ctx),
            }
            if first is not None:
                results[name]["first_call_seconds_with_compile"] = round(first, 2)
        except SectionTimeout:
            raise
        except Exception as err:  # e.g. torch.compile failing: recorded, the other cases go on
            results[name] = {"error": f"{type(err).__name__}: {err}"[:500]}
        finally:
            del prior, sample
            if method == "static_compiled":
                torch._dynamo.reset()
            release_memory(ctx)
    release_memory(ctx)
    fast = {n: r["images_per_second"] for n, r in results.items() if "images_per_second" in r}
    top = max(fast, key=fast.get) if fast else None
    out["summary"] = f"best {top}: {fast[top]} img/s" if top else "no case ran"
    failed = [name for name, r in results.items() if "error" in r]
    if failed:
        out["summary"] += f"; failed: {', '.join(failed)}"
    # torch.compile is measured where it works; the sampler and generate must work everywhere
    out["checks"] = {"sampler_and_generate_ran": not [name for name in failed if "compiled" not in name]}


def section_factorized_prior(ctx: Context, out: dict) -> None:
    """Images/s of a random factorized prior (FAR: GPT-B backbone + a 3-layer head, one backbone step per position)
    on the same layout, classes and grid as `sampling`, to set beside its interleaved figures."""
    from glotok_hf import GloTokConfig, GloTokPriorForCausalLM, prior_preset
    from glotok_hf.sampling import TokenLayout

    tokenizer = GloTokConfig(**(ctx.sizes["model_config"] or {}))
    positions = ctx.sizes["num_positions"] or tokenizer.latent_grid_size**2
    sizes = [tokenizer.visual_codebook_size, tokenizer.semantic_codebook_size]
    config = prior_preset("GPT-B", sizes, ctx.sizes["num_classes"], grid_size=math.isqrt(positions), head_layers=3,
                          **ctx.sizes["prior_overrides"])  # fmt: skip
    layout = TokenLayout(visual_codebook_size=sizes[0], semantic_codebook_size=sizes[1],
                         num_classes=ctx.sizes["num_classes"])  # fmt: skip
    torch.manual_seed(0)
    base = GloTokPriorForCausalLM(config).eval()
    out["setup"] = {
        "prior": "FAR (GPT-B backbone, 3 head layers)" + (" shrunk" if ctx.dry_run else ""),
        "backbone_steps": positions,
        "guidance_scale": 2.0,
        "parameters": sum(p.numel() for p in base.parameters()),
    }
    order = (("dynamic", "bf16"), ("static", "bf16"), ("dynamic", "fp32"), ("static", "fp32"))
    _time_sampling(ctx, out, base, layout, positions, order)


def section_fsdp(ctx: Context, out: dict) -> None:
    """`accelerate launch --multi_gpu --num_processes 2 training/train.py --stage prior --sharding fsdp` (bf16, a small
    interleaved prior on codes encoded on the fly by a tiny tokenizer): half the steps, then resumed from the sharded
    checkpoint; the final folder must load with from_pretrained."""
    count = torch.cuda.device_count() if ctx.cuda else 0
    if count < 2:
        raise Skip(f"needs two GPUs, found {count}")
    fsdp_prior_runs(ctx, out, ctx.env())


def fsdp_prior_runs(ctx: Context, out: dict, env: dict, steps: int = 4) -> None:
    """The runs and checks of `section_fsdp` (on CPU too, with `ACCELERATE_USE_CPU=true` in `env`: gloo)."""
    from transformers import AutoModelForCausalLM

    from glotok_hf import GloTokConfig, GloTokModel

    images = write_images(ctx.workdir / "fsdp_images", 16, TINY_TOKENIZER["sample_size"], seed=2)
    torch.manual_seed(0)
    GloTokModel(GloTokConfig(**TINY_TOKENIZER)).save_pretrained(ctx.workdir / "fsdp_tokenizer")
    config = _accelerate_config(ctx, ctx.workdir / "accelerate_fsdp.json")
    config.write_text(
        json.dumps(
            {**json.loads(config.read_text()), "num_processes": 2, "distributed_type": "MULTI_GPU", "use_cpu": False}
        )
    )
    output_dir = ctx.workdir / "fsdp_run"
    prior = {"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 2}
    argv = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", config, ROOT / "training/train.py",
            "--stage", "prior", "--sharding", "fsdp", "--train_data_dir", images, "--output_dir", output_dir,
            "--tokenizer_name_or_path", ctx.workdir / "fsdp_tokenizer", "--model_config", json.dumps(prior),
            "--train_batch_size", "2", "--checkpointing_steps", str(steps // 2), "--validation_steps", "1000",
            "--num_validation_images", "2", "--report_to", "none", "--mixed_precision", "bf16"]  # fmt: skip
    for run, extra in (("first", ["--max_train_steps", str(steps // 2)]),
                       ("resumed", ["--max_train_steps", str(steps), "--resume_from_checkpoint", "latest"])):  # fmt: skip
        log = ctx.workdir / f"fsdp_{run}.log"
        rc, seconds = run_command(ctx, argv + extra, log, env)
        out[run] = {"exit_status": rc, "seconds": round(seconds, 1)}
        if rc != 0:
            out[run]["log_tail"] = log_tail(log)
            raise RuntimeError(f"the {run} FSDP run exited with status {rc} (log_tail in the JSON)")
    rows = [json.loads(line) for line in (output_dir / "logs/metrics.jsonl").read_text().splitlines() if line.strip()]
    shards = list((output_dir / f"checkpoint-{steps // 2}" / "prior_sharded").glob("*.distcp"))
    loaded = AutoModelForCausalLM.from_pretrained(output_dir)
    out["checks"] = {
        "logged_steps_1_to_n": [row["step"] for row in rows] == list(range(1, steps + 1)),
        "losses_finite": all(math.isfinite(row["prior/loss"]) for row in rows),
        "two_shard_files": len(shards) == 2,
        "resumed_from_sharded_checkpoint": f"checkpoint-{steps // 2}"
        in (ctx.workdir / "fsdp_resumed.log").read_text(),
        "final_folder_loads": sum(p.numel() for p in loaded.parameters()) > 0,
        "pipeline_saved": (output_dir / "pipeline" / "model_index.json").is_file(),
    }
    out["summary"] = (
        f"{steps} steps on 2 processes, {out['first']['seconds']} s + resumed {out['resumed']['seconds']} s"
    )


def section_decode_fp16(ctx: Context, out: dict) -> None:
    """Decode the codes of smooth random images in float16: finite or not, and the largest difference to fp32."""
    from glotok_hf import GloTokConfig, GloTokModel
    from glotok_hf.loading import embedded_pipeline_path

    torch.manual_seed(0)
    models = {
        "paper_config_random_weights": lambda: GloTokModel(GloTokConfig(**(ctx.sizes["model_config"] or {}))),
        "embedded_digits_tokenizer": lambda: GloTokModel.from_pretrained(embedded_pipeline_path() / "vqmodel"),
    }
    for name, build in models.items():
        model = build().to(ctx.device).eval()
        size = model.config.sample_size
        images = torch.rand(
            ctx.sizes["decode_batch"], 3, size // 8, size // 8, generator=torch.Generator().manual_seed(0)
        )
        images = torch.nn.functional.interpolate(images * 2 - 1, size=(size, size), mode="bilinear").to(ctx.device)
        with torch.no_grad():
            indices = model.encode(images).indices
            reference = model.decode(**indices).sample.float()
            decoded = model.half().decode(**indices).sample.float()
        finite = bool(torch.isfinite(decoded).all())
        out[name] = {
            "finite": finite,
            "max_abs_fp32": float(reference.abs().max()),
            "max_abs_difference_to_fp32": float((decoded - reference).abs().max()) if finite else None,
        }
        del model
    release_memory(ctx)
    out["summary"] = ", ".join(
        f"{name.split('_')[0]}: {'finite' if r['finite'] else 'NOT finite'}"
        for name, r in out.items()
        if isinstance(r, dict)
    )


# In the order they run: sampling last, since it fits its cases into whatever time is left.
SECTIONS = {
    "cuda_tests": section_cuda_tests,
    "histogram": section_histogram,
    "decode_fp16": section_decode_fp16,
    "tokenizer_update": section_tokenizer_update,
    "train_script": section_train_script,
    "factorized_prior": section_factorized_prior,
    "fsdp": section_fsdp,
    "sampling": section_sampling,
}


# ------------------------------------------------------------------------------------------------------------ runner
def run_section(ctx: Context, name: str) -> dict:
    out, start = {}, time.perf_counter()
    budget = min(ctx.sizes["budgets"][name], ctx.left())
    try:
        if budget < 1:
            raise Skip("time budget of the whole check used up")
        ctx.section_deadline = time.monotonic() + budget
        with time_limit(budget):
            SECTIONS[name](ctx, out)
        failed = [check for check, ok in out.get("checks", {}).items() if not ok]
        status = "failed" if failed else "ok"
        if failed:
            out["failed_checks"] = failed
    except Skip as reason:
        status, out["reason"] = "skipped", str(reason)
    except Exception as err:  # SectionTimeout included: recorded, the next section runs
        status, out["error"] = "failed", f"{type(err).__name__}: {err}"[:2000]
        out["traceback"] = traceback.format_exc()[-4000:]
    finally:
        ctx.section_deadline = math.inf
        if ctx.cuda:
            with contextlib.suppress(Exception):
                torch.cuda.set_sync_debug_mode(0)
        with contextlib.suppress(Exception):
            release_memory(ctx)
    return {"status": status, "seconds": round(time.perf_counter() - start, 1), **out}


def cuda_context_lost() -> str | None:
    """A sticky CUDA error (e.g. an illegal address) poisons this process's context for every later section."""
    try:
        torch.cuda.synchronize()
        torch.zeros(1, device="cuda").add_(1).item()
    except Exception as err:
        return f"{type(err).__name__}: {err}"
    return None


def run_in_child(ctx: Context, names: list[str]) -> dict:
    """Run `names` in a fresh process (after a sticky CUDA error here) and return their records."""
    output = ctx.workdir / "child.json"
    command = [sys.executable, __file__, "--sections", ",".join(names), "--output", output, "--workdir"]
    command += [ctx.workdir / "child", "--budget", str(max(1, int(ctx.left())))] + ["--dry-run"] * ctx.dry_run
    env = ctx.env(GPU_CHECK_STARTED=str(time.time()))  # its --budget is what is left now
    run_command(ctx, command, ctx.workdir / "child.log", env)
    if not output.is_file():
        return {n: {"status": "failed", "error": "the child process wrote no result"} for n in names}
    return json.loads(output.read_text())["sections"]


def environment(ctx: Context) -> dict:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": ctx.device.type,
        "gpu_count": torch.cuda.device_count() if ctx.cuda else 0,
        "cpu_count": os.cpu_count(),
        "install": os.environ.get("GPU_CHECK_INSTALL", "not recorded"),
    }
    info["device_name"] = torch.cuda.get_device_name() if ctx.cuda else platform.processor() or platform.machine()
    info["peak_bf16_tflops"] = peak_tflops(info["device_name"]) if ctx.cuda else None
    for package in ("transformers", "diffusers", "accelerate", "datasets"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            info[package] = importlib.metadata.version(package)
    with contextlib.suppress(OSError):  # no git on the machine
        git = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False)
        info["git_commit"] = git.stdout.strip() or None
    return info


def print_table(report: dict) -> None:
    env = report["environment"]
    print(
        f"\nGPU check ({'dry run, ' if report['dry_run'] else ''}{env['device_name']}, torch {env['torch']}): "
        f"{report['seconds']} s"
    )
    print(f"{'section':<18} {'status':<8} {'seconds':>8}  figures")
    for name, record in report["sections"].items():
        detail = record.get("summary") or record.get("reason") or record.get("error", "")
        if record.get("failed_checks"):
            detail += f" [failed checks: {', '.join(record['failed_checks'])}]"
        print(f"{name:<18} {record['status']:<8} {record['seconds']:>8}  {detail[:160]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="CPU, every size shrunk (CI)")
    parser.add_argument("--output", type=Path, default=ROOT / "outputs/gpu_check.json")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset, in this order")
    parser.add_argument(
        "--budget",
        type=float,
        default=480.0,
        help="seconds for the whole check, counted from "
        "$GPU_CHECK_STARTED (set by gpu_check.sh, so installing counts) or this start",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args(argv)
    names = args.sections.split(",")
    if unknown := [n for n in names if n not in SECTIONS]:
        parser.error(f"unknown section(s) {unknown}; choose from {list(SECTIONS)}")
    started = float(os.environ.get("GPU_CHECK_STARTED") or time.time())
    deadline = time.monotonic() + args.budget - (time.time() - started) - 10  # 10 s to write the results
    device = torch.device("cuda" if torch.cuda.is_available() and not args.dry_run else "cpu")
    os.environ["HF_HUB_OFFLINE"] = os.environ["TQDM_DISABLE"] = "1"
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="glotok-gpu-check-")))
        workdir.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("HF_DATASETS_CACHE", str(workdir / "datasets_cache"))
        ctx = Context(args.dry_run, device, workdir, deadline, DRY if args.dry_run else FULL)
        report = {
            "schema": SCHEMA,
            "dry_run": args.dry_run,
            "started": datetime.datetime.now().isoformat(),
            "environment": environment(ctx),
            "sections": {},
        }
        for i, name in enumerate(names):
            report["sections"][name] = run_section(ctx, name)
            if ctx.cuda and report["sections"][name]["status"] == "failed" and (lost := cuda_context_lost()):
                report["sections"][name]["cuda_context_lost"] = lost
                report["sections"].update(run_in_child(ctx, names[i + 1 :]))
                break
    report["seconds"] = round(time.time() - started, 1)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_name(f".{args.output.name}.partial")
    tmp.write_text(json.dumps(report, indent=2, default=str))
    os.replace(tmp, args.output)
    print_table(report)
    print(f"\nJSON: {args.output}")
    return int(any(record["status"] == "failed" for record in report["sections"].values()))


if __name__ == "__main__":
    sys.exit(main())
