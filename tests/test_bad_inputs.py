"""The bad-input matrix: every way a user can hand glotok-hf something wrong -- the model, the pipeline, the `glotok`
command line, training data, teacher files and checkpoints -- must end in a clear error that names the problem
(`ValueError`, `TypeError`, `FileNotFoundError` or `OSError`, or argparse's usage error), never in a traceback from
deep inside torch or in a silently wrong result, and must leave everything that already existed untouched.

One row per case: the expected exception type and a fragment of its message. Each case calls `guard(path)` (which
returns `path`) on what must survive it, a file or a whole folder; the test checks those files byte for byte
afterwards. `glotok`
cases run `glotok_hf.cli.main` in-process twice: as a user runs it (exit code 2, one line on stderr, no traceback),
then with `GLOTOK_DEBUG=1`, which re-raises the exception the row names. The one bad input that is not an error,
unreadable images among readable ones (skipped and counted), is tested in `test_train_tokenizer.py`.
"""

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import dummy_images, tiny_glotok_config, tiny_glotok_model
from pipeline_utils import single_thread, tiny_pipeline, tiny_prior  # noqa: F401
from safetensors import safe_open
from safetensors.torch import save_file
from train_utils import (
    TINY_MODEL,
    extract_tiny_codes,
    make_imagefolder,
    run_in_process,
    save_tiny_tokenizer,
    tiny_prior_args,
    tiny_tokenizer_args,
)

from glotok_hf.cli import main
from glotok_hf.loading import load_pipeline, load_tokenizer
from glotok_hf.pipeline_glotok import GloTokPipeline
from glotok_hf.teacher import uniform_teacher

pytestmark = [
    pytest.mark.usefixtures("single_thread"),
    pytest.mark.filterwarnings("ignore:Skipping unreadable image"),  # data/only-corrupt-images, before its error
]


# ---------------------------------------------------------------------------------------------------------- assets
@dataclass
class Assets:
    model: Path  # a saved tiny GloTokModel
    pipe: GloTokPipeline
    pipeline: Path  # that pipeline, saved
    images: Path  # an imagefolder, 2 classes x 4 images
    run: Path  # a finished tokenizer run with checkpoint-2
    prior_run: Path  # a prior run with checkpoint-2
    tokenizer: Path
    codes: Path


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Assets:
    root = tmp_path_factory.mktemp("bad-inputs")
    tiny_glotok_model().save_pretrained(root / "model")
    pipe = tiny_pipeline()
    pipe.save_pretrained(root / "pipeline")
    images = make_imagefolder(root / "images", per_class=4, size=20)
    run_in_process(tiny_tokenizer_args(images, root / "run", max_train_steps=2, checkpointing_steps=2))
    tokenizer = save_tiny_tokenizer(root / "tokenizer")
    codes = extract_tiny_codes(tokenizer, images, root / "codes")
    run_in_process(tiny_prior_args(root / "prior-run", tokenizer, codes, max_train_steps=2, checkpointing_steps=2))
    return Assets(root / "model", pipe, root / "pipeline", images, root / "run", root / "prior-run", tokenizer, codes)


# --------------------------------------------------------------------------------------------------------- helpers
def copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def edit_config(folder: Path, **changes) -> Path:
    config = json.loads((folder / "config.json").read_text())
    for key, value in changes.items():
        if value is DROP:
            config.pop(key)
        else:
            config[key] = value
    (folder / "config.json").write_text(json.dumps(config))
    return folder


DROP = object()


def truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def damaged(folder: Path, file: str, damage: Callable[[Path], Path] = truncate) -> Path:
    damage(folder / file)
    return folder


def scramble_header(path: Path) -> Path:
    data = bytearray(path.read_bytes())
    data[8:40] = b"\x00" * 32  # inside the JSON header
    path.write_bytes(bytes(data))
    return path


def teacher_file(path: Path, num_bins: int = 40, alpha: float | None = None, nan: bool = False) -> Path:
    uniform_teacher(num_bins=num_bins, alpha=alpha).save(path)
    if nan:
        with safe_open(str(path), framework="pt") as f:
            metadata, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
        tensors["histogram"][3] = float("nan")
        save_file(tensors, str(path), metadata=metadata)
    return path


def train(a: Assets, out: Path, **overrides):
    return run_in_process(tiny_tokenizer_args(a.images, out, max_train_steps=4, **overrides))


