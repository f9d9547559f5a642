# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""Stage 2: the class-conditional AR prior (a stock `LlamaForCausalLM` over the token layout of
`glotok_hf.sampling.TokenLayout`), trained on extracted codes (`--codes_dir`) or on codes extracted on the fly from an
image dataset by the frozen tokenizer. Class dropout to the null class, loss on image tokens only, LlamaGen's optimiser
defaults (AdamW lr 1e-4, betas (0.9, 0.95), weight decay 0.05 on matrices only, gradient clipping 1.0)."""

from pathlib import Path

import torch
from accelerate import Accelerator
from torch.utils.data import default_collate
from transformers import AutoModelForCausalLM, LlamaForCausalLM

from ..codes import count_classes, load_code_dataset, model_fingerprint
from ..configuration_glotok import GloTokConfig
from ..configuration_glotok_prior import prior_preset
from ..data import image_grid, tensor_to_pil, uint8_to_pixels
from ..hub import SAMPLE_GRID_FILE, save_model_card
from ..loading import load_tokenizer
from ..modeling_glotok_prior import GloTokPriorForCausalLM
from ..prior import layout_from_configs, prior_config, prior_training_batch
from ..sampling import sample_image_tokens
from .arguments import TrainingArguments
from .checkpointing import config_differences
from .loaders import SeededItems, build_image_data, make_loader
from .publishing import data_summary, training_card
from .runtime import logger
from .stage import BaseStage
from .tracking import log_image

CARD_METRICS = ("prior/loss", "prior/token_accuracy", "prior/grad_norm")


def weight_decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """LlamaGen's split: weight decay on matrices (linear and embedding weights), none on norms and biases."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]


