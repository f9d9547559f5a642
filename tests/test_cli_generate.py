"""`glotok generate` and `glotok reconstruct` end to end (in process, through `glotok_hf.cli.main`): files written,
their content, never overwriting, the default pipeline, remote-code pipelines, help texts and error messages."""

import subprocess

import numpy as np
import pytest
import torch
from conftest import PYTHON, dummy_images
from PIL import Image
from pipeline_utils import generators, single_thread, tiny_pipeline  # noqa: F401
from torchmetrics.functional.image import peak_signal_noise_ratio

from glotok_hf.cli import main
from glotok_hf.data import pil_to_tensor, tensor_to_pil
from glotok_hf.hub import save_remote_code_pipeline
from glotok_hf.loading import DEFAULT_PIPELINE_ENV

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


@pytest.fixture(scope="module")
def pipeline_dir(pipe, tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipeline")
    pipe.save_pretrained(folder)
    return folder


def glotok(*argv) -> int:
    return main([str(a) for a in argv])


def pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


# ------------------------------------------------------------------------------------------------- generate
def test_generate_writes_a_grid_and_one_png_per_image(pipe, pipeline_dir, tmp_path, capsys):
    rc = glotok("generate", "--pipeline", pipeline_dir, "--class-labels", 2, "nought", "--num-images-per-label", 2,
                "--seed", 5, "--output", tmp_path / "grid.png", "--output-dir", tmp_path / "samples")  # fmt: skip
    assert rc == 0
    out = capsys.readouterr().out
    assert "classes [2, 0] (seeds 5..8)" in out and "Wrote 4 images" in out
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == [
        "0_zero_0.png", "0_zero_1.png", "2_seven_0.png", "2_seven_1.png"
    ]  # fmt: skip
    # Image i uses seed 5 + i: the files are exactly what the pipeline gives for that label and seed.
    expected = {"2_seven_0": (2, 5), "2_seven_1": (2, 6), "0_zero_0": (0, 7), "0_zero_1": (0, 8)}
    for name, (label, seed) in expected.items():
        image = pipe([label], generator=generators(seed)).images[0]
        assert np.array_equal(pixels(tmp_path / "samples" / f"{name}.png"), np.asarray(image))
    grid = pixels(tmp_path / "grid.png")
    assert grid.shape == (2 * 8, 2 * 8, 3)  # one row per label, one column per image
    assert np.array_equal(grid[8:, 8:], pixels(tmp_path / "samples" / "0_zero_1.png"))


def test_batch_size_does_not_change_the_images(pipeline_dir, tmp_path):
    for batch_size in (1, 16):
        assert glotok("generate", "--pipeline", pipeline_dir, "--class-labels", 0, 1, 2, "--seed", 0,
                      "--batch-size", batch_size, "--output", tmp_path / f"grid{batch_size}.png") == 0  # fmt: skip
    assert np.array_equal(pixels(tmp_path / "grid1.png"), pixels(tmp_path / "grid16.png"))


def test_output_dir_never_overwrites(pipeline_dir, tmp_path):
    samples = tmp_path / "samples"
    for seed in (0, 1):
        assert glotok("generate", "--pipeline", pipeline_dir, "--class-labels", "one", "--num-images-per-label", 2,
                      "--seed", seed, "--output-dir", samples) == 0  # fmt: skip
        if seed == 0:
            first = {p.name: p.read_bytes() for p in samples.iterdir()}
    names = sorted(p.name for p in samples.iterdir())
    assert names == ["1_one_0.png", "1_one_1.png", "1_one_2.png", "1_one_3.png"]
    assert all((samples / name).read_bytes() == data for name, data in first.items())


def test_existing_grid_needs_overwrite(pipeline_dir, tmp_path, capsys):
    grid = tmp_path / "grid.png"
    grid.write_bytes(b"precious")
    assert glotok("generate", "--pipeline", pipeline_dir, "--class-labels", 0, "--output", grid) == 2
    assert "grid.png already exists; pass --overwrite" in capsys.readouterr().err
    assert grid.read_bytes() == b"precious"
    assert glotok("generate", "--pipeline", pipeline_dir, "--class-labels", 0, "--output", grid, "--overwrite") == 0
    assert pixels(grid).shape == (8, 8, 3)


def test_default_pipeline_comes_from_the_environment(pipeline_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(DEFAULT_PIPELINE_ENV, str(tmp_path / "missing"))
    assert glotok("generate", "--class-labels", 0, "--output", tmp_path / "a.png") == 2
    err = capsys.readouterr().err
    assert "No default pipeline at" in err and "Pass --pipeline" in err and DEFAULT_PIPELINE_ENV in err
    monkeypatch.setenv(DEFAULT_PIPELINE_ENV, str(pipeline_dir))
    assert glotok("generate", "--class-labels", "seven", "--seed", 3, "--output", tmp_path / "a.png") == 0
    assert glotok("generate", "--pipeline", pipeline_dir, "--class-labels", 2, "--seed", 3,
                  "--output", tmp_path / "b.png") == 0  # fmt: skip
    assert np.array_equal(pixels(tmp_path / "a.png"), pixels(tmp_path / "b.png"))


def test_remote_code_pipeline_needs_trust_remote_code(pipe, tmp_path, capsys):
    folder = tmp_path / "hub-layout"
    save_remote_code_pipeline(pipe, folder, sample_grid=None)
    args = ["generate", "--pipeline", folder, "--class-labels", 2, "--seed", 0]
    assert glotok(*args, "--output", tmp_path / "a.png") == 2
    assert "pass --trust-remote-code" in capsys.readouterr().err
    assert glotok(*args, "--output", tmp_path / "a.png", "--trust-remote-code") == 0
    assert np.array_equal(pixels(tmp_path / "a.png"), np.asarray(pipe([2], generator=generators(0)).images[0]))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--class-labels", "sevn", "--output", "g.png"], "Unknown class label 'sevn': did you mean 'seven'?"),
        (["--class-labels", "9", "--output", "g.png"], "Class id 9 is out of range"),
        (["--class-labels", "0"], "nothing to write: pass --output FILE"),
        (["--class-labels", "0", "--output", "g.png", "--device", "cuda:7"], "Device 'cuda:7'"),
        (["--class-labels", "0", "--output", "g.png", "--top-p", "2"], "top_p must be None or a float in (0, 1]"),
    ],
)
def test_generate_errors_are_messages_with_exit_code_2(pipeline_dir, tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    if "cuda:7" in argv and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    assert glotok("generate", "--pipeline", pipeline_dir, *argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("glotok generate: error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "g.png").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--num-images-per-label", "0"], "expected a positive integer, got 0"),
        (["--output", "grid"], "needs an image file extension"),
        (["--dtype", "float64"], "invalid choice: 'float64'"),
        (["--batch-size", "two"], "expected a positive integer, got 'two'"),
    ],
)
def test_bad_arguments_exit_2_with_usage(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        glotok("generate", "--class-labels", "0", *argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: glotok generate" in err and message in err


def test_missing_class_labels(capsys):
    with pytest.raises(SystemExit) as exit_info:
        glotok("generate", "--output", "g.png")
    assert exit_info.value.code == 2 and "--class-labels" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["generate", "reconstruct"])
def test_help_has_examples(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        glotok(command, "--help")
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"glotok {command} " in out and "--output" in out


def test_top_level_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit):
        glotok("--help")
    out = capsys.readouterr().out
    assert "generate" in out and "reconstruct" in out


TYPO = "/no/such/runs/shapes32_tk"


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["generate", "--help"],
        ["generate", "--bogus"],
        ["generate", "--pipeline", TYPO, "--class-labels", "0", "--output", "/no/such/g.png"],
        ["extract-codes", "--tokenizer", TYPO, "--train-data-dir", ".", "--output-dir", "/no/such/codes"],
        ["build-teacher", "--source", "codebook", "--codebook", TYPO, "--output", "/no/such/t.safetensors"],
        ["eval", "reconstruction", "--model", TYPO, "--train-data-dir", "."],
    ],
    ids=["help", "generate-help", "bogus-option", "generate", "extract-codes", "build-teacher", "eval"],
)
def test_help_argument_errors_and_mistyped_paths_import_no_torch(argv, subprocess_env):
    """`glotok --help`, argument errors and a mistyped local path answer at once (~0.1 s): torch, transformers,
    diffusers, datasets and torchmetrics are imported when a command runs, not to build the parser or check paths."""
    code = (
        f"import sys\nfrom glotok_hf.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'transformers', 'diffusers', 'datasets', 'torchmetrics') if m in sys.modules))"
    )
    proc = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, env=subprocess_env, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout + proc.stderr
    assert TYPO not in argv or f"No such file or folder for {argv[argv.index(TYPO) - 1]}: '{TYPO}'" in proc.stderr


