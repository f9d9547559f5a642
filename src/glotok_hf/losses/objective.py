# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""The combined GloTok tokenizer objective (paper Eqs. 2, 3, 13):

    L = w_R L_R + w_P L_P + w_Q (L_codebook + beta L_commit) + lambda_res L_res + lambda_hist L_hist
        + w_G * a * L_G [+ w_E L_entropy + w_D L_disentangle]

with the pixel reconstruction `L_R`, the LPIPS perceptual loss `L_P`, the VQ loss of both codebooks (beta already
inside the commitment term, see `GloTokModel.forward`), the residual loss of Eq. 10, the histogram relation loss of
Eq. 7 on the semantic codebook, and the PatchGAN generator loss `L_G` from step `disc_start` on, optionally scaled by
the adaptive weight `a` of taming-transformers. [`GloTokLossConfig`] gives the weights and their defaults.

The objective never logs: it returns dicts of named terms. Its only message is one warning at construction when a
configured term cannot run (no LPIPS weights, no teacher histogram).
"""

import math
import os
import warnings
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..modeling_glotok import GloTokModelOutput
from ..utils import is_int
from .gan import DISCRIMINATOR_LOSSES, adaptive_generator_weight, discriminator_loss, generator_adversarial_loss
from .histogram import check_histogram, histogram_relation_loss
from .lpips import LPIPS
from .regularizers import disentanglement_loss, entropy_loss

# Every generator term and the GloTokLossConfig weight it is multiplied by in the total (the adversarial term also by
# `adaptive_weight`, which is reported as a term of its own).
TERM_WEIGHTS = {
    "reconstruction_loss": "reconstruction_weight",
    "perceptual_loss": "perceptual_weight",
    "codebook_loss": "codebook_weight",
    "commitment_loss": "codebook_weight",
    "residual_loss": "residual_weight",
    "histogram_loss": "histogram_weight",
    "generator_adversarial_loss": "disc_weight",
    "entropy_loss": "entropy_weight",
    "disentanglement_loss": "disentanglement_weight",
}
GENERATOR_TERMS = (*TERM_WEIGHTS, "adaptive_weight")
RECONSTRUCTION_LOSSES = ("l2", "l1")


def reconstruction_loss(reconstruction: torch.Tensor, target: torch.Tensor, kind: str = "l2") -> torch.Tensor:
    r"""Mean pixel error between a reconstruction and its target, computed in fp32.

    Args:
        reconstruction (`torch.FloatTensor` of shape `(batch, channels, height, width)`):
            decoded images, nominally in [-1, 1].
        target (`torch.FloatTensor` of the same shape): the input images in [-1, 1].
        kind (`str`, *optional*, defaults to `"l2"`):
            `"l2"`: mean squared error `mean((x_hat - x)^2)` (the paper's `L_R`); `"l1"`: mean absolute error.

    Returns:
        `torch.FloatTensor` of shape `()`.
    """
    if reconstruction.shape != target.shape:  # F.mse_loss would broadcast
        raise ValueError(f"reconstruction and target shapes differ: {reconstruction.shape} vs {target.shape}.")
    loss_fn = {"l2": F.mse_loss, "l1": F.l1_loss}[kind]  # GloTokLossConfig checked the kind
    return loss_fn(reconstruction.float(), target.float())


@dataclass
class GloTokLossConfig:
    r"""
    Weights and switches of [`GloTokObjective`]: the paper's defaults and, where it is silent, LlamaGen / FQGAN's.
    Flat, typed and JSON-serialisable (`to_dict`; `GloTokLossConfig(**d)` reads it back), so the training script can
    save it next to checkpoints and in the model card.

    Args:
        reconstruction_loss (`str`, *optional*, defaults to `"l2"`): `"l2"` (the paper's) or `"l1"`.
        reconstruction_weight (`float`, *optional*, defaults to 1.0): weight of the pixel reconstruction loss.
        codebook_weight (`float`, *optional*, defaults to 1.0):
            weight of `codebook_loss + commitment_loss` (beta is already inside the commitment term).
        residual_weight (`float`, *optional*, defaults to 0.5): lambda_res of the residual loss (Eq. 10).
        histogram_weight (`float`, *optional*, defaults to 0.01):
            lambda_hist of the histogram relation loss (Eq. 7). 0, or no teacher histogram, turns it off.
        histogram_num_bins (`int`, *optional*, defaults to 40): bins of the soft cosine histogram (Eq. 5).
        histogram_alpha (`float`, *optional*):
            kernel sharpness alpha of Eq. 6; `None` uses the histogram module's default (bandwidth = bin spacing).
        perceptual_weight (`float`, *optional*, defaults to 1.0): weight of the LPIPS loss.
        perceptual_model_path (`str`, *optional*):
            local LPIPS `.safetensors` file (or a folder holding one), made by `glotok convert-lpips`. `None` turns
            the perceptual loss off with one warning, unless a module is passed to [`GloTokObjective`].
        disc_weight (`float`, *optional*, defaults to 0.5): weight of the adversarial terms (generator and
            discriminator), as in LlamaGen.
        disc_start (`int`, *optional*, defaults to 20000): first global step with adversarial terms.
        disc_loss (`str`, *optional*, defaults to `"hinge"`): `"hinge"` or `"non_saturating"`.
        disc_adaptive_weight (`bool`, *optional*, defaults to `False`): scale the generator's adversarial term by the
            adaptive weight of taming-transformers (needs `last_layer` in [`GloTokObjective.generator_loss`]).
        disc_adaptive_weight_max (`float`, *optional*, defaults to 1e4): clamp of the adaptive weight.
        entropy_weight (`float`, *optional*, defaults to 0.0): codebook entropy regulariser (ablation; FQGAN uses 0.03).
        entropy_temperature (`float`, *optional*, defaults to 0.01): softmax temperature of the entropy regulariser.
        disentanglement_weight (`float`, *optional*, defaults to 0.0):
            FQGAN's visual/semantic disentanglement loss (ablation; FQGAN uses 0.1).
        codebook_l2_norm (`bool`, *optional*, defaults to `True`):
            must equal the tokenizer's `GloTokConfig.codebook_l2_norm`; only the entropy regulariser reads it.
    """

    reconstruction_loss: str = "l2"
    reconstruction_weight: float = 1.0
    codebook_weight: float = 1.0
    residual_weight: float = 0.5
    histogram_weight: float = 0.01
    histogram_num_bins: int = 40
    histogram_alpha: float | None = None
    perceptual_weight: float = 1.0
    perceptual_model_path: str | None = None
    disc_weight: float = 0.5
    disc_start: int = 20000
    disc_loss: str = "hinge"
    disc_adaptive_weight: bool = False
    disc_adaptive_weight_max: float = 1e4
    entropy_weight: float = 0.0
    entropy_temperature: float = 0.01
    disentanglement_weight: float = 0.0
    codebook_l2_norm: bool = True

    def __post_init__(self):
        if isinstance(self.perceptual_model_path, os.PathLike):
            self.perceptual_model_path = os.fspath(self.perceptual_model_path)
        self._validate()

    def _validate(self) -> None:
        """The one validation of the loss configuration, run once by `__post_init__`; the objective trusts it."""

        def check(name, ok_type, kind, ok_value, bound):
            value = getattr(self, name)
            if not ok_type(value):
                raise TypeError(f"GloTokLossConfig.{name} must be {kind}, got {type(value).__name__} {value!r}.")
            if not ok_value(value):
                raise ValueError(f"GloTokLossConfig.{name} must be {bound}, got {value!r}.")

        def is_number(value):
            return is_int(value) or isinstance(value, float)

        for name, choices in (("reconstruction_loss", RECONSTRUCTION_LOSSES), ("disc_loss", DISCRIMINATOR_LOSSES)):
            check(name, lambda v: True, "", lambda v, c=choices: v in c, f"one of {choices}")
        for name in dict.fromkeys(TERM_WEIGHTS.values()):
            check(name, is_number, "a float", lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")
        for name in ("disc_adaptive_weight_max", "entropy_temperature"):
            check(name, is_number, "a float", lambda v: math.isfinite(v) and v > 0, "a finite number > 0")
        check("histogram_alpha", lambda v: v is None or is_number(v), "a float or None",
              lambda v: v is None or (math.isfinite(v) and v > 0), "> 0")  # fmt: skip
        check("histogram_num_bins", is_int, "an int", lambda v: v >= 2, ">= 2")
        check("disc_start", is_int, "an int", lambda v: v >= 0, ">= 0")
        for name in ("disc_adaptive_weight", "codebook_l2_norm"):
            check(name, lambda v: isinstance(v, bool), "a bool", lambda v: True, "")
        check("perceptual_model_path", lambda v: v is None or isinstance(v, str), "a path string or None",
              lambda v: True, "")  # fmt: skip

    def to_dict(self) -> dict:
        """The config as a JSON-serialisable dict."""
        return asdict(self)


class GloTokObjective(nn.Module):
    r"""
    The GloTok tokenizer objective: the generator loss of one training step and the discriminator loss of the
    alternating discriminator step. Move it to the training device with `.to(device)` (it holds the LPIPS network and
    the teacher histogram).

    Args:
        config ([`GloTokLossConfig`]): weights and switches.
        teacher_histogram (`torch.FloatTensor` of shape `(config.histogram_num_bins,)`, *optional*):
            the fixed teacher distribution `P_t` of Eq. 7 (finite, non-negative, sums to 1). Without it the histogram
            term is off.
        perceptual (`nn.Module`, *optional*):
            a perceptual distance `perceptual(reconstruction, target)` returning per-image (or a scalar) distances
            for images in [-1, 1]; overrides `config.perceptual_model_path` (pass one or the other).

    Example:

    ```python
    >>> import torch
    >>> from glotok_hf import GloTokConfig, GloTokModel
    >>> from glotok_hf.discriminator import GloTokDiscriminator, GloTokDiscriminatorConfig
    >>> from glotok_hf.losses import GloTokLossConfig, GloTokObjective
    >>> model = GloTokModel(GloTokConfig(block_out_channels=(32, 32), norm_num_groups=8, latent_channels=16,
    ...     adapter_depth=1, semantic_codebook_size=16, visual_codebook_size=32, residual_hidden_size=32,
    ...     residual_num_heads=2, sample_size=16))
    >>> discriminator = GloTokDiscriminator(GloTokDiscriminatorConfig(base_channels=8, num_layers=2))
    >>> teacher = torch.full((40,), 1 / 40)  # stands in for a real teacher histogram
    >>> objective = GloTokObjective(GloTokLossConfig(perceptual_weight=0.0, disc_start=0), teacher_histogram=teacher)
    >>> pixel_values = torch.rand(2, 3, 16, 16) * 2 - 1
    >>> output = model(pixel_values)
    >>> terms = objective.generator_loss(output, pixel_values, global_step=0, discriminator=discriminator,
    ...     semantic_codebook=model.semantic.quantizer.embedding.weight, last_layer=model.get_last_layer())
    >>> terms["loss"].backward()
    >>> sorted(terms)[:4]
    ['adaptive_weight', 'codebook_loss', 'commitment_loss', 'disentanglement_loss']
    >>> d_terms = objective.discriminator_loss(discriminator, pixel_values, output.sample, global_step=0)
    >>> d_terms["loss"].backward()

    ```
    """

    def __init__(
        self,
        config: GloTokLossConfig,
        teacher_histogram: torch.Tensor | None = None,
        perceptual: nn.Module | None = None,
    ):
        super().__init__()
        self.config = config

        if teacher_histogram is not None:
            check_histogram(teacher_histogram, config.histogram_num_bins, name="teacher_histogram")
            teacher_histogram = teacher_histogram.detach().float().clone()
        self.register_buffer("teacher_histogram", teacher_histogram, persistent=False)
        if config.histogram_weight > 0 and teacher_histogram is None:
            warnings.warn(
                f"GloTokObjective: histogram_weight={config.histogram_weight} but no teacher_histogram was given, so "
                "the histogram relation loss (GloTok's Eq. 7) is OFF. Pass the teacher's soft cosine histogram "
                "(`glotok_hf.losses.histogram`), or set histogram_weight=0 to silence this warning.",
                stacklevel=2,
            )

        if perceptual is not None and config.perceptual_model_path is not None:
            raise ValueError("Pass either a perceptual module or GloTokLossConfig.perceptual_model_path, not both.")
        if perceptual is None and config.perceptual_model_path is not None and config.perceptual_weight > 0:
            perceptual = LPIPS.from_pretrained(config.perceptual_model_path)
        if perceptual is None and config.perceptual_weight > 0:
            warnings.warn(
                f"GloTokObjective: perceptual_weight={config.perceptual_weight} but no LPIPS weights were given, so the "
                "perceptual (LPIPS) loss is OFF. Nothing is downloaded: convert torchvision's VGG16 and the LPIPS "
                "heads once with `glotok convert-lpips` and set GloTokLossConfig.perceptual_model_path to the "
                "resulting .safetensors file, or set perceptual_weight=0 to silence this warning.",
                stacklevel=2,
            )
        self.perceptual = perceptual

    # ------------------------------------------------------------------------------------------------ switches
    @property
    def histogram_enabled(self) -> bool:
        return self.config.histogram_weight > 0 and self.teacher_histogram is not None

    @property
    def perceptual_enabled(self) -> bool:
        return self.config.perceptual_weight > 0 and self.perceptual is not None

    def discriminator_active(self, global_step: int) -> bool:
        """Whether the adversarial terms are on at `global_step`: `global_step >= disc_start` and `disc_weight > 0`."""
        return global_step >= self.config.disc_start and self.config.disc_weight > 0

    # ------------------------------------------------------------------------------------------------ losses
    def generator_loss(
        self,
        output: GloTokModelOutput,
        pixel_values: torch.Tensor,
        *,
        global_step: int,
        discriminator: nn.Module | None = None,
        semantic_codebook: torch.Tensor | None = None,
        visual_codebook: torch.Tensor | None = None,
        last_layer: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        r"""
        The tokenizer's loss for one step.

        Args:
            output ([`GloTokModelOutput`]): `model(pixel_values)` (training mode).
            pixel_values (`torch.FloatTensor` of shape `(batch, channels, H, W)`): the input images in [-1, 1].
            global_step (`int`): optimisation steps done so far (adversarial terms start at `disc_start`).
            discriminator (`nn.Module`, *optional*): the discriminator, images -> logits. Required once
                `discriminator_active(global_step)`. Its parameters receive gradients from this loss: freeze it
                (`requires_grad_(False)`) for the generator step or zero its gradients before its own step.
            semantic_codebook (`torch.FloatTensor` of shape `(semantic_codebook_size, codebook_dim)`, *optional*):
                the raw semantic codebook, `model.semantic.quantizer.embedding.weight`. Required by the histogram
                term (and by the entropy term when the model has a semantic codebook).
            visual_codebook (`torch.FloatTensor` of shape `(visual_codebook_size, codebook_dim)`, *optional*):
                `model.visual.quantizer.embedding.weight`; only the entropy term uses it.
            last_layer (`torch.Tensor`, *optional*): `model.get_last_layer()`; required with `disc_adaptive_weight`.

        Returns:
            `dict[str, torch.Tensor]` of scalars: `loss`, the weighted total to back-propagate, and every unweighted
            term as a detached copy: `reconstruction_loss`, `perceptual_loss`, `codebook_loss`, `commitment_loss`
            (beta included), `residual_loss`, `histogram_loss`, `generator_adversarial_loss`, `adaptive_weight`,
            `entropy_loss`, `disentanglement_loss`. A term that is off is reported as 0. `adaptive_weight` is the
            factor in `disc_weight * adaptive_weight * generator_adversarial_loss`: 0 before `disc_start`, 1 without
            `disc_adaptive_weight`, and 0 under `torch.no_grad()` when adaptive. `loss` is the sum of every term times
            its weight in [`TERM_WEIGHTS`] (the module docstring's formula).
        """
        config, reconstructions = self.config, output.sample
        zero = torch.zeros((), device=pixel_values.device, dtype=torch.float32)
        terms = dict.fromkeys(GENERATOR_TERMS, zero)
        terms["reconstruction_loss"] = reconstruction_loss(reconstructions, pixel_values, config.reconstruction_loss)
        if self.perceptual_enabled:
            terms["perceptual_loss"] = self.perceptual(reconstructions, pixel_values).float().mean()
        for name in ("codebook_loss", "commitment_loss", "residual_loss"):
            terms[name] = getattr(output, name).float()
        if self.histogram_enabled:
            _needs(output.semantic_latents, "a semantic codebook with histogram_weight > 0 (the tokenizer has no "
                   "semantic codebook; set histogram_weight=0 for a single-codebook model)")  # fmt: skip
            codebook = _needs(semantic_codebook, "semantic_codebook=model.semantic.quantizer.embedding.weight")
            teacher, alpha, num_bins = self.teacher_histogram, config.histogram_alpha, config.histogram_num_bins
            terms["histogram_loss"] = histogram_relation_loss(codebook, teacher, alpha, num_bins).float()
        if self.discriminator_active(global_step):
            discriminator = _needs(discriminator, f"the discriminator from disc_start={config.disc_start} on")
            g_loss = generator_adversarial_loss(config.disc_loss, logits_fake=discriminator(reconstructions))
            terms["generator_adversarial_loss"] = g_loss
            terms["adaptive_weight"] = torch.ones_like(zero)
            if config.disc_adaptive_weight:
                last_layer = _needs(last_layer, "last_layer=model.get_last_layer() with disc_adaptive_weight=True")
                nll = config.reconstruction_weight * terms["reconstruction_loss"]
                nll = nll + config.perceptual_weight * terms["perceptual_loss"]
                max_weight = config.disc_adaptive_weight_max
                terms["adaptive_weight"] = adaptive_generator_weight(nll, g_loss, last_layer, max_weight)
        if config.entropy_weight > 0:
            codebooks, entropies = {"semantic": semantic_codebook, "visual": visual_codebook}, []
            temperature, l2_norm = config.entropy_temperature, config.codebook_l2_norm
            for name, codebook in codebooks.items():
                latents = getattr(output, f"{name}_latents")
                if latents is not None:
                    codebook = _needs(codebook, f"{name}_codebook=model.{name}.quantizer.embedding.weight")
                    entropies.append(entropy_loss(latents, codebook, temperature, l2_normalize=l2_norm)["loss"])
            terms["entropy_loss"] = sum(entropies)  # a GloTok model has at least one codebook
        if config.disentanglement_weight > 0:
            visual, semantic = output.visual_quantized, output.semantic_quantized
            _needs(None if visual is None else semantic, "a dual-codebook tokenizer with disentanglement_weight > 0")
            terms["disentanglement_loss"] = disentanglement_loss(visual, semantic)
        weights = {name: getattr(config, weight) for name, weight in TERM_WEIGHTS.items()}
        weights["generator_adversarial_loss"] = weights["generator_adversarial_loss"] * terms["adaptive_weight"]
        loss = sum(weights[name] * terms[name] for name in TERM_WEIGHTS)
        return {"loss": loss, **{name: value.detach() for name, value in terms.items()}}

    def discriminator_loss(
        self, discriminator: nn.Module, pixel_values: torch.Tensor, reconstructions: torch.Tensor, *, global_step: int
    ) -> dict[str, torch.Tensor]:
        r"""
        The discriminator's loss for one step (real = `pixel_values`, fake = `reconstructions`, detached here).

        Args:
            discriminator (`nn.Module`): images `(batch, channels, H, W)` -> logits.
            pixel_values (`torch.FloatTensor` of shape `(batch, channels, H, W)`): real images in [-1, 1].
            reconstructions (`torch.FloatTensor` of the same shape): the tokenizer's reconstructions.
            global_step (`int`): optimisation steps done so far.

        Returns:
            `dict[str, torch.Tensor]` of scalars: `loss = disc_weight * discriminator_adversarial_loss` (LlamaGen's
            scaling), the unweighted `discriminator_adversarial_loss`, and the mean `logits_real` / `logits_fake`
            (detached). Before `disc_start` the discriminator is not run and every entry is 0; `loss` is then a
            zero leaf that still supports `backward()`, so a training loop may call it unconditionally.
        """
        if not self.discriminator_active(global_step):
            zero = torch.zeros((), device=pixel_values.device, dtype=torch.float32)
            terms = dict.fromkeys(("discriminator_adversarial_loss", "logits_real", "logits_fake"), zero)
            return {"loss": zero.clone().requires_grad_(True), **terms}
        logits_real = discriminator(pixel_values.detach()).float()
        logits_fake = discriminator(reconstructions.detach()).float()
        loss = discriminator_loss(self.config.disc_loss, logits_real=logits_real, logits_fake=logits_fake)["loss"]
        logits = {"logits_real": logits_real.detach().mean(), "logits_fake": logits_fake.detach().mean()}
        return {"loss": self.config.disc_weight * loss, "discriminator_adversarial_loss": loss.detach(), **logits}


def _needs(value, what: str):
    """`value`, or a `ValueError` saying that `generator_loss` needs `what`."""
    if value is None:
        raise ValueError(f"GloTokObjective.generator_loss needs {what}.")
    return value
