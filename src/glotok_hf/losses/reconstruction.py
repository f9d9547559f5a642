# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""Pixel reconstruction loss: L2 (GloTok's L_R) or L1."""

import torch
import torch.nn.functional as F

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
