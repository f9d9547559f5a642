# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""Stage 1: the GloTok tokenizer with the full objective (reconstruction, VQ, residual, histogram relation,
perceptual, PatchGAN) and two optimizers, the discriminator frozen during the tokenizer's update."""

import argparse
import json
import math
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger

from glotok_hf import GloTokConfig, GloTokModel
from glotok_hf.discriminator import GloTokDiscriminator, GloTokDiscriminatorConfig
from glotok_hf.evaluation import CodebookUsageWindow
from glotok_hf.losses import GloTokLossConfig, GloTokObjective, default_histogram_alpha
from glotok_hf.teacher import load_teacher

from arguments import dataclass_from_args, public_args, read_json_argument
from ema import EMA
from loaders import build_image_data, validation_images
from publishing import render_card
from runtime import build_optimizer, build_scheduler, unwrap
from tracking import guarded_update, image_grid, log_image

logger = get_logger("glotok_train")

# The card reports these logged values, when present.
CARD_METRICS = (
    "generator/loss", "generator/reconstruction_loss", "generator/codebook_loss", "generator/commitment_loss",
    "generator/residual_loss", "generator/histogram_loss", "generator/perceptual_loss",
    "generator/generator_adversarial_loss", "discriminator/loss", "codebook/semantic_usage",
    "codebook/semantic_perplexity", "codebook/visual_usage", "codebook/visual_perplexity", "validation/psnr",
)  # fmt: skip


def build_tokenizer(args: argparse.Namespace) -> GloTokModel:
    if args.pretrained_model_name_or_path is not None:
        model = GloTokModel.from_pretrained(args.pretrained_model_name_or_path, dtype=torch.float32)
    else:
        model = GloTokModel(GloTokConfig(**read_json_argument(args.model_config, "model_config")))
    factor = model.config.downsample_factor
    if args.resolution % factor:
        raise ValueError(f"--resolution {args.resolution} must be a multiple of the tokenizer's downsampling factor "
                         f"{factor}.")  # fmt: skip
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return model.train()


def build_discriminator(args: argparse.Namespace) -> GloTokDiscriminator:
    pretrained = Path(args.pretrained_model_name_or_path or "") / "discriminator"
    if args.pretrained_model_name_or_path is not None and (pretrained / "config.json").is_file():
        logger.info(f"Continuing from the discriminator in {pretrained}")
        return GloTokDiscriminator.from_pretrained(pretrained, dtype=torch.float32).train()
    config = read_json_argument(args.discriminator_config, "discriminator_config") or {}
    discriminator = GloTokDiscriminator(GloTokDiscriminatorConfig(**config))
    if args.resolution < discriminator.config.min_image_size:
        raise ValueError(
            f"--resolution {args.resolution} is smaller than the discriminator's minimum image size "
            f"{discriminator.config.min_image_size} (num_layers={discriminator.config.num_layers}); lower num_layers."
        )
    return discriminator.train()


def build_objective(args: argparse.Namespace, model: GloTokModel) -> tuple[GloTokObjective, dict | None]:
    """The objective and the teacher's metadata (recorded in trackers and the model card)."""
    loss_config = dataclass_from_args(GloTokLossConfig, args, codebook_l2_norm=model.config.codebook_l2_norm)
    teacher, metadata = None, None
    if args.teacher_histogram is not None:
        num_bins = loss_config.histogram_num_bins
        alpha = loss_config.histogram_alpha or default_histogram_alpha(num_bins)  # the kernel the loss will use
        loaded = load_teacher(args.teacher_histogram, num_bins=num_bins, alpha=alpha)
        teacher = loaded.histogram
        metadata = {"file": str(args.teacher_histogram), "alpha": loaded.alpha, **dict(loaded.metadata)}
        logger.info(f"Teacher histogram {args.teacher_histogram}: {loaded.summary()} ({metadata})")
    if loss_config.histogram_weight > 0 and teacher is not None and not model.config.has_semantic_codebook:
        raise ValueError(
            "--teacher_histogram needs a tokenizer with a semantic codebook (semantic_codebook_size > 0)."
        )
    return GloTokObjective(loss_config, teacher_histogram=teacher), metadata


