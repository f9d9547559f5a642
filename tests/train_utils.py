"""Helpers for the training-script tests: tiny images and configs, in-process runs, and `accelerate launch` runs."""

import importlib.util
import json
import os
import sys
from pathlib import Path
from unittest import mock

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAINING_DIR = REPO_ROOT / "training"


def load_script(path: Path):
    """A script of training/ or benchmarks/ (not a package) as a module, loaded from its file by path."""
    name = f"glotok_script_{Path(path).stem}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


# The training scripts' tiny configs and helpers have one home, training/fault_injection.py: the conftest tiny GloTok
# (8x8 tokens at 16x16), a 2-layer group-norm PatchGAN (batch-independent, so 1- and 2-process runs agree), a 2-layer
# Llama prior, tiny imagefolders, codes and accelerate configs (the torchrun path on CPU: this machine has no `mpirun`),
# and `accelerate launch` runs that raise with their output on failure.
_SCRIPT = load_script(TRAINING_DIR / "fault_injection.py")
TINY_MODEL, TINY_DISCRIMINATOR, TINY_PRIOR = _SCRIPT.TINY_TOKENIZER, _SCRIPT.TINY_DISCRIMINATOR, _SCRIPT.TINY_PRIOR
accelerate_config = _SCRIPT.accelerate_config
make_imagefolder = _SCRIPT.make_images  # (root, per_class, classes, size, seed): smooth random RGB, a folder per class
save_tiny_tokenizer, extract_tiny_codes = _SCRIPT.save_tiny_tokenizer, _SCRIPT.extract_tiny_codes
launch = _SCRIPT.run_to_end  # (config, argv, env, log, script)


def prior_assets(root: Path, per_class: int = 4) -> dict[str, Path]:
    """What the prior stage trains from: a tiny imagefolder, the tiny tokenizer saved, and its codes of the images."""
    images = make_imagefolder(root / "images", per_class=per_class, size=20)
    tokenizer = save_tiny_tokenizer(root / "tokenizer")
    return {"images": images, "tokenizer": tokenizer, "codes": extract_tiny_codes(tokenizer, images, root / "codes")}


def tiny_tokenizer_args(data_dir: Path, output_dir: Path, **overrides) -> list[str]:
    values = {
        "stage": "tokenizer", "train_data_dir": str(data_dir), "output_dir": str(output_dir),
        "model_config": json.dumps(TINY_MODEL), "discriminator_config": json.dumps(TINY_DISCRIMINATOR),
        "resolution": 16, "train_batch_size": 2, "max_train_steps": 4, "checkpointing_steps": 2,
        "validation_steps": 2, "num_validation_images": 2, "learning_rate": 1e-3, "disc_start": 2,
        "perceptual_weight": 0.0, "histogram_weight": 0.0, "report_to": "none", "usage_window": 4,
        "random_flip": True,
    }  # fmt: skip
    return to_argv({**values, **overrides})


BOOLEAN_OPTIONAL = {"center_crop", "random_flip", "disc_adaptive_weight"}  # --x / --no-x


def to_argv(values: dict) -> list[str]:
    argv = []
    for key, value in values.items():
        if value is True:
            argv.append(f"--{key}")
        elif value is False and key in BOOLEAN_OPTIONAL:
            argv.append(f"--no-{key}")
        elif value is False or value is None:
            continue
        else:
            argv += [f"--{key}", str(value)]
    return argv


def run_in_process(argv: list[str]):
    """Run `glotok_hf.training.main(argv)` (what train.py runs) in this process (one process, on CPU, one thread: tiny models gain nothing from more
    and suffer badly on a loaded machine) and reset accelerate's singletons afterwards."""
    import torch
    from accelerate.state import AcceleratorState, GradientState, PartialState

    from glotok_hf.training import main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:  # CPU also on a GPU machine: runs compare with the CPU launches
        with mock.patch.dict(os.environ, ACCELERATE_USE_CPU="true"):
            return main(argv)
    finally:
        torch.set_num_threads(threads)
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
        PartialState._reset_state()


def read_metrics(output_dir: Path) -> list[dict]:
    """The logged rows of the run in `output_dir` (`glotok_hf.training.tracking.read_metrics` of its log)."""
    from glotok_hf.training.tracking import METRICS_FILE, read_metrics

    return read_metrics(Path(output_dir) / "logs" / METRICS_FILE)


def tiny_prior_args(
    output_dir: Path, tokenizer_dir: Path | None, codes_dir: Path | None = None, **overrides
) -> list[str]:
    values = {
        "stage": "prior", "output_dir": str(output_dir), "codes_dir": str(codes_dir) if codes_dir else None,
        "tokenizer_name_or_path": str(tokenizer_dir) if tokenizer_dir else None, "model_config": json.dumps(TINY_PRIOR),
        "train_batch_size": 2, "max_train_steps": 4, "checkpointing_steps": 2, "validation_steps": 2,
        "num_validation_images": 2, "learning_rate": 1e-3, "report_to": "none", "class_dropout_prob": 0.25,
    }  # fmt: skip
    return to_argv({**values, **overrides})
