# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""Uniformity of a latent space (GloTok Table 3), following the VA-VAE / LightningDiT `tools/latent_vis.py` protocol:
one standardised latent vector per image, t-SNE to 2-D, a Gaussian KDE at every point, and the spread of those
densities (density CV, normalised entropy, Gini), repeated. Definitions: docs/evaluation.md.
"""

from dataclasses import asdict, dataclass, field

import numpy as np
import torch


def density_statistics(density: np.ndarray | torch.Tensor) -> dict[str, float]:
    r"""Density CV, normalised entropy (bits) and Gini coefficient of positive densities.

    Args:
        density (`np.ndarray` or `torch.Tensor` of shape `(n,)`): densities at `n >= 2` points, all positive.

    Returns:
        `dict` with `density_cv` (population standard deviation over mean), `normalized_entropy` (`H(p) / log2(n)`
        with `p = density / density.sum()`) and `gini`, as Python floats.
    """
    density = torch.as_tensor(density).detach().cpu().double().numpy()
    if density.ndim != 1 or density.size < 2 or not np.isfinite(density).all() or (density <= 0).any():
        raise ValueError(f"density must be a 1-d array of at least 2 finite positive values, got {density!r}.")
    n, s = density.size, np.sort(density)
    p = density / density.sum()
    return {
        "density_cv": float(density.std() / density.mean()),
        "normalized_entropy": float(-(p * np.log2(p)).sum() / np.log2(n)),
        "gini": float(((2 * np.arange(1, n + 1) - n - 1) * s).sum() / (n * s.sum())),  # s: ascending densities
    }


def _as_latent_maps(latents, name: str) -> np.ndarray:
    latents = torch.as_tensor(latents).detach().cpu().double().numpy()
    if latents.ndim != 4 or not np.isfinite(latents).all():
        raise ValueError(f"{name} must be finite, of shape (num_images, dim, height, width), got {latents.shape}.")
    return latents


def sample_latent_vectors(
    latents: np.ndarray | torch.Tensor,
    flipped_latents: np.ndarray | torch.Tensor | None = None,
    num_points: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    r"""Draw one latent vector per image at a random spatial position.

    Args:
        latents (`np.ndarray` or `torch.Tensor` of shape `(num_images, dim, h, w)`): latent maps.
        flipped_latents (same shape, *optional*): latent maps of the horizontally flipped images; when given, each
            image's vector comes from the flipped map with probability 0.5.
        num_points (`int`, *optional*): draw from this many randomly chosen images (all images when `None`).
        seed (`int`, *optional*, defaults to 0): seed of the draws.

    Returns:
        `np.ndarray` of shape `(num_points, dim)` (float64).
    """
    maps = _as_latent_maps(latents, "latents")
    flipped = _as_latent_maps(flipped_latents, "flipped_latents") if flipped_latents is not None else None
    n, _, h, w = maps.shape
    num_points = n if num_points is None else num_points
    if not 0 < num_points <= n:
        raise ValueError(f"num_points must be in [1, {n}] (the number of latent maps), got {num_points}.")
    rng = np.random.default_rng(seed)
    images = np.sort(rng.choice(n, size=num_points, replace=False)) if num_points < n else np.arange(n)
    flips = rng.random(num_points) < 0.5 if flipped_latents is not None else np.zeros(num_points, dtype=bool)
    rows, cols = rng.integers(0, h, size=num_points), rng.integers(0, w, size=num_points)
    vectors = maps[images, :, rows, cols]
    if flips.any():
        vectors[flips] = flipped[images[flips], :, rows[flips], cols[flips]]
    return vectors


@dataclass
class UniformityResult:
    r"""Mean and standard deviation (population, over repeats) of the uniformity statistics.

    Args:
        density_cv, normalized_entropy, gini (`float`): means over the repeats.
        density_cv_std, normalized_entropy_std, gini_std (`float`): standard deviations over the repeats.
        repeats (`list[dict[str, float]]`): the statistics of each repeat.
        num_points (`int`): latent vectors per repeat.
    """

    density_cv: float
    normalized_entropy: float
    gini: float
    density_cv_std: float
    normalized_entropy_std: float
    gini_std: float
    num_points: int
    repeats: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {**asdict(self), "num_repeats": len(self.repeats)}


def latent_uniformity(
    latents: np.ndarray | torch.Tensor,
    flipped_latents: np.ndarray | torch.Tensor | None = None,
    num_points: int | None = 10_000,
    num_repeats: int = 10,
    seed: int = 42,
    perplexity: float = 30.0,
    max_iter: int = 1000,
    num_threads: int | None = None,
) -> UniformityResult:
    r"""
    Uniformity statistics of a latent space, repeated `num_repeats` times (VA-VAE protocol, GloTok Table 3).

    Each repeat `r` draws one vector per image (random position, random flip when `flipped_latents` is given; seed
    `seed + r`), standardises every channel with the mean and standard deviation over all positions of all given maps,
    embeds the vectors in 2-D with t-SNE (scikit-learn, Barnes-Hut, PCA init, `random_state = seed + r`), evaluates a
    Gaussian KDE (scipy, Scott bandwidth) of the embedding at every point, and computes [`density_statistics`].

    Args:
        latents (`np.ndarray` or `torch.Tensor` of shape `(num_images, dim, h, w)`): latent maps, e.g. the semantic
            `semantic_quantized` output of [`GloTokModel.encode`].
        flipped_latents (same shape, *optional*): the maps of the horizontally flipped images.
        num_points (`int`, *optional*, defaults to 10000): vectors per repeat (at most `num_images`; `None` = all).
        num_repeats (`int`, *optional*, defaults to 10): repeats.
        seed (`int`, *optional*, defaults to 42): base seed (VA-VAE uses t-SNE `random_state=42`).
        perplexity (`float`, *optional*, defaults to 30): t-SNE perplexity.
        max_iter (`int`, *optional*, defaults to 1000): t-SNE iterations.
        num_threads (`int`, *optional*): cap on t-SNE's OpenMP threads (`None` = all cores). On a shared, busy
            machine one thread is often much faster, because the OpenMP workers spin while waiting for cores.
    """
    from scipy.stats import gaussian_kde
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    maps = _as_latent_maps(latents, "latents")
    flipped = None if flipped_latents is None else _as_latent_maps(flipped_latents, "flipped_latents")
    all_maps = maps if flipped is None else np.concatenate([maps, flipped])
    mean = all_maps.mean(axis=(0, 2, 3), keepdims=True)[0]
    std = np.maximum(all_maps.std(axis=(0, 2, 3), keepdims=True)[0], 1e-12)
    maps = (maps - mean) / std  # every channel standardised
    flipped = None if flipped is None else (flipped - mean) / std
    num_points = min(maps.shape[0], num_points) if num_points is not None else maps.shape[0]
    repeats = []
    for r in range(num_repeats):
        vectors = sample_latent_vectors(maps, flipped, num_points=num_points, seed=seed + r)
        tsne = TSNE(n_components=2, perplexity=perplexity, max_iter=max_iter, random_state=seed + r, init="pca")
        with threadpool_limits(limits=num_threads, user_api="openmp"):  # scikit-learn checks perplexity < n
            points = tsne.fit_transform(vectors).T
        repeats.append(density_statistics(gaussian_kde(points)(points)))
    table = {name: np.array([rep[name] for rep in repeats]) for name in ("density_cv", "normalized_entropy", "gini")}
    return UniformityResult(
        **{name: float(values.mean()) for name, values in table.items()},
        **{f"{name}_std": float(values.std()) for name, values in table.items()},
        num_points=num_points,
        repeats=repeats,
    )


__all__ = ["UniformityResult", "density_statistics", "latent_uniformity", "sample_latent_vectors"]
