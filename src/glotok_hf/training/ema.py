# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""Exponential moving average of a model's weights, kept as a full copy of the model (`torch.optim.swa_utils.
AveragedModel`), so it validates and saves with the model's own `forward` / `save_pretrained`."""

import json
from pathlib import Path

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

EMA_STATE_FILE = "ema_state.json"


class EMA(AveragedModel):
    r"""EMA of `model` with diffusers' warm-up: after `n` updates the decay is `min(decay, (1 + n) / (10 + n))`, so
    early averages are not dominated by the initial weights; the first update copies the weights. The averaged
    model (same class as the tracked one, in eval mode) is `.module`; `step(model)` folds in the current weights.

    Args:
        model (`nn.Module`): the (unwrapped) model to track; it is deep-copied.
        decay (`float`, *optional*, defaults to 0.9999): the decay the warm-up approaches, in [0, 1] (`--ema_decay`
            is checked when the options are parsed).
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999):
        super().__init__(model, use_buffers=True)
        self.decay, self._updates = decay, None  # `_updates` mirrors `n_averaged` on the host (None: read it once)
        self.requires_grad_(False)
        self.module.eval()

    @property
    def num_updates(self) -> int:
        return int(self.n_averaged)

    def decay_at(self, num_updates: int) -> float:
        return min(self.decay, (1 + num_updates) / (10 + num_updates))

    @torch.no_grad()
    def step(self, model: nn.Module) -> None:
        """Fold in the current weights of `model` (call after each optimizer update); reads nothing from the device."""
        if self._updates is None:
            self._updates = self.num_updates
        weight = 1.0 - self.decay_at(self._updates) if self._updates else 1.0  # the first update copies exactly
        pairs = [(a, c.detach().to(a.device)) for a, c in zip([*self.module.parameters(), *self.module.buffers()],
                                                               [*model.parameters(), *model.buffers()])]  # fmt: skip
        floats = [(a, c) for a, c in pairs if a.is_floating_point()]
        torch._foreach_lerp_([a for a, _ in floats], [c for _, c in floats], weight)
        for a, c in pairs:
            if not a.is_floating_point():  # integer buffers (e.g. BatchNorm's step count) are copied
                a.copy_(c)
        self.n_averaged += 1
        self._updates += 1

    def save_pretrained(self, folder: str | Path) -> None:
        """The averaged weights as a `save_pretrained` folder of the tracked class, plus the update count."""
        self.module.save_pretrained(folder)
        (Path(folder) / EMA_STATE_FILE).write_text(json.dumps({"num_updates": self.num_updates, "decay": self.decay}))

    def load_pretrained(self, folder: str | Path, load_weights) -> None:
        """Restore a folder written by `save_pretrained` (`load_weights(model, folder)` copies the weights)."""
        folder = Path(folder)
        if not (folder / EMA_STATE_FILE).is_file():
            raise FileNotFoundError(
                f"No EMA in {str(folder)!r}: the checkpoint was saved without --use_ema. Resume without --use_ema or "
                "from a checkpoint that has one."
            )
        load_weights(self.module, folder)
        self.n_averaged.fill_(json.loads((folder / EMA_STATE_FILE).read_text())["num_updates"])
        self._updates = None
