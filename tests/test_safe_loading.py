"""Safe loading: weights travel only as safetensors, every pickle is read with `weights_only=True`, remote code never
runs unless asked for, and a Hub token is never written to logs, trackers, cards, saved arguments or uploads.

What loads pickles, and why that is safe: accelerate 1.15 writes `optimizer*.bin`, `scheduler*.bin`,
`random_states_<rank>.pkl` (and `scaler.pt` under fp16) with `torch.save` and reads them back through
`accelerate.utils.load`, which passes `weights_only=True` (plus numpy's array reconstructors for the RNG states).
It reads a registered object's `custom_checkpoint_<i>.pkl` with `weights_only=False`, which is why the training state
is not registered with accelerate but saved as `training_state.pt` and read with `weights_only=True`
(`glotok_hf.training.checkpointing`). The tests below put a pickle that would run code into each of these files.
"""

import ast
import functools
import json
import logging
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT, tiny_glotok_model
from pipeline_utils import single_thread, tiny_pipeline  # noqa: F401
from train_utils import (
    extract_tiny_codes,
    make_imagefolder,
    run_in_process,
    save_tiny_tokenizer,
    tiny_prior_args,
    tiny_tokenizer_args,
)

from glotok_hf import GloTokModel
from glotok_hf.cli import main
from glotok_hf.hub import save_remote_code_pipeline
from glotok_hf.loading import DEFAULT_PIPELINE_ENV, load_pipeline, load_tokenizer

SOURCES = sorted((REPO_ROOT / "src").rglob("*.py")) + sorted((REPO_ROOT / "training").rglob("*.py"))
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".ckpt", ".pickle"}
# The pickles a checkpoint may hold, all read with weights_only=True (see the module docstring).
CHECKPOINT_PICKLES = ("optimizer", "scheduler", "random_states_", "scaler.pt", "training_state.pt")

pytestmark = pytest.mark.usefixtures("single_thread")


class RunsCode:
    """Unpickling this runs `open(marker, "w")`: the stand-in for a malicious payload."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


# ------------------------------------------------------------------------------------------------ source checks
@functools.cache
def syntax_tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def calls(name: str):
    """(file, line, ast.Call) for every call of `name` (e.g. `torch.load`) in src/ and training/."""
    module, _, function = name.rpartition(".")
    for path in SOURCES:
        for node in ast.walk(syntax_tree(path)):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr == function and ast.unparse(func.value) == module:
                yield path.relative_to(REPO_ROOT), node.lineno, node
            elif isinstance(func, ast.Name) and func.id == function and not module:
                yield path.relative_to(REPO_ROOT), node.lineno, node


def keyword(node: ast.Call, name: str):
    found = [k.value for k in node.keywords if k.arg == name]
    return found[0] if found else None


def test_every_torch_load_passes_weights_only_true_and_nothing_unpickles_directly():
    loads = list(calls("torch.load"))
    assert loads, "expected at least the LPIPS converter's torch.load"
    for path, line, node in loads:
        value = keyword(node, "weights_only")
        assert isinstance(value, ast.Constant) and value.value is True, f"{path}:{line} without weights_only"
    # (torch.jit.load, for TorchScript feature networks, has its own deserializer: it unpickles no Python objects.)
    for name in ("pickle.load", "pickle.loads", "dill.load", "joblib.load"):
        assert not list(calls(name)), name
    for path, line, node in calls("np.load"):
        value = keyword(node, "allow_pickle")
        assert value is None or (isinstance(value, ast.Constant) and value.value is False), f"{path}:{line}"


def test_trust_remote_code_is_never_set_to_true_in_code():
    for path in SOURCES:
        for node in ast.walk(syntax_tree(path)):
            if isinstance(node, ast.keyword) and node.arg == "trust_remote_code":
                assert not (isinstance(node.value, ast.Constant) and node.value.value is True), f"{path}:{node.lineno}"
            if isinstance(node, ast.Assign) and "trust_remote_code" in ast.unparse(node.targets[0]):
                assert "True" not in ast.unparse(node.value), f"{path}:{node.lineno}"


# --------------------------------------------------------------------------------------------- saved folders
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A finished tokenizer run and a finished prior run (EMA, checkpoints), and a saved pipeline of both layouts."""
    root = tmp_path_factory.mktemp("safe-loading")
    images = make_imagefolder(root / "images", per_class=2, size=20)
    run_in_process(tiny_tokenizer_args(images, root / "tokenizer-run", max_train_steps=2, checkpointing_steps=1,
                                       use_ema=True))  # fmt: skip
    tokenizer = save_tiny_tokenizer(root / "tokenizer")
    codes = extract_tiny_codes(tokenizer, images, root / "codes")
    run_in_process(tiny_prior_args(root / "prior-run", tokenizer, codes, max_train_steps=2, checkpointing_steps=1,
                                   use_ema=True))  # fmt: skip
    pipe = tiny_pipeline()
    pipe.save_pretrained(root / "pipeline")
    save_remote_code_pipeline(pipe, root / "pipeline-remote-code", sample_grid=None)
    return root


