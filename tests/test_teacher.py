"""Teacher histograms: the file format and its checks, and every builder (backbone + k-means on tiny random ViT /
DINOv2-with-registers / CLIP models over a generated imagefolder, GloTok and safetensors codebooks, random and uniform
controls), plus `glotok build-teacher` end to end."""

import json
import math
import subprocess

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import PYTHON, tiny_glotok_model
from PIL import Image
from safetensors.torch import save_file

from glotok_hf.cli import main as cli_main
from glotok_hf.losses.histogram import default_histogram_alpha, histogram_bin_centers, soft_cosine_histogram
from glotok_hf.teacher import (
    extract_patch_features,
    kmeans_centers,
    load_teacher,
    random_codebook_teacher,
    teacher_from_backbone,
    teacher_from_codebook,
    teacher_from_tokens,
    uniform_teacher,
)

TINY_VIT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32)


# ----------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """imagefolder with classes cat and dog, 4 random 40x48 PNGs each, plus one unreadable file."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (root / "train" / name).mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "train" / name / f"{i}.png")
    (root / "train" / "cat" / "corrupt.png").write_bytes(b"not a png")
    return root


def save_backbone(folder, kind: str = "vit"):
    """A tiny random backbone and its image processor (32x32 inputs, 8x8 patches: a 4x4 grid)."""
    from transformers import (
        CLIPConfig,
        CLIPImageProcessorPil,
        CLIPModel,
        Dinov2WithRegistersConfig,
        Dinov2WithRegistersModel,
        ViTConfig,
        ViTImageProcessorPil,
        ViTModel,
    )

    torch.manual_seed(0)
    if kind == "vit":
        model = ViTModel(ViTConfig(**TINY_VIT, patch_size=8))
    elif kind == "dinov2_registers":
        model = Dinov2WithRegistersModel(Dinov2WithRegistersConfig(**TINY_VIT, patch_size=8, num_register_tokens=2))
    else:
        text = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=99)
        model = CLIPModel(
            CLIPConfig(text_config=text, vision_config=dict(**TINY_VIT, patch_size=8), projection_dim=16)
        )
    model.save_pretrained(folder)
    processor_class = CLIPImageProcessorPil if kind == "clip" else ViTImageProcessorPil
    if kind == "clip":
        processor = processor_class(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    else:
        processor = processor_class(size={"height": 32, "width": 32})
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def vit_folder(tmp_path_factory):
    return save_backbone(tmp_path_factory.mktemp("vit"))


def backbone_teacher(vit_folder, image_folder, **kwargs):
    kwargs = {"layer": 1, "pool_size": 2, "num_clusters": 4, "batch_size": 3, "progress": False, **kwargs}
    return teacher_from_backbone(str(vit_folder), train_data_dir=str(image_folder), **kwargs)


# ---------------------------------------------------------------------------------------------------- controls
def test_uniform_teacher():
    teacher = uniform_teacher(num_bins=12, alpha=20.0)
    torch.testing.assert_close(teacher.histogram, torch.full((12,), 1 / 12, dtype=torch.float64))
    torch.testing.assert_close(teacher.bin_centers, histogram_bin_centers(12, dtype=torch.float64))
    assert teacher.alpha == 20.0 and teacher.num_bins == 12 and teacher.metadata["source"] == "uniform"
    assert uniform_teacher().alpha == default_histogram_alpha(40)


def test_random_codebook_teacher_is_seeded():
    teacher = random_codebook_teacher(200, 8, seed=3)
    expected = soft_cosine_histogram(torch.randn(200, 8, generator=torch.Generator().manual_seed(3)))
    torch.testing.assert_close(teacher.histogram, expected.double())
    assert torch.equal(random_codebook_teacher(200, 8, seed=3).histogram, teacher.histogram)
    assert not torch.equal(random_codebook_teacher(200, 8, seed=4).histogram, teacher.histogram)
    assert teacher.metadata | {"created": None} == teacher.metadata | {
        "source": "random", "size": 200, "dim": 8, "seed": 3, "num_tokens": 200, "created": None,
    }  # fmt: skip
    # isotropic: symmetric around 0 up to sampling noise, apart from the 200 diagonal pairs at 1
    mean = float((teacher.histogram * teacher.bin_centers).sum())
    assert abs(mean - 200 / (200 * 201 / 2)) < 0.02
    with pytest.raises(
        ValueError, match=r"tokens must be a float tensor of shape \(n, d\) with n >= 1"
    ):  # checked by teacher_from_tokens
        random_codebook_teacher(0, 8)


def test_teacher_from_tokens():
    tokens = torch.randn(50, 16)
    teacher = teacher_from_tokens(tokens, num_bins=20, alpha=60.0, metadata={"note": "x"})
    expected = soft_cosine_histogram(tokens, num_bins=20, alpha=60.0).double()
    torch.testing.assert_close(teacher.histogram, expected)
    assert teacher.metadata["num_tokens"] == 50 and teacher.metadata["note"] == "x" and teacher.tokens is not None
    with pytest.raises(ValueError, match="tokens contains NaN or inf"):
        teacher_from_tokens(torch.tensor([[1.0, math.nan]]))


# ------------------------------------------------------------------------------------------------- file format
def test_save_and_load_round_trip(tmp_path):
    teacher = teacher_from_tokens(torch.randn(30, 8), num_bins=16, alpha=33.5, metadata={"source": "tokens", "k": 3})
    path = teacher.save(tmp_path / "teacher.safetensors")
    loaded = load_teacher(path, num_bins=16, alpha=33.5)
    assert torch.equal(loaded.histogram, teacher.histogram) and loaded.histogram.dtype == torch.float64
    assert torch.equal(loaded.bin_centers, teacher.bin_centers)
    assert loaded.alpha == 33.5 and loaded.metadata == teacher.metadata and loaded.tokens is None
    assert path.stat().st_size < 10_000
    with_tokens = load_teacher(teacher.save(tmp_path / "with_tokens.safetensors", include_tokens=True))
    torch.testing.assert_close(with_tokens.tokens, teacher.tokens)


def test_save_never_overwrites(tmp_path):
    path = tmp_path / "teacher.safetensors"
    uniform_teacher().save(path)
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="overwrite"):
        uniform_teacher(num_bins=8).save(path)
    assert path.read_bytes() == before
    uniform_teacher(num_bins=8).save(path, overwrite=True)
    assert load_teacher(path).num_bins == 8
    assert [p.name for p in tmp_path.iterdir()] == ["teacher.safetensors"]  # no partial file left behind


