# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""Checkpoints shared by both stages: `accelerator.save_state` with hooks that write `save_pretrained` folders, atomic
saves (written to `.tmp-checkpoint-<step>`, flushed, renamed once every process is done; pruning renames away before
deleting), so a killed run never leaves an incomplete `checkpoint-*`, `latest` resolution and pruning.

Layout of `checkpoint-<step>/`:

    tokenizer/ | prior/          save_pretrained folder of the trained model (safetensors + config)
    discriminator/               save_pretrained folder of the discriminator (tokenizer stage)
    tokenizer_ema/ | prior_ema/  the EMA weights as a save_pretrained folder, plus ema_state.json
    optimizer*.bin, scheduler*.bin, random_states_<rank>.pkl, scaler.pt   written by accelerate
    training_state.pt            the TrainingState (global step, data position, counters)
    training_args.json           the run's arguments (no secrets)
    prior_sharded/ | tokenizer_sharded/   --sharding fsdp: DCP shards of weights and AdamW states (no prior/ folder)

Loading is safe: models come from safetensors, accelerate reads its files with `torch.load(weights_only=True)`; it
would unpickle a registered object's `custom_checkpoint_<i>.pkl` unsafely, so the hooks save the TrainingState.
"""

import contextlib
import json
import logging
import os
import pickle
import re
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import load as accelerate_load
from safetensors import safe_open

from .sharding import load_sharded, read_metadata, save_sharded

logger = logging.getLogger("glotok_train")  # plain logging: these helpers also run without an Accelerator

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
TMP_PREFIX = ".tmp-checkpoint-"
TRASH_PREFIX = ".trash-checkpoint-"
STATE_FILE = "training_state.pt"
ARGS_FILE = "training_args.json"


@dataclass
class TrainingState:
    """The run's position besides models, optimizers, schedulers and RNGs (ints, floats and tensors only). `epoch` and
    `batch_in_epoch` (this process's batches consumed in `epoch`) place a resumed run at the exact batch where it
    stopped; `extra` holds stage-specific state (e.g. codebook-usage windows)."""

    def reconcile_batch_size(self, examples_per_batch: int) -> None:
        """Convert the data position when a run resumes with another global batch (other process count or per-device
        batch): the examples consumed in the epoch must be a whole number of new batches."""
        old = self.examples_per_batch or examples_per_batch
        if old != examples_per_batch:
            consumed = self.batch_in_epoch * old
            if consumed % examples_per_batch:
                raise ValueError(
                    f"Cannot resume mid-epoch with a global batch of {examples_per_batch} examples per step: the "
                    f"checkpoint stopped after {consumed} examples of epoch {self.epoch} (batches of {old}). Use a "
                    "batch size and process count whose product divides it, or the original ones."
                )
            logger.warning(
                f"Resuming with {examples_per_batch} instead of {old} examples per global batch: the data position is "
                "converted, but the run is no longer identical to an uninterrupted one."
            )
            self.batch_in_epoch = consumed // examples_per_batch
        self.examples_per_batch = examples_per_batch

    global_step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    examples_per_batch: int = 0  # global examples per dataloader batch (per-device batch x processes)
    images_seen: int = 0
    skipped_images: int = 0
    nonfinite_steps: int = 0
    consecutive_nonfinite_steps: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            if not hasattr(self, key):
                raise ValueError(f"Unknown TrainingState field {key!r} in checkpoint.")
            setattr(self, key, value)


class CheckpointHooks:
    """`save_state` / `load_state` hooks storing each model as a `save_pretrained` folder named after its role (its
    EMA as `<role>_ema/`) instead of accelerate's `model_<i>` files, and the training state as `training_state.pt`.

    Args:
        accelerator (`Accelerator`): the run's accelerator.
        roles (`dict[str, nn.Module]`): folder name -> unwrapped model, for every model passed to `prepare`.
        emas (`dict[str, EMA]`): folder name of the tracked model -> its `ema.EMA`.
        unwrap (`Callable`): returns the bare model behind a prepared one.
        state (`TrainingState`): the run's position, saved and restored with the models.
    """

    def __init__(self, accelerator: Accelerator, roles: dict, emas: dict, unwrap: Callable, state: TrainingState):
        self.accelerator, self.roles, self.emas, self.unwrap, self.state = accelerator, roles, emas, unwrap, state
        accelerator.register_save_state_pre_hook(self.save_hook)
        accelerator.register_load_state_pre_hook(self.load_hook)

    def role_of(self, model: torch.nn.Module) -> str:
        """The folder name of a prepared model (every prepared model has one: see `Stage.checkpoint_roles`)."""
        return next(role for role, candidate in self.roles.items() if candidate is self.unwrap(model))

    def save_hook(self, models: list, weights: list, output_dir: str) -> None:
        output_dir = Path(output_dir)
        roles = [self.role_of(model) for model in models]
        weights.clear()  # every model is written by save_pretrained below, not by accelerate
        if not self.accelerator.is_main_process:
            return
        for role, model in zip(roles, models):
            self.unwrap(model).save_pretrained(output_dir / role)
        for role, ema in self.emas.items():
            ema.save_pretrained(output_dir / f"{role}_ema")
        torch.save(self.state.state_dict(), output_dir / STATE_FILE)

    def load_hook(self, models: list, input_dir: str) -> None:
        input_dir = Path(input_dir)
        while models:
            model = models.pop()
            load_weights_into(self.unwrap(model), input_dir / self.role_of(model))
        for role, ema in self.emas.items():
            ema.load_pretrained(input_dir / f"{role}_ema", load_weights_into)
        self.state.load_state_dict(torch.load(input_dir / STATE_FILE, map_location="cpu", weights_only=True))


def load_weights_into(model: torch.nn.Module, folder: Path) -> None:
    """Copy the weights of the `save_pretrained` folder `folder` into `model` (same class and config), exactly."""
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"Checkpoint folder {str(folder)!r} has no saved model (config.json missing).")
    loaded = type(model).from_pretrained(folder, dtype=torch.float32)
    saved, current = loaded.state_dict(), model.state_dict()
    misfits = sorted(k for k in saved.keys() | current.keys() if k not in saved or k not in current
                     or saved[k].shape != current[k].shape)  # fmt: skip
    if misfits:
        raise ValueError(
            f"The model saved in {str(folder)!r} does not fit this run's {type(model).__name__} ({len(misfits)} "
            f"weights differ in name or shape, e.g. {misfits[0]!r}); config fields that differ (saved, this run): "
            f"{config_differences(loaded.config, model.config) or 'none'}. Resume with the model configuration the "
            "checkpoint was trained with, or start a new run."
        )
    model.load_state_dict({k: v.to(dtype=current[k].dtype) for k, v in saved.items()}, strict=True)


# Config entries that describe a save, not the architecture.
_BOOKKEEPING_CONFIG_KEYS = {"transformers_version", "_name_or_path", "architectures", "auto_map", "dtype"}


def config_differences(saved, current) -> dict[str, tuple]:
    """`{field: (saved value, current value)}` for the fields two model configs disagree on (bookkeeping ignored)."""
    a, b = saved.to_dict(), current.to_dict()
    keys = (a.keys() | b.keys()) - _BOOKKEEPING_CONFIG_KEYS
    return {k: (a.get(k), b.get(k)) for k in sorted(keys) if a.get(k) != b.get(k)}


def checkpoint_step(path: Path) -> int | None:
    match = CHECKPOINT_PATTERN.match(path.name)
    return int(match.group(1)) if match else None


def list_checkpoints(output_dir: str | os.PathLike, complete: bool = True) -> list[Path]:
    """Complete checkpoints in `output_dir` (`checkpoint-<n>` folders holding the training state, written last before
    the atomic rename; with `complete=False` also those without it), oldest first; partial `.tmp-*` folders are never
    listed."""
    found = [p for p in Path(output_dir).glob("checkpoint-*")
             if checkpoint_step(p) is not None and (not complete or (p / STATE_FILE).is_file())]  # fmt: skip
    return sorted(found, key=checkpoint_step)


def resolve_resume_checkpoint(output_dir: str | os.PathLike, value: str | None) -> Path | None:
    """`--resume_from_checkpoint`: `None`, `latest` or a checkpoint folder (a bare `checkpoint-<n>` name is looked up
    in `output_dir`). `latest` is the newest intact checkpoint: a newer damaged one is skipped with a warning naming
    it; `None` (a fresh start) when there is no checkpoint at all; an error when every checkpoint is damaged or lacks
    the training state. A named checkpoint that is damaged is an error naming the intact one to pass instead."""
    if value is None:
        return None
    if value == "latest":
        skipped = []
        for path in reversed(list_checkpoints(output_dir, complete=False)):
            damage = checkpoint_damage(path)
            if damage is None:
                if skipped:
                    logger.warning(f"--resume_from_checkpoint latest skips the damaged {'; '.join(skipped)} and "
                                   f"resumes from {path.name}, the newest intact checkpoint.")  # fmt: skip
                return path
            skipped.append(f"{path.name} ({damage})")
        if skipped:
            raise ValueError(f"Every checkpoint in {str(output_dir)!r} is damaged: {'; '.join(skipped)}. Pass "
                             "--overwrite_output_dir to start over, or restore a checkpoint.")  # fmt: skip
        return None
    path = Path(value)
    if not path.exists() and not path.is_absolute() and (Path(output_dir) / path).exists():
        path = Path(output_dir) / path
    if path.name.startswith((TMP_PREFIX, TRASH_PREFIX)):
        raise ValueError(
            f"--resume_from_checkpoint {value!r} is the leftover of an interrupted save or deletion, not a checkpoint "
            "(complete ones are renamed to checkpoint-<step>). Resume from `latest` or a checkpoint-<step> folder."
        )
    if not path.is_dir():
        raise FileNotFoundError(f"--resume_from_checkpoint {value!r} is not a checkpoint folder.")
    damage = checkpoint_damage(path)
    if damage is not None:
        intact = next(
            (p for p in reversed(list_checkpoints(path.parent)) if p != path and not checkpoint_damage(p)), None
        )
        hint = (f"Resume from the intact {intact.name} instead: --resume_from_checkpoint {intact}." if intact else
                "No intact checkpoint is left: restore one, or pass --overwrite_output_dir to start over.")  # fmt: skip
        raise ValueError(f"{damage} {hint}")
    return path


def checkpoint_damage(path: Path) -> str | None:
    """Why the checkpoint `path` cannot be loaded (no training state; a truncated, corrupted or unsafe file: a torn
    copy, a full disk, a tampered file), or `None` when every file opens. Every torch.save file is opened safely, as
    accelerate loads it (accelerate would silently skip an unreadable RNG file), so a resume never continues with half
    the state."""
    if not (path / STATE_FILE).is_file():  # never silently restart from scratch next to checkpoints a user may want
        return (f"Checkpoint {str(path)!r} is not a complete checkpoint of this script ({STATE_FILE} missing: written by "
                "another version of it, or modified).")  # fmt: skip
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        if file.suffix == ".safetensors":
            try:
                with safe_open(str(file), framework="pt"):  # parses the header, checks that it covers the file
                    pass
            except Exception as err:  # safetensors raises its own error type
                return f"Checkpoint file {str(file)!r} is truncated or corrupted ({err})."
        elif file.name == ".metadata":  # a distributed checkpoint's (--sharding fsdp)
            try:
                read_metadata(file.parent)
            except Exception as err:
                return f"Checkpoint file {str(file)!r} is truncated, corrupted or unsafe to unpickle ({err})."
        elif file.suffix in (".bin", ".pkl", ".pt"):
            if not zipfile.is_zipfile(file):
                return f"Checkpoint file {str(file)!r} is truncated or corrupted (not a complete torch.save archive)."
            try:
                accelerate_load(file, map_location="cpu", mmap=True)  # memory-mapped, not read
            except Exception as err:
                reason = (f"{type(err).__name__}: {_first_line(err)}" if not isinstance(err, pickle.UnpicklingError)
                          else "it holds Python objects that torch.load(weights_only=True) refuses to unpickle (it "
                          "was tampered with, or not written by this script)")  # fmt: skip
                return f"Checkpoint file {str(file)!r} cannot be loaded safely: {reason}."
    return None


def verify_checkpoint(path: Path, stage: str) -> None:
    """Check, before anything is loaded, that `path` (intact: see `resolve_resume_checkpoint`) is a checkpoint of
    `stage` (each model's folder is checked when it is loaded, by `load_weights_into`)."""
    args_file = path / ARGS_FILE
    if args_file.is_file():
        try:
            saved_stage = json.loads(args_file.read_text()).get("stage")
        except (json.JSONDecodeError, AttributeError) as err:
            raise ValueError(f"Checkpoint {str(path)!r}: {ARGS_FILE} is corrupted ({err}).") from err
        if saved_stage is not None and saved_stage != stage:
            raise ValueError(
                f"Checkpoint {str(path)!r} was written by the {saved_stage} stage; this run trains the {stage}. "
                "Resume from a checkpoint of the same stage (for the prior, start from a trained tokenizer with "
                "--tokenizer_name_or_path instead)."
            )


@contextlib.contextmanager
def without_sharded(accelerator: Accelerator, sharded: dict):
    """accelerate's save/load_state without the sharded optimizers (it would save the main process's shards only)."""
    kept = accelerator._optimizers
    accelerator._optimizers = [o for o in kept if all(o is not opt for _, opt in sharded.values())]
    try:
        yield
    finally:
        accelerator._optimizers = kept


def load_checkpoint(accelerator: Accelerator, path: Path, sharded: dict | None = None) -> None:
    """`accelerator.load_state(path)`, naming a missing file; sharded models and optimizers from their DCP folders."""
    sharded = sharded or {}
    for role in sharded or [p.name[: -len("_sharded")] for p in path.glob("*_sharded")]:
        if (path / f"{role}_sharded").is_dir() != bool(sharded):
            was, run = ("fsdp", "ddp") if not sharded else ("ddp", "fsdp")
            raise ValueError(f"Checkpoint {str(path)!r} was written with --sharding {was}; this run uses --sharding "
                             f"{run}. Resume it with --sharding {was}.")  # fmt: skip
    try:
        with without_sharded(accelerator, sharded):
            accelerator.load_state(str(path))
        for role, (model, optimizer) in sharded.items():
            load_sharded(str(path / f"{role}_sharded"), model, optimizer.optimizer)
    except FileNotFoundError as err:
        if err.filename is None:  # ours, with its own message (e.g. a checkpoint without EMA)
            raise
        raise FileNotFoundError(
            f"Checkpoint {str(path)!r} is incomplete: {err.filename} is missing. Resume from another checkpoint."
        ) from err


def _first_line(err: Exception) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip().split("\n")[0]


def _fsync(path: Path) -> None:
    with contextlib.suppress(OSError):  # e.g. file systems without fsync on directories
        fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_tree(root: Path) -> None:
    """Flush every file and folder under `root` (deepest first), so the rename never publishes unwritten data."""
    for path in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True) + [root]:
        _fsync(path)


def _remove(path: Path) -> None:
    """Rename away first, then delete: a kill mid-deletion leaves only a hidden `.trash-*` folder."""
    trash = path.with_name(f".trash-{path.name}")  # .trash-checkpoint-<n>, matched by TRASH_PREFIX
    shutil.rmtree(trash, ignore_errors=True)
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def remove_partial_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Delete leftovers of interrupted saves or deletions (`.tmp-checkpoint-*`, `.trash-checkpoint-*`)."""
    leftovers = [p for prefix in (TMP_PREFIX, TRASH_PREFIX) for p in Path(output_dir).glob(f"{prefix}*")]
    for path in leftovers:
        shutil.rmtree(path, ignore_errors=True)
    return leftovers


def prune_checkpoints(output_dir: str | os.PathLike, total_limit: int | None, keep: Path) -> list[Path]:
    """Delete the oldest complete checkpoints so at most `total_limit` remain; never `keep` (the one just written)."""
    if total_limit is None:
        return []
    checkpoints = [p for p in list_checkpoints(output_dir) if p.resolve() != Path(keep).resolve()]
    removed = checkpoints[: max(len(checkpoints) + 1 - total_limit, 0)]
    for path in removed:
        _remove(path)
    if removed:
        logger.info(f"Removed {len(removed)} old checkpoint(s): {', '.join(p.name for p in removed)}")
    return removed


def save_checkpoint(accelerator: Accelerator, output_dir: str | os.PathLike, step: int, total_limit: int | None,
                    run_args: dict, sharded: dict | None = None) -> Path:  # fmt: skip
    """Save the full training state and the run's options (`run_args`, no secrets) atomically as
    `output_dir/checkpoint-<step>`; all processes must call this. `sharded` (`{role: (model, optimizer)}`, with
    --sharding fsdp): each process writes its shards to `<role>_sharded/` (torch.distributed.checkpoint)."""
    output_dir = Path(output_dir)
    final = output_dir / f"checkpoint-{step}"
    tmp = output_dir / f"{TMP_PREFIX}{step}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    with without_sharded(accelerator, sharded or {}):
        accelerator.save_state(str(tmp))
    for role, (model, optimizer) in (sharded or {}).items():
        save_sharded(str(tmp / f"{role}_sharded"), model, optimizer.optimizer)
    if accelerator.is_main_process:
        (tmp / ARGS_FILE).write_text(json.dumps(run_args, indent=2, default=str))
    accelerator.wait_for_everyone()  # every rank has written its RNG state
    if accelerator.is_main_process:
        _fsync_tree(tmp)
        if final.exists():  # e.g. a run resumed from an earlier checkpoint reaches this step again
            _remove(final)
        os.replace(tmp, final)
        _fsync(output_dir)
        prune_checkpoints(output_dir, total_limit, keep=final)
        logger.info(f"Saved checkpoint {final}")
    accelerator.wait_for_everyone()
    return final
