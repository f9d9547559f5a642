# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""Small helpers with one home each: the integer check, the "local folder or Hub repo id" decision and the atomic
file write. Inlined into the Hub remote-code files (`glotok_hf.hub.bundle_module`), so it imports only the standard
library.
"""

import numbers
import os
import re
from pathlib import Path

# A Hub repo id as glotok-hf takes it: `owner/name` of letters, digits, `-`, `_` and `.` (no leading/trailing `-`/`.`).
_REPO_ID = re.compile(r"^[A-Za-z0-9](?:[\w.-]*[A-Za-z0-9])?/[A-Za-z0-9](?:[\w.-]*[A-Za-z0-9])?$")


def is_int(value) -> bool:
    """`True` for Python and numpy integers, `False` for `bool` (which subclasses `int`) and everything else."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def resolve_source(source: str | os.PathLike, what: str = "model") -> Path | str:
    r"""
    The one "local folder or Hub repo id" decision of glotok-hf: an existing local path is returned as a `Path`; a
    string shaped like a Hub repo id (`owner/name`) whose first part is no existing local folder is returned as is,
    for the Hub; anything else (a path that looks local, or whose parent folder exists, and does not exist) raises a
    `FileNotFoundError` at once instead of a slow failing Hub request.

    Args:
        source (`str` or `os.PathLike`): what the user passed.
        what (`str`, *optional*): how to name it in the error (`"--tokenizer"`, `"teacher codebook"`, ...).
    """
    text = os.fspath(source)
    path = Path(text).expanduser()
    if path.exists():
        return path
    # not shaped like `owner/name` (an absolute path, `./x`, `~/x`, `a\\b`, `x.json` ...), or its parent folder exists
    repo_id = _REPO_ID.match(text) and ".." not in text and not text.endswith((".json", ".safetensors"))
    parent_exists = path.parent != Path(".") and path.parent.is_dir()
    if isinstance(source, os.PathLike) or not repo_id or parent_exists:
        hint = f" (the folder {str(path.parent)!r} exists; check the name)" if parent_exists else ""
        raise FileNotFoundError(f"No such file or folder for {what}: {text!r}{hint}. A Hub id looks like owner/name.")
    return text


def atomic_write(path: str | os.PathLike, write_fn, overwrite: bool = True) -> Path:
    """Write `path` by calling `write_fn(tmp)` on a temporary file beside it (same suffix) and renaming that into
    place, so an interrupted write never leaves a truncated file; missing parent folders are created. With
    `overwrite=False` an existing `path` raises `FileExistsError`. Returns `path` as a `Path`."""
    path = Path(path)
    if not overwrite and path.exists():
        raise FileExistsError(f"{str(path)!r} already exists; pass overwrite=True (--overwrite) to replace it.")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.partial{path.suffix}")
    try:
        write_fn(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


__all__ = ["atomic_write", "is_int", "resolve_source"]
