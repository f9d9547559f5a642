# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""Stage 1: the GloTok tokenizer with the full objective (reconstruction, VQ, residual, histogram relation,
perceptual, PatchGAN) and two optimizers, the discriminator frozen during the tokenizer's update."""

import dataclasses
import json
import math
from pathlib import Path

import torch
from accelerate import Accelerator
from torch.torch_version import TorchVersion

from ..configuration_glotok import GloTokConfig
from ..data import class_names, image_grid, tensor_to_pil, uint8_to_pixels
from ..discriminator import GloTokDiscriminator, GloTokDiscriminatorConfig
from ..evaluation import CodebookUsageWindow
from ..losses import GloTokObjective, default_histogram_alpha
from ..modeling_glotok import GloTokModel
from ..teacher import load_teacher
from .arguments import TrainingArguments
from .loaders import build_image_data, validation_images
from .publishing import data_summary
from .runtime import logger, unwrap
from .sharding import full
from .stage import BaseStage
from .tracking import guarded_update, log_image

CARD_METRICS = (
    "generator/loss", "generator/reconstruction_loss", "generator/codebook_loss", "generator/commitment_loss",
    "generator/residual_loss", "generator/histogram_loss", "generator/perceptual_loss",
    "generator/generator_adversarial_loss", "discriminator/loss", "codebook/semantic_usage",
    "codebook/semantic_perplexity", "codebook/visual_usage", "codebook/visual_perplexity", "validation/psnr",
)  # fmt: skip


def build_tokenizer(args: TrainingArguments) -> GloTokModel:
    """The tokenizer to train; it describes the resolution it is trained at: a new one takes `--resolution` as its
    `sample_size`, a pretrained one refuses another resolution. `args.resolution` is set to that `sample_size`."""
    if args.pretrained_model_name_or_path is not None:
        model = load_pretrained_tokenizer(args.pretrained_model_name_or_path, args.model_config or {})
        if args.resolution not in (None, model.config.sample_size):
            raise ValueError(
                f"--resolution {args.resolution} differs from the sample_size {model.config.sample_size} of "
                f"{args.pretrained_model_name_or_path}: continue at --resolution {model.config.sample_size}, or train "
                "a new tokenizer (--model_config) at the new resolution."
            )
    else:
        config = dict(args.model_config)
        if args.resolution is not None and config.get("sample_size", GloTokConfig.sample_size) != args.resolution:
            logger.info(f"--resolution {args.resolution}: the tokenizer's sample_size is set to it (the model config "
                        f"said {config.get('sample_size', GloTokConfig.sample_size)}).")  # fmt: skip
            config["sample_size"] = args.resolution
        model = GloTokModel(GloTokConfig(**config))
    args.resolution = model.config.sample_size
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return model.train()


def load_pretrained_tokenizer(source: str, overrides: dict) -> GloTokModel:
    """A saved tokenizer to continue from, its config updated with `overrides` (`--model_config`, e.g.
    `{"use_residual": true}` to warm-start GloTok from a converted FQGAN-Dual). Every saved tensor must load; only
    the modules the overrides add are freshly initialised, and they are logged."""
    if unknown := sorted(set(overrides) - set(GloTokConfig.__annotations__)):
        raise ValueError(f"--model_config names no GloTokConfig field: {unknown}.")
    base = GloTokConfig.from_pretrained(source)
    config = GloTokConfig.from_dict({**base.to_dict(), **overrides})
    model, info = GloTokModel.from_pretrained(
        source, config=config, dtype=torch.float32, ignore_mismatched_sizes=True, output_loading_info=True
    )
    with torch.device("meta"):
        added = model.state_dict().keys() - GloTokModel(base).state_dict().keys()
    problems = {"do not fit the model (shapes differ)": [k for k, *_ in info["mismatched_keys"]],
                "have no place in the model": info["unexpected_keys"],
                "are missing from the checkpoint": [k for k in info["missing_keys"] if k not in added]}  # fmt: skip
    if details := [f"{len(keys)} {what}: {sorted(keys)[:3]}" for what, keys in problems.items() if keys]:
        raise ValueError(f"With --model_config {overrides}, the tensors of {source} do not all load: "
                         f"{'; '.join(details)}. Only add modules when continuing from a saved tokenizer.")  # fmt: skip
    if added:
        modules = sorted({".".join(k.split(".")[:2]) for k in added})
        logger.info(f"Loaded every tensor of {source}; freshly initialised ({len(added)} tensors): {modules}")
    return model


