# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""Accelerator, logging and output-folder setup shared by both stages."""

import logging
import math
from pathlib import Path

import datasets
import torch
import transformers
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DataLoaderConfiguration, DistributedType, ProjectConfiguration, set_seed
from transformers import get_scheduler

from .arguments import TrainingArguments
from .checkpointing import list_checkpoints
from .sharding import check_launch

logger = get_logger("glotok_train")

# Sharded engines: checkpoints save each model with `save_pretrained` from the unwrapped module and the histogram
# term reads the whole semantic codebook outside the forward pass, neither of which holds for sharded parameters.
SHARDED_ENGINES = (DistributedType.FSDP, DistributedType.DEEPSPEED, DistributedType.MEGATRON_LM)


def build_accelerator(args: TrainingArguments) -> Accelerator:
    """An `Accelerator` with gradient accumulation, mixed precision and trackers as the arguments ask."""
    output_dir = Path(args.output_dir)
    project_config = ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / args.logging_dir))
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=None if args.report_to == "none" else args.report_to,
        project_config=project_config,
        # Loaders pin memory on CUDA (loaders.make_loader), so host-to-device copies can overlap compute.
        dataloader_config=DataLoaderConfiguration(non_blocking=torch.cuda.is_available()),
    )
    check_launch(args.sharding, accelerator.num_processes)
    check_distributed_type(accelerator.distributed_type)
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%m/%d/%Y %H:%M:%S", level=logging.INFO
    )
    logger.info(accelerator.state, main_process_only=False)
    level = logging.WARNING if accelerator.is_local_main_process else logging.ERROR
    datasets.utils.logging.set_verbosity(level)
    transformers.utils.logging.set_verbosity(level)
    if args.allow_tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    # The same seed on every rank: identical initial weights; data order and augmentation derive from it per item.
    set_seed(args.seed)
    return accelerator


def check_distributed_type(distributed_type: DistributedType) -> None:
    """Refuse sharded engines up front with what to use instead, rather than fail obscurely at the first save."""
    if distributed_type in SHARDED_ENGINES:
        raise ValueError(
            f"train.py does not support {distributed_type.value} yet (parameters sharded across processes). Use data "
            "parallelism: `accelerate config` with 'multi-GPU' (DDP; multi-node works), bf16 mixed precision and "
            "--gradient_checkpointing to save memory, or --sharding fsdp under that launch."
        )


def check_output_dir(args: TrainingArguments) -> None:
    """Refuse to start a new run where it would overwrite a finished run or mix with an earlier run's checkpoints."""
    if args.resume_from_checkpoint is not None or args.overwrite_output_dir:
        return
    output_dir = Path(args.output_dir)
    finished = [name for name in ("config.json", "model.safetensors") if (output_dir / name).exists()]  # final model
    checkpoints = list_checkpoints(output_dir)
    if finished or checkpoints:
        held = (f"already holds a finished run's final model ({', '.join(finished)})" if finished else
                f"holds checkpoints of an earlier run ({checkpoints[-1].name} is the newest)")  # fmt: skip
        raise FileExistsError(
            f"--output_dir {str(output_dir)!r} {held}. Choose another --output_dir, continue it with "
            "--resume_from_checkpoint latest, or pass --overwrite_output_dir to replace it."
        )


def build_optimizer(params, args: TrainingArguments, lr: float) -> torch.optim.Optimizer:
    """AdamW (plain Adam at weight decay 0, the paper's tokenizer setting); `params` may be parameter groups."""
    return torch.optim.AdamW(params, lr=lr, betas=(args.adam_beta1, args.adam_beta2),
                             weight_decay=args.adam_weight_decay, eps=args.adam_epsilon)  # fmt: skip


def training_steps(args: TrainingArguments, loader) -> tuple[int, int]:
    """(updates per epoch, total updates) from the prepared (per-process) dataloader."""
    per_epoch = math.ceil(len(loader) / args.gradient_accumulation_steps)
    return per_epoch, args.max_train_steps or args.num_train_epochs * per_epoch


def build_scheduler(args: TrainingArguments, optimizer, loader, num_processes: int):
    """A transformers learning-rate schedule (`--lr_scheduler`, default constant) over the run's updates."""
    total = training_steps(args, loader)[1]
    # accelerate steps a prepared scheduler once per process, hence the scaling (as in diffusers' examples).
    return get_scheduler(args.lr_scheduler, optimizer, num_warmup_steps=args.lr_warmup_steps * num_processes,
                         num_training_steps=total * num_processes)  # fmt: skip


def unwrap(accelerator: Accelerator, model: torch.nn.Module) -> torch.nn.Module:
    """The bare model behind DDP / torch.compile wrappers."""
    model = accelerator.unwrap_model(model)
    return getattr(model, "_orig_mod", model)
