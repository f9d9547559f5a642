# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""The stage interface: `Stage`, what the training loop calls on a stage, and `BaseStage`, the part both stages
([`~stage_tokenizer.TokenizerStage`], [`~stage_prior.PriorStage`]) share."""

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from accelerate import Accelerator

from .arguments import TrainingArguments
from .checkpointing import TrainingState
from .ema import EMA
from .loaders import EpochShuffleSampler, SeededItems
from .publishing import training_card
from .runtime import build_optimizer, build_scheduler, unwrap
from .sharding import consolidate, regroup, shard_model
from .tracking import guarded_update


@runtime_checkable
class Stage(Protocol):
    r"""
    What the loop calls on a stage: the models, data and training step of one thing to train
    ([`~stage_tokenizer.TokenizerStage`], [`~stage_prior.PriorStage`]). A stage is built from the
    `TrainingArguments` and the `Accelerator`, and prepares its models, optimizers and loader itself.

    Attributes:
        main_loss (`str`): the logged value shown in the progress bar (e.g. `"generator/loss"`).
        items ([`~loaders.SeededItems`]): the training examples (`len` is the epoch size; `begin_epoch` each epoch).
        sampler ([`~loaders.EpochShuffleSampler`]): the loader's sampler (`begin_epoch` each epoch).
        loader (`DataLoader`): the prepared loader; its batches hold `"index"` (and `"num_skipped"` when
            unreadable images were skipped).
        accumulate_models (`tuple[nn.Module, ...]`): the prepared models passed to `accelerator.accumulate`.
        tracker_extras (`dict[str, str]`): extra values for the trackers' run configuration.
    """

    main_loss: str
    items: SeededItems
    sampler: EpochShuffleSampler
    loader: torch.utils.data.DataLoader
    accumulate_models: tuple
    tracker_extras: dict

    def checkpoint_roles(self) -> dict[str, torch.nn.Module]:
        """Checkpoint folder name -> bare model, for every model passed to `accelerator.prepare`."""

    def checkpoint_emas(self) -> dict[str, EMA]:
        """Folder name of a tracked model -> its EMA (empty without `--use_ema`)."""

    def export_state(self, extra: dict) -> None:
        """Write stage-specific state (tensors, ints) into `extra` before a checkpoint (default: nothing)."""

    def import_state(self, extra: dict) -> None:
        """Restore what `export_state` wrote, after a resume (default: nothing)."""

    def forward_backward(self, batch: dict, global_step: int) -> dict[str, torch.Tensor]:
        """Losses and backward passes of one micro-batch; returns the scalars to log."""

    def update(self) -> dict[str, tuple[float, bool]]:
        """Guarded optimizer steps at the end of an accumulation: `{name: (grad_norm, updated)}`."""

    def step_logs(self) -> dict[str, float]:
        """Values to log after an update (learning rate, codebook usage, ...)."""

    def validate(self, step: int, folder: Path) -> dict[str, float]:
        """Save and log a validation grid under `folder` (main process); returns values to log."""

    def save_final(self, output_dir: Path, state: TrainingState, logs: dict) -> None:
        """Write the final model, its card and the saved options to `output_dir` (main process)."""


class BaseStage(Stage):
    """What both stages share: the options and accelerator, the prepared trained `model` (checkpoint folder `role`)
    with its `optimizer`, `lr_scheduler` and optional EMA, the guarded update of that model, and the final files.
    A subclass sets those attributes in its `__init__` (`prepare_training`) and adds its data, step, validation and
    `final_card`; it inherits the `Stage` protocol's do-nothing `export_state` / `import_state`."""

    role: str
    card_metrics: tuple[str, ...]  # the logged values the model card reports, when present
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    lr_scheduler: object
    ema: EMA | None = None
    consolidated: torch.nn.Module | None = None  # with --sharding fsdp: the gathered final model (main process)

    def __init__(self, args: TrainingArguments, accelerator: Accelerator):
        self.args, self.accelerator = args, accelerator
        self.tracker_extras = {}
        self.sharded = {}  # with --sharding fsdp: {role: (sharded model, its optimizer)}, checkpointed with DCP

    def track_ema(self, model: torch.nn.Module) -> None:
        """Keep an EMA of `model` (the bare model, before `prepare`) when `--use_ema` asks for one."""
        self.ema = EMA(model, self.args.ema_decay).to(self.accelerator.device) if self.args.use_ema else None

    @property
    def bare(self) -> torch.nn.Module:
        """The trained model without DDP / compile wrappers."""
        return unwrap(self.accelerator, self.model)

    @property
    def final_model(self) -> torch.nn.Module:
        """The model that is validated and published: the EMA when there is one, the gathered one when sharded."""
        if self.consolidated is not None:
            return self.consolidated
        return self.ema.module if self.ema is not None else self.bare

    def consolidate(self) -> None:
        """With --sharding fsdp, gather the trained model into a plain one on the main process (all processes)."""
        if self.sharded:
            self.consolidated = consolidate(self.model, self.model_class)

    @contextmanager
    def evaluating(self):
        """The final model in eval mode, without gradients, under the run's autocast; its mode is restored after."""
        model = self.final_model
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), self.accelerator.autocast():
                yield model
        finally:
            model.train(was_training)

    def checkpoint_roles(self) -> dict[str, torch.nn.Module]:
        return {self.role: self.bare}

    def checkpoint_emas(self) -> dict[str, EMA]:
        return {self.role: self.ema} if self.ema is not None else {}

    def update(self) -> dict[str, tuple[float, bool]]:
        return {self.role: self.update_model()}

    def update_model(self) -> tuple[float, bool]:
        """The guarded update of the trained model; the EMA follows each update that was made."""
        update = guarded_update(
            self.accelerator, self.model, self.optimizer, self.lr_scheduler, self.args.max_grad_norm
        )
        if update[1] and self.ema is not None:
            self.ema.step(self.bare)
        return update

    def step_logs(self) -> dict[str, float]:
        return {"lr": self.lr_scheduler.get_last_lr()[0]}

    def prepare_training(self, loader, *trained: tuple) -> tuple:
        """Prepare `loader` (as `self.loader`), then each trained `(model, parameters or groups, learning rate)` with
        its AdamW and schedule; returns the prepared models, then their optimizers, then their schedulers. With
        --sharding fsdp the models are sharded here instead of wrapped in DDP (accelerate prepares the rest)."""
        self.loader = self.accelerator.prepare(loader)
        if self.args.sharding == "fsdp":  # the trained model (the first) is sharded; the others stay under DDP
            model, groups, lr = trained[0]
            self.model_class, names = type(model), {id(p): n for n, p in model.named_parameters()}
            groups = list(groups)
            groups = groups if isinstance(groups[0], dict) else [{"params": groups}]
            trained = [(shard_model(model, self.accelerator.mixed_precision), regroup(groups, names, model), lr),
                       *trained[1:]]  # fmt: skip
        optimizers = [build_optimizer(params, self.args, lr) for _, params, lr in trained]
        schedulers = [build_scheduler(self.args, o, self.loader, self.accelerator.num_processes) for o in optimizers]
        if self.args.sharding != "fsdp":
            return self.accelerator.prepare(*(model for model, _, _ in trained), *optimizers, *schedulers)
        prepared = self.accelerator.prepare(*(model for model, _, _ in trained[1:]), *optimizers, *schedulers)
        self.sharded = {self.role: (trained[0][0], prepared[len(trained) - 1])}
        return (trained[0][0], *prepared)

    def final_card(self, output_dir: Path, state: TrainingState, metrics: dict) -> dict:
        """The stage's files beside the final model, and its `training_card` arguments (details, training data...)."""

    def save_final(self, output_dir: Path, state: TrainingState, logs: dict) -> None:
        """The final (EMA) model at `output_dir`, the stage's files (`final_card`), the options (no secrets) as
        `training_args.json` and the model card, filled from the run, as `README.md`."""
        self.final_model.save_pretrained(output_dir)
        metrics = {k: v for k, v in logs.items() if k in self.card_metrics}
        card = training_card(self.role, self, state, metrics=metrics, **self.final_card(output_dir, state, metrics))
        (output_dir / "training_args.json").write_text(json.dumps(self.args.public_dict(), indent=2, default=str))
        card.save(output_dir / "README.md")
