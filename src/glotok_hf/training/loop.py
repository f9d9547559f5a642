# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""The training loop shared by both stages: resume, epochs with mid-epoch skipping, gradient accumulation, the
NaN/inf guard, logging, validation, checkpoints, and the end of training (final model, card, upload).

A stage object provides the models and data (see `stage_tokenizer.TokenizerStage` / `stage_prior.PriorStage`):
`loader`, `sampler`, `items`, `accumulate_models`, `checkpoint_roles()`, `checkpoint_emas()`,
`forward_backward(batch, global_step) -> dict of scalars`, `update() -> {name: (grad_norm, updated)}`,
`step_logs() -> dict`, `export_state() / import_state(dict)`, `validate(step, folder)`, `save_final(folder, metrics)`.
"""

import argparse
import math
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from tqdm.auto import tqdm

from arguments import public_args
from checkpointing import (
    CheckpointHooks,
    TrainingState,
    load_checkpoint,
    remove_partial_checkpoints,
    resolve_resume_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)
from runtime import unwrap
from tracking import MetricsLogger, Throughput, count_nonfinite, reduce_mean, stop_if_too_many_nonfinite

logger = get_logger("glotok_train")


def tracker_config(args: argparse.Namespace) -> dict:
    """Public arguments as values every tracker accepts (TensorBoard hparams take only scalars and strings)."""
    config = {}
    for key, value in public_args(args).items():
        if isinstance(value, (bool, int, float, str)):
            config[key] = value
        elif value is not None:
            config[key] = str(value)
    return config


def training_steps(args: argparse.Namespace, loader) -> tuple[int, int]:
    """(updates per epoch, total updates) from the prepared (per-process) dataloader."""
    per_epoch = math.ceil(len(loader) / args.gradient_accumulation_steps)
    total = args.max_train_steps or args.num_train_epochs * per_epoch
    return per_epoch, total


def resume(accelerator: Accelerator, stage, state: TrainingState, args, metrics: MetricsLogger, checkpoint) -> None:
    if checkpoint is None:
        if args.resume_from_checkpoint is not None:
            logger.info(f"No complete checkpoint in {args.output_dir}: starting a new run.")
        return
    logger.info(f"Resuming from {checkpoint}")
    verify_checkpoint(checkpoint, args.stage, list(stage.checkpoint_roles()), accelerator.process_index)
    load_checkpoint(accelerator, checkpoint)
    stage.import_state(state.extra)
    metrics.truncate_after(state.global_step)
    logger.info(f"Resumed at step {state.global_step} (epoch {state.epoch}, batch {state.batch_in_epoch}).")


def run_training(accelerator: Accelerator, stage, args: argparse.Namespace) -> TrainingState:
    """Train `stage` to `max_train_steps` (or the epochs asked), resuming if asked; returns the final state."""
    output_dir = Path(args.output_dir)
    state = TrainingState()
    CheckpointHooks(accelerator, stage.checkpoint_roles(), stage.checkpoint_emas(),
                    unwrap=lambda m: unwrap(accelerator, m), state=state)  # fmt: skip
    metrics = MetricsLogger(accelerator, output_dir / args.logging_dir)
    checkpoint = resolve_resume_checkpoint(output_dir, args.resume_from_checkpoint)  # before leftovers are deleted
    if accelerator.is_main_process:
        removed = remove_partial_checkpoints(output_dir)
        if removed:
            logger.info(f"Removed leftovers of interrupted saves: {', '.join(p.name for p in removed)}")
    accelerator.wait_for_everyone()
    resume(accelerator, stage, state, args, metrics, checkpoint)
    state.reconcile_batch_size(args.train_batch_size * accelerator.num_processes)

    per_epoch, max_steps = training_steps(args, stage.loader)
    config = {**tracker_config(args), **getattr(stage, "tracker_extras", {})}
    accelerator.init_trackers(args.tracker_project_name or f"glotok-{args.stage}", config=config)
    global_batch = args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    logger.info(
        f"***** Training the {args.stage}: {len(stage.items)} examples, {per_epoch} updates/epoch, {max_steps} "
        f"updates, global batch {global_batch} ({accelerator.num_processes} processes) *****"
    )
    progress = tqdm(
        total=max_steps, initial=state.global_step, desc="Steps", disable=not accelerator.is_local_main_process
    )
    throughput = Throughput()
    last_logs: dict = {}
    while state.global_step < max_steps:
        last_logs = run_epoch(accelerator, stage, state, args, metrics, progress, throughput, max_steps) or last_logs
    progress.close()
    if not last_logs:  # resumed at the end: report what the earlier run logged last
        last_logs = (metrics.read() or [{}])[-1]
    if state.global_step and not (output_dir / f"checkpoint-{state.global_step}").exists():
        stage.export_state(state.extra)
        save_checkpoint(accelerator, output_dir, state.global_step, args.checkpoints_total_limit, public_args(args))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        stage.save_final(output_dir, state, last_logs)
    accelerator.wait_for_everyone()
    return state


def run_epoch(accelerator, stage, state, args, metrics, progress, throughput, max_steps) -> dict:
    """Train until the end of the current epoch or `max_steps`; returns the last logged values."""
    stage.sampler.begin_epoch(state.epoch)
    stage.items.begin_epoch(state.epoch)
    loader = stage.loader
    if state.batch_in_epoch:
        loader = accelerator.skip_first_batches(stage.loader, state.batch_in_epoch)
    sums: dict = {}
    micro_batches, images, logs = 0, 0, {}
    for batch in loader:
        with accelerator.accumulate(*stage.accumulate_models):
            terms = stage.forward_backward(batch, state.global_step)
        terms["skipped_images"] = batch.get("num_skipped", 0)
        for name, value in terms.items():
            sums[name] = sums.get(name, 0.0) + torch.as_tensor(value).detach().float()
        micro_batches += 1
        images += len(batch["index"])
        state.batch_in_epoch += 1
        if state.batch_in_epoch == len(stage.loader):  # the last batch of an epoch always ends an update
            state.epoch, state.batch_in_epoch = state.epoch + 1, 0
        if not accelerator.sync_gradients:
            continue
        logs, details = finish_update(accelerator, stage, state, sums, micro_batches, images, throughput)
        sums, micro_batches, images = {}, 0, 0
        if state.global_step % args.validation_steps == 0 and accelerator.is_main_process:
            logs.update(stage.validate(state.global_step, Path(args.output_dir) / "validation"))
        metrics.log(logs, step=state.global_step)
        stop_if_too_many_nonfinite(state, args.max_nonfinite_steps, details)
        progress.update(1)
        progress.set_postfix(
            loss=f"{logs.get(stage.main_loss, math.nan):.4f}", img_s=f"{logs['images_per_second']:.1f}"
        )
        if state.global_step % args.checkpointing_steps == 0 or state.global_step >= max_steps:
            stage.export_state(state.extra)
            save_checkpoint(accelerator, args.output_dir, state.global_step, args.checkpoints_total_limit,
                            public_args(args))  # fmt: skip
        throughput.restart()  # validation and checkpoints are not training time
        if state.global_step >= max_steps:
            break
    return logs


def finish_update(accelerator, stage, state, sums, micro_batches, images, throughput) -> tuple[dict, str]:
    """Step the optimizers (guarded), advance the counters, and gather this update's logs from every process.
    Returns the logs and a description of the gradient norms (for the NaN/inf guard's messages)."""
    updates = stage.update()
    local = {name: value / micro_batches for name, value in sums.items()}
    local["skipped_images"] = sums["skipped_images"]
    logs = reduce_mean(accelerator, local)  # one all-reduce for every scalar
    logs["skipped_images"] *= accelerator.num_processes  # mean over processes x their number = global sum
    state.global_step += 1
    state.images_seen += images * accelerator.num_processes
    state.skipped_images += round(logs.pop("skipped_images"))
    for name, (grad_norm, _) in updates.items():
        logs[f"{name}/grad_norm"] = grad_norm
    logs.update(stage.step_logs())
    logs["images_per_second"] = throughput.tick(images * accelerator.num_processes)
    logs["skipped_images"] = state.skipped_images
    logs["epoch"] = state.epoch
    count_nonfinite(state, all(ok for _, ok in updates.values()))
    logs["nonfinite_steps"] = state.nonfinite_steps
    return logs, ", ".join(f"{n} grad norm {g:.3g}" for n, (g, _) in updates.items())