@pytest.mark.parametrize("source", ["{tmp}/no-such-pipeline", "./no-such-pipeline", "{tmp}"])
def test_a_mistyped_pipeline_path_fails_at_once(source, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert glotok("generate", "--pipeline", source.format(tmp=tmp_path), "--class-labels", 0, "--output", "g.png") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "stacktrace" not in err and "Traceback" not in err
    assert "No such file or folder for --pipeline" in err or "has no model_index.json" in err


# ---------------------------------------------------------------------------------------------- reconstruct
@pytest.fixture
def image_files(tmp_path):
    """An RGB PNG at the tokenizer's size, a larger RGBA image, a grayscale one and a 16-bit one."""
    paths = []
    rgb = tensor_to_pil(dummy_images(1, size=8))[0]
    for name, image in [("rgb.png", rgb), ("rgba.png", Image.new("RGBA", (20, 12), (200, 30, 30, 128))),
                        ("gray.jpg", Image.new("L", (9, 9), 90)),
                        ("deep.png", Image.fromarray(np.full((8, 8), 40000, dtype=np.uint16)))]:  # fmt: skip
        image.save(tmp_path / name)
        paths.append(tmp_path / name)
    return paths


def test_reconstruct_writes_pairs_and_prints_psnr(pipe, pipeline_dir, image_files, tmp_path, capsys):
    output = tmp_path / "recon.png"
    assert glotok("reconstruct", *image_files, "--model", pipeline_dir, "--output", output) == 0
    out = capsys.readouterr().out
    grid = pixels(output)
    assert grid.shape == (4 * 8, 2 * 8, 3)  # one row per image: original | reconstruction
    assert np.array_equal(grid[:8, :8], pixels(image_files[0]))  # the RGB image is already 8x8
    with torch.no_grad():
        original = pil_to_tensor(Image.fromarray(pixels(image_files[0])))[None]
        expected = pipe.vqmodel(original).sample.clamp(-1, 1)
    assert np.array_equal(grid[:8, 8:], np.asarray(tensor_to_pil(expected)[0]))
    psnr = float(peak_signal_noise_ratio((expected + 1) / 2, (original + 1) / 2, data_range=1.0))
    assert f"rgb.png: PSNR {psnr:.2f} dB" in out
    assert out.count("PSNR") == 5 and "mean PSNR over 4 images" in out


def test_reconstruct_takes_a_tokenizer_folder_or_the_default(pipeline_dir, image_files, tmp_path, monkeypatch):
    a, b, c = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"
    assert glotok("reconstruct", image_files[0], "--model", pipeline_dir, "--output", a) == 0
    assert glotok("reconstruct", image_files[0], "--model", pipeline_dir / "vqmodel", "--output", b) == 0
    monkeypatch.setenv(DEFAULT_PIPELINE_ENV, str(pipeline_dir))
    assert glotok("reconstruct", image_files[0], "--output", c) == 0
    assert np.array_equal(pixels(a), pixels(b)) and np.array_equal(pixels(a), pixels(c))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing.png", "missing.png: no such image file"),
        (
            lambda d: (d / "bad.png").write_bytes(b"not an image") and d / "bad.png",
            "cannot read this file as an image",
        ),
    ],
)
def test_reconstruct_errors(pipeline_dir, tmp_path, capsys, make, message):
    path = make(tmp_path)
    assert glotok("reconstruct", path, "--model", pipeline_dir, "--output", tmp_path / "r.png") == 2
    err = capsys.readouterr().err
    assert err.startswith("glotok reconstruct: error: ") and message in err
    assert not (tmp_path / "r.png").exists()


