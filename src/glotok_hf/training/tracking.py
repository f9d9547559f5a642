# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""Logging shared by both stages: scalars averaged over processes in one all-reduce, trackers plus a JSON-lines
file, the guarded optimizer update (NaN/inf skip) and its stop rule, and validation images."""

import json
import math
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from PIL import Image

from ..utils import atomic_write
from .runtime import logger

METRICS_FILE = "metrics.jsonl"


def reduce_mean(accelerator: Accelerator, values: dict[str, torch.Tensor | float]) -> dict[str, float]:
    """Average scalar values over all processes with a single all-reduce; a NaN anywhere stays NaN."""
    stacked = torch.stack([torch.as_tensor(v, dtype=torch.float32, device=accelerator.device).detach().reshape(())
                           for v in values.values()])  # fmt: skip
    return dict(zip(values, accelerator.reduce(stacked, reduction="mean").tolist()))


def guarded_update(accelerator: Accelerator, model, optimizer, scheduler, max_grad_norm: float,
                   unscaled: bool = False) -> tuple[float, bool]:  # fmt: skip
    """Unscale (fp16) and clip the (already all-reduced, so every process decides alike) gradients of `optimizer`
    only, and step unless their norm is NaN/inf; zero the gradients. `(grad_norm, updated)`. With an fp16 scaler
    the optimizer steps through it (it skips a non-finite step and updates the scale); `unscaled=True`: the caller
    unscaled the gradients before an earlier step moved the scale, so the bare optimizer steps, once finite."""
    if not unscaled:
        accelerator.unscale_gradients(optimizer=optimizer)
    max_norm = max_grad_norm if max_grad_norm and max_grad_norm > 0 else math.inf
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    grad_norm = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)  # one sync
    updated = math.isfinite(grad_norm)
    if accelerator.scaler is not None and not unscaled:
        optimizer.step()
    elif updated:
        getattr(optimizer, "optimizer", optimizer).step()
    if updated:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm, updated


class NonFiniteStepError(RuntimeError):
    """Raised when too many consecutive updates had NaN/inf losses or gradients."""


def stop_if_too_many_nonfinite(state, max_consecutive: int, details: str) -> None:
    """Warn about a skipped update; stop the run once `max_consecutive` happened in a row."""
    if state.consecutive_nonfinite_steps == 0:
        return
    logger.warning(f"Step {state.global_step}: non-finite loss or gradients, update skipped ({details}).")
    if state.consecutive_nonfinite_steps >= max_consecutive:
        raise NonFiniteStepError(
            f"Stopping at step {state.global_step}: {state.consecutive_nonfinite_steps} consecutive updates had "
            f"NaN/inf losses or gradients ({details}); {state.nonfinite_steps} skipped in total. The weights are "
            "those of the last finite update. Lower --learning_rate, check the data, enable --max_grad_norm, use "
            "bf16 instead of fp16, or resume from an earlier checkpoint (--resume_from_checkpoint)."
        )


class MetricsLogger:
    """Sends scalars to the accelerate trackers and appends them to `<logging_dir>/metrics.jsonl` (main process)."""

    def __init__(self, accelerator: Accelerator, logging_dir: Path):
        self.accelerator = accelerator
        self.path = Path(logging_dir) / METRICS_FILE
        if accelerator.is_main_process:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, values: dict[str, float], step: int) -> None:
        self.accelerator.log(values, step=step)
        if self.accelerator.is_main_process:
            with self.path.open("a") as f:
                f.write(json.dumps({"step": step, **values}) + "\n")

    def truncate_after(self, step: int) -> None:
        """Drop lines (and a torn line) logged after `step` by an interrupted run that is resumed from `step`."""
        if self.accelerator.is_main_process and self.path.is_file():
            kept = "".join(json.dumps(row) + "\n" for row in read_metrics(self.path) if row["step"] <= step)
            atomic_write(self.path, lambda tmp: tmp.write_text(kept))  # a kill here keeps the whole old log


def read_metrics(path: Path) -> list[dict]:
    """The rows of a `metrics.jsonl` file (none when it is missing); a last line torn by a killed run is ignored."""
    rows = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def log_image(accelerator: Accelerator, name: str, image: Image.Image, step: int, folder: Path) -> Path:
    """Save `image` as `folder/<name>-<step>.png` and send it to the trackers (main process only)."""
    path = Path(folder) / f"{name}-{step:08d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.log_images({f"validation/{name}": np.asarray(image)[None]}, step, dataformats="NHWC")
        elif tracker.name == "wandb":
            tracker.log_images({f"validation/{name}": [image]}, step)
    return path
