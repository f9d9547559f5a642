# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""Adversarial losses for the PatchGAN discriminator and the adaptive generator weight of taming-transformers.

Every function takes its logits as keyword-only arguments named `logits_real=` / `logits_fake=`, so a call cannot
silently swap real and fake (LlamaGen issue 84 swapped the BCE arguments of its non-saturating losses). The
binary cross-entropies are written as softplus so the target of each term is visible:
`BCE(logits, target=1) = softplus(-logits)` and `BCE(logits, target=0) = softplus(logits)`.

All terms are computed in fp32 and returned as tensors of shape `()`; logits may have any shape (PatchGAN maps). The
discriminator's convention is "large logit = real".
"""

import torch
import torch.nn.functional as F

DISCRIMINATOR_LOSSES = ("hinge", "non_saturating")


def hinge_discriminator_loss(*, logits_real: torch.Tensor, logits_fake: torch.Tensor) -> dict[str, torch.Tensor]:
    r"""Hinge loss of the discriminator: `loss = (mean(relu(1 - logits_real)) + mean(relu(1 + logits_fake))) / 2`.

    The halving follows taming-transformers / LlamaGen / FQGAN, so `disc_weight` means what it means there. Returns
    a `dict` with `loss`, `real_loss = mean(relu(1 - logits_real))` and `fake_loss = mean(relu(1 + logits_fake))`.
    """
    real_loss = F.relu(1.0 - logits_real.float()).mean()
    fake_loss = F.relu(1.0 + logits_fake.float()).mean()
    return {"loss": 0.5 * (real_loss + fake_loss), "real_loss": real_loss, "fake_loss": fake_loss}


def non_saturating_discriminator_loss(
    *, logits_real: torch.Tensor, logits_fake: torch.Tensor
) -> dict[str, torch.Tensor]:
    r"""Non-saturating (binary cross-entropy) loss of the discriminator:
    `loss = (BCE(logits_real, 1) + BCE(logits_fake, 0)) / 2 = (mean(softplus(-logits_real)) +
    mean(softplus(logits_fake))) / 2`, as a `dict` with `loss`, `real_loss` and `fake_loss`.
    """
    real_loss = F.softplus(-logits_real.float()).mean()  # BCE with target 1
    fake_loss = F.softplus(logits_fake.float()).mean()  # BCE with target 0
    return {"loss": 0.5 * (real_loss + fake_loss), "real_loss": real_loss, "fake_loss": fake_loss}


def hinge_generator_loss(*, logits_fake: torch.Tensor) -> torch.Tensor:
    r"""Hinge loss of the generator: `-mean(logits_fake)` (the generator raises the logits of its reconstructions)."""
    return -logits_fake.float().mean()


def non_saturating_generator_loss(*, logits_fake: torch.Tensor) -> torch.Tensor:
    r"""Non-saturating loss of the generator: `BCE(logits_fake, 1) = mean(softplus(-logits_fake))`."""
    return F.softplus(-logits_fake.float()).mean()  # BCE with target 1


def _loss_pair(kind: str):
    if kind not in DISCRIMINATOR_LOSSES:
        raise ValueError(f"adversarial loss kind must be one of {DISCRIMINATOR_LOSSES}, got {kind!r}.")
    if kind == "hinge":
        return hinge_discriminator_loss, hinge_generator_loss
    return non_saturating_discriminator_loss, non_saturating_generator_loss


def discriminator_loss(kind: str, *, logits_real: torch.Tensor, logits_fake: torch.Tensor) -> dict[str, torch.Tensor]:
    """Dispatch to [`hinge_discriminator_loss`] (`kind="hinge"`) or [`non_saturating_discriminator_loss`]."""
    return _loss_pair(kind)[0](logits_real=logits_real, logits_fake=logits_fake)


def generator_adversarial_loss(kind: str, *, logits_fake: torch.Tensor) -> torch.Tensor:
    """Dispatch to [`hinge_generator_loss`] (`kind="hinge"`) or [`non_saturating_generator_loss`]."""
    return _loss_pair(kind)[1](logits_fake=logits_fake)


def adaptive_generator_weight(
    nll_loss: torch.Tensor, generator_loss: torch.Tensor, last_layer: torch.Tensor, max_weight: float = 1e4
) -> torch.Tensor:
    r"""Adaptive weight of the adversarial term (taming-transformers, Esser et al. 2021, Eq. 7):
    `clamp(||grad_L nll_loss|| / (||grad_L generator_loss|| + 1e-4), 0, max_weight)` with `L = last_layer`.

    It balances the two gradients at the decoder's last layer. The gradients are taken with `retain_graph=True`, so
    both losses can still be back-propagated; norms are computed in fp32 and the result is detached.

    Args:
        nll_loss (`torch.FloatTensor` of shape `()`): the weighted reconstruction + perceptual loss.
        generator_loss (`torch.FloatTensor` of shape `()`): the (unweighted) adversarial generator loss.
        last_layer (`torch.Tensor`): a parameter both losses depend on, normally `model.get_last_layer()`.
        max_weight (`float`, *optional*, defaults to 1e4): upper clamp.

    Returns:
        `torch.FloatTensor` of shape `()` in `[0, max_weight]`, detached. When no gradient is available (under
        `torch.no_grad()`, e.g. evaluation, or when `last_layer` does not require gradients) the weight is 0, as in
        taming's evaluation branch, so the adversarial term contributes nothing.
    """
    no_gradient = not (torch.is_grad_enabled() and last_layer.requires_grad)
    if no_gradient or not (nll_loss.requires_grad and generator_loss.requires_grad):
        return torch.zeros((), device=nll_loss.device, dtype=torch.float32)
    # torch raises "One of the differentiated Tensors appears to not have been used" for an unrelated last_layer
    nll_grad = torch.autograd.grad(nll_loss, last_layer, retain_graph=True)[0]
    generator_grad = torch.autograd.grad(generator_loss, last_layer, retain_graph=True)[0]
    weight = nll_grad.float().norm() / (generator_grad.float().norm() + 1e-4)
    return weight.clamp(0.0, max_weight).detach()