class PriorStage(BaseStage):
    """Models, data and the step of the prior stage (a `stage.Stage`)."""

    main_loss, role, card_metrics = "prior/loss", "prior", CARD_METRICS

    def __init__(self, args: TrainingArguments, accelerator: Accelerator):
        super().__init__(args, accelerator)
        self.tokenizer = None
        if args.tokenizer_name_or_path is not None:  # a tokenizer or pipeline folder, or a Hub repo of either
            tokenizer = load_tokenizer(args.tokenizer_name_or_path, device=accelerator.device, dtype=torch.float32)
            self.tokenizer = tokenizer.requires_grad_(False)
        self.build_data()
        self.prior = self.build_prior()
        self.layout = layout_from_configs(self.tokenizer_config, self.prior.config, self.prior.config.id2label)
        self.track_ema(self.prior)
        groups = weight_decay_groups(self.prior, args.adam_weight_decay)
        self.model, self.optimizer, self.lr_scheduler = self.prepare_training(
            self.loader, (self.prior, groups, args.learning_rate)
        )
        self.accumulate_models = (self.model,)

    def build_data(self) -> None:
        """Codes from `--codes_dir`, or images encoded on the fly by the frozen tokenizer."""
        args = self.args
        if args.codes_dir is not None:
            dataset, metadata = load_code_dataset(args.codes_dir)
            if args.max_train_samples is not None:
                dataset = dataset.select(range(min(args.max_train_samples, len(dataset))))
            self.tokenizer_config = GloTokConfig.from_dict(metadata["tokenizer_config"])
            self.grid = tuple(metadata["grid"])
            self.class_names = metadata["label_names"]
            self.num_classes = metadata["num_classes"]
            self.data_description = data_summary(args, metadata["num_images"], self.class_names, codes=metadata)
            rows = dataset.rename_column("label", "labels").with_format("torch", columns=["codes", "labels"])
            self.items = SeededItems(rows, seed=args.seed, draw_uniform=True)
            self.sampler, self.loader = make_loader(self.items, args, self.accelerator.num_processes, default_collate)
            self._check_codes(metadata)
        else:
            self.tokenizer_config = self.tokenizer.config
            if args.resolution not in (None, self.tokenizer_config.sample_size):
                raise ValueError(f"--resolution {args.resolution} differs from the tokenizer's sample_size "
                                 f"{self.tokenizer_config.sample_size}: the prior must see the token grid the pipeline "
                                 "will sample. Leave --resolution out.")  # fmt: skip
            args.resolution = self.tokenizer_config.sample_size
            self.items, self.loader, self.sampler, self.class_names = build_image_data(
                args, self.accelerator.num_processes, draw_uniform=True
            )
            self.grid = (self.tokenizer_config.latent_grid_size,) * 2
            self.num_classes = count_classes(self.class_names, self.items.dataset.dataset[args.label_column])
            self.data_description = data_summary(args, len(self.items), self.class_names)
        self.num_positions = self.grid[0] * self.grid[1]

    def _check_codes(self, metadata: dict) -> None:
        """The codes fit the tokenizer: same config (sample_size included), the grid of its sample_size, and, unless
        --allow_tokenizer_mismatch, the same weights (the fingerprint `glotok extract-codes` stored)."""
        where = f"The codes in {self.args.codes_dir}"
        config = self.tokenizer.config if self.tokenizer is not None else self.tokenizer_config
        side = config.latent_grid_size
        if self.grid != (side, side):
            raise ValueError(
                f"{where} have a {self.grid[0]}x{self.grid[1]} token grid (extracted at {metadata['resolution']} px), "
                f"but the tokenizer's sample_size {config.sample_size} gives {side}x{side}: extract them again "
                "without --resolution (it defaults to the tokenizer's sample_size)."
            )
        if self.tokenizer is None:
            logger.warning("No --tokenizer_name_or_path: validation samples are not decoded to images.")
            return
        if mismatched := config_differences(self.tokenizer_config, self.tokenizer.config):
            raise ValueError(f"{where} were extracted with another tokenizer than --tokenizer_name_or_path (config "
                             f"fields {list(mismatched)} differ).")  # fmt: skip
        if metadata.get("tokenizer_fingerprint") != model_fingerprint(self.tokenizer):
            message = (f"{where} were extracted with other tokenizer weights than --tokenizer_name_or_path "
                       f"{self.args.tokenizer_name_or_path} (the fingerprints differ): the prior would learn codes the "
                       "pipeline's tokenizer does not produce.")  # fmt: skip
            if not self.args.allow_tokenizer_mismatch:
                raise ValueError(f"{message} Extract the codes again with this tokenizer, or pass "
                                 "--allow_tokenizer_mismatch to train on them anyway.")  # fmt: skip
            logger.warning(f"{message} Continuing: --allow_tokenizer_mismatch.")

    def build_prior(self) -> LlamaForCausalLM | GloTokPriorForCausalLM:
        args = self.args
        if args.pretrained_model_name_or_path is not None:
            prior = AutoModelForCausalLM.from_pretrained(args.pretrained_model_name_or_path, dtype=torch.float32)
        elif args.prior_type == "factorized":
            config = self.tokenizer_config
            sizes = [s for s in (config.visual_codebook_size, config.semantic_codebook_size) if s]
            if self.grid[0] != self.grid[1]:
                raise ValueError(f"The factorized prior needs a square token grid, got {self.grid[0]}x{self.grid[1]}.")
            overrides = {"head_layers": 3 if len(sizes) > 1 else 0, **(args.model_config or {})}
            prior = GloTokPriorForCausalLM(prior_preset(f"GPT-{args.prior_size}", sizes, self.num_classes,
                                                        self.grid[0], **overrides))  # fmt: skip
        else:
            overrides = args.model_config or {}
            config = prior_config(args.prior_size, self.tokenizer_config, self.num_classes,
                                  num_positions=self.num_positions, **overrides)  # fmt: skip
            prior = LlamaForCausalLM(config)
        if self.class_names:
            prior.config.id2label = dict(enumerate(self.class_names))
            prior.config.label2id = {name: i for i, name in enumerate(self.class_names)}
        if args.gradient_checkpointing:
            prior.gradient_checkpointing_enable()
        return prior.train()

    def forward_backward(self, batch: dict, global_step: int) -> dict[str, torch.Tensor]:
        """Causal-LM loss on the image tokens; the class is dropped to the null class with the item's own draw."""
        if "codes" in batch:
            codes = batch["codes"].long()  # stored as int32
        else:  # encoded by the frozen tokenizer under the run's autocast (its quantizer stays fp32), no gradients
            with self.accelerator.autocast():
                encoded = self.tokenizer.encode(uint8_to_pixels(batch["pixel_values"].to(self.accelerator.device)))
            codes = self.layout.to_tokens(encoded.visual_indices, encoded.semantic_indices)
        dropped = batch["uniform"].to(codes.device, torch.float32) < self.args.class_dropout_prob
        if isinstance(self.prior, GloTokPriorForCausalLM):  # per-codebook indices, one step per grid position
            offsets = torch.tensor([lo for _, lo, _ in self.layout._codebooks], device=codes.device)
            codes = codes.view(codes.shape[0], -1, len(offsets)) - offsets
            labels = batch["labels"].to(codes.device).long().masked_fill(dropped, self.layout.null_label)
            output = self.model(input_ids=codes, class_labels=labels, labels=codes)
            with torch.no_grad():
                accuracy = torch.stack([(lg.argmax(-1) == codes[..., j]).float().mean()
                                        for j, lg in enumerate(output.logits)]).mean()  # fmt: skip
        else:
            inputs = prior_training_batch(codes, batch["labels"], self.layout, class_dropout_prob=0.0)
            inputs["input_ids"][:, 0].masked_fill_(dropped, self.layout.null_class_id)  # no boolean indexing: no sync
            output = self.model(input_ids=inputs["input_ids"], labels=inputs["labels"])
            with torch.no_grad():
                accuracy = (output.logits[:, :-1].argmax(-1) == inputs["input_ids"][:, 1:]).float().mean()
        self.accelerator.backward(output.loss)
        return {"prior/loss": output.loss.detach(), "prior/token_accuracy": accuracy,
                "prior/dropped_classes": dropped.float().mean()}  # fmt: skip

    @torch.no_grad()
    def validate(self, step: int, folder: Path) -> dict:
        """Save and log a grid of class-conditional samples (rows of 8; labels cycling over the classes, one seeded
        generator each), decoded by the tokenizer."""
        count = self.args.num_validation_images
        sharded = self.sharded and self.consolidated is None  # a sharded forward needs every process: at the end
        if getattr(self, "last_grid_step", None) == step or self.tokenizer is None or count == 0 or sharded:
            return {}
        labels = torch.arange(count) % self.layout.num_classes
        generators = [torch.Generator(self.accelerator.device).manual_seed(self.args.seed + i) for i in range(count)]
        with self.evaluating() as prior:
            tokens = sample_image_tokens(prior, self.layout, labels, self.num_positions,
                                         guidance_scale=self.args.validation_guidance_scale, generator=generators)  # fmt: skip
        visual, semantic = self.layout.to_indices(tokens, grid=self.grid)
        images = self.tokenizer.decode(semantic_indices=semantic, visual_indices=visual).sample
        self.last_grid_step = step
        self.last_grid = image_grid(tensor_to_pil(images.float().clamp(-1, 1).cpu()), cols=8)
        path = log_image(self.accelerator, "samples", self.last_grid, step, folder)
        logger.info(f"Step {step}: validation samples saved to {path}")
        return {}

    def final_card(self, output_dir: Path, state, metrics: dict) -> dict:
        """A sample grid beside the (EMA) prior and, with a tokenizer, the ready pipeline in `pipeline/`; the card's
        data."""
        image = None
        if self.tokenizer is not None and self.args.num_validation_images:
            self.validate(state.global_step, output_dir / "validation")
            self.last_grid.save(output_dir / "samples.png")
            image = "samples.png"
        config, layout = self.bare.config, self.layout
        details = {
            "prior": f"{type(self.bare).__name__}, {sum(p.numel() for p in self.bare.parameters()) / 1e6:.1f}M parameters, "
            f"{config.num_hidden_layers} layers, width {config.hidden_size}",
            "vocabulary": f"{layout.vocab_size} = {layout.visual_codebook_size} visual + "
            f"{layout.semantic_codebook_size} semantic codes + {layout.num_classes} classes + 1 null class",
            "image tokens": f"[class, v_0, s_0, v_1, s_1, ...] over a {self.grid[0]}x{self.grid[1]} grid",
            "tokenizer": self.args.tokenizer_name_or_path or "not given",
            "class dropout": self.args.class_dropout_prob,
        }
        if self.tokenizer is not None:
            self.save_pipeline(output_dir / "pipeline", state, metrics)
        return {"details": details, "training_data": self.data_description, "sample_grid_file": image,
                "id2label": config.id2label if self.class_names else None}  # fmt: skip

    def save_pipeline(self, folder: Path, state, metrics: dict) -> None:
        """The ready-to-use `GloTokPipeline` (tokenizer + final prior + class names) with a model card filled from the
        run: `GloTokPipeline.from_pretrained(folder)`, `glotok check-pipeline folder`."""
        from glotok_hf import GloTokPipeline

        id2label = dict(enumerate(self.class_names)) if self.class_names else None
        pipeline = GloTokPipeline(vqmodel=self.tokenizer.eval(), prior=self.final_model.eval(), id2label=id2label)
        pipeline.save_pretrained(folder)
        grid = getattr(self, "last_grid", None)
        card = training_card("pipeline", self, state, details={}, metrics=metrics, pipeline=pipeline,
                             training_data=self.data_description,
                             sample_grid_file=SAMPLE_GRID_FILE if grid is not None else None)  # fmt: skip
        save_model_card(card, folder, sample_grid=grid, overwrite=True)
        logger.info(f"Pipeline saved to {folder}")