class TokenizerStage:
    """Models, data and the two-optimizer step of the tokenizer stage (see `loop.py` for the interface)."""

    main_loss = "generator/loss"

    def __init__(self, args: argparse.Namespace, accelerator: Accelerator):
        self.args, self.accelerator = args, accelerator
        model, discriminator = build_tokenizer(args), build_discriminator(args)
        self.objective, self.teacher_metadata = build_objective(args, model)
        self.objective.to(accelerator.device)
        self.ema = EMA(model, args.ema_decay).to(accelerator.device) if args.use_ema else None
        self.items, loader, self.sampler, self.class_names = build_image_data(
            args, accelerator.num_processes, with_labels=False
        )
        self.loader = accelerator.prepare(loader)
        total = args.max_train_steps or args.num_train_epochs * math.ceil(
            len(self.loader) / args.gradient_accumulation_steps
        )
        optimizer = build_optimizer(model.parameters(), args, args.learning_rate)
        d_optimizer = build_optimizer(
            discriminator.parameters(), args, args.discriminator_learning_rate or args.learning_rate
        )
        prepared = accelerator.prepare(
            model, discriminator, optimizer, d_optimizer,
            build_scheduler(args, optimizer, total, accelerator.num_processes),
            build_scheduler(args, d_optimizer, total, accelerator.num_processes),
        )  # fmt: skip
        self.model, self.discriminator, self.optimizer, self.d_optimizer, self.lr_scheduler, self.d_scheduler = (
            prepared
        )
        self.usage = {
            name: CodebookUsageWindow(
                getattr(self.bare.config, f"{name}_codebook_size"), args.usage_window, device=accelerator.device
            )  # fmt: skip
            for name in ("semantic", "visual")
            if getattr(self.bare.config, f"has_{name}_codebook")
        }
        self.validation_images = validation_images(args, args.num_validation_images)
        self.accumulate_models = (self.model, self.discriminator)
        self.tracker_extras = (
            {"teacher": json.dumps(self.teacher_metadata, default=str)} if self.teacher_metadata else {}
        )

    @property
    def bare(self) -> GloTokModel:
        return unwrap(self.accelerator, self.model)

    # ------------------------------------------------------------------------------------------------ checkpoints
    def checkpoint_roles(self) -> dict:
        return {"tokenizer": self.bare, "discriminator": unwrap(self.accelerator, self.discriminator)}

    def checkpoint_emas(self) -> dict:
        return {"tokenizer": self.ema} if self.ema is not None else {}

    def export_state(self, extra: dict) -> None:
        extra["usage"] = {name: window.state_dict() for name, window in self.usage.items()}

    def import_state(self, extra: dict) -> None:
        for name, window_state in extra.get("usage", {}).items():
            self.usage[name].load_state_dict(window_state)

    # ------------------------------------------------------------------------------------------------ training
    def forward_backward(self, batch: dict, global_step: int) -> dict[str, torch.Tensor]:
        """Generator loss and backward (discriminator frozen), then the discriminator loss and backward."""
        pixel_values = batch["pixel_values"]
        bare, bare_discriminator = self.bare, unwrap(self.accelerator, self.discriminator)
        active = self.objective.discriminator_active(global_step)
        output = self.model(pixel_values)
        # The generator sees the bare discriminator (outside DDP: no gradient all-reduce is set up for it) with
        # frozen weights, so only the tokenizer receives gradients from the adversarial term.
        bare_discriminator.requires_grad_(False)
        with self.accelerator.autocast():
            g_terms = self.objective.generator_loss(
                output, pixel_values, global_step=global_step,
                discriminator=bare_discriminator if active else None,
                semantic_codebook=bare.semantic.quantizer.embedding.weight if bare.semantic is not None else None,
                visual_codebook=bare.visual.quantizer.embedding.weight if bare.visual is not None else None,
                last_layer=bare.get_last_layer() if self.objective.config.disc_adaptive_weight else None,
            )  # fmt: skip
        bare_discriminator.requires_grad_(True)
        self.accelerator.backward(g_terms["loss"])
        terms = {f"generator/{name}": value for name, value in g_terms.items()}
        if active:
            with self.accelerator.autocast():
                d_terms = self.objective.discriminator_loss(
                    self.discriminator, pixel_values, output.sample.detach(), global_step=global_step
                )
            self.accelerator.backward(d_terms["loss"])
            terms.update({f"discriminator/{name}": value for name, value in d_terms.items()})
        for name, window in self.usage.items():
            window.update(getattr(output, f"{name}_indices"))
        self._discriminator_active = active
        return terms

    def update(self) -> dict[str, tuple[float, bool]]:
        """At the end of an accumulation: guarded updates of the tokenizer (+EMA) and, once active, the
        discriminator."""
        max_norm = self.args.max_grad_norm
        updates = {
            "generator": guarded_update(self.accelerator, self.model, self.optimizer, self.lr_scheduler, max_norm)
        }
        if updates["generator"][1] and self.ema is not None:
            self.ema.step(self.bare)
        if self._discriminator_active:
            updates["discriminator"] = guarded_update(
                self.accelerator, self.discriminator, self.d_optimizer, self.d_scheduler, max_norm
            )
        return updates

    def step_logs(self) -> dict[str, float]:
        logs = {"lr": self.lr_scheduler.get_last_lr()[0]}
        for name, window in self.usage.items():
            logs[f"codebook/{name}_usage"] = window.usage()
            logs[f"codebook/{name}_perplexity"] = window.perplexity()
        return logs

    # ------------------------------------------------------------------------------------------------ validation
    @property
    def final_model(self) -> GloTokModel:
        """The model that is validated and published: the EMA when there is one."""
        return self.ema.module if self.ema is not None else self.bare

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """Reconstructions by the (EMA) tokenizer in eval mode."""
        model = self.final_model
        was_training = model.training
        model.eval()
        try:
            with self.accelerator.autocast():
                return model(images.to(self.accelerator.device)).sample.float().clamp(-1, 1).cpu()
        finally:
            model.train(was_training)

    def validate(self, step: int, folder: Path) -> dict[str, float]:
        """Save and log a grid of validation images over their reconstructions; returns their PSNR to log."""
        if self.validation_images is None:
            return {}
        if getattr(self, "last_validation", {}).get("step") == step:
            return {"validation/psnr": self.last_validation["psnr"]}
        reconstructions = self.reconstruct(self.validation_images)
        mse = torch.mean((reconstructions - self.validation_images) ** 2).item()
        psnr = 10 * math.log10(4.0 / max(mse, 1e-12))  # peak-to-peak range 2 for pixels in [-1, 1]
        grid = image_grid([self.validation_images, reconstructions])
        path = log_image(self.accelerator, "reconstructions", grid, step, folder)
        logger.info(f"Step {step}: validation PSNR {psnr:.2f} dB, grid saved to {path}")
        self.last_validation = {"step": step, "psnr": psnr, "grid": grid}
        return {"validation/psnr": psnr}

    # ------------------------------------------------------------------------------------------------ the end
    def save_final(self, output_dir: Path, state, logs: dict) -> None:
        """The (EMA) tokenizer in the remote-code layout at `output_dir`, the discriminator, a grid, the card."""
        self.final_model.save_pretrained(output_dir)
        unwrap(self.accelerator, self.discriminator).save_pretrained(output_dir / "discriminator")
        metrics = {k: v for k, v in logs.items() if k in CARD_METRICS}
        image = None
        if self.validation_images is not None:  # at the final step (reused when it was just validated)
            metrics.update(self.validate(state.global_step, output_dir / "validation"))
            self.last_validation["grid"].save(output_dir / "reconstructions.png")
            image = "reconstructions.png"
        (output_dir / "training_args.json").write_text(json.dumps(public_args(self.args), indent=2, default=str))
        render_card(self.summary(state, metrics, image)).save(output_dir / "README.md")

    def summary(self, state, metrics: dict, image: str | None) -> dict:
        args, config = self.args, self.bare.config
        dataset = args.dataset_name or Path(args.train_data_dir).name
        return {
            "title": f"GloTok tokenizer ({Path(args.output_dir).name})",
            "description": (
                f"A GloTok image tokenizer (AAAI-26, arXiv 2511.14184): {config.semantic_codebook_size} semantic + "
                f"{config.visual_codebook_size} visual codes of dimension {config.codebook_dim}, a "
                f"{args.resolution // config.downsample_factor}x{args.resolution // config.downsample_factor} token "
                f"grid at {args.resolution}x{args.resolution}."
                + (" Weights are the exponential moving average." if self.ema is not None else "")
            ),
            "usage": _USAGE.format(repo=args.hub_model_id or Path(args.output_dir).name, size=args.resolution),
            "image": image,
            "image_caption": "Top: validation images; bottom: reconstructions.",
            "tags": ["glotok", "image-tokenizer", "vector-quantization", "glotok-hf"],
            "dataset": dataset,
            "dataset_on_hub": args.dataset_name is not None and not Path(args.dataset_name).exists(),
            "training": self.training_table(state, dataset),
            "final_step": state.global_step,
            "metrics": metrics,
            "teacher": self.teacher_metadata,
            "configs": {
                "Tokenizer config": config.to_dict(),
                "Loss config": self.objective.config.to_dict(),
                "Discriminator config": unwrap(self.accelerator, self.discriminator).config.to_dict(),
                "Training arguments": public_args(args),
            },
        }

    def training_table(self, state, dataset: str) -> dict:
        args = self.args
        return {
            "data": f"{dataset} ({len(self.items)} images, split {args.dataset_split})",
            "resolution": args.resolution,
            "steps": state.global_step,
            "epochs": f"{state.images_seen / len(self.items):.2f}",
            "global batch": args.train_batch_size * self.accelerator.num_processes * args.gradient_accumulation_steps,
            "processes": self.accelerator.num_processes,
            "optimizer": f"Adam(W) betas ({args.adam_beta1}, {args.adam_beta2}), weight decay {args.adam_weight_decay}",
            "learning rate": f"{args.learning_rate} ({args.lr_scheduler})",
            "mixed precision": self.accelerator.mixed_precision,
            "EMA": f"decay {args.ema_decay}" if args.use_ema else "no",
            "skipped unreadable images": state.skipped_images,
            "skipped non-finite updates": state.nonfinite_steps,
        }


_USAGE = """import torch
from transformers import AutoModel

tokenizer = AutoModel.from_pretrained("{repo}", trust_remote_code=True).eval()
images = torch.rand(1, 3, {size}, {size}) * 2 - 1  # pixels in [-1, 1]
codes = tokenizer.encode(images)                    # semantic_indices / visual_indices
reconstruction = tokenizer.decode(**codes.indices).sample"""