def resume_copy(a: Assets, tmp: Path, guard, damage: Callable[[Path], object] = lambda c: None, **overrides):
    """Resume a new run from a copy of the finished run's checkpoint-2, damaged by `damage`."""
    checkpoint = copy(a.run / "checkpoint-2", tmp / "run" / "checkpoint-2")
    damage(checkpoint)
    guard(checkpoint)
    train(a, tmp / "run", resume_from_checkpoint=str(checkpoint), **overrides)


def cli_output(tmp: Path, guard, name: str = "out.png") -> Path:
    """An existing output file the command must not touch."""
    path = tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"precious")
    return guard(path)


# ---------------------------------------------------------------------------------------------------------- cases
@dataclass
class Case:
    id: str
    error: type[BaseException]
    match: str
    run: Callable  # (assets, tmp, guard) -> None, raising; for `glotok` cases -> the argv
    cli: bool = False


def model_case(id, error, match, damage):
    """A damaged copy of a saved model, loaded through `glotok_hf.loading` (what the CLI uses): transformers'
    `from_pretrained` keeps its own behaviour; the loading layer names the problem."""

    def run(a, tmp, guard):
        folder = copy(a.model, tmp / "model")
        damage(folder)
        guard(folder)
        load_tokenizer(folder, device="cpu")

    return Case(id, error, match, run)


def call(id, error, match, fn):
    return Case(id, error, match, lambda a, tmp, guard: fn(a, tmp, guard))


def cli(id, error, match, argv):
    return Case(id, error, match, argv, cli=True)


