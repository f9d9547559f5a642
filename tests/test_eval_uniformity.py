"""Known answers of the uniformity statistics (GloTok Table 3, VA-VAE protocol) and a small end-to-end t-SNE run."""

import numpy as np
import pytest
import torch
from conftest import tiny_glotok_model
from eval_utils import one_torch_thread  # noqa: F401  (autouse fixture)

from glotok_hf.evaluation.reconstruction import evaluate_reconstruction
from glotok_hf.evaluation.uniformity import density_statistics, latent_uniformity, sample_latent_vectors


def naive_gini(values: np.ndarray) -> float:
    """Mean absolute difference over all ordered pairs divided by twice the mean."""
    return float(np.abs(values[:, None] - values[None, :]).mean() / (2 * values.mean()))


def test_uniform_densities_are_perfectly_uniform():
    stats = density_statistics(np.full(50, 0.3))
    assert stats["density_cv"] == pytest.approx(0.0, abs=1e-12)
    assert stats["normalized_entropy"] == pytest.approx(1.0)
    assert stats["gini"] == pytest.approx(0.0, abs=1e-12)


def test_two_valued_densities_match_the_closed_forms():
    # n/2 points at density a, n/2 at b: CV = |a - b| / (a + b), Gini = |a - b| / (2 (a + b)),
    # entropy with p_a = 2a / (n (a + b)), p_b = 2b / (n (a + b)).
    n, a, b = 40, 1.0, 3.0
    stats = density_statistics(np.array([a, b] * (n // 2)))
    pa, pb = 2 * a / (n * (a + b)), 2 * b / (n * (a + b))
    entropy = -(n / 2) * (pa * np.log2(pa) + pb * np.log2(pb))
    assert stats["density_cv"] == pytest.approx((b - a) / (a + b))
    assert stats["gini"] == pytest.approx((b - a) / (2 * (a + b)))
    assert stats["normalized_entropy"] == pytest.approx(entropy / np.log2(n))


def test_gini_matches_the_pairwise_definition_and_is_order_free():
    density = np.random.default_rng(0).gamma(2.0, size=31)
    stats = density_statistics(torch.from_numpy(density))
    assert stats["gini"] == pytest.approx(naive_gini(density))
    assert density_statistics(density[::-1].copy()) == pytest.approx(stats)


@pytest.mark.parametrize("bad", [np.array([1.0]), np.array([1.0, 0.0]), np.array([1.0, np.nan]), np.ones((2, 2))])
def test_density_statistics_reject_bad_input(bad):
    with pytest.raises(ValueError, match="density"):
        density_statistics(bad)


def test_latent_vectors_come_from_one_random_position_of_each_image():
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(20, 4, 3, 5, generator=g)
    vectors = sample_latent_vectors(maps, seed=3)
    assert vectors.shape == (20, 4)
    for i, v in enumerate(vectors):  # vector i is one of the 15 positions of image i
        assert np.isclose(maps[i].permute(1, 2, 0).reshape(-1, 4).double().numpy(), v).all(axis=1).any()
    np.testing.assert_array_equal(vectors, sample_latent_vectors(maps, seed=3))
    assert not np.array_equal(vectors, sample_latent_vectors(maps, seed=4))
    # with flipped maps, about half the vectors come from them
    flipped = sample_latent_vectors(maps, flipped_latents=maps + 100, seed=3)
    assert 0 < int((flipped[:, 0] > 50).sum()) < 20
    assert sample_latent_vectors(maps, num_points=7, seed=0).shape == (7, 4)
    with pytest.raises(ValueError, match="num_points"):
        sample_latent_vectors(maps, num_points=21)
    with pytest.raises(ValueError, match="shape"):
        sample_latent_vectors(maps[0])


def test_end_to_end_uniformity_on_200_points():
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(200, 8, 2, 2, generator=g)
    kwargs = {"num_points": 200, "num_repeats": 2, "perplexity": 10.0, "max_iter": 250, "num_threads": 1}
    result = latent_uniformity(maps, maps.flip(-1), **kwargs)
    assert result.num_points == 200 and len(result.repeats) == 2
    for name in ("density_cv", "normalized_entropy", "gini"):
        values = np.array([r[name] for r in result.repeats])
        assert getattr(result, name) == pytest.approx(values.mean())
        assert getattr(result, f"{name}_std") == pytest.approx(values.std())
    assert 0 < result.density_cv < 2 and 0.8 < result.normalized_entropy <= 1 and 0 < result.gini < 1
    assert result.to_dict()["num_repeats"] == 2
    assert result.repeats[0] != pytest.approx(result.repeats[1])  # each repeat has its own draws and t-SNE seed


def test_uniformity_through_the_reconstruction_evaluation(tiny_model):
    g = torch.Generator().manual_seed(0)
    batches = [torch.rand(4, 3, 16, 16, generator=g) * 2 - 1 for _ in range(3)]
    kwargs = {"num_points": 12, "num_repeats": 1, "perplexity": 3.0, "max_iter": 250, "num_threads": 1}
    result = evaluate_reconstruction(tiny_model, batches, uniformity_images=10, uniformity_kwargs=kwargs)
    uniformity = result["uniformity"]
    assert uniformity["branch"] == "semantic" and uniformity["num_images"] == 10 and uniformity["num_points"] == 10
    assert 0 < uniformity["normalized_entropy"] <= 1
    with pytest.raises(ValueError, match="no semantic codebook"):
        evaluate_reconstruction(tiny_glotok_model(semantic_codebook_size=0), batches, uniformity_images=4)
