"""Known-answer tests of the reconstruction metrics, FID / IS and the feature-network loaders."""

import doctest
import importlib.util

import numpy as np
import pytest
import torch
from eval_utils import (  # noqa: F401  (one_torch_thread is an autouse fixture)
    ColourClassifier,
    ConstantLogits,
    FakeTorchScriptInception,
    FlattenPixels,
    coloured_images,
    one_torch_thread,
    tiny_feature_net,
)
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

import glotok_hf.evaluation.fid as fid_module
from glotok_hf.evaluation.codebook import code_counts
from glotok_hf.evaluation.fid import (
    FrechetDistance,
    InceptionScore,
    TorchScriptInceptionFeatures,
    load_feature_network,
    load_inception,
    load_reference_statistics,
    save_statistics,
    to_unit_range,
)
from glotok_hf.evaluation.reconstruction import ReconstructionMetrics, evaluate_reconstruction, prepare_images


def psnr(reconstructions, originals):
    """Per-image PSNR with the metrics' convention (data_range 2), as a reference."""
    return peak_signal_noise_ratio(reconstructions, originals, data_range=2.0, reduction="none", dim=(1, 2, 3))


def scores(reconstructions, originals) -> dict:
    """PSNR / SSIM as ReconstructionMetrics reports them, for unquantized images."""
    metrics = ReconstructionMetrics(quantize=False)
    metrics.update(reconstructions, originals)
    return metrics.compute()


def levels_to_images(levels: np.ndarray) -> torch.Tensor:
    """uint8 levels (B, C, H, W) -> the [-1, 1] images that hold them exactly."""
    return torch.from_numpy(levels.astype(np.float32)) / 127.5 - 1


# ------------------------------------------------------------------------------------------------ PSNR / SSIM
def test_psnr_of_identical_images_is_inf_and_ssim_is_one(images):
    result = scores(images, images)
    assert np.isinf(result["psnr"]) and result["ssim"] == pytest.approx(1.0)


def test_psnr_of_a_known_noise_level_in_the_minus_one_one_range():
    g = torch.Generator().manual_seed(0)
    clean = torch.rand(3, 3, 16, 16, generator=g) - 0.5  # [-0.5, 0.5]: adding 0.1 never leaves [-1, 1]
    signs = torch.randint(0, 2, clean.shape, generator=g) * 2 - 1
    # |noise| = 0.1 everywhere: MSE = 0.01 exactly, PSNR = 10 log10(4 / 0.01) = 26.0206 dB
    assert scores(clean + 0.1 * signs, clean)["psnr"] == pytest.approx(10 * np.log10(4 / 0.01), rel=1e-6)
    uniform = clean + 0.3 * (2 * torch.rand(clean.shape, generator=g) - 1)
    mse = ((uniform.double() - clean.double()) ** 2).mean(dim=(1, 2, 3))
    # the mean of the per-image values
    assert scores(uniform, clean)["psnr"] == pytest.approx(float((10 * torch.log10(4 / mse)).mean()), rel=1e-5)


def test_psnr_on_8bit_levels_equals_the_uint8_formula():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (2, 3, 8, 8)).astype(np.float64)
    b = np.clip(a + rng.integers(-9, 10, a.shape), 0, 255)
    expected = 10 * np.log10(255**2 / ((a - b) ** 2).mean(axis=(1, 2, 3)))
    assert scores(levels_to_images(b), levels_to_images(a))["psnr"] == pytest.approx(expected.mean(), rel=1e-5)


def test_ssim_of_constant_images_matches_the_closed_form_for_data_range_two():
    # constant images a and b: no variance, so SSIM = (2ab + C1) / (a^2 + b^2 + C1) with C1 = (0.01 * 2)^2
    a, b, c1 = 0.25, -0.5, (0.01 * 2.0) ** 2
    value = scores(torch.full((1, 3, 16, 16), b), torch.full((1, 3, 16, 16), a))["ssim"]
    assert value == pytest.approx((2 * a * b + c1) / (a**2 + b**2 + c1), rel=1e-5)


def test_pairs_must_match():
    with pytest.raises(
        RuntimeError, match="must match"
    ):  # torch's shape error; the entry point is encode(validate=True)
        ReconstructionMetrics().update(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 4))


def test_prepare_images_clamps_and_rounds_to_8bit_levels():
    x = torch.tensor([-1.7, -1.0, 0.0, 0.004, 1.0, 3.0]).view(1, 1, 2, 3)
    levels = ((prepare_images(x) + 1) * 127.5).flatten()
    torch.testing.assert_close(levels, levels.round(), atol=1e-4, rtol=0)
    assert float(prepare_images(x).min()) == -1.0 and float(prepare_images(x).max()) == 1.0
    assert float(prepare_images(x, quantize=False).flatten()[3]) == pytest.approx(0.004)


