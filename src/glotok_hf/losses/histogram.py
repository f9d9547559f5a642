# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""Codebook-wise histogram relation learning (GloTok, Eqs. 4-7): the soft histogram of pairwise cosine similarities
of a set of vectors, and the KL divergence that pulls a codebook's histogram towards a fixed teacher histogram."""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..modeling_glotok import full_fp32_matmul
from ..utils import is_int


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


def max_histogram_alpha(num_bins: int = 40) -> float:
    r"""Largest accepted `alpha`, `8 (N - 1)^2` (kernel bandwidth `h / 8`, 64x the default): beyond it the kernel is
    a hard histogram with vanishing gradients, and the blocked evaluation's factors `exp(2 alpha h d)^j` would near
    the fp32 range."""
    _check_num_bins(num_bins)
    return 8.0 * (num_bins - 1) ** 2


def naive_soft_cosine_histogram(vectors: torch.Tensor, num_bins: int = 40, alpha: float | None = None) -> torch.Tensor:
    r"""Reference implementation of Eqs. 4-6, written as literally as possible: the full cosine matrix, the pairs
    `i <= j` (diagonal included), every pair against every bin, the sum, the normalisation; autograd does the rest.

    It materialises `n (n + 1) / 2 x num_bins` kernel values (and autograd keeps them), so it only suits small `n`;
    [`soft_cosine_histogram`] is the blocked implementation that is tested against it.
    """
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

    The similarities `s_ij` of all pairs `i <= j` (diagonal included) are spread over `num_bins` centres `B_k` evenly
    spaced on [-1, 1] with the Gaussian kernel `exp(-alpha (s_ij - B_k)^2)`, summed over pairs and normalised to sum
    to 1. It equals [`naive_soft_cosine_histogram`] (tested to 1e-5 relative in value and gradient) without ever
    holding more than `block_size` pairs: forward + backward for a 16,384-code codebook (134M pairs) takes ~5 s and
    ~50 MB on one CPU core, where the literal formula would need ~100 GB (see `benchmarks/README.md`).

    How:
    - Rows are l2-normalised by autograd; a custom `torch.autograd.Function` then loops over row blocks of the upper
      triangle, forms each block's similarities and, per pair, evaluates the kernel only for the `2J + 1` bins around
      the nearest centre. `J` is the smallest half-width whose neglected mass is below 1e-6 of the pair's mass
      (`J = 5` for 40 bins and the default alpha, so 11 of 40 bins; the whole range for wide kernels). With `d` the
      offset from the nearest centre and `h` the spacing, `exp(-a (d - jh)^2) = exp(-a d^2) exp(2ahd)^j exp(-a j^2
      h^2)`: two exponentials and `2J` products per pair instead of `2J + 1` exponentials; the constant factor is
      applied to the 40-bin sums.
    - Per-block sums are accumulated in fp32 by a scatter-add over the nearest-centre index, then added in fp64.
    - Nothing but the normalised vectors is saved for backward, which recomputes each block and forms the per-pair
      weight `w_ij = sum_k g_k dK(s_ij, B_k)/ds` on the same window (a polynomial in `exp(2ahd)` whose coefficients
      are gathered from a `(2J + 1, num_bins)` table, evaluated by Horner's rule), then `grad += w @ unit` on both
      sides of the pair.
    - Math runs in fp32 (fp64 for fp64 input) with autocast and TF32 disabled; only device-generic torch ops.

    Args:
        vectors (`torch.Tensor` of shape `(n, d)`):
            The token set (e.g. a codebook), any float dtype, `n >= 1`, finite (not checked here: it runs in every
            training step; the teacher builders check their tokens with `check_vectors`). Rows are l2-normalised
            internally (an all-zero row has similarity 0 to everything).
        num_bins (`int`, *optional*, defaults to 40):
            Number of bin centres on [-1, 1] (Eq. 5).
        alpha (`float`, *optional*):
            Kernel sharpness of Eq. 6; defaults to [`default_histogram_alpha`] (bandwidth = bin spacing, 190.125 for
            40 bins); at most [`max_histogram_alpha`] (12,168 for 40 bins).
        block_size (`int`, *optional*):
            Number of pairs evaluated at once (at least one row of the similarity matrix); working memory is about
            `block_size * (2J + 10) * 4` bytes. Defaults to 2**19 on CPU (~50 MB) and 2**23 on accelerators (~0.7 GB:
            few blocks, few kernel launches; nothing is read back from the device).

    Returns:
        `torch.Tensor` of shape `(num_bins,)`, non-negative, summing to 1; fp64 for fp64 input, else fp32.
        Differentiable with respect to `vectors`.

    Example:

    ```python
    >>> import torch
    >>> from glotok_hf.losses.histogram import naive_soft_cosine_histogram, soft_cosine_histogram
    >>> codebook = torch.randn(1024, 8, requires_grad=True)
    >>> histogram = soft_cosine_histogram(codebook)
    >>> histogram.shape, round(histogram.sum().item(), 5)
    (torch.Size([40]), 1.0)
    >>> torch.allclose(histogram, naive_soft_cosine_histogram(codebook), rtol=1e-5, atol=1e-7)
    True
    >>> histogram[20].backward()  # gradients reach the codebook

    ```
    """
    alpha = _resolve_alpha(alpha, num_bins)
    if block_size is None:
        block_size = 2**19 if vectors.device.type == "cpu" else 2**23
    dtype = torch.float64 if vectors.dtype == torch.float64 else torch.float32
    with torch.autocast(device_type=vectors.device.type, enabled=False), full_fp32_matmul():
        unit = F.normalize(vectors.to(dtype), dim=-1).contiguous()
        sums = _SoftHistogramSums.apply(unit, _KernelWindow.build(num_bins, alpha), block_size)
        return (sums / sums.sum()).to(dtype)


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
        teacher_histogram (`torch.Tensor` of shape `(num_bins,)`): fixed teacher distribution, non-negative, sums to 1
            (checked once where it enters: [`check_histogram`] in `GloTokObjective` and `TeacherHistogram`).
        alpha (`float`, *optional*): kernel sharpness, defaults to [`default_histogram_alpha`].
        num_bins (`int`, *optional*, defaults to 40): number of bins.
        eps (`float`, *optional*, defaults to 1e-8): added to `P_student` before the log.

    Returns:
        `torch.Tensor` of shape `()`, fp32 (fp64 for fp64 codebooks), >= 0 up to `eps`.

    Example:

    ```python
    >>> import torch
    >>> from glotok_hf.losses.histogram import histogram_relation_loss
    >>> from glotok_hf.teacher import random_codebook_teacher
    >>> teacher = random_codebook_teacher(size=1024, dim=64, seed=0)  # a control teacher, concentrated near 0
    >>> codebook = torch.randn(1024, 8, requires_grad=True)
    >>> loss = histogram_relation_loss(codebook, teacher.histogram, alpha=teacher.alpha)
    >>> loss.backward()
    >>> loss.item() > 0, codebook.grad.shape
    (True, torch.Size([1024, 8]))

    ```
    """
    student = soft_cosine_histogram(codebook, num_bins=num_bins, alpha=alpha)
    teacher = teacher_histogram.detach().to(device=student.device, dtype=student.dtype)
    return F.kl_div(torch.log(student + eps), teacher, reduction="sum")


# ---------------------------------------------------------------------------------------------- blocked computation
# Neglected kernel mass allowed per pair when the kernel is truncated to a window of bins around the nearest centre.
_TRUNCATION_TOLERANCE = 1e-6


@dataclass(frozen=True)
class _KernelWindow:
    """The kernel evaluated on the `2J + 1` bins around each similarity's nearest centre (see soft_cosine_histogram)."""

    num_bins: int
    alpha: float
    spacing: float
    half_width: int

    @classmethod
    def build(cls, num_bins: int, alpha: float, tolerance: float = _TRUNCATION_TOLERANCE) -> "_KernelWindow":
        spacing = 2.0 / (num_bins - 1)

        def neglected(half_width: int) -> float:
            # Worst case: s halfway between two centres. Mass outside the window over the nearest bin's own mass
            # (a lower bound of the pair's total mass).
            tail = sum(
                math.exp(-alpha * ((j - 0.5) * spacing) ** 2) + math.exp(-alpha * ((j + 0.5) * spacing) ** 2)
                for j in range(half_width + 1, 2 * num_bins)
            )
            return tail / math.exp(-alpha * spacing**2 / 4)

        half_width = next((j for j in range(num_bins - 1) if neglected(j) < tolerance), num_bins - 1)
        return cls(num_bins, alpha, spacing, half_width)

    @property
    def width(self) -> int:
        return 2 * self.half_width + 1

    def offset_factors(self, device: torch.device) -> torch.Tensor:
        """`exp(-alpha (j h)^2)` for the window slots `j = -J..J`, shape `(width,)`, fp64."""
        offsets = torch.arange(-self.half_width, self.half_width + 1, device=device, dtype=torch.float64)
        return torch.exp(-self.alpha * (offsets * self.spacing) ** 2)


def _row_blocks(n: int, block_size: int):
    """Row ranges `[start, stop)` of the upper triangle, each with at most `max(block_size, n - start)` pairs."""
    start = 0
    while start < n:
        stop = min(n, start + max(1, block_size // (n - start)))
        yield start, stop
        start = stop


class _Workspace:
    """Flat buffers every block reuses through views (on CPU, fresh block-sized tensors cost more than the math)."""

    def __init__(self, n: int, block_size: int, width: int, device: torch.device, dtype: torch.dtype):
        pairs = max((stop - start) * (n - start) for start, stop in _row_blocks(n, block_size))
        sizes = {"offset": 1, "nearest_float": 1, "center": 1, "ratio": 1, "nearest": 1, "window": width, "moments": 4}
        for name, factor in sizes.items():
            kind = torch.long if name == "nearest" else dtype
            setattr(self, name, torch.empty(factor * pairs, device=device, dtype=kind))

    def view(self, name: str, *shape: int) -> torch.Tensor:
        return getattr(self, name)[: math.prod(shape)].view(shape)


def _block_offsets(unit: torch.Tensor, unit_t: torch.Tensor, start: int, stop: int, window: _KernelWindow, work):
    """`nearest (P,)`, `offset d`, `exp(-alpha d^2)` (0 below the diagonal) and `exp(2 alpha h d)` of rows [start, stop)."""
    rows, cols = stop - start, unit.shape[0] - start
    h, alpha = window.spacing, window.alpha
    # pos = (s + 1) / h = m + d / h
    pos = torch.mm(unit[start:stop], unit_t[:, start:], out=work.view("offset", rows, cols)).add_(1.0).mul_(1.0 / h)
    nearest_float = torch.round(pos, out=work.view("nearest_float", rows, cols)).clamp_(0, window.num_bins - 1)
    offset = pos.sub_(nearest_float).mul_(h)
    nearest = work.view("nearest", rows * cols)
    nearest.copy_(nearest_float.view(-1))
    center = torch.mul(offset, offset, out=work.view("center", rows, cols)).mul_(-alpha).exp_()
    center[:, :rows].triu_()  # pairs i <= j only
    ratio = torch.mul(offset, 2.0 * alpha * h, out=work.view("ratio", rows, cols)).exp_()
    return nearest, offset, center, ratio


def _scatter_window_sums(out: torch.Tensor, nearest: torch.Tensor, weights: torch.Tensor, method: str | None = None):
    """`out[j, m] += sum of weights[j, p] over pairs p with nearest[p] == m`, by `method`: "rows" scatters along the
    bins through an expanded (never materialised) index, ~3x faster than bincount on CPU and sync-free on CUDA
    (bincount with weights syncs twice); "flat", a 1-D scatter-add, is CUDA's deterministic one (for
    `torch.use_deterministic_algorithms`). The default picks "flat" only in CUDA's deterministic mode."""
    width, num_bins = out.shape
    if method is None:
        deterministic = out.device.type != "cpu" and torch.are_deterministic_algorithms_enabled()
        method = "flat" if deterministic else "rows"
    if method == "rows":
        out.scatter_add_(1, nearest.expand(width, -1), weights)
        return
    index = (nearest + torch.arange(0, width * num_bins, num_bins, device=out.device)[:, None]).view(-1)
    out.view(-1).scatter_add_(0, index, weights.reshape(-1))


def _polynomial_and_slope(coefficients: list, x: torch.Tensor, value: torch.Tensor, slope: torch.Tensor) -> None:
    """`value = sum_k a_k x^k`, `slope = sum_k k a_k x^k` by Horner's rule (`coefficients[k]` = `a_k` or None = 0)."""
    *lower, top = coefficients
    value.copy_(top)
    slope.zero_()
    for a in reversed(lower):
        torch.addcmul(value, slope, x, out=slope)
        if a is None:
            value.mul_(x)
        else:
            torch.addcmul(a, value, x, out=value)
    slope.mul_(x)


class _SoftHistogramSums(torch.autograd.Function):
    """Unnormalised bin sums `p_k = sum_{i <= j} exp(-alpha (u_i . u_j - B_k)^2)` of unit rows `u`, in fp64."""

    @staticmethod
    def forward(ctx, unit: torch.Tensor, window: _KernelWindow, block_size: int) -> torch.Tensor:
        n, num_bins, half = unit.shape[0], window.num_bins, window.half_width
        unit_t = unit.T.contiguous()
        work = _Workspace(n, block_size, window.width, unit.device, unit.dtype)
        block_sums = unit.new_empty(window.width, num_bins)
        window_sums = torch.zeros(window.width, num_bins, device=unit.device, dtype=torch.float64)
        for start, stop in _row_blocks(n, block_size):
            nearest, _, center, ratio = _block_offsets(unit, unit_t, start, stop, window, work)
            # weights[J + j] = exp(-alpha d^2) exp(2 alpha h d)^j for j = -J..J
            weights = work.view("window", window.width, *center.shape)
            weights[half] = center
            for j in range(1, half + 1):
                torch.mul(weights[half + j - 1], ratio, out=weights[half + j])
            ratio.reciprocal_()
            for j in range(1, half + 1):
                torch.mul(weights[half - j + 1], ratio, out=weights[half - j])
            _scatter_window_sums(block_sums.zero_(), nearest, weights.view(window.width, -1))
            window_sums += block_sums  # fp32 within a block, fp64 across blocks
        # Slot j of nearest bin m lands in bin m + j - J, scaled by exp(-alpha (j h)^2).
        window_sums *= window.offset_factors(unit.device)[:, None]
        padded = window_sums.new_zeros(num_bins + 2 * half)
        for slot in range(window.width):
            padded[slot : slot + num_bins] += window_sums[slot]
        ctx.save_for_backward(unit)
        ctx.window, ctx.block_size = window, block_size
        return padded[half : half + num_bins].clone()

    @staticmethod
    @full_fp32_matmul()
    def backward(ctx, grad_sums: torch.Tensor):
        (unit,) = ctx.saved_tensors
        window, block_size = ctx.window, ctx.block_size
        n, num_bins, half = unit.shape[0], window.num_bins, window.half_width
        # table[J + j, m] = g_{m + j} exp(-alpha (j h)^2): the incoming gradient seen from slot j of nearest bin m.
        padded = grad_sums.new_zeros(num_bins + 2 * half)
        padded[half : half + num_bins] = grad_sums
        table = torch.stack([padded[slot : slot + num_bins] for slot in range(window.width)])
        table = (table * window.offset_factors(unit.device)[:, None]).to(unit.dtype)
        unit_t = unit.T.contiguous()
        grad_t = torch.zeros_like(unit_t)
        work = _Workspace(n, block_size, window.width, unit.device, unit.dtype)
        for start, stop in _row_blocks(n, block_size):
            nearest, offset, center, ratio = _block_offsets(unit, unit_t, start, stop, window, work)
            pairs = nearest.shape[0]
            coef = torch.index_select(table, 1, nearest, out=work.view("window", window.width, pairs))
            coef = coef.view(window.width, *offset.shape)
            # With x = exp(2 alpha h d): value = sum_j c_j x^j and slope = sum_j j c_j x^j, by Horner's rule from the
            # centre outwards in x (j >= 0) and in 1/x (j < 0), so no power exceeds x^J.
            value, slope, negative_value, negative_slope = work.view("moments", 4, *offset.shape)
            _polynomial_and_slope([coef[half + j] for j in range(half + 1)], ratio, value, slope)
            _polynomial_and_slope([None] + [coef[half - j] for j in range(1, half + 1)], ratio.reciprocal_(),
                                  negative_value, negative_slope)  # fmt: skip
            value += negative_value
            slope -= negative_slope
            # dK/ds = -2 alpha (d - jh) K, so grad_s = -2 alpha exp(-alpha d^2) (d * value - h * slope).
            pair_grad = offset.mul_(value).sub_(slope, alpha=window.spacing).mul_(center).mul_(-2.0 * window.alpha)
            grad_t[:, start:stop].addmm_(unit_t[:, start:], pair_grad.T)
            grad_t[:, start:].addmm_(unit_t[:, start:stop], pair_grad)
        return grad_t.T, None, None


# ------------------------------------------------------------------------------------------------------ validation
def check_histogram(histogram: torch.Tensor, num_bins: int | None = None, name: str = "histogram") -> torch.Tensor:
    """Validate a probability histogram: 1-D float tensor, `num_bins` long when given, finite, >= 0, sums to ~1."""
    if histogram.ndim != 1 or not histogram.is_floating_point():
        raise ValueError(
            f"{name} must be a 1-D float tensor (num_bins,), got {histogram.dtype} {tuple(histogram.shape)}."
        )
    values = histogram.detach().double()
    for bad, problem in (
        (num_bins is not None and len(values) != num_bins, f"has {len(values)} bins but num_bins={num_bins}; build "
         "the teacher with the same bin count as the training configuration"),
        (not torch.isfinite(values).all(), "contains NaN or inf values"),
        ((values < 0).any(), "must be non-negative"),
        (abs(values.sum().item() - 1) > 1e-4, f"must sum to 1 (a distribution), got a sum of {values.sum().item():.6g}"),
    ):  # fmt: skip
        if bad:
            raise ValueError(f"{name} {problem}.")
    return histogram


def _check_num_bins(num_bins: int) -> None:
    if not is_int(num_bins) or num_bins < 2:
        raise ValueError(f"num_bins must be an int >= 2 (bin centres span [-1, 1]), got {num_bins!r}.")


def _resolve_alpha(alpha: float | None, num_bins: int) -> float:
    _check_num_bins(num_bins)
    if alpha is None:
        return default_histogram_alpha(num_bins)
    if not (is_int(alpha) or isinstance(alpha, float)) or not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"alpha must be a positive finite float, got {alpha!r}.")
    if alpha > max_histogram_alpha(num_bins):
        raise ValueError(
            f"alpha={alpha} is too sharp for {num_bins} bins: alpha must be <= {max_histogram_alpha(num_bins):g} "
            "(kernel bandwidth at least 1/8 of the bin spacing). Sharper kernels make a hard histogram whose gradient "
            f"vanishes between bin centres; the default is {default_histogram_alpha(num_bins):g}."
        )
    return float(alpha)


def check_vectors(vectors: torch.Tensor, name: str = "vectors") -> None:
    """Validate a token set for a histogram: a finite `(n, d)` float tensor with `n, d >= 1` (reads the values back:
    for entry points, not for training steps)."""
    if vectors.ndim != 2 or 0 in vectors.shape or not vectors.is_floating_point():
        raise ValueError(
            f"{name} must be a float tensor of shape (n, d) with n >= 1 and d >= 1, got {vectors.dtype} "
            f"{tuple(vectors.shape)}."
        )
    if not torch.isfinite(vectors).all():
        raise ValueError(f"{name} contains NaN or inf values.")


__all__ = [
    "check_histogram",
    "check_vectors",
    "default_histogram_alpha",
    "histogram_bin_centers",
    "histogram_relation_loss",
    "max_histogram_alpha",
    "naive_soft_cosine_histogram",
    "soft_cosine_histogram",
]