def test_weights_are_saved_only_as_safetensors(runs):
    from accelerate.utils import load as accelerate_load

    model_folders = 0
    for path in sorted(runs.rglob("*")):
        if path.name == "config.json" and "model_type" in json.loads(path.read_text()):
            assert (path.parent / "model.safetensors").is_file(), path.parent
            model_folders += 1
        if path.suffix in PICKLE_SUFFIXES:
            in_checkpoint = any(part.startswith("checkpoint-") for part in path.relative_to(runs).parts)
            assert in_checkpoint and path.name.startswith(CHECKPOINT_PICKLES), f"pickled file {path}"
            # Each loads as accelerate and the hooks load it: weights_only=True (+ numpy's reconstructors).
            accelerate_load(path) if path.name.startswith("random_states_") else torch.load(path, weights_only=True)
    # Final models, discriminators, checkpoints' models and EMAs, pipelines' components, the saved tokenizer.
    assert model_folders >= 15


@pytest.mark.parametrize("file", ["training_state.pt", "optimizer.bin", "scheduler_1.bin", "random_states_0.pkl"])
def test_a_tampered_checkpoint_cannot_run_code(runs, tmp_path, file):
    checkpoint = shutil.copytree(runs / "tokenizer-run" / "checkpoint-1", tmp_path / "run" / "checkpoint-1")
    marker = tmp_path / "code-ran"
    torch.save({"state": RunsCode(marker)}, checkpoint / file)
    images = runs / "images"
    with pytest.raises(ValueError, match=rf"{file}' cannot be loaded safely: it holds Python objects"):
        run_in_process(tiny_tokenizer_args(images, tmp_path / "run", max_train_steps=2, checkpointing_steps=1,
                                           use_ema=True, resume_from_checkpoint="latest"))  # fmt: skip
    assert not marker.exists()


def test_legacy_bin_weights_load_only_as_tensors(tmp_path):
    model = tiny_glotok_model()
    model.config.save_pretrained(tmp_path / "clean")
    torch.save(model.state_dict(), tmp_path / "clean" / "pytorch_model.bin")
    reloaded = load_tokenizer(tmp_path / "clean", device="cpu")  # the legacy layout still loads
    assert all(torch.equal(v, reloaded.state_dict()[k]) for k, v in model.state_dict().items())

    model.config.save_pretrained(tmp_path / "tampered")
    marker = tmp_path / "code-ran"
    torch.save({**model.state_dict(), "payload": RunsCode(marker)}, tmp_path / "tampered" / "pytorch_model.bin")
    with pytest.raises(pickle.UnpicklingError):  # transformers' own loading refuses it: torch's weights_only
        GloTokModel.from_pretrained(tmp_path / "tampered")
    with pytest.raises(OSError, match="Refusing to load the legacy .bin weights"):  # the CLI's loading says why
        load_tokenizer(tmp_path / "tampered", device="cpu")
    assert not marker.exists()


