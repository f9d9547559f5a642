# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""Finding and loading pipelines and tokenizers for the command line: a local folder, a Hub repo id, or the pipeline
embedded in the source checkout (`pipelines/glotok-digits`, or the folder named by `$GLOTOK_DEFAULT_PIPELINE`)."""

import json
import os
import re
from pathlib import Path

import torch

DEFAULT_PIPELINE_ENV = "GLOTOK_DEFAULT_PIPELINE"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def embedded_pipeline_path() -> Path:
    """`<checkout>/pipelines/glotok-digits` (next to `src/`): the pipeline that ships with the source checkout."""
    return Path(__file__).resolve().parents[2] / "pipelines" / "glotok-digits"


def default_pipeline_path() -> Path:
    """`$GLOTOK_DEFAULT_PIPELINE` if set, else [`embedded_pipeline_path`]."""
    if os.environ.get(DEFAULT_PIPELINE_ENV):
        return Path(os.environ[DEFAULT_PIPELINE_ENV]).expanduser()
    return embedded_pipeline_path()


def _default_pipeline() -> Path:
    path = default_pipeline_path()
    if not (path / "model_index.json").is_file():
        raise FileNotFoundError(
            f"No default pipeline at {path} (it ships with the glotok-hf source checkout). Pass --pipeline with a "
            f"pipeline folder or Hub repo id, or set {DEFAULT_PIPELINE_ENV} to a pipeline folder."
        )
    return path


def _check_source(source: str, what: str) -> Path | str:
    """A local folder (must exist) or a Hub repo id (`owner/name`)."""
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"{what} {source!r} is a file; expected a folder or a Hub repo id (owner/name).")
        return path
    if _REPO_ID.match(source) and not source.startswith((".", "/", "~")):
        return source
    raise FileNotFoundError(f"{what} {source!r} is neither an existing folder nor a Hub repo id (owner/name).")


def resolve_device(device: str | None) -> torch.device:
    """`None` -> CUDA when available, else CPU; otherwise the named device, which must exist."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"Unknown device {device!r}; use e.g. 'cpu', 'cuda' or 'cuda:1'.") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"Device {device!r} was asked for, but CUDA is not available on this machine.")
    return resolved


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
    from .pipeline_glotok import GloTokPipeline

    device = device if isinstance(device, torch.device) else resolve_device(device)
    if source is None:
        source = _default_pipeline()
        trust_remote_code = trust_remote_code or source.resolve() == embedded_pipeline_path()
    else:
        source = _check_source(str(source), "--pipeline")
        if isinstance(source, Path) and not (source / "model_index.json").is_file():
            raise FileNotFoundError(f"{source} is not a pipeline folder: it has no model_index.json.")
    try:
        pipe = GloTokPipeline.from_pretrained(source, dtype=dtype, trust_remote_code=trust_remote_code)
    except ValueError as err:
        if "trust_remote_code" in str(err) and not trust_remote_code:
            raise ValueError(
                f"{source} ships its own pipeline code (the Hub layout). Read it, then pass --trust-remote-code to "
                "run it."
            ) from err
        raise
    except Exception as err:
        if type(err).__name__ == "SafetensorError":  # the prior's weights (the tokenizer reports its own)
            raise OSError(f"A weights file of the pipeline {source} is truncated or corrupted ({err}).") from err
        raise
    return pipe.to(device)


def load_tokenizer(
    source: str | os.PathLike | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
):
    """Load a [`GloTokModel`] (in eval mode) from a tokenizer checkpoint, a pipeline folder's `vqmodel/`, a Hub repo
    of either kind, or the embedded default pipeline's tokenizer when `source` is `None`."""
    from .modeling_glotok import GloTokModel

    device = device if isinstance(device, torch.device) else resolve_device(device)
    kwargs = {"dtype": dtype} if dtype is not None else {}
    if source is None:
        source = _default_pipeline()
    else:
        source = _check_source(str(source), "--model")
    if isinstance(source, Path):
        if (source / "model_index.json").is_file():
            source = source / "vqmodel"
        config = source / "config.json"
        if not config.is_file() or json.loads(config.read_text(encoding="utf-8")).get("model_type") != "glotok":
            raise ValueError(f"{source} is not a GloTok tokenizer folder (a config.json with model_type 'glotok').")
        model = GloTokModel.from_pretrained(source, **kwargs)
    else:
        try:
            model = GloTokModel.from_pretrained(source, **kwargs)
        except OSError:  # a pipeline repo: the tokenizer is its vqmodel component
            model = GloTokModel.from_pretrained(source, subfolder="vqmodel", **kwargs)
    return model.to(device).eval()


__all__ = [
    "DEFAULT_PIPELINE_ENV",
    "DTYPES",
    "default_pipeline_path",
    "embedded_pipeline_path",
    "load_pipeline",
    "load_tokenizer",
    "resolve_device",
]
