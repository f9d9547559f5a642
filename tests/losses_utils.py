"""Helpers for the loss tests: tiny discriminators and perceptual stand-ins."""

import torch
from torch import nn

from glotok_hf.discriminator import GloTokDiscriminator, GloTokDiscriminatorConfig


def tiny_discriminator_config(**overrides) -> GloTokDiscriminatorConfig:
    """2 stride-2 layers, 8 base channels, group norm: (B, 3, 16, 16) -> (B, 1, 2, 2) logits."""
    kwargs = dict(base_channels=8, num_layers=2, norm_type="group", norm_num_groups=4)
    kwargs.update(overrides)
    return GloTokDiscriminatorConfig(**kwargs)


def tiny_discriminator(seed: int = 0, **overrides) -> GloTokDiscriminator:
    torch.manual_seed(seed)
    return GloTokDiscriminator(tiny_discriminator_config(**overrides))


class CountingModule(nn.Module):
    """Wraps a module and counts its calls (to prove the discriminator is not run before `disc_start`)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module
        self.calls = 0

    def forward(self, *args):
        self.calls += 1
        return self.module(*args)


class MeanAbsoluteDistance(nn.Module):
    """A cheap differentiable stand-in for LPIPS: per-image mean absolute difference, shape (batch,)."""

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (input - target).abs().mean(dim=(1, 2, 3))