def test_reconstruction_metrics_accumulate_over_batches():
    g = torch.Generator().manual_seed(0)
    clean = torch.rand(4, 3, 16, 16, generator=g) - 0.5
    noisy = clean + 0.1 * (torch.randint(0, 2, clean.shape, generator=g) * 2 - 1)
    metrics = ReconstructionMetrics(feature_network=tiny_feature_net(), quantize=False)
    metrics.update(noisy[:3], clean[:3])
    metrics.update(noisy[3:], clean[3:])
    result = metrics.compute()
    assert result["num_images"] == 4
    assert result["psnr"] == pytest.approx(10 * np.log10(400), abs=1e-4)
    assert result["ssim"] == pytest.approx(
        float(structural_similarity_index_measure(noisy, clean, data_range=2.0)), abs=1e-6
    )
    assert result["rfid"] > 0
    same = ReconstructionMetrics(feature_network=tiny_feature_net())
    same.update(clean, clean)
    assert same.compute()["rfid"] == pytest.approx(0.0, abs=1e-5)


def test_lpips_through_the_metrics_is_zero_for_identical_images_and_matches_the_module():
    from glotok_hf.losses.lpips import LPIPS

    torch.manual_seed(0)
    lpips = LPIPS()  # random weights: fine for checking the plumbing
    for module in lpips.heads:
        module.weight.data.abs_()
    x, y = coloured_images([0, 1], size=16), coloured_images([0, 2], size=16, seed=1)
    metrics = ReconstructionMetrics(lpips=lpips)
    metrics.update(x, x)
    assert metrics.compute()["lpips"] == pytest.approx(0.0, abs=1e-7)
    metrics = ReconstructionMetrics(lpips=lpips)
    metrics.update(y, x)
    assert metrics.compute()["lpips"] == pytest.approx(float(lpips(prepare_images(y), prepare_images(x)).mean()))


def test_evaluate_reconstruction_reports_codebook_usage_and_perplexity(tiny_model):
    batches = [{"pixel_values": coloured_images([0, 1, 2, 0], size=16, seed=s)} for s in range(2)]
    result = evaluate_reconstruction(tiny_model, batches)
    assert result["num_images"] == 8 and np.isfinite(result["psnr"]) and -1 <= result["ssim"] <= 1
    # the same tokenize/detokenize round trip, batch by batch (quantization makes batching numerics visible)
    with torch.no_grad():
        encoded = [tiny_model.encode(b["pixel_values"]) for b in batches]
        values = [
            psnr(prepare_images(tiny_model.decode(**e.indices).sample), prepare_images(b["pixel_values"]))
            for e, b in zip(encoded, batches)
        ]
    assert result["psnr"] == pytest.approx(float(torch.cat(values).mean()), rel=1e-6)
    for name, size in (("semantic", 12), ("visual", 16)):
        counts = sum(code_counts(getattr(e, f"{name}_indices"), size) for e in encoded).double()
        p = counts[counts > 0] / counts.sum()
        stats = result["codebooks"][name]
        assert stats["size"] == size
        assert stats["usage"] == pytest.approx(float((counts > 0).double().mean()))
        assert stats["perplexity"] == pytest.approx(float(torch.exp(-(p * p.log()).sum())))
        assert stats["normalized_perplexity"] == pytest.approx(stats["perplexity"] / size)