def test_reconstruct_model_must_be_a_glotok_tokenizer(pipeline_dir, image_files, tmp_path, capsys):
    assert (
        glotok("reconstruct", image_files[0], "--model", pipeline_dir / "prior", "--output", tmp_path / "r.png") == 2
    )
    assert "is not a GloTok tokenizer folder" in capsys.readouterr().err


def test_bfloat16_weights(pipeline_dir, image_files, tmp_path, capsys):
    assert glotok("generate", "--pipeline", pipeline_dir, "--class-labels", 0, 1, "--dtype", "bfloat16",
                  "--output", tmp_path / "g.png") == 0  # fmt: skip
    assert pixels(tmp_path / "g.png").shape == (2 * 8, 8, 3)
    assert glotok("reconstruct", image_files[0], "--model", pipeline_dir, "--dtype", "bfloat16",
                  "--output", tmp_path / "r.png") == 0  # fmt: skip
    assert "rgb.png: PSNR" in capsys.readouterr().out


def test_an_unknown_hub_pipeline_is_one_clear_line(fake_hub, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert glotok("generate", "--pipeline", "tester/no-such-pipeline", "--class-labels", 0, "--output", "g.png") == 2
    err = capsys.readouterr().err
    line = [x for x in err.splitlines() if x.startswith("glotok generate: error: ")]
    assert len(line) == 1 and "tester/no-such-pipeline" in line[0], err
    assert "stacktrace" not in err and "Traceback" not in err


def test_reconstruct_warns_when_an_image_is_much_larger_than_the_tokenizer(pipeline_dir, tmp_path, capsys):
    photo = tmp_path / "photo.png"
    Image.new("RGB", (256, 192), (30, 120, 200)).save(photo)
    assert glotok("reconstruct", photo, "--model", pipeline_dir, "--output", tmp_path / "r.png") == 0
    err = capsys.readouterr().err
    assert "warning: " in err and "photo.png is 256x192: resized down to 8x8, the tokenizer's sample_size" in err
    assert "handwritten digits" not in err  # only said of the embedded default


def test_reconstruct_with_the_default_tokenizer_says_it_knows_only_digits(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(DEFAULT_PIPELINE_ENV, raising=False)
    photo = tmp_path / "photo.png"
    Image.new("RGB", (256, 256), (200, 60, 30)).save(photo)
    assert glotok("reconstruct", photo, "--output", tmp_path / "r.png") == 0
    err = capsys.readouterr().err
    assert "resized down to 24x24" in err and "knows only handwritten digits" in err and "once available" in err


# -------------------------------------------------------------------------------------------- extract-codes
def test_extract_codes_takes_its_resolution_from_the_tokenizer(tmp_path, capsys):
    from conftest import tiny_glotok_model
    from train_utils import make_imagefolder

    from glotok_hf.codes import load_code_dataset

    with pytest.raises(SystemExit):
        glotok("extract-codes", "--help")
    assert "(default: the tokenizer's sample_size)" in " ".join(capsys.readouterr().out.split())
    tiny_glotok_model(sample_size=32).save_pretrained(tmp_path / "tk32")
    images = make_imagefolder(tmp_path / "images", per_class=1, size=40)
    assert glotok("extract-codes", "--tokenizer", tmp_path / "tk32", "--train-data-dir", images, "--num-workers", 0,
                  "--no-progress", "--output-dir", tmp_path / "codes") == 0  # fmt: skip
    _, metadata = load_code_dataset(tmp_path / "codes")
    assert metadata["resolution"] == 32 and metadata["num_image_tokens"] == 2 * 16 * 16  # a 16x16 grid per codebook