def build_discriminator(args: TrainingArguments) -> GloTokDiscriminator:
    pretrained = Path(args.pretrained_model_name_or_path or "") / "discriminator"
    if args.pretrained_model_name_or_path is not None and (pretrained / "config.json").is_file():
        logger.info(f"Continuing from the discriminator in {pretrained}")
        return GloTokDiscriminator.from_pretrained(pretrained, dtype=torch.float32).train()
    discriminator = GloTokDiscriminator(GloTokDiscriminatorConfig(**(args.discriminator_config or {})))
    if args.resolution < discriminator.config.min_image_size:
        raise ValueError(
            f"--resolution {args.resolution} is smaller than the discriminator's minimum image size "
            f"{discriminator.config.min_image_size} (num_layers={discriminator.config.num_layers}); lower num_layers."
        )
    return discriminator.train()


def check_batchnorm_ddp(norm_type: str, num_processes: int, torch_version: str = torch.__version__) -> None:
    """Two BatchNorm forwards (real, fake) before one backward fail under DDP's buffer broadcast in torch < 2.13."""
    if norm_type == "batch" and num_processes > 1 and TorchVersion(torch_version) < (2, 13):
        raise RuntimeError(
            f"A BatchNorm discriminator under DDP needs torch >= 2.13 (this is {torch_version}): upgrade torch, or "
            'pass --discriminator_config \'{"norm_type": "group"}\'.'
        )


def build_objective(args: TrainingArguments, model: GloTokModel) -> tuple[GloTokObjective, dict | None]:
    """The objective and the teacher's metadata (recorded in trackers and the model card)."""
    loss_config = dataclasses.replace(args.loss, codebook_l2_norm=model.config.codebook_l2_norm)
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