X = dummy_images(1)
CASES = [
    # ---- the model
    call("model/nan-pixels", ValueError, "NaN or inf", lambda a, t, g: tiny_glotok_model().encode(X * float("nan"), validate=True)),
    call("model/0-255-pixels", ValueError, r"must be images in \[-1, 1\], got values in \[",
         lambda a, t, g: tiny_glotok_model().encode((X + 1) * 127.5, validate=True)),
    call("model/uint8-pixels", ValueError, "floating-point tensor",
         lambda a, t, g: tiny_glotok_model().encode((X > 0).to(torch.uint8))),
    call("model/wrong-channels", ValueError, "must have 3 channels",
         lambda a, t, g: tiny_glotok_model().encode(X[:, :1])),
    call("model/indices-out-of-range", ValueError, r"visual_indices must lie in \[0, 16\)",
         lambda a, t, g: tiny_glotok_model().decode(semantic_indices=torch.zeros(1, 8, 8, dtype=torch.long),
                                                    visual_indices=torch.full((1, 8, 8), 16), validate=True)),
    model_case("model/config-missing-field", ValueError, r"config.json lacks \['codebook_dim'\]",
               lambda f: edit_config(f, codebook_dim=DROP)),
    model_case("model/config-mistyped-field", TypeError, "codebook_dim must be an int, got str",
               lambda f: edit_config(f, codebook_dim="4")),
    model_case("model/config-not-json", OSError, "not a valid JSON file",
               lambda f: (f / "config.json").write_text("{codebook_dim: 4")),
    model_case("model/weights-truncated", OSError, r"model/model.safetensors: truncated or corrupted",
               lambda f: truncate(f / "model.safetensors")),
    model_case("model/weights-corrupted", OSError, "truncated or corrupted",
               lambda f: scramble_header(f / "model.safetensors")),
    model_case("model/no-weights", OSError, "no file named model.safetensors",
               lambda f: (f / "model.safetensors").unlink()),
    model_case("model/no-config", FileNotFoundError, "has no config.json", lambda f: (f / "config.json").unlink()),
    call("model/another-models-folder", ValueError, "is not a GloTok tokenizer folder .*model_type 'llama'",
         lambda a, t, g: load_tokenizer(g(a.pipeline / "prior"), device="cpu")),
    model_case("model/no-weights-of-this-model", ValueError, "hold none of the",
               lambda f: save_file({"other.weight": torch.zeros(1)}, str(f / "model.safetensors"))),
    # ---- the pipeline
    call("pipeline/tokenizer-and-prior-disagree", ValueError, "The prior does not fit the tokenizer",
         lambda a, t, g: GloTokPipeline(a.pipe.vqmodel, tiny_prior(tiny_glotok_config(visual_codebook_size=8), 3))),
    call("pipeline/id2label-length", ValueError, "but 2 label names were given",
         lambda a, t, g: GloTokPipeline(a.pipe.vqmodel, a.pipe.prior, id2label={0: "a", 1: "b"})),
    call("pipeline/unknown-label", ValueError, "Unknown class label 'sevn': did you mean 'seven'",
         lambda a, t, g: a.pipe("sevn")),
    call("pipeline/id-out-of-range", ValueError, "Class id 3 is out of range", lambda a, t, g: a.pipe(3)),
    call("pipeline/negative-num-images", ValueError, "num_images_per_label must be a positive int, got -1",
         lambda a, t, g: a.pipe(0, num_images_per_label=-1)),
    call("pipeline/zero-num-images", ValueError, "positive int, got 0",
         lambda a, t, g: a.pipe(0, num_images_per_label=0)),
    call("pipeline/huge-num-images", ValueError, r"Sampling 1000000000000 images at once needs .* GiB available",
         lambda a, t, g: a.pipe(0, num_images_per_label=10**12)),
    call("pipeline/generator-count", ValueError, "Got 1 generators for 2 images",
         lambda a, t, g: a.pipe([0, 1], generator=[torch.Generator()])),
    call("pipeline/output-type", ValueError, "output_type must be one of",
         lambda a, t, g: a.pipe(0, output_type="jpg")),
    call("pipeline/float-label", TypeError, "class_labels must be an int, a label name", lambda a, t, g: a.pipe(1.5)),
    call("pipeline/truncated-prior-weights", OSError, r"prior/model.safetensors: truncated or corrupted",
         lambda a, t, g: load_pipeline(g(damaged(copy(a.pipeline, t / "p"), "prior/model.safetensors")),
                                       device="cpu")),
    call("pipeline/truncated-vqmodel-weights", OSError, r"vqmodel/model.safetensors: truncated or corrupted",
         lambda a, t, g: load_pipeline(g(damaged(copy(a.pipeline, t / "p"), "vqmodel/model.safetensors")),
                                       device="cpu")),
    call("pipeline/corrupted-vqmodel-header", OSError, r"vqmodel/model.safetensors: truncated or corrupted",
         lambda a, t, g: load_pipeline(g(damaged(copy(a.pipeline, t / "p"), "vqmodel/model.safetensors",
                                                 scramble_header)), device="cpu")),
    cli("glotok/generate-truncated-prior-weights", OSError, r"prior/model.safetensors: truncated or corrupted",
        lambda a, t, g: ["generate", "--pipeline", g(damaged(copy(a.pipeline, t / "p"), "prior/model.safetensors")),
                         "--class-labels", 0, "--output", t / "g.png"]),
    # ---- the command line
    cli("glotok/generate-missing-pipeline", FileNotFoundError, "No such file or folder for --pipeline",
        lambda a, t, g: ["generate", "--pipeline", t / "nope", "--class-labels", 0, "--output", t / "g.png"]),
    cli("glotok/generate-existing-output", FileExistsError, "already exists; pass --overwrite",
        lambda a, t, g: ["generate", "--pipeline", a.pipeline, "--class-labels", 0, "--output", cli_output(t, g)]),
    cli("glotok/generate-unknown-label", ValueError, "did you mean 'seven'",
        lambda a, t, g: ["generate", "--pipeline", a.pipeline, "--class-labels", "sevn", "--output", t / "g.png"]),
    cli("glotok/generate-negative-count", SystemExit, "expected a positive integer, got -1",
        lambda a, t, g: ["generate", "--class-labels", 0, "--num-images-per-label", -1, "--output", t / "g.png"]),
    cli("glotok/generate-huge-count", ValueError, "GiB of memory until they are written",
        lambda a, t, g: ["generate", "--pipeline", a.pipeline, "--class-labels", 0, "--num-images-per-label",
                         10**12, "--output", t / "g.png"]),
    cli("glotok/reconstruct-missing-image", FileNotFoundError, "no such image file",
        lambda a, t, g: ["reconstruct", t / "nope.png", "--model", a.model, "--output", t / "r.png"]),
    cli("glotok/reconstruct-not-an-image", ValueError, "cannot read this file as an image",
        lambda a, t, g: ["reconstruct", cli_output(t, g, "notes.png"), "--model", a.model, "--output", t / "r.png"]),
    cli("glotok/reconstruct-existing-output", FileExistsError, "already exists; pass --overwrite",
        lambda a, t, g: ["reconstruct", a.images / "cat" / "0_000.png", "--model", a.model, "--output",
                         cli_output(t, g)]),
    cli("glotok/reconstruct-mistyped-model", FileNotFoundError, "the folder .* exists; check the name",
        lambda a, t, g: ["reconstruct", a.images / "cat" / "0_000.png", "--model", a.model.parent / "modle",
                         "--output", t / "r.png"]),
    cli("glotok/reconstruct-another-models-folder", ValueError, "is not a GloTok tokenizer folder",
        lambda a, t, g: ["reconstruct", a.images / "cat" / "0_000.png", "--model", a.pipeline / "prior", "--output",
                         t / "r.png"]),
    cli("glotok/extract-codes-missing-tokenizer", FileNotFoundError, "No such file or folder for --tokenizer",
        lambda a, t, g: ["extract-codes", "--tokenizer", t / "nope", "--train-data-dir", a.images, "--output-dir",
                         t / "codes"]),
    cli("glotok/extract-codes-occupied-output-dir", FileExistsError, "neither empty nor an unfinished code extraction",
        lambda a, t, g: ["extract-codes", "--tokenizer", a.model, "--train-data-dir", a.images, "--output-dir",
                         cli_output(t, g, "codes/notes.txt").parent, "--num-workers", 0]),
    cli("glotok/build-teacher-existing-output", FileExistsError, "already exists; pass --overwrite",
        lambda a, t, g: ["build-teacher", "--source", "uniform", "--output", cli_output(t, g, "t.safetensors")]),
    cli("glotok/build-teacher-missing-codebook", FileNotFoundError, "No such file or folder for --codebook",
        lambda a, t, g: ["build-teacher", "--source", "codebook", "--codebook", t / "nope", "--output",
                         t / "t.safetensors"]),
    cli("glotok/eval-missing-model", FileNotFoundError, "No such file or folder for --model",
        lambda a, t, g: ["eval", "reconstruction", "--model", t / "nope", "--train-data-dir", a.images]),
    cli("glotok/eval-missing-pipeline", FileNotFoundError, "No such file or folder for --pipeline",
        lambda a, t, g: ["eval", "generation", "--pipeline", t / "runs" / "nope", "--num-classes", 2]),
    cli("glotok/eval-hub-id", FileNotFoundError, "is not a local folder",
        lambda a, t, g: ["eval", "reconstruction", "--model", "user/glotok", "--train-data-dir", a.images]),
    cli("glotok/eval-existing-output", FileExistsError, "exists; pass --overwrite",
        lambda a, t, g: ["eval", "reconstruction", "--model", a.model, "--train-data-dir", a.images, "--output",
                         cli_output(t, g, "report.json")]),
    # ---- training data
    call("data/no-images", ValueError, "Found no images under train_data_dir",
         lambda a, t, g: run_in_process(tiny_tokenizer_args((t / "empty" / "a").mkdir(parents=True) or t / "empty",
                                                            t / "out"))),
    call("data/only-non-image-files", ValueError, "Found no images under train_data_dir",
         lambda a, t, g: run_in_process(tiny_tokenizer_args(text_files(t / "docs"), t / "out"))),
    call("data/only-corrupt-images", ValueError, "No image in the dataset could be decoded",
         lambda a, t, g: run_in_process(tiny_tokenizer_args(corrupt_images(t / "bad"), t / "out"))),
    call("data/missing-label-column", ValueError, "label_column 'klass' is not a column of the dataset",
         lambda a, t, g: run_in_process(tiny_prior_args(t / "out", a.tokenizer, None, train_data_dir=str(a.images),
                                                        label_column="klass", resolution=16))),
    call("data/fewer-images-than-a-batch", ValueError, "fewer than one global batch",
         lambda a, t, g: train(a, t / "out", train_batch_size=64)),
    call("data/negative-max-train-samples", ValueError, "--max_train_samples must be a positive integer",
         lambda a, t, g: train(a, t / "out", max_train_samples=-3)),
    # ---- teacher files
    call("teacher/wrong-bin-count", ValueError, "has 20 bins but the training configuration uses num_bins=40",
         lambda a, t, g: train(a, t / "out", histogram_weight=1.0,
                               teacher_histogram=g(teacher_file(t / "t.safetensors", num_bins=20)))),
    call("teacher/wrong-alpha", ValueError, "was built with alpha=50 but the training configuration uses alpha=190",
         lambda a, t, g: train(a, t / "out", histogram_weight=1.0,
                               teacher_histogram=teacher_file(t / "t.safetensors", alpha=50.0))),
    call("teacher/nan", ValueError, "contains NaN or inf values",
         lambda a, t, g: train(a, t / "out", histogram_weight=1.0,
                               teacher_histogram=teacher_file(t / "t.safetensors", nan=True))),
    call("teacher/truncated", ValueError, "is not a safetensors file",
         lambda a, t, g: train(a, t / "out", histogram_weight=1.0,
                               teacher_histogram=truncate(teacher_file(t / "t.safetensors")))),
    call("teacher/not-a-teacher-file", ValueError, "is not a GloTok teacher histogram file",
         lambda a, t, g: train(a, t / "out", histogram_weight=1.0, teacher_histogram=a.model / "model.safetensors")),
    # ---- checkpoints
    call("checkpoint/missing-path", FileNotFoundError, "is not a checkpoint folder",
         lambda a, t, g: train(a, t / "run", resume_from_checkpoint=str(t / "run" / "checkpoint-99"))),
    call("checkpoint/partial-tmp-folder", ValueError, "is the leftover of an interrupted save",
         lambda a, t, g: train(a, t / "run", resume_from_checkpoint=str(
             g(copy(a.run / "checkpoint-2", t / "run" / ".tmp-checkpoint-4"))))),
    call("checkpoint/other-stage", ValueError, "was written by the prior stage; this run trains the tokenizer",
         lambda a, t, g: train(a, t / "run", resume_from_checkpoint=str(a.prior_run / "checkpoint-2"))),
    call("checkpoint/other-model-config", ValueError,
         r"does not fit this run's GloTokModel .*'visual_codebook_size': \(16, 8\)",
         lambda a, t, g: resume_copy(a, t, g, model_config=json.dumps({**TINY_MODEL, "visual_codebook_size": 8}))),
    call("checkpoint/truncated-optimizer", ValueError, "optimizer.bin' is truncated or corrupted",
         lambda a, t, g: resume_copy(a, t, g, lambda c: truncate(c / "optimizer.bin"))),
    call("checkpoint/truncated-training-state", ValueError, "training_state.pt' is truncated or corrupted",
         lambda a, t, g: resume_copy(a, t, g, lambda c: truncate(c / "training_state.pt"))),
    call("checkpoint/corrupted-model-weights", ValueError, "model.safetensors' is truncated or corrupted",
         lambda a, t, g: resume_copy(a, t, g, lambda c: scramble_header(c / "tokenizer" / "model.safetensors"))),
    call("checkpoint/missing-file", FileNotFoundError, "is incomplete: .*scheduler.bin is missing",
         lambda a, t, g: resume_copy(a, t, g, lambda c: (c / "scheduler.bin").unlink())),
    call("checkpoint/finished-run-without-overwrite", FileExistsError, "already holds a finished run's final model",
         lambda a, t, g: train(a, g(copy(a.run, t / "run")))),
    call("checkpoint/earlier-checkpoints-without-resume", FileExistsError, "holds checkpoints of an earlier run",
         lambda a, t, g: train(a, g(copy(a.run / "checkpoint-2", t / "run" / "checkpoint-2")).parent)),
]  # fmt: skip


