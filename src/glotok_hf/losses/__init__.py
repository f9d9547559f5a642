# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""Loss terms of the GloTok tokenizer, as pure functions and modules that return named terms and never log.

- VQ loss (Eq. 1) and residual loss (Eq. 10): defined in `glotok_hf.modeling_glotok` (the model computes them in its
  forward pass) and re-exported here.
- `histogram_relation_loss` (Eq. 7) and `soft_cosine_histogram` (Eqs. 4-6): codebook-wise histogram relation learning.
- `reconstruction_loss` (L2 or L1), `LPIPS` (perceptual, local weights only), the GAN losses and
  `adaptive_generator_weight`, and the optional `entropy_loss` / `disentanglement_loss` regularisers.
- `GloTokLossConfig` / `GloTokObjective`: the combined objective the training script calls.
"""

from ..modeling_glotok import residual_loss, vector_quantization_loss
from .gan import (
    adaptive_generator_weight,
    discriminator_loss,
    generator_adversarial_loss,
    hinge_discriminator_loss,
    hinge_generator_loss,
    non_saturating_discriminator_loss,
    non_saturating_generator_loss,
)
from .histogram import default_histogram_alpha, histogram_bin_centers, histogram_relation_loss, soft_cosine_histogram
from .lpips import LPIPS, convert_lpips_checkpoint
from .objective import GENERATOR_TERMS, GloTokLossConfig, GloTokObjective, reconstruction_loss
from .regularizers import disentanglement_loss, entropy_loss

__all__ = [
    "GENERATOR_TERMS",
    "GloTokLossConfig",
    "GloTokObjective",
    "LPIPS",
    "adaptive_generator_weight",
    "convert_lpips_checkpoint",
    "default_histogram_alpha",
    "discriminator_loss",
    "disentanglement_loss",
    "entropy_loss",
    "generator_adversarial_loss",
    "hinge_discriminator_loss",
    "hinge_generator_loss",
    "histogram_bin_centers",
    "histogram_relation_loss",
    "non_saturating_discriminator_loss",
    "non_saturating_generator_loss",
    "reconstruction_loss",
    "residual_loss",
    "soft_cosine_histogram",
    "vector_quantization_loss",
]
