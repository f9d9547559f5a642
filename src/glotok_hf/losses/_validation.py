# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""Input checks shared by the loss functions: each raises a TypeError / ValueError that names what was expected."""

import torch


def check_float_tensor(value, name: str, ndim: int | None = None) -> None:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}.")
    if not value.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {value.dtype}.")
    if ndim is not None and value.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-d tensor, got shape {tuple(value.shape)}.")
    if value.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(value.shape)}.")


def check_same_shape(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape (no broadcasting), got {tuple(a.shape)} and "
            f"{tuple(b.shape)}."
        )


def check_positive_number(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}.")
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}.")