def test_load_checks_the_training_configuration(tmp_path):
    path = uniform_teacher(num_bins=40).save(tmp_path / "teacher.safetensors")
    with pytest.raises(ValueError, match="has 40 bins but the training configuration uses num_bins=30"):
        load_teacher(path, num_bins=30)
    with pytest.raises(ValueError, match="built with alpha=190.125 but the training configuration uses alpha=50"):
        load_teacher(path, alpha=50.0)
    assert load_teacher(path, num_bins=40, alpha=default_histogram_alpha(40)).num_bins == 40


def write_teacher_file(path, histogram, metadata=None, bin_centers=None):
    tensors = {"histogram": histogram.double()}
    tensors["bin_centers"] = (
        histogram_bin_centers(len(histogram), dtype=torch.float64) if bin_centers is None else (bin_centers)
    )
    base = {"format": "glotok-teacher-histogram", "format_version": "1", "alpha": "190.125", "metadata": "{}"}
    save_file(tensors, str(path), metadata={**base, **(metadata or {})})
    return path


@pytest.mark.parametrize(
    "histogram, metadata, bin_centers, match",
    [
        (torch.full((40,), math.nan), None, None, "NaN or inf"),
        (torch.full((40,), math.inf), None, None, "NaN or inf"),
        (torch.full((40,), 1 / 20), None, None, "sum to 1"),
        (torch.full((40,), 1 / 40), {"alpha": "-1.0"}, None, "alpha must be a positive"),
        (torch.full((40,), 1 / 40), {"alpha": "abc"}, None, "is invalid"),
        (torch.full((40,), 1 / 40), {"format": "other"}, None, "not a GloTok teacher histogram file"),
        (torch.full((40,), 1 / 40), None, torch.zeros(40, dtype=torch.float64), "evenly spaced"),
    ],
)
def test_load_rejects_bad_files(tmp_path, histogram, metadata, bin_centers, match):
    path = write_teacher_file(tmp_path / "bad.safetensors", histogram, metadata, bin_centers)
    with pytest.raises(ValueError, match=match):
        load_teacher(path)