# ------------------------------------------------------------------------------------------------------ FID
def test_fid_of_a_set_against_itself_is_zero():
    fid = FrechetDistance(tiny_feature_net())
    images = torch.rand(32, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    fid.update(images, real=True)
    fid.update(images, real=False)
    assert fid.compute() == pytest.approx(0.0, abs=1e-6)


def test_fid_of_shifted_and_scaled_features_matches_the_closed_form():
    # FlattenPixels makes the features the pixels in [0, 1]; images on 8-bit levels survive the quantization.
    # For fake features a*x + b: FID = ||(1 - a) mu + b||^2 + (1 - a)^2 tr(Sigma) exactly, for any sample.
    rng = np.random.default_rng(0)
    levels = rng.integers(60, 151, (64, 3, 1, 2))
    features = levels.reshape(64, -1) / 255.0
    mu, trace = features.mean(0), np.trace(np.cov(features, rowvar=False))
    for a, b_levels in ((1, 20), (2, -100)):
        fid = FrechetDistance(FlattenPixels(num_features=6))
        fid.update(levels_to_images(levels), real=True)
        fid.update(levels_to_images(a * levels + b_levels), real=False)
        expected = ((1 - a) * mu - b_levels / 255.0) @ ((1 - a) * mu - b_levels / 255.0) + (1 - a) ** 2 * trace
        assert fid.compute() == pytest.approx(expected, rel=1e-4)


def test_reference_statistics_give_the_fid_of_the_reference_images(tmp_path):
    g = torch.Generator().manual_seed(0)
    real, fake = torch.rand(40, 3, 8, 8, generator=g) * 2 - 1, torch.rand(40, 3, 8, 8, generator=g) - 0.5
    direct = FrechetDistance(tiny_feature_net())
    direct.update(real, real=True)
    direct.update(fake, real=False)
    mu, sigma, n = direct.statistics(real=True)
    assert n == 40
    path = save_statistics(tmp_path / "ref.npz", mu, sigma)
    with pytest.raises(FileExistsError):
        save_statistics(path, mu, sigma)
    from_stats = FrechetDistance(tiny_feature_net())
    from_stats.set_reference_statistics(*load_reference_statistics(path))
    from_stats.update(fake, real=False)
    assert from_stats.compute() == pytest.approx(direct.compute(), rel=1e-6)
    with pytest.raises(ValueError, match="shapes"):
        from_stats.set_reference_statistics(mu[:3], sigma)


def test_fid_errors_are_clear(tmp_path):
    fid = FrechetDistance(tiny_feature_net())
    fid.update(torch.zeros(1, 3, 8, 8), real=False)
    with pytest.raises(RuntimeError, match="More than one sample"):  # torchmetrics' check
        fid.compute()
    np.savez(tmp_path / "images.npz", arr_0=np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="'mu' and 'sigma'"):
        load_reference_statistics(tmp_path / "images.npz")
    with pytest.raises(FileNotFoundError):
        load_reference_statistics(tmp_path / "missing.npz")
    with pytest.raises(IndexError):  # a network without a batch dimension fails its probe pass
        FrechetDistance(torch.nn.Flatten(0))


# ------------------------------------------------------------------------------------------ Inception Score
def test_inception_score_of_uniform_predictions_is_one():
    score = InceptionScore(ConstantLogits(10), splits=2)
    score.update(torch.rand(20, 3, 8, 8) * 2 - 1)
    mean, std = score.compute()
    assert mean == pytest.approx(1.0, abs=1e-6) and std == pytest.approx(0.0, abs=1e-6)


def test_inception_score_of_confident_balanced_predictions_is_the_number_of_classes():
    class Confident(torch.nn.Module):  # one-hot predictions read from the colour (images in [0, 1])
        def forward(self, images):
            return 1e3 * ColourClassifier()(images * 2 - 1)

    score = InceptionScore(Confident(), splits=1)
    score.update(coloured_images([0, 1, 2] * 4))
    assert score.compute()[0] == pytest.approx(3.0, rel=1e-5)


# ---------------------------------------------------------------------------------------- network loaders
def test_torchscript_feature_network_round_trip(tmp_path):
    net = tiny_feature_net()
    torch.jit.save(torch.jit.script(net), tmp_path / "features.pt")
    loaded = load_feature_network(tmp_path / "features.pt", probe_size=8)
    x = torch.rand(2, 3, 8, 8)
    assert loaded.num_features == 6
    torch.testing.assert_close(loaded(x), net(x))
    torch.save(net.state_dict(), tmp_path / "state.pt")
    with pytest.raises(ValueError, match="not a TorchScript file"):
        load_feature_network(tmp_path / "state.pt")
    with pytest.raises(FileNotFoundError, match="Nothing is downloaded"):
        load_feature_network(tmp_path / "missing.pt")


def test_torchscript_inception_pool_features_and_logits(tmp_path):
    fake = FakeTorchScriptInception().eval()
    torch.jit.save(torch.jit.script(fake), tmp_path / "inception-2015-12-05.pt")
    pool = load_inception(tmp_path / "inception-2015-12-05.pt", output="pool")
    logits = load_inception(tmp_path / "inception-2015-12-05.pt", output="logits")
    assert isinstance(pool, TorchScriptInceptionFeatures) and pool.num_features == 2048 and logits.num_features == 1008
    x = to_unit_range(torch.rand(3, 3, 8, 8) * 2 - 1)
    with torch.no_grad():
        torch.testing.assert_close(pool(x), fake(x * 255, return_features=True))
        # softmax of the returned log-probabilities recovers the network's bias-free probabilities
        torch.testing.assert_close(logits(x).softmax(1), fake(x * 255, no_output_bias=True), atol=1e-6, rtol=1e-4)
    assert FrechetDistance(pool).num_features == 2048  # plugs in as is (no probe pass)


def test_inception_loader_rejects_other_files(tmp_path):
    torch.jit.save(torch.jit.script(tiny_feature_net()), tmp_path / "generic.pt")
    with pytest.raises(ValueError, match="return_features"):
        load_inception(tmp_path / "generic.pt")
    with pytest.raises(ValueError, match="output must be"):
        load_inception(tmp_path / "generic.pt", output="spatial")
    with pytest.raises(FileNotFoundError):
        load_inception(tmp_path / "weights-inception-2015-12-05-6726825d.pth")


@pytest.mark.skipif(importlib.util.find_spec("torch_fidelity") is not None, reason="torch-fidelity is installed")
def test_torch_fidelity_weights_without_torch_fidelity_name_the_package_and_the_alternative(tmp_path):
    path = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
    torch.save({"fc.weight": torch.zeros(1)}, path)
    with pytest.raises(ImportError, match="pip install torch-fidelity.*inception-2015-12-05.pt"):
        load_inception(path)


def test_docstring_examples():
    result = doctest.testmod(fid_module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
