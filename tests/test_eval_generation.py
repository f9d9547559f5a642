"""Sampling protocol (balanced labels, per-image seeds independent of the process count, ADM .npz), class
consistency, and the generation evaluation on a tiny GloTokPipeline."""

import doctest

import numpy as np
import pytest
import torch
from eval_utils import (  # noqa: F401  (one_torch_thread is an autouse fixture)
    ColourClassifier,
    ConstantLogits,
    UnitColourClassifier,
    coloured_images,
    one_torch_thread,
    tiny_feature_net,
    tiny_pipeline,
)
from PIL import Image

import glotok_hf.evaluation.consistency as consistency_module
from glotok_hf.evaluation.consistency import ClassConsistency, class_consistency, load_image_classifier
from glotok_hf.evaluation.fid import FrechetDistance
from glotok_hf.evaluation.generation import evaluate_generation
from glotok_hf.evaluation.sampling import (
    balanced_class_labels,
    images_to_uint8,
    iter_samples,
    load_samples_npz,
    sample_for_evaluation,
    save_samples_npz,
    shard_indices,
)


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline(num_classes=3)


# --------------------------------------------------------------------------------------------------- protocol
def test_balanced_labels_give_every_class_the_same_count():
    assert balanced_class_labels(3, 2) == [0, 0, 1, 1, 2, 2]
    assert balanced_class_labels([7, 2], 3) == [7, 7, 7, 2, 2, 2]
    assert np.bincount(balanced_class_labels(1000, 50)).tolist() == [50] * 1000
    with pytest.raises(ValueError, match="images_per_class"):
        balanced_class_labels(3, 0)
    with pytest.raises(ValueError, match="class"):
        balanced_class_labels([], 2)


@pytest.mark.parametrize("num_images, num_processes", [(10, 1), (10, 3), (7, 8), (50_000, 8)])
def test_shards_partition_the_indices_in_order(num_images, num_processes):
    shards = [shard_indices(num_images, num_processes, r) for r in range(num_processes)]
    assert [i for s in shards for i in s] == list(range(num_images))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_per_image_seeds_do_not_depend_on_the_number_of_processes_or_the_batch_size(pipe):
    labels = balanced_class_labels(3, 3)
    single = list(iter_samples(pipe, labels, seed=5, batch_size=4, num_processes=1, process_index=0))
    shards = [list(iter_samples(pipe, labels, seed=5, batch_size=2, num_processes=2, process_index=r)) for r in (0, 1)]
    merged = [b for shard in shards for b in shard]
    assert np.concatenate([b.indices for b in merged]).tolist() == list(range(9))
    np.testing.assert_array_equal(np.concatenate([b.labels for b in merged]), labels)
    np.testing.assert_array_equal(
        np.concatenate([b.images for b in single]), np.concatenate([b.images for b in merged])
    )
    # image i is the pipeline's image for generator seed 5 + i
    direct = pipe(class_labels=[labels[4]], generator=[torch.Generator().manual_seed(9)], output_type="np").images
    np.testing.assert_array_equal(np.concatenate([b.images for b in merged])[4], images_to_uint8(direct)[0])
    other_seed = np.concatenate([b.images for b in iter_samples(pipe, labels, seed=6, batch_size=9)])
    assert not np.array_equal(other_seed, np.concatenate([b.images for b in single]))


def test_images_to_uint8_accepts_every_output_type():
    floats = np.linspace(0, 1, 2 * 2 * 2 * 3).reshape(2, 2, 2, 3)
    expected = (floats * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(images_to_uint8(floats), expected)
    np.testing.assert_array_equal(images_to_uint8(torch.from_numpy(floats).permute(0, 3, 1, 2)), expected)
    np.testing.assert_array_equal(images_to_uint8([Image.fromarray(a) for a in expected]), expected)
    with pytest.raises(ValueError, match="batch, height, width, 3"):
        images_to_uint8(np.zeros((2, 3, 4)))


def test_npz_round_trip_and_overwrite_protection(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 4, 4, 3), dtype=np.uint8)
    labels = np.array([0, 0, 1, 1, 2])
    path = save_samples_npz(tmp_path / "samples.npz", images, labels)
    with np.load(path) as data:  # the ADM layout: arr_0 images, arr_1 labels
        assert sorted(data.keys()) == ["arr_0", "arr_1"] and data["arr_0"].dtype == np.uint8
    loaded_images, loaded_labels = load_samples_npz(path)
    np.testing.assert_array_equal(loaded_images, images)
    np.testing.assert_array_equal(loaded_labels, labels)
    with pytest.raises(FileExistsError, match="overwrite"):
        save_samples_npz(path, images, labels)
    save_samples_npz(path, images[:2], overwrite=True)
    assert load_samples_npz(path)[1] is None
    with pytest.raises(ValueError, match="uint8"):
        save_samples_npz(tmp_path / "bad.npz", images.astype(np.float32))
    with pytest.raises(ValueError, match="labels"):
        save_samples_npz(tmp_path / "bad.npz", images, labels[:2])