def test_load_rejects_missing_and_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_teacher(tmp_path / "missing.safetensors")
    (tmp_path / "text.safetensors").write_text("hello")
    with pytest.raises(ValueError, match="not a safetensors file"):
        load_teacher(tmp_path / "text.safetensors")
    save_file({"weight": torch.zeros(3)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a GloTok teacher histogram file"):
        load_teacher(tmp_path / "other.safetensors")


# ----------------------------------------------------------------------------------------------------- codebooks
def test_teacher_from_glotok_checkpoint(tmp_path):
    model = tiny_glotok_model()
    model.save_pretrained(tmp_path / "tokenizer")
    teacher = teacher_from_codebook(tmp_path / "tokenizer")
    expected = soft_cosine_histogram(model.semantic.quantizer.codebook().detach())
    torch.testing.assert_close(teacher.histogram, expected.double())
    assert teacher.metadata["source"] == "codebook" and teacher.metadata["branch"] == "semantic"
    assert teacher.metadata["num_tokens"] == 12
    visual = teacher_from_codebook(tmp_path / "tokenizer", branch="visual")
    assert visual.metadata["num_tokens"] == 16
    tiny_glotok_model(semantic_codebook_size=0).save_pretrained(tmp_path / "visual_only")
    with pytest.raises(ValueError, match="has no semantic codebook"):
        teacher_from_codebook(tmp_path / "visual_only")
    with pytest.raises(FileNotFoundError, match="No such file or folder for the codebook"):
        teacher_from_codebook(tmp_path / "missing" / "tokenizer")
    with pytest.raises(OSError, match="huggingface.co") as error:  # "org/name" is looked up on the (offline) Hub
        teacher_from_codebook("some-org/some-tokenizer")
    assert not isinstance(error.value, FileNotFoundError)


def test_teacher_from_safetensors_file(tmp_path):
    codebook, other = torch.randn(20, 8), torch.randn(5, 3)
    save_file({"codebook": codebook}, str(tmp_path / "one.safetensors"))
    save_file({"a": codebook, "b": other, "bias": torch.zeros(4)}, str(tmp_path / "two.safetensors"))
    expected = soft_cosine_histogram(codebook).double()
    torch.testing.assert_close(teacher_from_codebook(tmp_path / "one.safetensors").histogram, expected)
    teacher = teacher_from_codebook(str(tmp_path / "two.safetensors"), key="a")
    torch.testing.assert_close(teacher.histogram, expected)
    assert teacher.metadata["key"] == "a"
    torch.testing.assert_close(teacher_from_codebook(codebook).histogram, expected)
    with pytest.raises(ValueError, match=r"holds 2 2-D tensors; choose one with key="):
        teacher_from_codebook(tmp_path / "two.safetensors")
    with pytest.raises(ValueError, match=r"has no tensor 'c'; available"):
        teacher_from_codebook(tmp_path / "two.safetensors", key="c")
    with pytest.raises(ValueError, match=r"codebook must be a float tensor of shape \(n, d\)"):
        teacher_from_codebook(tmp_path / "two.safetensors", key="bias")
    save_file({"codebook": torch.full((4, 8), math.nan)}, str(tmp_path / "nan.safetensors"))
    with pytest.raises(ValueError, match="codebook contains NaN or inf"):
        teacher_from_codebook(tmp_path / "nan.safetensors")
    with pytest.raises(FileNotFoundError):
        teacher_from_codebook(tmp_path / "missing.safetensors")


def test_teacher_from_glotok_state_dict_file(tmp_path):
    """A bare GloTok weights file: the semantic codebook is found by name."""
    model = tiny_glotok_model()
    model.save_pretrained(tmp_path)
    teacher = teacher_from_codebook(tmp_path / "model.safetensors")
    assert teacher.metadata["key"] == "semantic.quantizer.embedding.weight"
    expected = soft_cosine_histogram(model.semantic.quantizer.embedding.weight.detach())
    torch.testing.assert_close(teacher.histogram, expected.double())


# ------------------------------------------------------------------------------------------ backbone + k-means
@pytest.mark.parametrize("kind, num_prefix", [("vit", 1), ("dinov2_registers", 3), ("clip", 1)])
def test_patch_features_drop_cls_and_register_tokens(tmp_path, kind, num_prefix):
    from transformers import AutoModel

    model = AutoModel.from_pretrained(save_backbone(tmp_path, kind)).eval()
    vision = getattr(model, "vision_model", model)
    pixel_values = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        hidden = vision(pixel_values=pixel_values, output_hidden_states=True).hidden_states[1]
        features = extract_patch_features(vision, pixel_values, layer=1, patch_size=8)
        pooled = extract_patch_features(vision, pixel_values, layer=1, patch_size=8, pool_size=2)
    assert hidden.shape[1] == 16 + num_prefix
    torch.testing.assert_close(features, hidden[:, num_prefix:])
    # 2x2 average pooling of the 4x4 patch grid (row-major patches)
    grid = hidden[:, num_prefix:].reshape(2, 4, 4, 32)
    expected = grid.reshape(2, 2, 2, 2, 2, 32).mean((2, 4)).reshape(2, 4, 32)
    torch.testing.assert_close(pooled, expected)
    with pytest.raises(ValueError, match="larger than the 4x4 patch grid"):
        extract_patch_features(vision, pixel_values, layer=1, patch_size=8, pool_size=5)


def test_kmeans_finds_separated_clusters():
    rng = np.random.default_rng(0)
    means = np.array([[5, 0, 0], [0, 5, 0], [0, 0, 5]], dtype=np.float32)
    features = np.concatenate([m + 0.01 * rng.standard_normal((50, 3)).astype(np.float32) for m in means])
    centers = kmeans_centers(features, 3, seed=0)
    assert centers.dtype == np.float32 and centers.shape == (3, 3)
    np.testing.assert_allclose(centers[np.argsort(-centers, axis=0)[0]], means, atol=0.01)


def test_teacher_from_backbone(vit_folder, image_folder):
    teacher = backbone_teacher(vit_folder, image_folder)
    assert teacher.tokens.shape == (4, 32)
    torch.testing.assert_close(teacher.histogram, soft_cosine_histogram(teacher.tokens).double())
    meta = teacher.metadata
    assert meta["source"] == "backbone" and meta["model"] == str(vit_folder) and meta["model_type"] == "vit"
    assert (meta["layer"], meta["pool_size"], meta["k"], meta["per_class"]) == (1, 2, 4, False)
    assert meta["dataset"] == str(image_folder) and meta["split"] == "train"
    assert (meta["image_count"], meta["skipped_images"], meta["num_features"]) == (8, 1, 8 * 4)
    assert meta["num_tokens"] == 4 and meta["feature_dim"] == 32 and "created" in meta
    again = backbone_teacher(vit_folder, image_folder)
    torch.testing.assert_close(again.histogram, teacher.histogram)  # seeded


def test_teacher_from_backbone_per_class_and_subset(vit_folder, image_folder):
    teacher = backbone_teacher(vit_folder, image_folder, per_class=True, num_clusters=3, layer=-1, pool_size=None)
    assert teacher.tokens.shape == (6, 32)
    assert teacher.metadata["num_classes"] == 2 and teacher.metadata["num_features"] == 8 * 16
    subset = backbone_teacher(vit_folder, image_folder, max_images=5, normalize_features=True)
    assert subset.metadata["image_count"] + subset.metadata["skipped_images"] == 5
    norms = subset.tokens.norm(dim=1)  # means of unit vectors (raw features here have norms ~0.1-0.2)
    assert (norms <= 1 + 1e-5).all() and norms.max() > 0.5


def test_teacher_from_clip_backbone(tmp_path, image_folder):
    teacher = backbone_teacher(save_backbone(tmp_path, "clip"), image_folder)
    assert teacher.metadata["model_type"] == "clip_vision_model" and teacher.tokens.shape == (4, 32)


def test_backbone_bad_input(vit_folder, image_folder, tmp_path):
    with pytest.raises(ValueError, match="Unknown layer 3 .* 3 hidden states"):
        backbone_teacher(vit_folder, image_folder, layer=3)
    with pytest.raises(ValueError, match="needs at least num_clusters=100 features but the dataset has 32"):
        backbone_teacher(vit_folder, image_folder, num_clusters=100)
    with pytest.raises(ValueError, match="but class 'cat' has 64"):
        backbone_teacher(vit_folder, image_folder, num_clusters=65, per_class=True, pool_size=None)
    unreadable = tmp_path / "unreadable" / "train" / "x"
    unreadable.mkdir(parents=True)
    for i in range(2):
        (unreadable / f"{i}.png").write_bytes(b"broken")
    with pytest.raises(ValueError, match="No readable image .* 2 file"):
        backbone_teacher(vit_folder, unreadable.parent.parent)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="Found no images|empty"):
        backbone_teacher(vit_folder, tmp_path / "empty")
    with pytest.raises(ValueError, match="num_clusters must be an int >= 1"):
        backbone_teacher(vit_folder, image_folder, num_clusters=0)


# ---------------------------------------------------------------------------------------------------------- CLI
def test_cli_backbone_and_codebook(vit_folder, image_folder, tmp_path, capsys):
    output = tmp_path / "teacher.safetensors"
    args = ["build-teacher", "--source", "backbone", "--model", str(vit_folder), "--train-data-dir",
            str(image_folder), "--layer", "1", "--pool-size", "2", "--num-clusters", "4", "--batch-size", "3",
            "--no-progress", "--num-bins", "20", "--alpha", "47.5", "--output", str(output)]  # fmt: skip
    assert cli_main(args) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["source"] == "backbone" and printed["num_bins"] == 20
    teacher = load_teacher(output, num_bins=20, alpha=47.5)
    torch.testing.assert_close(teacher.histogram, backbone_teacher(vit_folder, image_folder, num_bins=20, alpha=47.5)
                               .histogram)  # fmt: skip

    before = output.read_bytes()
    assert cli_main(args) == 2  # refuses to overwrite
    assert "already exists; pass --overwrite" in capsys.readouterr().err and output.read_bytes() == before

    tiny_glotok_model().save_pretrained(tmp_path / "tokenizer")
    codebook_args = ["build-teacher", "--source", "codebook", "--codebook", str(tmp_path / "tokenizer"), "--output",
                     str(output), "--overwrite", "--save-tokens"]  # fmt: skip
    assert cli_main(codebook_args) == 0
    assert load_teacher(output).tokens.shape == (12, 4)

    assert cli_main(["build-teacher", "--source", "random", "--size", "10", "--output", str(tmp_path / "r")]) == 2
    assert "--source random needs --dim" in capsys.readouterr().err


def test_cli_console_script_random_and_uniform(tmp_path, subprocess_env):
    random_path, uniform_path = tmp_path / "random.safetensors", tmp_path / "uniform.safetensors"
    command = [PYTHON, "-m", "glotok_hf.cli", "build-teacher", "--source", "random", "--size", "64", "--dim", "8",
               "--seed", "1", "--output", str(random_path)]  # fmt: skip
    result = subprocess.run(command, env=subprocess_env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Saved the random teacher histogram" in result.stdout
    torch.testing.assert_close(load_teacher(random_path).histogram, random_codebook_teacher(64, 8, seed=1).histogram)
    assert cli_main(["build-teacher", "--source", "uniform", "--num-bins", "10", "--output", str(uniform_path)]) == 0
    torch.testing.assert_close(load_teacher(uniform_path, num_bins=10).histogram, torch.full((10,), 0.1).double())


def test_objective_accepts_a_loaded_teacher(tmp_path):
    """What the training script does: load the file with its configuration and give the histogram to the loss."""
    from glotok_hf.losses.histogram import histogram_relation_loss

    teacher = load_teacher(random_codebook_teacher(64, 8).save(tmp_path / "t.safetensors"), num_bins=40, alpha=None)
    loss = histogram_relation_loss(torch.randn(32, 8, requires_grad=True), teacher.histogram)
    loss.backward()
    assert loss.item() > 0
    assert F.kl_div(teacher.histogram.log(), teacher.histogram, reduction="sum").abs() < 1e-12


def test_save_creates_missing_parent_folders_but_never_overwrites(tmp_path):
    path = uniform_teacher(8).save(tmp_path / "a" / "b" / "teacher.safetensors")
    assert load_teacher(path).num_bins == 8
    with pytest.raises(FileExistsError, match="already exists"):
        uniform_teacher(8).save(path)
