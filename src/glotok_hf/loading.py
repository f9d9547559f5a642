# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""Loading pipelines and tokenizers for the command line from a local folder, a Hub repo id, or the pipeline embedded
in the source checkout, with clear errors for a broken folder: it checks what it can before loading, catches the
libraries' own exceptions by type (`SafetensorError`, `pickle.UnpicklingError`) and reads transformers' loading info.
"""

from __future__ import annotations  # torch is imported on use: the CLI's --help must not wait for it

import contextlib
import json
import os
import pickle
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors import SafetensorError, safe_open

from .utils import resolve_source

if TYPE_CHECKING:
    import torch

DEFAULT_PIPELINE_ENV = "GLOTOK_DEFAULT_PIPELINE"


def embedded_pipeline_path() -> Path:
    """`<checkout>/pipelines/glotok-digits` (next to `src/`): the pipeline that ships with the source checkout."""
    return Path(__file__).resolve().parents[2] / "pipelines" / "glotok-digits"


def default_pipeline_path() -> Path:
    """`$GLOTOK_DEFAULT_PIPELINE` if set, else [`embedded_pipeline_path`]; it must hold a pipeline."""
    path = Path(os.environ.get(DEFAULT_PIPELINE_ENV) or embedded_pipeline_path()).expanduser()
    if not (path / "model_index.json").is_file():
        raise FileNotFoundError(
            f"No default pipeline at {path} (it ships with the glotok-hf source checkout). Pass --pipeline with a "
            f"pipeline folder or Hub repo id, or set {DEFAULT_PIPELINE_ENV} to a pipeline folder."
        )
    return path


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`None` -> CUDA when available, else CPU; otherwise the named device, which must exist."""
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"Unknown device {device!r}; use e.g. 'cpu', 'cuda' or 'cuda:1'.") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"Device {device!r} was asked for, but CUDA is not available on this machine.")
    return resolved


@contextlib.contextmanager
def _weights_errors(source: Path | str):
    """Turn the libraries' errors for unreadable weights into one that names the file and the way out."""
    try:
        yield
    except SafetensorError as err:
        broken = []
        for path in sorted(Path(source).rglob("*.safetensors")) if isinstance(source, Path) else ():
            try:
                with safe_open(str(path), framework="pt"):
                    pass
            except SafetensorError:
                broken.append(str(path))
        files = ", ".join(broken) or f"a weights file of {source}"
        raise OSError(f"{files}: truncated or corrupted ({err}); save or download it again.") from err
    except pickle.UnpicklingError as err:
        raise OSError(
            f"Refusing to load the legacy .bin weights of {source}: they hold Python objects that "
            "torch.load(weights_only=True) does not unpickle. Convert a trusted copy to safetensors."
        ) from err


def load_pipeline(
    source: str | os.PathLike | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    trust_remote_code: bool = False,
):
    r"""
    Load a [`GloTokPipeline`] from a local folder or Hub repo id, or the embedded default when `source` is `None`.

    A folder in the remote-code layout (see `glotok_hf.hub`) runs its own module files, so it needs
    `trust_remote_code=True`, except the embedded default, which is part of this checkout (a folder named by
    `$GLOTOK_DEFAULT_PIPELINE` is not: it needs the flag like any other).
    """
    if source is None:
        source = default_pipeline_path()
        trust_remote_code = trust_remote_code or source.resolve() == embedded_pipeline_path()
    else:
        source = resolve_source(source, "--pipeline")
        if isinstance(source, Path) and not (source / "model_index.json").is_file():
            raise FileNotFoundError(f"{source} is not a pipeline folder: it has no model_index.json.")
    device = resolve_device(device)
    from .pipeline_glotok import GloTokPipeline

    if isinstance(GloTokPipeline.load_config(source).get("_class_name"), list) and not trust_remote_code:
        raise ValueError(
            f"{source} ships its own pipeline code (the Hub layout). Read it, then pass --trust-remote-code to run it."
        )
    with _weights_errors(source):
        pipe = GloTokPipeline.from_pretrained(source, dtype=dtype, trust_remote_code=trust_remote_code)
    if isinstance(source, Path):  # else a later save_pretrained writes this machine's absolute path into model_index
        pipe.register_to_config(_name_or_path=None)
    return pipe.to(device)


def load_tokenizer(
    source: str | os.PathLike | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    subfolder: str = "",
):
    """Load a [`GloTokModel`] (in eval mode) from a tokenizer checkpoint, a pipeline folder's `vqmodel/`, a Hub repo
    of either kind, or the embedded default pipeline's tokenizer when `source` is `None`; `subfolder` names the
    checkpoint's folder inside `source`."""
    from .modeling_glotok import GloTokModel

    device = resolve_device(device)
    kwargs = {"dtype": dtype, "ignore_mismatched_sizes": True, "output_loading_info": True}
    source = default_pipeline_path() if source is None else resolve_source(source, "--model")
    fields = {}  # a local folder's config.json
    if isinstance(source, Path):
        source, subfolder = source / subfolder, ""
        if (source / "model_index.json").is_file():
            source = source / "vqmodel"
        if not (source / "config.json").is_file():
            raise FileNotFoundError(f"{source} has no config.json: it is not a folder written by save_pretrained.")
        try:
            fields = json.loads((source / "config.json").read_text(encoding="utf-8"))
        except ValueError as err:
            raise OSError(f"{source / 'config.json'} is not a valid JSON file ({err}).") from err
        if (model_type := fields.get("model_type")) != "glotok":
            raise ValueError(
                f"{source} is not a GloTok tokenizer folder (its config.json has model_type {model_type!r})."
            )
    with _weights_errors(source):
        try:
            model, info = GloTokModel.from_pretrained(source, subfolder=subfolder, **kwargs)
        except OSError:  # a Hub pipeline repo: the tokenizer is its vqmodel component
            if isinstance(source, Path) or subfolder:
                raise
            model, info = GloTokModel.from_pretrained(source, subfolder="vqmodel", **kwargs)
    # a few missing weights are initialised, as usual; none at all, or the wrong shapes, mean another model's weights
    if info["mismatched_keys"] or len(info["missing_keys"]) >= len(model.state_dict()):
        problem = f"hold none of the {len(info['missing_keys'])} parameters of GloTokModel"
        if info["mismatched_keys"]:
            problem = "do not fit the model built from its config.json (tensor shapes differ)"
        # a field missing from a local config.json took its default: the usual reason why weights do not fit
        missing = [name for name in type(model.config).__annotations__ if fields and name not in fields]
        notes = f"; its config.json lacks {missing}, so their defaults were used" if missing else ""
        raise ValueError(
            f"The weights of {source} {problem}{notes}: the config and the weights come from different models, or "
            "config.json was edited."
        )
    return model.to(device).eval()


__all__ = [
    "DEFAULT_PIPELINE_ENV",
    "default_pipeline_path",
    "embedded_pipeline_path",
    "load_pipeline",
    "load_tokenizer",
    "resolve_device",
]