class TokenizerStage(BaseStage):
    """Models, data and the two-optimizer step of the tokenizer stage (a `stage.Stage`)."""

    main_loss, role, card_metrics = "generator/loss", "tokenizer", CARD_METRICS

    def __init__(self, args: TrainingArguments, accelerator: Accelerator):
        super().__init__(args, accelerator)
        model, discriminator = build_tokenizer(args), build_discriminator(args)
        check_batchnorm_ddp(discriminator.config.norm_type, accelerator.num_processes)
        self.objective, self.teacher_metadata = build_objective(args, model)
        self.objective.to(accelerator.device)
        self.track_ema(model)
        self.items, loader, self.sampler, _ = build_image_data(args, accelerator.num_processes, with_labels=False)
        d_learning_rate = args.discriminator_learning_rate or args.learning_rate
        (self.model, self.discriminator, self.optimizer, self.d_optimizer, self.lr_scheduler,
         self.d_scheduler) = self.prepare_training(loader, (model, model.parameters(), args.learning_rate),
                                                   (discriminator, discriminator.parameters(), d_learning_rate))  # fmt: skip
        sizes = {"semantic": model.config.semantic_codebook_size, "visual": model.config.visual_codebook_size}
        self.usage = {name: CodebookUsageWindow(size, args.usage_window, device=accelerator.device)
                      for name, size in sizes.items() if size > 0}  # fmt: skip
        self.validation_images = validation_images(args, self.items, args.num_validation_images)
        self.accumulate_models = (self.model, self.discriminator)
        if self.teacher_metadata:
            self.tracker_extras["teacher"] = json.dumps(self.teacher_metadata, default=str)

    def checkpoint_roles(self) -> dict:
        return {**super().checkpoint_roles(), "discriminator": unwrap(self.accelerator, self.discriminator)}

    def export_state(self, extra: dict) -> None:
        extra["usage"] = {name: window.state_dict() for name, window in self.usage.items()}

    def import_state(self, extra: dict) -> None:
        for name, window_state in extra.get("usage", {}).items():
            self.usage[name].load_state_dict(window_state)

    def forward_backward(self, batch: dict, global_step: int) -> dict[str, torch.Tensor]:
        """Generator loss and backward (discriminator frozen), then the discriminator loss and backward."""
        pixel_values = uint8_to_pixels(batch["pixel_values"])  # on the device
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
                semantic_codebook=full(bare.semantic.quantizer.embedding.weight) if bare.semantic is not None else None,
                visual_codebook=full(bare.visual.quantizer.embedding.weight) if bare.visual is not None else None,
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
        if self._discriminator_active:  # fp16: at the scale of its backward, before the tokenizer's step moves it
            self.accelerator.unscale_gradients(optimizer=self.d_optimizer)
        updates = {"generator": self.update_model()}
        if self._discriminator_active:
            updates["discriminator"] = guarded_update(self.accelerator, self.discriminator, self.d_optimizer,
                                                      self.d_scheduler, self.args.max_grad_norm, unscaled=True)  # fmt: skip
        return updates

    def step_logs(self) -> dict[str, float]:
        logs = super().step_logs()
        for name, window in self.usage.items():
            logs[f"codebook/{name}_usage"] = window.usage()
            logs[f"codebook/{name}_perplexity"] = window.perplexity()
        return logs

    def validate(self, step: int, folder: Path) -> dict[str, float]:
        """Save and log a grid of validation images over their reconstructions; returns their PSNR to log."""
        if self.validation_images is None or (self.sharded and self.consolidated is None):  # sharded: at the end
            return {}
        if getattr(self, "last_validation", {}).get("step") == step:
            return {"validation/psnr": self.last_validation["psnr"]}
        with self.evaluating() as model:  # the (EMA) tokenizer in eval mode
            reconstructions = (
                model(self.validation_images.to(self.accelerator.device)).sample.float().clamp(-1, 1).cpu()
            )
        mse = torch.mean((reconstructions - self.validation_images) ** 2).item()
        psnr = 10 * math.log10(4.0 / max(mse, 1e-12))  # peak-to-peak range 2 for pixels in [-1, 1]
        grid = image_grid(tensor_to_pil(torch.cat([self.validation_images, reconstructions])), len(reconstructions))
        path = log_image(self.accelerator, "reconstructions", grid, step, folder)
        logger.info(f"Step {step}: validation PSNR {psnr:.2f} dB, grid saved to {path}")
        self.last_validation = {"step": step, "psnr": psnr, "grid": grid}
        return {"validation/psnr": psnr}

    def final_card(self, output_dir: Path, state, metrics: dict) -> dict:
        """The discriminator and the final reconstruction grid beside the (EMA) tokenizer; the card's data."""
        unwrap(self.accelerator, self.discriminator).save_pretrained(output_dir / "discriminator")
        image = None
        if self.validation_images is not None:  # at the final step (reused when it was just validated)
            metrics.update(self.validate(state.global_step, output_dir / "validation"))
            self.last_validation["grid"].save(output_dir / "reconstructions.png")
            image = "reconstructions.png"
        args, config = self.args, self.bare.config
        data = data_summary(args, len(self.items), class_names(self.items.dataset.dataset, args.label_column))
        if self.teacher_metadata:
            data += "\n\nTeacher histogram of the histogram relation loss (Eq. 7):\n\n```json\n"
            data += json.dumps(self.teacher_metadata, indent=2, default=str) + "\n```"
        details = {
            "resolution": args.resolution,
            "token grid": f"{config.latent_grid_size}x{config.latent_grid_size}",
            "codebooks": f"{config.semantic_codebook_size} semantic + {config.visual_codebook_size} visual codes of "
            f"dimension {config.codebook_dim}",
            "skipped unreadable images": state.skipped_images,
        }
        return {"details": details, "training_data": data, "sample_grid_file": image}
