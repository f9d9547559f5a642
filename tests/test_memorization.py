"""Known answers of the memorisation check (glotok_hf.evaluation.memorization)."""

import math

import numpy as np
import pytest

from glotok_hf.evaluation.memorization import (
    memorization_report,
    naive_nearest_neighbor_distances,
    nearest_neighbor_distances,
)


def bar(column: int, size: int = 24) -> np.ndarray:
    """A black (size, size, 3) uint8 image with a white vertical bar in `column`."""
    image = np.zeros((size, size, 3), dtype=np.uint8)
    image[:, column] = 255
    return image


def test_exact_copy_has_distance_zero_and_finds_its_source():
    training = np.stack([bar(c) for c in (2, 8, 14, 20)])
    distances, indices = nearest_neighbor_distances(training[[2, 0]], training)
    assert distances.tolist() == [0.0, 0.0]
    assert indices.tolist() == [2, 0]


def test_shifted_copy_has_the_known_distance():
    # A bar moved by one column differs in 2 columns x 24 rows x 3 channels, each by 1 on the [0, 1] scale.
    training = np.stack([bar(5), bar(15)])
    distances, indices = nearest_neighbor_distances(bar(6)[None], training)
    assert distances[0] == pytest.approx(math.sqrt(2 * 24 * 3), abs=1e-12)
    assert indices[0] == 0


def test_uniform_offset_has_the_known_distance():
    # Every one of the 24 * 24 * 3 values off by 10 grey levels: L2 = sqrt(1728) * 10 / 255.
    reference = np.full((1, 24, 24, 3), 100, dtype=np.uint8)
    distances, _ = nearest_neighbor_distances(reference + 10, reference)
    assert distances[0] == pytest.approx(math.sqrt(1728) * 10 / 255, abs=1e-12)


def test_blocked_equals_naive_reference():
    rng = np.random.default_rng(0)
    queries = rng.integers(0, 256, (37, 6, 6, 3), dtype=np.uint8)
    references = rng.integers(0, 256, (53, 6, 6, 3), dtype=np.uint8)
    fast, fast_index = nearest_neighbor_distances(queries, references, batch_size=5)
    naive, naive_index = naive_nearest_neighbor_distances(queries, references)
    np.testing.assert_allclose(fast, naive, rtol=1e-12, atol=1e-12)
    assert (fast_index == naive_index).all()


def test_report_flags_copies_against_the_held_out_floor():
    training = np.stack([bar(c) for c in range(0, 24, 2)])  # bars in even columns
    held_out = np.stack([bar(c) for c in (1, 3, 5)])  # odd columns: one column away from a training bar
    samples = np.stack([bar(4), bar(10), bar(7), bar(9)])  # two copies, two new images
    report = memorization_report(samples, held_out, training)
    one_column = math.sqrt(2 * 24 * 3)
    assert report["num_training_images"] == 12
    assert report["near_copy_threshold"] == pytest.approx(one_column)
    assert report["held_out"]["median"] == pytest.approx(one_column)
    assert report["held_out"]["exact_copy_fraction"] == 0.0
    assert report["held_out"]["near_copy_fraction"] == 0.0
    assert report["samples"]["count"] == 4
    assert report["samples"]["min"] == 0.0
    assert report["samples"]["exact_copy_fraction"] == 0.5
    assert report["samples"]["near_copy_fraction"] == 0.5


@pytest.mark.parametrize(
    "queries, references",
    [
        (np.zeros((2, 4, 4, 3), dtype=np.float32), np.zeros((2, 4, 4, 3), dtype=np.uint8)),  # not uint8
        (np.zeros((0, 4, 4, 3), dtype=np.uint8), np.zeros((2, 4, 4, 3), dtype=np.uint8)),  # empty
        (np.zeros((2, 4, 4, 3), dtype=np.uint8), np.zeros((2, 5, 5, 3), dtype=np.uint8)),  # shape mismatch
    ],
)
def test_bad_inputs_raise_a_clear_error(queries, references):
    with pytest.raises(ValueError, match="uint8|same image shape"):
        nearest_neighbor_distances(queries, references)
