"""Code extraction: round trip against the tokenizer, flip rows, resume, refusal to overwrite, and accelerate."""

import subprocess

import numpy as np
import pytest
import torch
from conftest import PYTHON, tiny_glotok_model
from PIL import Image
from prior_utils import one_torch_thread
from train_utils import accelerate_config

import glotok_hf.codes as codes_module
from glotok_hf.cli import main
from glotok_hf.codes import METADATA_NAME, WORK_DIR_NAME, extract_codes, load_code_dataset
from glotok_hf.data import ImageTransform, decode_image, load_image_dataset
from glotok_hf.prior import prior_training_batch
from glotok_hf.sampling import TokenLayout

NUM_GOOD = 7  # readable images; one more file is corrupt


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    """An imagefolder with 7 readable images of different sizes in 2 classes and one corrupt file."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(NUM_GOOD):
        folder = root / ("cat" if i % 3 else "dog")
        folder.mkdir(exist_ok=True)
        size = (20 + 2 * i, 18 + i)
        Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)).save(folder / f"{i}.png")
    (root / "cat" / "broken.png").write_bytes(b"not a png")
    return root


@pytest.fixture(scope="module")
def dataset(image_dir):
    return load_image_dataset(train_data_dir=image_dir)


@pytest.fixture(scope="module")
def model():
    return tiny_glotok_model()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, model, dataset):
    """One full single-process extraction with flips, 3 images per shard."""
    out = tmp_path_factory.mktemp("reference") / "codes"
    with pytest.warns(UserWarning, match="Skipping unreadable image"):
        extract_codes(model, dataset, out, flip=True, batch_size=2, shard_size=3, progress=False)
    return load_code_dataset(out)


def encode_row(model, dataset, index: int, flipped: bool = False):
    pixels = ImageTransform(16)(decode_image(dataset[index]["image"]))[None]
    with torch.no_grad():
        return model.encode(pixels.flip(-1) if flipped else pixels)


def test_codes_round_trip_to_the_tokenizer(model, dataset, reference):
    codes, metadata = reference
    broken = [i for i in range(len(dataset)) if decode_image(dataset[i]["image"]) is None]
    assert len(broken) == 1
    assert codes.column_names == ["index", "label", "flipped", "codes"]
    assert len(codes) == 2 * NUM_GOOD
    assert codes["index"][:] == [i for i in range(len(dataset)) if i not in broken for _ in range(2)]
    assert codes["flipped"][:] == [False, True] * NUM_GOOD
    assert codes["label"][:] == [dataset[i]["label"] for i in codes["index"]]
    assert codes.features["label"].names == ["cat", "dog"]
    tensors = codes.with_format("torch")[:]
    assert tensors["codes"].shape == (2 * NUM_GOOD, 8 * 8 * 2)
    for row in range(len(codes)):
        encoded = encode_row(model, dataset, codes[row]["index"], codes[row]["flipped"])
        expected = TokenLayout(16, 12, 2).to_tokens(encoded.visual_indices, encoded.semantic_indices)[0]
        assert torch.equal(tensors["codes"][row].long(), expected), row
    assert not torch.equal(tensors["codes"][0], tensors["codes"][1])  # flipping changes the codes
    # The codes decode back through the layout to the tokenizer's indices.
    visual, semantic = TokenLayout(16, 12, 2).to_indices(tensors["codes"][:1].long(), grid=(8, 8))
    encoded = encode_row(model, dataset, codes[0]["index"])
    assert torch.equal(visual, encoded.visual_indices) and torch.equal(semantic, encoded.semantic_indices)

    assert metadata["num_images"] == NUM_GOOD and metadata["num_skipped"] == 1 and metadata["num_rows"] == 14
    assert metadata["flip"] is True and metadata["resolution"] == 16 and metadata["grid"] == [8, 8]
    assert metadata["label_names"] == ["cat", "dog"] and metadata["num_classes"] == 2
    assert (metadata["visual_codebook_size"], metadata["semantic_codebook_size"]) == (16, 12)
    assert metadata["tokenizer_config"]["visual_codebook_size"] == 16


def test_codes_feed_the_prior_training_batch(reference):
    codes, metadata = reference
    layout = TokenLayout(metadata["visual_codebook_size"], metadata["semantic_codebook_size"], metadata["num_classes"])
    rows = codes.with_format("torch")[:4]
    batch = prior_training_batch(rows["codes"], rows["label"], layout, class_dropout_prob=0.0)
    assert batch["input_ids"].shape == (4, 1 + metadata["num_image_tokens"])


def test_resume_after_interruption(tmp_path, model, dataset, reference, monkeypatch):
    out = tmp_path / "codes"
    calls = []
    encode_shard = codes_module._encode_shard

    def crash_on_second_shard(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return encode_shard(*args, **kwargs)

    monkeypatch.setattr(codes_module, "_encode_shard", crash_on_second_shard)
    kwargs = dict(flip=True, batch_size=2, shard_size=3, progress=False)
    with pytest.raises(KeyboardInterrupt):
        extract_codes(model, dataset, out, **kwargs)
    assert (out / WORK_DIR_NAME / "shard-00000").is_dir() and not (out / METADATA_NAME).exists()
    with pytest.raises(FileNotFoundError, match="unfinished extraction"):
        load_code_dataset(out)
    partial = out / WORK_DIR_NAME / "shard-00001.tmp-12345"  # a write cut short
    partial.mkdir()
    (partial / "data-00000-of-00001.arrow").write_bytes(b"half")

    calls.clear()
    monkeypatch.setattr(codes_module, "_encode_shard", lambda *a, **k: calls.append(1) or encode_shard(*a, **k))
    with pytest.raises(ValueError, match="different settings \\(flip differ\\)"):
        extract_codes(model, dataset, out, **{**kwargs, "flip": False})
    with pytest.warns(UserWarning, match="Skipping unreadable image"):
        extract_codes(model, dataset, out, **kwargs)
    assert len(calls) == 2  # shards 1 and 2 only: shard 0 was complete
    codes, metadata = load_code_dataset(out)
    assert codes.to_dict() == reference[0].to_dict() and metadata == reference[1]
    assert not (out / WORK_DIR_NAME).exists()


def test_never_overwrites(tmp_path, model, dataset, reference):
    finished = tmp_path / "finished"
    extract_codes(model, dataset.select(range(2)), finished, progress=False)
    before = sorted(p.name for p in finished.iterdir())
    with pytest.raises(FileExistsError, match="already holds a finished code dataset"):
        extract_codes(model, dataset.select(range(2)), finished, progress=False)
    assert sorted(p.name for p in finished.iterdir()) == before
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="neither empty nor an unfinished code extraction"):
        extract_codes(model, dataset, other, progress=False)
    assert (other / "notes.txt").read_text() == "mine"


def test_extract_bad_inputs(tmp_path, model, dataset):
    with pytest.raises(ValueError, match="multiple of the tokenizer's downsampling factor 2"):
        extract_codes(model, dataset, tmp_path / "a", resolution=15)
    with pytest.raises(ValueError, match="label_column 'class'"):
        extract_codes(model, dataset, tmp_path / "a", label_column="class")
    with pytest.raises(ValueError, match="shard_size must be an int >= 1"):
        extract_codes(model, dataset, tmp_path / "a", shard_size=0)
    with pytest.raises(ValueError, match="out of range for 1 label names"):
        extract_codes(model, dataset, tmp_path / "a", label_names=["cat"], progress=False)
    with pytest.raises(FileNotFoundError, match="glotok_codes.json is missing"):
        load_code_dataset(tmp_path)


def test_unlabelled_single_class(tmp_path, model, dataset):
    codes, metadata = load_code_dataset(
        extract_codes(model, dataset.select(range(3)), tmp_path / "c", label_column=None, progress=False)
    )
    assert codes["label"][:] == [0, 0, 0] and metadata["num_classes"] == 1 and metadata["label_names"] is None


def cli_arguments(tokenizer, image_dir, output_dir) -> list[str]:
    return [
        "extract-codes", "--tokenizer", str(tokenizer), "--train-data-dir", str(image_dir), "--flip",
        "--batch-size", "2", "--shard-size", "2", "--num-workers", "0", "--no-progress", "--output-dir", str(output_dir),
    ]  # fmt: skip


def assert_same_codes(got, expected):
    (codes, metadata), (expected_codes, expected_metadata) = got, expected
    assert codes.to_dict() == expected_codes.to_dict()
    # The dataset fingerprint differs between loads, and a reloaded tokenizer's config gains `architectures`.
    drop = lambda meta: {k: v for k, v in meta.items() if k not in ("source", "tokenizer_config")}  # noqa: E731
    assert drop(metadata) == drop(expected_metadata)
    for key, value in expected_metadata["tokenizer_config"].items():
        assert metadata["tokenizer_config"].get(key) == value, key


def test_cli(tmp_path, image_dir, model, reference, capsys):
    tokenizer = tmp_path / "tokenizer"
    model.save_pretrained(tokenizer)
    with pytest.warns(UserWarning, match="Skipping unreadable image"):
        assert main(cli_arguments(tokenizer, image_dir, tmp_path / "codes")) == 0
    out = capsys.readouterr().out
    assert "wrote 14 rows (7 images, 1 skipped, 128 tokens each)" in out and "with 1 process\n" in out
    assert_same_codes(load_code_dataset(tmp_path / "codes"), reference)
    # Errors are one clear line, no traceback.
    assert main(cli_arguments(tmp_path / "missing", image_dir, tmp_path / "other")) == 2
    assert "glotok extract-codes: error:" in capsys.readouterr().err
    assert main(cli_arguments(tokenizer, image_dir, tmp_path / "codes")) == 2
    assert "already holds a finished code dataset" in capsys.readouterr().err


@pytest.mark.slow
def test_two_processes_through_accelerate(tmp_path, image_dir, model, reference, subprocess_env):
    """`accelerate launch` with 2 CPU processes writes the same dataset as one process."""
    tokenizer = tmp_path / "tokenizer"
    model.save_pretrained(tokenizer)
    # The torchrun launcher (accelerate's MULTI_CPU type needs mpirun); extract_codes then joins a gloo group.
    config_file = accelerate_config(tmp_path / "accelerate.json", num_processes=2)
    subprocess_env["OMP_NUM_THREADS"] = "1"
    launch = [PYTHON, "-m", "accelerate.commands.launch", "--config_file", str(config_file), "-m", "glotok_hf.cli"]
    result = subprocess.run(
        [*launch, *cli_arguments(tokenizer, image_dir, tmp_path / "codes")],
        env=subprocess_env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("wrote 14 rows") == 1  # printed by the main process only
    assert "with 2 processes" in result.stdout
    assert_same_codes(load_code_dataset(tmp_path / "codes"), reference)
