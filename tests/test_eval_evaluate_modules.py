"""The shipped `evaluate` metric scripts load offline from their folders and give known answers."""

import doctest
import math

import evaluate
import numpy as np
import pytest

import glotok_hf.evaluation.evaluate_modules as evaluate_modules
from glotok_hf.evaluation.evaluate_modules import available_metrics, metric_path


def test_the_metrics_ship_as_folders():
    assert {"psnr", "ssim", "codebook_usage"} <= set(available_metrics())
    with pytest.raises(ValueError, match="available"):
        metric_path("fid")


def test_psnr_module_known_answers():
    psnr = evaluate.load(metric_path("psnr"))
    rng = np.random.default_rng(0)
    clean = rng.uniform(-0.5, 0.5, (8, 8, 3))
    noisy = clean + 0.1 * rng.choice([-1.0, 1.0], clean.shape)  # MSE 0.01 -> 10 log10(4 / 0.01)
    psnr.add_batch(predictions=[noisy], references=[clean])
    psnr.add_batch(predictions=[noisy, noisy], references=[clean, clean])
    assert psnr.compute()["psnr"] == pytest.approx(10 * math.log10(400), abs=1e-4)  # float32 storage
    assert math.isinf(psnr.compute(predictions=[clean], references=[clean])["psnr"])
    levels = rng.integers(0, 256, (4, 4, 3))
    uint8 = psnr.compute(predictions=[levels + 5], references=[levels], data_range=255)["psnr"]
    assert uint8 == pytest.approx(10 * math.log10(255**2 / 25))
    with pytest.raises(ValueError, match="same shape"):
        psnr.compute(predictions=[clean], references=[clean[:4]])


def test_ssim_module_known_answers():
    ssim = evaluate.load(metric_path("ssim"))
    image = np.random.default_rng(0).uniform(-1, 1, (16, 16, 3))
    ssim.add_batch(predictions=[image], references=[image])
    assert ssim.compute()["ssim"] == pytest.approx(1.0, abs=1e-6)
    a, b, c1 = 0.25, -0.5, (0.01 * 2.0) ** 2  # constant images: (2ab + C1) / (a^2 + b^2 + C1)
    value = ssim.compute(predictions=[np.full((16, 16, 3), b)], references=[np.full((16, 16, 3), a)])["ssim"]
    assert value == pytest.approx((2 * a * b + c1) / (a**2 + b**2 + c1), rel=1e-5)


def test_codebook_usage_module_known_answers():
    usage = evaluate.load(metric_path("codebook_usage"))
    # every code of K = 8 equally often: usage 1, perplexity K, normalised perplexity 1 (each code has p = 1 / K)
    usage.add_batch(predictions=[list(range(8)), list(range(8))[::-1]])
    usage.add_batch(predictions=[[0, 1, 2, 3, 4, 5, 6, 7]])
    assert usage.compute(num_codes=8) == pytest.approx(
        {"usage": 1.0, "perplexity": 8.0, "normalized_perplexity": 1.0, "num_indices": 24}
    )
    # 4 of 16 codes, equally often: usage 1/4, perplexity 4
    result = usage.compute(predictions=[[3, 5], [7, 9], [3, 5, 7, 9]], num_codes=16)
    assert result["usage"] == 0.25 and result["perplexity"] == pytest.approx(4.0)
    # one code only: perplexity 1
    assert usage.compute(predictions=[[2, 2, 2]], num_codes=4)["perplexity"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="num_codes"):
        usage.compute(predictions=[[0]])
    with pytest.raises(ValueError, match=r"code indices in \[0, "):
        usage.compute(predictions=[[4]], num_codes=4)


def test_docstring_example():
    result = doctest.testmod(evaluate_modules, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
