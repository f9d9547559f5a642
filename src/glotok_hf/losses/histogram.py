# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""Codebook-wise histogram relation learning (GloTok, Eqs. 4-7): the soft histogram of pairwise cosine similarities
of a set of vectors, and the KL divergence that pulls a codebook's histogram towards a fixed teacher histogram."""

import math

import torch
import torch.nn.functional as F


def histogram_bin_centers(
    num_bins: int = 40, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> torch.Tensor:
    r"""Bin centres of Eq. 5, `B_k = -1 + 2k / (num_bins - 1)`: `num_bins` evenly spaced values on [-1, 1].

    Returns:
        `torch.Tensor` of shape `(num_bins,)` (fp32 unless `dtype` is given).
    """
    _check_num_bins(num_bins)
    return torch.linspace(-1.0, 1.0, num_bins, device=device, dtype=dtype or torch.float32)


def default_histogram_alpha(num_bins: int = 40) -> float:
    r"""Default kernel sharpness `alpha` of Eq. 6: the Gaussian bandwidth equals the bin spacing `h = 2 / (N - 1)`,
    i.e. `alpha = 1 / (2 h^2) = (N - 1)^2 / 8` (190.125 for 40 bins).

    Why: with the bandwidth equal to the spacing, the kernels of all bins sum to a constant (to ~1e-8) for any
    similarity value away from the ends of [-1, 1], so every pair adds the same mass wherever it falls between bin
    centres and the histogram has no bias towards the centres; its gradient is smooth and non-zero everywhere. A much
    narrower kernel turns the histogram into hard binning (gradients vanish between centres and pairs get pulled
    onto centres), a much wider one blurs structure finer than a few bins. The paper does not give alpha.
    """
    _check_num_bins(num_bins)
    return (num_bins - 1) ** 2 / 8.0


def naive_soft_cosine_histogram(vectors: torch.Tensor, num_bins: int = 40, alpha: float | None = None) -> torch.Tensor:
    r"""Reference implementation of Eqs. 4-6, written as literally as possible: the full cosine matrix, the pairs
    `i <= j` (diagonal included), every pair against every bin, the sum, the normalisation; autograd does the rest.

    It materialises `n (n + 1) / 2 x num_bins` kernel values (and autograd keeps them), so it only suits small `n`;
    [`soft_cosine_histogram`] is the blocked implementation that is tested against it.
    """
    _check_vectors(vectors)
    alpha = _resolve_alpha(alpha, num_bins)
    dtype = torch.float64 if vectors.dtype == torch.float64 else torch.float32
    unit = F.normalize(vectors.to(dtype), dim=-1)
    n = unit.shape[0]
    rows, cols = torch.triu_indices(n, n, device=unit.device)
    similarities = (unit @ unit.T)[rows, cols]
    centers = histogram_bin_centers(num_bins, device=unit.device, dtype=dtype)
    p = torch.exp(-alpha * (similarities[:, None] - centers[None, :]) ** 2).sum(0)
    return p / p.sum()


def soft_cosine_histogram(
    vectors: torch.Tensor, num_bins: int = 40, alpha: float | None = None, block_size: int | None = None
) -> torch.Tensor:
    r"""Soft histogram of the pairwise cosine similarities of the rows of `vectors` (GloTok Eqs. 4-6).

    The similarities of all pairs `i <= j` (diagonal included) are spread over `num_bins` centres evenly spaced on
    [-1, 1] with the Gaussian kernel `exp(-alpha (s - B_k)^2)`, summed and normalised to sum to 1.

    Args:
        vectors (`torch.Tensor` of shape `(n, d)`):
            The token set (e.g. a codebook), any float dtype, `n >= 1`. Rows are l2-normalised internally.
        num_bins (`int`, *optional*, defaults to 40):
            Number of bin centres on [-1, 1].
        alpha (`float`, *optional*):
            Kernel sharpness; defaults to [`default_histogram_alpha`] (bandwidth = bin spacing, 190.125 for 40 bins).
        block_size (`int`, *optional*):
            Number of pairs evaluated at once.

    Returns:
        `torch.Tensor` of shape `(num_bins,)`, non-negative, summing to 1; fp64 for fp64 input, else fp32.
        Differentiable with respect to `vectors`.
    """
    _check_vectors(vectors)
    alpha = _resolve_alpha(alpha, num_bins)
    dtype = torch.float64 if vectors.dtype == torch.float64 else torch.float32
    with torch.autocast(device_type=vectors.device.type, enabled=False):
        unit = F.normalize(vectors.to(dtype), dim=-1)
        centers = histogram_bin_centers(num_bins, device=unit.device, dtype=dtype)
        n = unit.shape[0]
        rows_per_block = max(1, (block_size or 2**18) // n)
        p = unit.new_zeros(num_bins)
        for start in range(0, n, rows_per_block):
            stop = min(n, start + rows_per_block)
            s = unit[start:stop] @ unit[start:].T
            keep = torch.ones_like(s, dtype=torch.bool).triu_()
            kernel = torch.exp(-alpha * (s[keep][:, None] - centers) ** 2)
            p = p + kernel.sum(0)
        return p / p.sum()


def histogram_relation_loss(
    codebook: torch.Tensor,
    teacher_histogram: torch.Tensor,
    alpha: float | None = None,
    num_bins: int = 40,
    eps: float = 1e-8,
) -> torch.Tensor:
    r"""Histogram relation loss of Eq. 7: `KL(P_teacher || P_student)`, computed as
    `kl_div(log(P_student + eps), P_teacher, reduction="sum")`.

    Args:
        codebook (`torch.Tensor` of shape `(n, d)`): the trainable codebook (the semantic one in GloTok).
        teacher_histogram (`torch.Tensor` of shape `(num_bins,)`): fixed teacher distribution, non-negative, sums to 1.
        alpha (`float`, *optional*): kernel sharpness, defaults to [`default_histogram_alpha`].
        num_bins (`int`, *optional*, defaults to 40): number of bins.
        eps (`float`, *optional*, defaults to 1e-8): added to `P_student` before the log.

    Returns:
        `torch.Tensor` of shape `()`, fp32 (fp64 for fp64 codebooks), >= 0 up to `eps`.
    """
    teacher = check_histogram(teacher_histogram, num_bins, name="teacher_histogram")
    student = soft_cosine_histogram(codebook, num_bins=num_bins, alpha=alpha)
    teacher = teacher.detach().to(device=student.device, dtype=student.dtype)
    return F.kl_div(torch.log(student + eps), teacher, reduction="sum")


# ------------------------------------------------------------------------------------------------------ validation
def check_histogram(histogram: torch.Tensor, num_bins: int | None = None, name: str = "histogram") -> torch.Tensor:
    """Validate a probability histogram: 1-D float tensor, `num_bins` long when given, finite, >= 0, sums to ~1."""
    if not isinstance(histogram, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (num_bins,), got {type(histogram).__name__}.")
    if histogram.ndim != 1 or not histogram.is_floating_point():
        raise ValueError(
            f"{name} must be a 1-D float tensor of shape (num_bins,), got dtype {histogram.dtype} and shape "
            f"{tuple(histogram.shape)}."
        )
    if num_bins is not None and histogram.shape[0] != num_bins:
        raise ValueError(
            f"{name} has {histogram.shape[0]} bins but num_bins={num_bins}; build the teacher with the same bin "
            "count as the training configuration."
        )
    values = histogram.detach().double()
    if not torch.isfinite(values).all():
        raise ValueError(f"{name} contains NaN or inf values.")
    if (values < 0).any():
        raise ValueError(f"{name} must be non-negative, got a minimum of {values.min().item():.3g}.")
    total = values.sum().item()
    if abs(total - 1.0) > 1e-4:
        raise ValueError(f"{name} must sum to 1 (a probability distribution), got a sum of {total:.6g}.")
    return histogram


def _check_num_bins(num_bins: int) -> None:
    if isinstance(num_bins, bool) or not isinstance(num_bins, int):
        raise TypeError(f"num_bins must be an int, got {type(num_bins).__name__} {num_bins!r}.")
    if num_bins < 2:
        raise ValueError(f"num_bins must be >= 2 (bin centres span [-1, 1]), got {num_bins}.")


def _resolve_alpha(alpha: float | None, num_bins: int) -> float:
    _check_num_bins(num_bins)
    if alpha is None:
        return default_histogram_alpha(num_bins)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise TypeError(f"alpha must be a positive float, got {type(alpha).__name__} {alpha!r}.")
    if not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"alpha must be a positive finite float, got {alpha}.")
    return float(alpha)


def _check_vectors(vectors: torch.Tensor, name: str = "vectors") -> None:
    if not isinstance(vectors, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (n, d), got {type(vectors).__name__}.")
    if vectors.ndim != 2 or vectors.shape[0] < 1 or vectors.shape[1] < 1:
        raise ValueError(f"{name} must have shape (n, d) with n >= 1 and d >= 1, got shape {tuple(vectors.shape)}.")
    if not vectors.is_floating_point():
        raise ValueError(f"{name} must be a float tensor, got dtype {vectors.dtype}.")
    if not torch.isfinite(vectors).all():
        raise ValueError(f"{name} contains NaN or inf values.")


__all__ = [
    "check_histogram",
    "default_histogram_alpha",
    "histogram_bin_centers",
    "histogram_relation_loss",
    "naive_soft_cosine_histogram",
    "soft_cosine_histogram",
]
