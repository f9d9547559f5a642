# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""Code extraction: a frozen GloTok tokenizer's codes over an image dataset, as a `datasets.Dataset` on disk.

The output folder is a regular `Dataset.save_to_disk` folder (so `datasets.load_from_disk` opens it) plus
`glotok_codes.json`, the metadata the prior's training stage reads (tokenizer config, layout sizes, resolution, flip,
counts, label names). Rows have:

- `index` (`int64`): the source row of the image,
- `label` (`int64`, a `ClassLabel` when the dataset has class names): the class label,
- `flipped` (`bool`): whether the codes are those of the horizontally flipped image,
- `codes` (`list[int32]` of fixed length): image-token ids in the prior's layout (see `TokenLayout`), class token
  excluded: `[v_0, s_0, v_1, s_1, ...]` over the grid in raster order.

Extraction is sharded by source rows. Each shard is written to a temporary folder and renamed into place when
complete, so an interrupted run resumes by skipping complete shards (a half-written shard is removed and redone).
Under `accelerate launch` every process takes every `num_processes`-th shard and the main process assembles the
result, which is identical to a single-process run.
"""

import hashlib
import json
import math
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from accelerate import PartialState
from tqdm.auto import tqdm

from .data import DecodedImages, ImageTransform, class_names, collate_readable, warn_unreadable
from .modeling_glotok import GloTokModel
from .sampling import TokenLayout
from .utils import atomic_write, is_int

METADATA_NAME = "glotok_codes.json"
WORK_DIR_NAME = ".glotok_shards"
FORMAT_VERSION = 1


def model_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 of a model's state dict (names, shapes and bytes; floats as float32, so bf16 weights loaded in fp32 keep
    their fingerprint): identifies the tokenizer codes were extracted with."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        tensor = tensor.float() if tensor.is_floating_point() else tensor
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def count_classes(label_names: Sequence[str] | None, labels) -> int:
    """The number of classes: that of `label_names` when given, else the largest of the integer `labels` + 1 (1 when
    there are none)."""
    return len(label_names) if label_names else int(max(labels, default=0)) + 1


def _write_json_atomic(path: Path, payload: dict) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n"))


def _shard_name(k: int) -> str:
    return f"shard-{k:05d}"


@torch.no_grad()
def _encode_shard(model: GloTokModel, layout: TokenLayout, loader, *, flip: bool, device: torch.device,
                  autocast_dtype: torch.dtype | None, num_classes: int | None, label_column: str | None,
                  progress: tqdm) -> dict[str, list]:  # fmt: skip
    """The columns of one shard: each readable image's row, then its flipped copy's."""
    columns = {"index": [], "label": [], "flipped": [], "codes": []}
    for batch in loader:
        if batch["skipped"]:
            warn_unreadable(batch["skipped"])
        progress.update(len(batch["index"]) + len(batch["skipped"]))
        if batch["pixel_values"] is None:
            continue
        if label_column is None:
            batch["label"] = [0] * len(batch["index"])  # a single class
        for index, label in zip(batch["index"], batch["label"]):
            if not is_int(label) or label < 0:
                raise ValueError(f"Row {index}: {label_column!r} must be a class index >= 0, got {label!r}.")
            if num_classes is not None and label >= num_classes:
                raise ValueError(f"Row {index}: label {label} is out of range for {num_classes} label names.")
        copies = 2 if flip else 1
        pixels = batch["pixel_values"].to(device)
        if flip:  # row order: each image, then its flipped copy
            pixels = torch.stack([pixels, pixels.flip(-1)], dim=1).flatten(0, 1)
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            encoded = model.encode(pixels)
        columns["codes"].extend(
            layout.to_tokens(encoded.visual_indices, encoded.semantic_indices).to("cpu", torch.int32).numpy()
        )
        columns["index"].extend(np.repeat(batch["index"], copies).tolist())
        columns["label"].extend(np.repeat(batch["label"], copies).tolist())
        columns["flipped"].extend([False, True][:copies] * len(batch["index"]))
    return columns


def extract_codes(
    model: GloTokModel,
    dataset: datasets.Dataset,
    output_dir: str | os.PathLike,
    *,
    resolution: int | None = None,
    image_column: str = "image",
    label_column: str | None = "label",
    label_names: Sequence[str] | None = None,
    flip: bool = False,
    batch_size: int = 64,
    shard_size: int = 10_000,
    num_workers: int = 0,
    mixed_precision: str = "no",
    progress: bool = True,
) -> Path:
    r"""
    Encode every image of `dataset` with the frozen tokenizer `model` and save the codes as a `datasets.Dataset`
    (see the module docstring for the columns and the folder layout). Resumable and multi-process: run it again with
    the same arguments to finish an interrupted extraction, and under `accelerate launch` to split it over processes.

    Args:
        model (`GloTokModel`): the tokenizer; it is moved to the process's device and put in eval mode.
        dataset (`datasets.Dataset`): images, preferably undecoded (`glotok_hf.data.load_image_dataset`).
            Unreadable images are skipped (and counted in the metadata).
        output_dir (`str` or `os.PathLike`): where to write; must be new, empty, or an unfinished run of the same
            extraction. A finished code dataset is never overwritten.
        resolution (`int`, *optional*): image side after resize + center crop; defaults to `config.sample_size`.
        image_column (`str`, *optional*, defaults to `"image"`): the dataset's image column.
        label_column (`str`, *optional*, defaults to `"label"`): the class-label column; `None` labels every image 0
            (a single class).
        label_names (`Sequence[str]`, *optional*): class names; defaults to the names of a `ClassLabel` column.
        flip (`bool`, *optional*, defaults to `False`): also store the codes of each horizontally flipped image, as
            an extra row with `flipped=True` right after the image's row.
        batch_size (`int`, *optional*, defaults to 64): images per forward pass (twice as many rows with `flip`).
        shard_size (`int`, *optional*, defaults to 10,000): source images per shard, the unit of resumption and of
            work splitting between processes.
        num_workers (`int`, *optional*, defaults to 0): `DataLoader` workers decoding images.
        mixed_precision (`str`, *optional*, defaults to `"no"`): `"no"`, `"bf16"` or `"fp16"` autocast for the
            encoder (the codebook lookup stays in fp32).
        progress (`bool`, *optional*, defaults to `True`): show a tqdm progress bar on the local main process.

    Returns:
        `Path` of the output folder; open it with [`load_code_dataset`].
    """
    for name, value, low in (
        ("batch_size", batch_size, 1),
        ("shard_size", shard_size, 1),
        ("num_workers", num_workers, 0),
    ):
        if not is_int(value) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}.")
    dtypes = {"no": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if mixed_precision not in dtypes:
        raise ValueError(f"mixed_precision must be one of {list(dtypes)}, got {mixed_precision!r}.")
    for name, column in (("image_column", image_column), ("label_column", label_column)):
        if column is not None and column not in dataset.column_names:
            raise ValueError(f"{name} {column!r} is not a column of the dataset; available: {dataset.column_names}.")
    if len(dataset) == 0:
        raise ValueError("The dataset is empty: there is nothing to extract.")
    config = model.config
    resolution = config.sample_size if resolution is None else resolution
    if not is_int(resolution) or resolution <= 0 or resolution % config.downsample_factor:
        raise ValueError(
            f"resolution must be a positive multiple of the tokenizer's downsampling factor {config.downsample_factor}, "
            f"got {resolution!r}."
        )
    label_names = list(label_names) if label_names is not None else class_names(dataset, label_column)
    grid = resolution // config.downsample_factor
    layout = TokenLayout(config.visual_codebook_size, config.semantic_codebook_size, max(1, len(label_names or [])))
    num_tokens = layout.num_image_tokens(grid * grid)

    output_dir = Path(output_dir)
    work_dir = output_dir / WORK_DIR_NAME
    # Without an accelerator, processes started by `accelerate launch` / torchrun join a gloo group only in CPU mode.
    state = PartialState(cpu=not torch.accelerator.is_available())
    # Checks first, on every process, before anything is written.
    if (output_dir / METADATA_NAME).exists():
        raise FileExistsError(
            f"{output_dir} already holds a finished code dataset ({METADATA_NAME}); choose another output_dir or "
            "delete it."
        )
    if output_dir.exists() and (not output_dir.is_dir() or (any(output_dir.iterdir()) and not work_dir.is_dir())):
        raise FileExistsError(
            f"{output_dir} exists and is neither empty nor an unfinished code extraction; choose a new output_dir."
        )
    run_config = {
        "tokenizer_fingerprint": model_fingerprint(model),
        "dataset_fingerprint": getattr(dataset, "_fingerprint", None),
        "num_source_rows": len(dataset),
        "resolution": resolution,
        "flip": flip,
        "shard_size": shard_size,
        "image_column": image_column,
        "label_column": label_column,
        "label_names": label_names,
    }
    state.wait_for_everyone()
    run_file = work_dir / "run.json"
    if state.is_main_process and not run_file.exists():
        work_dir.mkdir(parents=True, exist_ok=True)
        _write_json_atomic(run_file, run_config)
    state.wait_for_everyone()
    previous = json.loads(run_file.read_text())
    changed = sorted(k for k in set(previous) | set(run_config) if previous.get(k) != run_config.get(k))
    if changed:
        raise ValueError(
            f"{output_dir} holds an unfinished extraction with different settings ({', '.join(changed)} differ); "
            "resume it with the same tokenizer, dataset and arguments, or choose a new output_dir."
        )

    num_shards = math.ceil(len(dataset) / shard_size)
    mine = [k for k in range(state.process_index, num_shards, state.num_processes)]
    todo = [k for k in mine if not (work_dir / _shard_name(k) / "dataset_info.json").exists()]
    for k in mine:  # leftovers of interrupted writes
        for stale in work_dir.glob(f"{_shard_name(k)}.tmp*"):
            shutil.rmtree(stale, ignore_errors=True)

    model = model.to(state.device).eval()
    transform = ImageTransform(resolution, center_crop=True)
    label = datasets.ClassLabel(names=label_names) if label_names else datasets.Value("int64")
    features = datasets.Features({"index": datasets.Value("int64"), "label": label, "flipped": datasets.Value("bool"),
                                  "codes": datasets.List(datasets.Value("int32"), length=num_tokens)})  # fmt: skip
    total = sum(min(len(dataset), (k + 1) * shard_size) - k * shard_size for k in todo)
    bar = tqdm(
        total=total, desc="extracting codes", unit="img", disable=not (progress and state.is_local_main_process)
    )
    for k in todo:
        start, stop = k * shard_size, min(len(dataset), (k + 1) * shard_size)
        images = DecodedImages(dataset, transform, image_column, label_column, indices=range(start, stop))
        loader = torch.utils.data.DataLoader(images, batch_size, num_workers=num_workers, collate_fn=collate_readable)
        columns = _encode_shard(model, layout, loader, flip=flip, device=state.device,
                                autocast_dtype=dtypes[mixed_precision], label_column=label_column,
                                num_classes=len(label_names) if label_names else None, progress=bar)  # fmt: skip
        shard = datasets.Dataset.from_dict(columns, features=features)
        tmp = work_dir / f"{_shard_name(k)}.tmp-{os.getpid()}"
        shard.save_to_disk(str(tmp))
        os.replace(tmp, work_dir / _shard_name(k))
    bar.close()
    state.wait_for_everyone()

    if state.is_main_process:
        _assemble(output_dir, work_dir, num_shards, layout, config, run_config, grid, resolution)
    state.wait_for_everyone()
    return output_dir


def _assemble(output_dir, work_dir, num_shards, layout, config, run_config, grid, resolution) -> None:
    """Concatenate the shards into `output_dir`, write the metadata last (it marks the dataset complete)."""
    shards = [datasets.load_from_disk(str(work_dir / _shard_name(k))) for k in range(num_shards)]
    result = datasets.concatenate_datasets(shards)
    result.save_to_disk(str(output_dir))
    columns = result.select_columns(["flipped", "label"]).with_format("numpy")[:]
    num_images = int((~columns["flipped"]).sum())
    label_names = run_config["label_names"]
    metadata = {
        "format": "glotok-codes",
        "format_version": FORMAT_VERSION,
        "tokenizer_config": json.loads(config.to_json_string()),
        "tokenizer_fingerprint": run_config["tokenizer_fingerprint"],
        "visual_codebook_size": layout.visual_codebook_size,
        "semantic_codebook_size": layout.semantic_codebook_size,
        "tokens_per_position": layout.tokens_per_position,
        "grid": [grid, grid],
        "num_positions": grid * grid,
        "num_image_tokens": layout.num_image_tokens(grid * grid),
        "resolution": resolution,
        "flip": run_config["flip"],
        "num_images": num_images,
        "num_skipped": run_config["num_source_rows"] - num_images,
        "num_rows": len(result),
        "label_names": label_names,
        "num_classes": count_classes(label_names, columns["label"]),
        "source": {
            key: run_config[key] for key in ("dataset_fingerprint", "num_source_rows", "image_column", "label_column")
        },
    }
    _write_json_atomic(output_dir / METADATA_NAME, metadata)
    shutil.rmtree(work_dir, ignore_errors=True)


def load_code_dataset(path: str | os.PathLike) -> tuple[datasets.Dataset, dict[str, Any]]:
    """Open a folder written by [`extract_codes`]: returns `(dataset, metadata)`; the dataset is memory-mapped."""
    path = Path(path)
    meta_file = path / METADATA_NAME
    if not meta_file.is_file():
        hint = " (an unfinished extraction: run it again to finish)" if (path / WORK_DIR_NAME).is_dir() else ""
        raise FileNotFoundError(f"{path} is not a finished GloTok code dataset: {METADATA_NAME} is missing{hint}.")
    metadata = json.loads(meta_file.read_text())
    if metadata.get("format") != "glotok-codes" or metadata.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{meta_file} is not glotok-codes format version {FORMAT_VERSION}: got format {metadata.get('format')!r} "
            f"version {metadata.get('format_version')!r}."
        )
    return datasets.load_from_disk(str(path)), metadata


__all__ = ["METADATA_NAME", "count_classes", "extract_codes", "load_code_dataset", "model_fingerprint"]
