"""Known answers of the memorisation check (glotok_hf.evaluation.memorization)."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT
from PIL import Image

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


class _TinyJudge(torch.nn.Module):
    """A TorchScript-able judge on images in [0, 1]: `embed` gives 4 features, `forward` 10 class logits."""

    def __init__(self, features: bool):
        super().__init__()
        self.features = features
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.head = torch.nn.Linear(4, 10)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pooled = self.conv(images).mean(dim=(2, 3))
        return pooled if self.features else self.head(pooled)


@pytest.mark.slow
def test_default_pipeline_checks_script_reports_every_figure(tmp_path, subprocess_env):
    """`benchmarks/default_pipeline_checks.py` end to end on the embedded default, with a tiny digits-like dataset and
    an untrained judge (the figures' values mean nothing here; the protocol and the report's shape do)."""
    import datasets

    rng = np.random.default_rng(0)
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})

    def split(per_class: int) -> datasets.Dataset:
        labels = [c for c in range(10) for _ in range(per_class)]
        images = [Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)) for _ in labels]
        return datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)

    datasets.DatasetDict({"train": split(3), "test": split(2)}).save_to_disk(str(tmp_path / "digits"))
    (tmp_path / "judge").mkdir()
    torch.manual_seed(0)
    for name, as_features in (("classifier.pt", False), ("features.pt", True)):
        torch.jit.save(torch.jit.script(_TinyJudge(as_features)), str(tmp_path / "judge" / name))
    output = tmp_path / "checks.json"
    command = [sys.executable, str(REPO_ROOT / "benchmarks" / "default_pipeline_checks.py"), "--data",
               str(tmp_path / "digits"), "--judge", str(tmp_path / "judge"), "--images-per-class", "2",
               "--floor-draws", "2", "--output", str(output)]  # fmt: skip
    subprocess.run(command, env=subprocess_env, check=True, capture_output=True, timeout=300)
    report = json.loads(output.read_text())
    assert report["protocol"]["num_images"] == 20 and report["protocol"]["seed"] == 0
    assert report["protocol"]["num_reference_images"] == 20 and report["protocol"]["num_training_images"] == 30
    assert 0 <= report["class_consistency"] <= 1 and 0 <= report["judge_accuracy_train"] <= 1
    memo = report["memorization"]
    assert memo["samples"]["count"] == 20 and memo["held_out"]["count"] == 20 and memo["num_training_images"] == 30
    assert memo["held_out"]["near_copy_fraction"] == 0.0
    floor = report["fid_real_vs_real"]
    assert floor["train_images_per_draw"] == 20 and len(floor["fids"]) == 2 and floor["all_train_images"] == 30
    assert np.isfinite(report["fid"]) and np.isfinite(floor["all_train_fid"])
