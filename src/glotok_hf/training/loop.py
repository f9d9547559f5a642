# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""The training loop shared by both stages (resume, epochs with mid-epoch skipping, gradient accumulation, the
NaN/inf guard, logging, validation, checkpoints, the end of training) and `main`, what `training/train.py` runs:
parse the options, build the accelerator and the stage, train, upload. What the loop calls on a stage is the
`stage.Stage` protocol."""

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from .arguments import TrainingArguments, parse_args
from .checkpointing import (
    CheckpointHooks,
    TrainingState,
    load_checkpoint,
    remove_partial_checkpoints,
    resolve_resume_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)
from .publishing import create_hub_repo, push_folder
from .runtime import build_accelerator, check_output_dir, logger, training_steps, unwrap
from .stage import Stage
from .tracking import MetricsLogger, read_metrics, reduce_mean, stop_if_too_many_nonfinite


@dataclass
class TrainingRun:
    """What `main` returns to Python callers (tests, notebooks): the parsed options, the final training state, the
    stage holding the trained models, and the Hub repo id with `--push_to_hub`."""

    args: TrainingArguments
    state: TrainingState
    stage: Stage
    repo_id: str | None = None


def build_stage(args: TrainingArguments, accelerator: Accelerator) -> Stage:
    if args.stage == "tokenizer":
        from .stage_tokenizer import TokenizerStage

        return TokenizerStage(args, accelerator)
    from .stage_prior import PriorStage

    return PriorStage(args, accelerator)


def main(argv: list[str] | None = None) -> TrainingRun:
    """`training/train.py`: train the stage `argv` (default `sys.argv[1:]`) asks for; upload with `--push_to_hub`."""
    args = parse_args(argv)
    token = args.hub_token or os.environ.get("HF_TOKEN") or None
    check_output_dir(args)
    accelerator = build_accelerator(args)
    repo_id = None
    if args.push_to_hub and accelerator.is_main_process:
        repo_id = create_hub_repo(args, token)
    stage = build_stage(args, accelerator)
    state = run_training(accelerator, stage, args)
    if args.push_to_hub and accelerator.is_main_process:
        logger.info(f"Uploaded to {push_folder(Path(args.output_dir), repo_id, token)}")
    accelerator.wait_for_everyone()
    accelerator.end_training()  # closes the trackers and the process group
    return TrainingRun(args=args, state=state, stage=stage, repo_id=repo_id)


def tracker_config(args: TrainingArguments) -> dict:
    """Public options as values every tracker accepts (TensorBoard hparams take only scalars and strings)."""
    return {k: v if isinstance(v, (bool, int, float, str)) else str(v)
            for k, v in args.public_dict().items() if v is not None}  # fmt: skip


def resume(accelerator, stage: Stage, state: TrainingState, args: TrainingArguments, metrics) -> None:
    """Delete leftovers of interrupted saves, then load the checkpoint `--resume_from_checkpoint` names, if any."""
    checkpoint = resolve_resume_checkpoint(args.output_dir, args.resume_from_checkpoint)  # before leftovers go
    if accelerator.is_main_process and (removed := remove_partial_checkpoints(args.output_dir)):
        logger.info(f"Removed leftovers of interrupted saves: {', '.join(p.name for p in removed)}")
    accelerator.wait_for_everyone()
    if checkpoint is None:
        if args.resume_from_checkpoint is not None:
            logger.info(f"No complete checkpoint in {args.output_dir}: starting a new run.")
        return
    logger.info(f"Resuming from {checkpoint}")
    verify_checkpoint(checkpoint, args.stage)
    load_checkpoint(accelerator, checkpoint, stage.sharded)
    stage.import_state(state.extra)
    metrics.truncate_after(state.global_step)
    logger.info(f"Resumed at step {state.global_step} (epoch {state.epoch}, batch {state.batch_in_epoch}).")


def run_training(accelerator: Accelerator, stage: Stage, args: TrainingArguments) -> TrainingState:
    """Train `stage` to `max_train_steps` (or the epochs asked), resuming if asked; returns the final state."""
    output_dir = Path(args.output_dir)
    state = TrainingState()
    CheckpointHooks(accelerator, stage.checkpoint_roles(), stage.checkpoint_emas(),
                    unwrap=lambda m: unwrap(accelerator, m), state=state)  # fmt: skip
    metrics = MetricsLogger(accelerator, output_dir / args.logging_dir)
    resume(accelerator, stage, state, args, metrics)
    state.reconcile_batch_size(args.train_batch_size * accelerator.num_processes)

    per_epoch, max_steps = training_steps(args, stage.loader)
    config = {**tracker_config(args), **stage.tracker_extras}
    accelerator.init_trackers(args.tracker_project_name or f"glotok-{args.stage}", config=config)
    global_batch = args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    logger.info(
        f"***** Training the {args.stage}: {len(stage.items)} examples, {per_epoch} updates/epoch, {max_steps} "
        f"updates, global batch {global_batch} ({accelerator.num_processes} processes) *****"
    )
    progress = tqdm(total=max_steps, initial=state.global_step, desc="Steps",
                    disable=not accelerator.is_local_main_process)  # fmt: skip
    last_logs: dict = {}
    while state.global_step < max_steps:
        last_logs = run_epoch(accelerator, stage, state, args, metrics, progress, max_steps) or last_logs
    progress.close()
    if not last_logs:  # resumed at the end: report what the earlier run logged last
        last_logs = (read_metrics(metrics.path) or [{}])[-1]
    if state.global_step and not (output_dir / f"checkpoint-{state.global_step}").exists():
        stage.export_state(state.extra)
        save_checkpoint(
            accelerator, output_dir, state.global_step, args.checkpoints_total_limit, args.public_dict(), stage.sharded
        )
    accelerator.wait_for_everyone()
    stage.consolidate()
    if accelerator.is_main_process:
        stage.save_final(output_dir, state, last_logs)
    accelerator.wait_for_everyone()
    return state


def run_epoch(accelerator, stage, state, args, metrics, progress, max_steps) -> dict:
    """Train until the end of the current epoch or `max_steps`; returns the last logged values. Values are read back
    from the device only on logging steps (every `--logging_steps` updates, checkpoints, validations, an epoch's end);
    in between, the NaN/inf guard's gradient norms are the only reads."""
    stage.sampler.begin_epoch(state.epoch)
    stage.items.begin_epoch(state.epoch)
    loader = stage.loader
    if state.batch_in_epoch:
        loader = accelerator.skip_first_batches(stage.loader, state.batch_in_epoch)
    sums, micro_batches, images, logs = {}, 0, 0, {}
    started = time.perf_counter()  # images per second: wall clock, data loading included
    for batch in loader:
        with accelerator.accumulate(*stage.accumulate_models):
            terms = stage.forward_backward(batch, state.global_step)
        terms["skipped_images"] = batch.get("num_skipped", 0)
        for name, value in terms.items():
            sums[name] = sums.get(name, 0.0) + torch.as_tensor(value).detach().float()
        micro_batches += 1
        images += len(batch["index"])
        state.images_seen += len(batch["index"]) * accelerator.num_processes
        state.batch_in_epoch += 1
        if state.batch_in_epoch == len(stage.loader):  # the last batch of an epoch always ends an update
            state.epoch, state.batch_in_epoch = state.epoch + 1, 0
        if not accelerator.sync_gradients:
            continue
        updates = finish_update(stage, state)
        step = state.global_step
        due = [step % n == 0 for n in (args.checkpointing_steps, args.validation_steps, args.logging_steps)]
        if any(due) or step >= max_steps or state.batch_in_epoch == 0:
            logs = gather_logs(accelerator, stage, state, updates, sums, micro_batches, images, started)
            sums, micro_batches, images = {}, 0, 0
            if due[1] and accelerator.is_main_process:
                logs.update(stage.validate(step, Path(args.output_dir) / "validation"))
            metrics.log(logs, step=step)
            progress.set_postfix(loss=f"{logs.get(stage.main_loss, math.nan):.4f}",
                                 img_s=f"{logs['images_per_second']:.1f}")  # fmt: skip
        stop_if_too_many_nonfinite(state, args.max_nonfinite_steps,
                                   ", ".join(f"{n} grad norm {g:.3g}" for n, (g, _) in updates.items()))  # fmt: skip
        progress.update(1)
        if due[0] or step >= max_steps:
            stage.export_state(state.extra)
            save_checkpoint(
                accelerator, args.output_dir, step, args.checkpoints_total_limit, args.public_dict(), stage.sharded
            )
        if not micro_batches:  # validation and checkpoints are not training time
            started = time.perf_counter()
        if step >= max_steps:
            break
    return logs


def finish_update(stage, state) -> dict[str, tuple[float, bool]]:
    """Step the optimizers (guarded) and advance the counters; returns `{name: (grad_norm, updated)}`."""
    updates = stage.update()
    state.global_step += 1
    updated = all(ok for _, ok in updates.values())
    state.nonfinite_steps += not updated
    state.consecutive_nonfinite_steps = 0 if updated else state.consecutive_nonfinite_steps + 1
    return updates


def gather_logs(accelerator, stage, state, updates, sums, micro_batches, images, started) -> dict:
    """The values of a logging step: the terms averaged over the micro-batches since the last one and over the
    processes (one all-reduce), the last gradient norms, the stage's logs and the counters."""
    local = {name: value / micro_batches for name, value in sums.items()}
    local["skipped_images"] = sums["skipped_images"]
    logs = reduce_mean(accelerator, local)
    state.skipped_images += round(logs.pop("skipped_images") * accelerator.num_processes)  # the global sum
    logs.update({f"{name}/grad_norm": grad_norm for name, (grad_norm, _) in updates.items()})
    logs.update(stage.step_logs())
    logs["images_per_second"] = images * accelerator.num_processes / (time.perf_counter() - started)
    logs.update(skipped_images=state.skipped_images, epoch=state.epoch, nonfinite_steps=state.nonfinite_steps)
    return logs
