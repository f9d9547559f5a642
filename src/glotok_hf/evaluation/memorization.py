# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""Memorisation check of a generator trained on a small dataset: the L2 distance over all pixel values of uint8 images
scaled to [0, 1] from every generated image to its nearest training image, beside the same distance for held-out real
images. Copies, which a classifier trained on the same images scores as correct, show up as samples much closer to the
training set than held-out images are: exact copies at 0, near copies below the smallest held-out distance. Pixels,
not a classifier's features (which put all digits of a class close together); not shift-invariant.
"""

import numpy as np
import torch


def _as_flat_uint8(images, name: str) -> torch.Tensor:
    images = torch.as_tensor(images)
    if images.dtype != torch.uint8 or images.ndim < 2 or images.shape[0] == 0:
        raise ValueError(f"{name} must be non-empty uint8 images (N, ...), got {images.dtype} {tuple(images.shape)}.")
    return images.reshape(images.shape[0], -1)


@torch.no_grad()
def nearest_neighbor_distances(queries, references, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    r"""Distance from every query image to its nearest reference image, and that reference's index.

    Squared distances are computed as `|q|^2 + |r|^2 - 2 q.r` in float64 on the integer pixel values, which is exact
    (every partial sum is an integer far below 2^53), so an exact copy has distance 0.

    Args:
        queries (`np.ndarray` or `torch.Tensor`): uint8 images `(N, ...)`, e.g. `(N, H, W, 3)`.
        references (`np.ndarray` or `torch.Tensor`): uint8 images `(M, ...)` of the same per-image shape.
        batch_size (`int`, *optional*, defaults to 256): queries per block (memory is `batch_size x M` floats).

    Returns:
        `(distances, indices)`: float64 `(N,)` L2 distances on the [0, 1] scale and int64 `(N,)` reference indices.
    """
    q, r = _as_flat_uint8(queries, "queries"), _as_flat_uint8(references, "references")
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"queries and references must have the same image shape, got {q.shape[1]} vs {r.shape[1]}.")
    r = r.double()
    r_norms = (r * r).sum(1)
    distances, indices = [], []
    for start in range(0, q.shape[0], batch_size):
        block = q[start : start + batch_size].double()
        squared = (block * block).sum(1, keepdim=True) + r_norms[None] - 2 * block @ r.T
        best, index = squared.min(1)
        distances.append(best.clamp_min(0).sqrt() / 255)
        indices.append(index)
    return torch.cat(distances).numpy(), torch.cat(indices).numpy()


def naive_nearest_neighbor_distances(queries, references) -> tuple[np.ndarray, np.ndarray]:
    """Literal reference of [`nearest_neighbor_distances`]: all pairwise differences at once (small inputs only)."""
    q = _as_flat_uint8(queries, "queries").double() / 255
    r = _as_flat_uint8(references, "references").double() / 255
    distances = ((q[:, None, :] - r[None, :, :]) ** 2).sum(-1).sqrt()
    best, index = distances.min(1)
    return best.numpy(), index.numpy()


def _summary(distances: np.ndarray, held_out: np.ndarray) -> dict:
    return {
        "count": int(distances.size),
        "median": float(np.median(distances)),
        "p5": float(np.percentile(distances, 5)),
        "min": float(distances.min()),
        "exact_copy_fraction": float((distances == 0).mean()),
        "near_copy_fraction": float((distances < held_out.min()).mean()),
        "below_held_out_p5_fraction": float((distances < np.percentile(held_out, 5)).mean()),
    }


def memorization_report(samples, held_out, training, batch_size: int = 256) -> dict:
    r"""Nearest-training-image distances of generated samples against those of held-out real images.

    Args:
        samples (`np.ndarray`): generated uint8 images `(N, H, W, C)`.
        held_out (`np.ndarray`): real uint8 images the generator was not trained on, same shape per image.
        training (`np.ndarray`): the generator's uint8 training images, same shape per image.
        batch_size (`int`, *optional*, defaults to 256): see [`nearest_neighbor_distances`].

    Returns:
        `dict` with `distance` (what is measured), `near_copy_threshold` (the smallest held-out distance), and for
        `samples` and `held_out`: `count`, `median`, `p5` (5th percentile), `min`, `exact_copy_fraction` (distance
        0: an identical image), `near_copy_fraction` (below the threshold; 0 for `held_out` by construction) and
        `below_held_out_p5_fraction` (about 0.05 when samples are as new as real unseen images, more if they copy).
    """
    sample_distances, _ = nearest_neighbor_distances(samples, training, batch_size)
    held_out_distances, _ = nearest_neighbor_distances(held_out, training, batch_size)
    return {
        "distance": "L2 over all pixel values of [0, 1]-scaled images to the nearest training image",
        "num_training_images": int(torch.as_tensor(training).shape[0]),
        "near_copy_threshold": float(held_out_distances.min()),
        "samples": _summary(sample_distances, held_out_distances),
        "held_out": _summary(held_out_distances, held_out_distances),
    }


__all__ = ["memorization_report", "naive_nearest_neighbor_distances", "nearest_neighbor_distances"]