# ------------------------------------------------------------------------------------------------ remote code
def plant(folder: Path, marker: Path) -> None:
    """Make every module file of a remote-code pipeline folder create `marker` when it is imported."""
    for module in [folder / "pipeline_glotok.py", folder / "vqmodel" / "modeling_glotok.py"]:
        module.write_text(f"open({str(marker)!r}, 'w').close()\n" + module.read_text())


def test_remote_code_never_runs_without_the_flag(runs, tmp_path, monkeypatch, capsys):
    from transformers import AutoModel

    folder = shutil.copytree(runs / "pipeline-remote-code", tmp_path / "pipeline")
    marker = tmp_path / "code-ran"
    plant(folder, marker)
    with pytest.raises(ValueError, match="pass --trust-remote-code"):
        load_pipeline(folder, device="cpu")
    # transformers takes the installed GloTokModel for the folder's auto_map, and never its module file.
    assert type(AutoModel.from_pretrained(folder / "vqmodel")) is GloTokModel
    # A default pipeline named by $GLOTOK_DEFAULT_PIPELINE is not trusted either (only the checkout's own one is).
    monkeypatch.setenv(DEFAULT_PIPELINE_ENV, str(folder))
    assert main(["generate", "--class-labels", "0", "--output", str(tmp_path / "grid.png")]) == 2
    assert "pass --trust-remote-code" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "grid.png").exists()


def test_a_hub_pipeline_with_code_needs_the_flag(runs, fake_hub, tmp_path):
    folder = runs / "pipeline-remote-code"
    marker = tmp_path / "code-ran"
    files = {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    for name in ("pipeline_glotok.py", "vqmodel/modeling_glotok.py"):
        files[name] = f"open({str(marker)!r}, 'w').close()\n".encode() + files[name]
    fake_hub.upload("tester/glotok-with-code", files)
    with pytest.raises(ValueError, match="pass --trust-remote-code"):
        load_pipeline("tester/glotok-with-code", device="cpu")
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------------- the token
@pytest.mark.parametrize("source", ["HF_TOKEN", "--hub_token"])
def test_the_hub_token_is_never_written_or_logged(fake_hub, tmp_path, monkeypatch, caplog, capfd, source):
    token, repo = fake_hub.token, f"tester/run-{source.strip('-').lower()}"
    images = make_imagefolder(tmp_path / "images", per_class=2, size=20)
    argv = tiny_tokenizer_args(images, tmp_path / "run", max_train_steps=2, checkpointing_steps=1, push_to_hub=True,
                               hub_model_id=repo, report_to="tensorboard")  # fmt: skip
    if source == "--hub_token":
        monkeypatch.delenv("HF_TOKEN")
        argv += ["--hub_token", token]
    caplog.set_level(logging.DEBUG)
    run_in_process(argv)
    out, err = capfd.readouterr()
    assert token not in caplog.text and token not in out and token not in err
    written = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert any(p.name.startswith("events.out.tfevents") for p in written)  # the tracker's files are checked too
    assert [p for p in written if token.encode() in p.read_bytes()] == []
    assert fake_hub.token_leaks() == []  # uploaded files, request bodies, headers other than Authorization
    assert fake_hub.files(repo)["README.md"]


def test_pipeline_push_with_an_explicit_token_writes_it_nowhere(fake_hub, tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("HF_TOKEN")
    caplog.set_level(logging.DEBUG)
    tiny_pipeline().push_to_hub("tester/pipe", token=fake_hub.token)
    files = fake_hub.files("tester/pipe")
    assert "model_index.json" in files and "README.md" in files
    assert fake_hub.token not in caplog.text and fake_hub.token_leaks() == []
    assert not [name for name, data in files.items() if fake_hub.token.encode() in data]
    assert os.environ.get("HF_TOKEN") is None  # only the explicit token was there to leak