def text_files(root: Path) -> Path:
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        (root / name / "notes.txt").write_text("not an image")
    return root


def corrupt_images(root: Path) -> Path:
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(2):
            (root / name / f"{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return root


# ------------------------------------------------------------------------------------------------------------ test
def file_hashes(path: Path) -> dict[str, str]:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(case, assets, tmp_path, capsys, monkeypatch):
    guarded: dict[str, str] = {}

    def guard(path):
        guarded.update(file_hashes(Path(path)))
        return path

    if case.cli:
        argv = [str(arg) for arg in case.run(assets, tmp_path, guard)]
        if case.error is SystemExit:  # rejected by argparse: usage and the error, exit code 2
            with pytest.raises(SystemExit) as exit_info:
                main(argv)
            err = capsys.readouterr().err
            assert exit_info.value.code == 2 and f"glotok {argv[0]}: error: " in err and case.match in err
        else:
            assert main(argv) == 2
            err = capsys.readouterr().err
            assert err.startswith(f"glotok {argv[0]}: error: ") and err.count("\n") == 1, err
            assert "Traceback" not in err
            monkeypatch.setenv("GLOTOK_DEBUG", "1")  # re-raises: the row's type and message
            with pytest.raises(case.error, match=case.match):
                main(argv)
    else:
        with pytest.raises(case.error, match=case.match):
            case.run(assets, tmp_path, guard)
    for path, digest in guarded.items():
        assert Path(path).is_file() and hashlib.sha256(Path(path).read_bytes()).hexdigest() == digest, path


def test_the_matrix_is_large_and_covers_every_area():
    areas = {case.id.split("/")[0] for case in CASES}
    assert areas == {"model", "pipeline", "glotok", "data", "teacher", "checkpoint"}
    assert len(CASES) >= 25 and len({case.id for case in CASES}) == len(CASES)
    assert {case.error for case in CASES} <= {ValueError, TypeError, FileNotFoundError, FileExistsError, OSError,
                                              SystemExit}  # fmt: skip
