"""Soft cosine histogram and histogram relation loss (GloTok Eqs. 4-7): equality of the blocked implementation with
the literal formula in value and gradient, known answers, invariances, gradcheck, the KL loss, bad input."""

import functools
import math

import pytest
import torch
import torch.nn.functional as F

from glotok_hf.losses.histogram import (
    _scatter_window_sums,
    check_histogram,
    check_vectors,
    default_histogram_alpha,
    histogram_bin_centers,
    histogram_relation_loss,
    max_histogram_alpha,
    naive_soft_cosine_histogram,
    soft_cosine_histogram,
)
from glotok_hf.teacher import teacher_from_tokens


def naive_value_and_grad(vectors, weights, num_bins=40, alpha=None, rows=None):
    """The literal formula in fp64 (every pair i <= j against every bin), over chunks of rows so that 4096 codes fit
    in memory. Returns `P` and the gradient of `L = sum_k w_k P_k` w.r.t. `vectors` in one pass, by the chain rule
    `dL/dp_k = (w_k - L) / sum(p)`: the gradients of `sum_k w_k p_k` and `sum_k p_k` (per pair `dK/ds = -2 alpha
    (s - B) K`) are accumulated and combined at the end. Checked against autograd on the naive function below."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # thousands of small ops: threads only add barriers (ruinous on a busy machine)
    try:
        return _naive_value_and_grad(vectors, weights, num_bins, alpha, rows)
    finally:
        torch.set_num_threads(threads)


def _naive_value_and_grad(vectors, weights, num_bins, alpha, rows):
    alpha = default_histogram_alpha(num_bins) if alpha is None else alpha
    v = vectors.detach().double().requires_grad_(True)
    unit = F.normalize(v, dim=-1)
    u = unit.detach()
    centers, weights = torch.linspace(-1, 1, num_bins, dtype=torch.float64), weights.double()
    n = u.shape[0]
    rows = rows or max(1, 2**14 // n)  # ~5 MB per (rows, n, num_bins) tensor
    p = torch.zeros(num_bins, dtype=torch.float64)
    grad_weighted, grad_total = torch.zeros_like(u), torch.zeros_like(u)
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        s = u[start:stop] @ u[start:].T
        upper = torch.ones_like(s).triu_()  # columns j >= row i
        diff = s[..., None] - centers
        kernel = torch.exp(-alpha * diff**2) * upper[..., None]
        p += kernel.sum((0, 1))
        slope = -2 * alpha * diff * kernel
        for pair_grad, grad in ((slope @ weights, grad_weighted), (slope.sum(-1), grad_total)):
            grad[start:stop] += pair_grad @ u[start:]
            grad[start:] += pair_grad.T @ u[start:stop]
    total = p.sum()
    loss = (weights * p).sum() / total
    unit.backward((grad_weighted - loss * grad_total) / total)
    return p / total, v.grad


def value_and_grad(fn, vectors, weights):
    v = vectors.detach().clone().requires_grad_(True)
    histogram = fn(v)
    (histogram.double() * weights.double()).sum().backward()
    return histogram.detach().double(), v.grad.double()


def assert_relative_close(actual, expected, rtol=1e-5):
    """Equal within `rtol` relative to the magnitude of `expected` (elementwise, floored at rtol * max |expected|)."""
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * expected.abs().max().item())


def kernel_histogram(similarities_with_counts, num_bins=40):
    """Known answer from a list of (similarity, number of pairs)."""
    centers = torch.linspace(-1, 1, num_bins, dtype=torch.float64)
    alpha = default_histogram_alpha(num_bins)
    p = sum(count * torch.exp(-alpha * (s - centers) ** 2) for s, count in similarities_with_counts)
    return p / p.sum()


# ------------------------------------------------------------------------------------------------ bins and alpha
def test_bin_centers_and_default_alpha():
    centers = histogram_bin_centers(40)
    assert centers.shape == (40,) and centers.dtype == torch.float32
    assert centers[0] == -1 and centers[-1] == 1
    torch.testing.assert_close(centers.diff(), torch.full((39,), 2 / 39))
    assert histogram_bin_centers(5, dtype=torch.float64).dtype == torch.float64
    # Gaussian bandwidth 1 / sqrt(2 alpha) equals the bin spacing.
    assert default_histogram_alpha(40) == pytest.approx(190.125)
    assert (2 * default_histogram_alpha(40)) ** -0.5 == pytest.approx(2 / 39)
    assert max_histogram_alpha(40) == 8 * 39**2


# ------------------------------------------------------------------------------- equality with the naive formula
def test_chunked_reference_is_the_naive_formula():
    vectors, weights = torch.randn(70, 8, dtype=torch.float64), torch.randn(40, dtype=torch.float64)
    expected = value_and_grad(naive_soft_cosine_histogram, vectors, weights)
    for actual, wanted in zip(naive_value_and_grad(vectors, weights, rows=16), expected):
        torch.testing.assert_close(actual, wanted, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("n", [1024, 4096])
def test_matches_naive_formula_in_value_and_gradient(n):
    """fp32 blocked implementation vs the literal formula in fp64, 1e-5 relative; several blocks per call."""
    vectors, weights = torch.randn(n, 8), torch.randn(40)
    expected_value, expected_grad = naive_value_and_grad(vectors, weights)
    value, grad = value_and_grad(lambda v: soft_cosine_histogram(v, block_size=2**17), vectors, weights)
    assert_relative_close(value, expected_value)
    assert_relative_close(grad, expected_grad)


def test_fp64_input_matches_naive_to_truncation_level():
    vectors, weights = torch.randn(300, 5, dtype=torch.float64), torch.randn(40, dtype=torch.float64)
    expected_value, expected_grad = value_and_grad(naive_soft_cosine_histogram, vectors, weights)
    value, grad = value_and_grad(lambda v: soft_cosine_histogram(v, block_size=1000), vectors, weights)
    assert_relative_close(value, expected_value, rtol=1e-7)
    assert_relative_close(grad, expected_grad, rtol=1e-5)


@pytest.mark.parametrize("num_bins, alpha", [(40, 1.0), (40, 50.0), (40, 800.0), (40, 12168.0), (2, None), (7, None)])
def test_matches_naive_formula_for_other_bins_and_alphas(num_bins, alpha):
    """Wide kernels use the whole range of bins as window, sharp ones a single neighbour on each side."""
    vectors, weights = torch.randn(120, 4, dtype=torch.float64), torch.randn(num_bins, dtype=torch.float64)
    expected_value, expected_grad = value_and_grad(
        lambda v: naive_soft_cosine_histogram(v, num_bins=num_bins, alpha=alpha), vectors, weights
    )
    value, grad = value_and_grad(
        lambda v: soft_cosine_histogram(v, num_bins=num_bins, alpha=alpha, block_size=500), vectors, weights
    )
    assert_relative_close(value, expected_value, rtol=1e-7)
    assert_relative_close(grad, expected_grad, rtol=1e-5)


def test_result_does_not_depend_on_block_size():
    """One row per block, blocks that split the diagonal square, and everything in one block agree."""
    vectors, weights = torch.randn(50, 8, dtype=torch.float64), torch.randn(40, dtype=torch.float64)
    reference = value_and_grad(lambda v: soft_cosine_histogram(v, block_size=10**6), vectors, weights)
    for block_size in (1, 7, 60, 333):
        blocked = value_and_grad(functools.partial(soft_cosine_histogram, block_size=block_size), vectors, weights)
        for actual, expected in zip(blocked, reference):
            torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-15)


def test_accumulation_methods_agree():
    """The row scatter (CPU, CUDA) and the deterministic flat scatter (CUDA) equal a literal per-slot index_add."""
    nearest, weights = torch.randint(0, 40, (1000,)), torch.rand(11, 1000)
    reference = torch.stack([torch.zeros(40).index_add_(0, nearest, w) for w in weights])
    for method in ("rows", "flat"):
        result = torch.zeros(11, 40)
        _scatter_window_sums(result, nearest, weights, method=method)
        torch.testing.assert_close(result, reference)


def test_gradcheck_on_tiny_double_input():
    vectors = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: soft_cosine_histogram(v, block_size=5), (vectors,))
    teacher = soft_cosine_histogram(torch.randn(9, 3, dtype=torch.float64))
    assert torch.autograd.gradcheck(lambda v: histogram_relation_loss(v, teacher), (vectors,))


# ------------------------------------------------------------------------------------------------- known answers
def test_identical_vectors_put_the_mass_at_one():
    histogram = soft_cosine_histogram(torch.tensor([[0.3, -1.2, 2.0]]).repeat(25, 1))
    torch.testing.assert_close(histogram.double(), kernel_histogram([(1.0, 1)]), rtol=1e-5, atol=1e-6)
    assert histogram.argmax() == 39 and histogram[-3:].sum() > 0.9


def test_orthogonal_pairs_put_the_mass_at_zero():
    histogram = soft_cosine_histogram(torch.eye(8) * 3.0)  # 8 diagonal pairs at 1, 28 pairs at 0
    torch.testing.assert_close(histogram.double(), kernel_histogram([(1.0, 8), (0.0, 28)]), rtol=1e-5, atol=1e-6)
    assert histogram[:39].argmax() in (19, 20)  # the two centres closest to 0 (+-1/39)


def test_antipodal_pairs_put_the_mass_at_minus_one():
    histogram = soft_cosine_histogram(torch.tensor([[1.0, 2.0], [-1.0, -2.0]]))  # pairs: 1, 1 (diagonal), -1
    torch.testing.assert_close(histogram.double(), kernel_histogram([(1.0, 2), (-1.0, 1)]), rtol=1e-5, atol=1e-6)
    assert histogram[0] == pytest.approx(histogram[-1].item() / 2, rel=1e-5)


def test_single_vector():
    vectors = torch.randn(1, 8, requires_grad=True)
    histogram = soft_cosine_histogram(vectors)
    torch.testing.assert_close(histogram.double(), kernel_histogram([(1.0, 1)]), rtol=1e-5, atol=1e-6)
    histogram[5].backward()
    assert torch.isfinite(vectors.grad).all()


def test_is_a_distribution_invariant_to_order_scale_and_rotation():
    vectors = torch.randn(200, 8, dtype=torch.float64)
    histogram = soft_cosine_histogram(vectors)
    assert histogram.shape == (40,) and histogram.dtype == torch.float64 and (histogram >= 0).all()
    assert histogram.sum().item() == pytest.approx(1.0, abs=1e-12)
    rotation = torch.linalg.qr(torch.randn(8, 8, dtype=torch.float64))[0]
    scale = torch.rand(200, 1, dtype=torch.float64) * 10 + 0.1
    transformed = (vectors * scale)[torch.randperm(200)] @ rotation
    torch.testing.assert_close(soft_cosine_histogram(transformed), histogram, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_low_precision_input_is_computed_in_fp32(dtype):
    vectors = torch.randn(64, 8).to(dtype)
    histogram = soft_cosine_histogram(vectors)
    assert histogram.dtype == torch.float32
    torch.testing.assert_close(histogram, soft_cosine_histogram(vectors.float()))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(soft_cosine_histogram(vectors.float()), histogram)


# -------------------------------------------------------------------------------------------------------- the loss
def test_relation_loss_is_kl_teacher_to_student():
    codebook, teacher = torch.randn(100, 8), soft_cosine_histogram(torch.randn(300, 16))
    student = soft_cosine_histogram(codebook)
    expected = (teacher * (teacher.log() - (student + 1e-8).log())).sum()
    loss = histogram_relation_loss(codebook, teacher)
    assert loss.shape == () and loss.dtype == torch.float32
    torch.testing.assert_close(loss, expected)
    assert loss > 0


def test_relation_loss_of_identical_histograms_is_zero():
    codebook = torch.randn(100, 8)
    loss = histogram_relation_loss(codebook, soft_cosine_histogram(codebook))
    assert abs(loss.item()) < 1e-6  # the epsilon inside the log (40 bins x 1e-8) and fp32 rounding


def test_relation_loss_gradient_moves_the_codebook_towards_the_teacher():
    codebook = torch.randn(128, 8, requires_grad=True)
    teacher = soft_cosine_histogram(torch.randn(256, 64))  # high-dimensional: similarities concentrate near 0
    optimizer = torch.optim.Adam([codebook], lr=0.1)
    losses = []
    for _ in range(30):
        loss = histogram_relation_loss(codebook, teacher)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]


def test_relation_loss_accepts_teacher_on_other_dtype():
    teacher = soft_cosine_histogram(torch.randn(20, 8)).double()
    assert histogram_relation_loss(torch.randn(30, 8), teacher).dtype == torch.float32


# -------------------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "vectors, error, match",
    [
        (torch.randn(8), ValueError, r"shape \(n, d\)"),
        (torch.randn(0, 8), ValueError, "n >= 1"),
        (torch.randn(2, 3, 4), ValueError, r"shape \(n, d\)"),
        (torch.ones(4, 8, dtype=torch.long), ValueError, "float"),
        (torch.tensor([[1.0, math.nan]]), ValueError, "NaN or inf"),
        (torch.tensor([[1.0, math.inf]]), ValueError, "NaN or inf"),
    ],
)
def test_bad_vectors(vectors, error, match):
    """Token sets are checked where they enter (the teacher builders), not in every training step."""
    with pytest.raises(error, match=match):
        check_vectors(vectors)
    with pytest.raises(error, match=match):
        teacher_from_tokens(vectors)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(alpha=0.0), ValueError, "positive"),
        (dict(alpha=-3.0), ValueError, "positive"),
        (dict(alpha=math.nan), ValueError, "positive finite"),
        (dict(alpha="190"), ValueError, "alpha"),
        (dict(alpha=1e5), ValueError, "too sharp.*12168"),
        (dict(num_bins=1), ValueError, "num_bins must be an int >= 2"),
        (dict(num_bins=40.0), ValueError, "num_bins must be an int"),
    ],
)
def test_bad_options(kwargs, error, match):
    with pytest.raises(error, match=match):
        soft_cosine_histogram(torch.randn(4, 3), **kwargs)


@pytest.mark.parametrize(
    "teacher, match",
    [
        (torch.full((30,), 1 / 30), "30 bins but num_bins=40"),
        (torch.full((40,), math.nan), "NaN or inf"),
        (torch.cat([torch.full((39,), 1 / 38), torch.tensor([-1 / 38])]), "non-negative"),
        (torch.full((40,), 0.5), "sum to 1"),
        (torch.full((40, 1), 1 / 40), "1-D float"),
        (torch.ones(40, dtype=torch.long), "1-D float"),
    ],
)
def test_bad_teacher_histogram(teacher, match):
    with pytest.raises(ValueError, match=match):
        check_histogram(teacher, num_bins=40)