def test_sample_for_evaluation_writes_npz_and_pngs(pipe, tmp_path):
    labels = balanced_class_labels(3, 2)
    seen = []
    local = sample_for_evaluation(
        pipe, labels, seed=1, batch_size=4, npz_path=tmp_path / "s.npz", png_dir=tmp_path / "png",
        on_batch=lambda b: seen.append(b.indices.tolist()),
    )  # fmt: skip
    assert seen == [[0, 1, 2, 3], [4, 5]]
    images, stored_labels = load_samples_npz(tmp_path / "s.npz")
    np.testing.assert_array_equal(images, local.images)
    np.testing.assert_array_equal(stored_labels, labels)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "png" / "000003.png")), images[3])  # lossless
    with pytest.raises(FileExistsError):
        sample_for_evaluation(pipe, labels, npz_path=tmp_path / "s.npz")
    with pytest.raises(FileExistsError):
        sample_for_evaluation(pipe, labels, png_dir=tmp_path / "png")


# ------------------------------------------------------------------------------------------- consistency
def test_class_consistency_with_a_colour_classifier():
    generated_as = torch.tensor([0, 1, 2, 0, 1, 1])  # the classes the images were generated for
    drawn_colour = torch.tensor([0, 1, 2, 2, 1, 0])  # the colours they actually have
    metric = ClassConsistency(num_classes=4, classifier=ColourClassifier(num_classes=4))
    metric.update(coloured_images(drawn_colour), generated_as)
    result = metric.compute()
    assert result["accuracy"] == pytest.approx(4 / 6)
    assert result["per_class_accuracy"] == pytest.approx([0.5, 2 / 3, 1.0, None])  # class 3: no images


def test_class_consistency_on_uint8_npz_images_and_bad_input():
    labels = np.array([0, 1, 2, 2])
    images = ((coloured_images(labels, noise=0.0) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    assert class_consistency(ColourClassifier(), images, labels, num_classes=3, batch_size=3)["accuracy"] == 1.0
    metric = ClassConsistency(3)
    with pytest.raises(ValueError, match="number of classes"):  # torchmetrics' check
        metric.update_logits(torch.zeros(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"one label in \[0, 3\) per image"):
        metric.update_logits(torch.zeros(1, 3), torch.tensor([3]))
    with pytest.raises(ValueError, match=r"one label in \[0, 3\) per image"):
        metric.update_logits(torch.zeros(2, 3), torch.tensor([0]))
    with pytest.raises(ValueError, match="needs a classifier"):
        metric.update(torch.zeros(1, 3, 4, 4), torch.tensor([0]))


def test_torchscript_and_transformers_classifiers_load_from_local_paths(tmp_path):
    torch.jit.save(torch.jit.script(UnitColourClassifier()), tmp_path / "classifier.pt")
    images = coloured_images([2, 0, 1])
    scripted = load_image_classifier(tmp_path / "classifier.pt")
    torch.testing.assert_close(scripted(images), ColourClassifier()(images))

    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    config = ViTConfig(image_size=8, patch_size=4, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=16, num_labels=3)  # fmt: skip
    model = ViTForImageClassification(config).eval()
    processor = ViTImageProcessor(size={"height": 8, "width": 8})
    model.save_pretrained(tmp_path / "vit")
    processor.save_pretrained(tmp_path / "vit")
    classifier = load_image_classifier(tmp_path / "vit")
    assert classifier.num_classes == 3
    expected = model(pixel_values=processor(images=list(images_to_uint8((images + 1) / 2)), return_tensors="pt")[
        "pixel_values"
    ]).logits  # fmt: skip
    torch.testing.assert_close(classifier(images), expected)
    with pytest.raises((OSError, ValueError), match="config.json"):  # transformers: a folder without a model
        load_image_classifier(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):  # torch.jit.load's
        load_image_classifier(tmp_path / "missing.pt")


def test_consistency_docstring_example():
    result = doctest.testmod(consistency_module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


# ------------------------------------------------------------------------------------ generation evaluation
def test_evaluate_generation_end_to_end(pipe, tmp_path):
    labels = balanced_class_labels(3, 4)
    reference = [coloured_images([0, 1, 2, 0, 1, 2], seed=s) for s in range(2)]
    result = evaluate_generation(
        pipe, labels, seed=0, batch_size=5, feature_network=tiny_feature_net(), reference_batches=reference,
        logits_network=ConstantLogits(5), inception_score_splits=2, classifier=ColourClassifier(),
        npz_path=tmp_path / "samples.npz", guidance_scale=1.5, top_k=8,
    )  # fmt: skip
    images, stored = load_samples_npz(tmp_path / "samples.npz")
    assert result["num_images"] == 12 and images.shape == (12, 8, 8, 3)
    # gFID equals a FrechetDistance fed the same reference and the stored samples
    fid = FrechetDistance(tiny_feature_net())
    for batch in reference:
        fid.update(batch, real=True)
    fid.update(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1, real=False)
    assert result["gfid"] == pytest.approx(fid.compute(), rel=1e-5) and result["gfid_reference"] == "images"
    assert result["inception_score"] == pytest.approx(1.0)
    expected = class_consistency(ColourClassifier(), images, stored, num_classes=3)
    assert result["class_consistency"]["accuracy"] == pytest.approx(expected["accuracy"])
    assert result["class_consistency"]["per_class_accuracy"] == pytest.approx(expected["per_class_accuracy"])
    sampling = result["sampling"]
    assert sampling["balanced"] and sampling["images_per_class"] == 4 and sampling["num_classes"] == 3
    assert sampling["guidance_scale"] == 1.5 and sampling["top_k"] == 8 and sampling["num_processes"] == 1
    with pytest.raises(ValueError, match="needs a reference"):
        evaluate_generation(pipe, labels, feature_network=tiny_feature_net())
