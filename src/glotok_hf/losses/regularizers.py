# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""Optional codebook regularisers for ablations (off by default; GloTok uses neither):

- `entropy_loss`: the codebook entropy penalty of MaskGIT / LlamaGen / FQGAN (sample entropy minus the entropy of
  the average assignment), computed from the latents and the codebook;
- `disentanglement_loss`: FQGAN's penalty on the squared cosine between the visual and semantic code vectors.
"""

import torch
import torch.nn.functional as F

from ..modeling_glotok import full_fp32_matmul


def _flatten_channels_first(latents: torch.Tensor) -> torch.Tensor:
    """`(B, D, h, w)` -> `(B*h*w, D)`; `(N, D)` is returned as is."""
    return latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1]) if latents.ndim == 4 else latents


def entropy_loss(
    latents: torch.Tensor, codebook: torch.Tensor, temperature: float = 0.01, *, l2_normalize: bool = False
) -> dict[str, torch.Tensor]:
    r"""Codebook entropy loss: `sample_entropy - average_entropy` over the soft assignment of each latent to the codes.

    With affinities `a_ik = -||z_i - e_k||^2` and `p_i = softmax(a_i / temperature)`:
    `sample_entropy = mean_i H(p_i)` (small when each latent picks one code confidently) and
    `average_entropy = H(mean_i p_i)` (large when all codes are used). Minimising the difference sharpens
    assignments while spreading usage over the codebook. Natural logarithms, fp32.

    Args:
        latents (`torch.FloatTensor` of shape `(batch, codebook_dim, h, w)` or `(num_vectors, codebook_dim)`):
            continuous latents before quantization (e.g. `GloTokModelOutput.visual_latents`).
        codebook (`torch.FloatTensor` of shape `(num_codes, codebook_dim)`): the codebook weight.
        temperature (`float`, *optional*, defaults to 0.01): softmax temperature (LlamaGen's default).
        l2_normalize (`bool`, *optional*, defaults to `False`):
            l2-normalise latents and codes first, as a quantizer with `codebook_l2_norm=True` does.

    Returns:
        `dict` with `loss`, `sample_entropy` and `average_entropy`, each of shape `()`; `loss` lies in
        `[-log(num_codes), log(num_codes)]`.
    """
    z = _flatten_channels_first(latents).float()
    codes = codebook.float()
    if l2_normalize:
        z, codes = F.normalize(z, dim=-1), F.normalize(codes, dim=-1)
    # -||z - e||^2 = 2 z.e - ||e||^2 - ||z||^2; the last term is constant per row and cancels in the softmax. In
    # fp32 under autocast too: bf16 affinities / 0.01 would be off by whole logits.
    with torch.autocast(device_type=z.device.type, enabled=False), full_fp32_matmul():
        logits = (2 * z @ codes.t() - codes.pow(2).sum(1)) / temperature
    probs = logits.softmax(dim=-1)
    sample_entropy = -(probs * logits.log_softmax(dim=-1)).sum(-1).mean()
    average = probs.mean(0)
    # clamp keeps 0 * log(0) = 0 with a finite gradient when a code's average probability underflows to 0
    average_entropy = -(average * average.clamp_min(1e-12).log()).sum()
    return dict(loss=sample_entropy - average_entropy, sample_entropy=sample_entropy, average_entropy=average_entropy)


def disentanglement_loss(visual_quantized: torch.Tensor, semantic_quantized: torch.Tensor) -> torch.Tensor:
    r"""FQGAN's disentanglement loss: the mean over positions of `cos(v, s)^2` between the visual and semantic code
    vectors at the same position. 0 when they are orthogonal everywhere, 1 when parallel (or anti-parallel).

    Args:
        visual_quantized (`torch.FloatTensor` of shape `(batch, codebook_dim, h, w)`):
            visual code vectors (straight-through, so gradients reach the encoder).
        semantic_quantized (`torch.FloatTensor` of the same shape): semantic code vectors.

    Returns:
        `torch.FloatTensor` of shape `()` in [0, 1], fp32.
    """
    v = _flatten_channels_first(visual_quantized).float()
    s = _flatten_channels_first(semantic_quantized).float()
    cosine = (F.normalize(v, dim=-1) * F.normalize(s, dim=-1)).sum(-1)
    return cosine.pow(2).mean()
