# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""Image data: `datasets` loading (imagefolder, saved datasets, Hub names), decoding of any image mode to RGB, and
PIL/numpy transforms to pixels in [-1, 1] (torchvision is not a dependency).

Images are kept undecoded in the `datasets.Dataset` (`Image(decode=False)`) and decoded per item by [`decode_image`],
which returns `None` for an unreadable or corrupt file. The one rule for such files everywhere in glotok-hf: skip it,
count it and warn with [`warn_unreadable`], never crash. Training ([`ImageDataset`]) replaces it by the next readable
item, which keeps every batch the same size and distributed ranks in lock-step; one-pass jobs (code extraction,
teacher features) drop it from the batch ([`DecodedImages`] + [`collate_readable`]).
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image, ImageOps

if TYPE_CHECKING:
    import datasets

from .utils import is_int

# Errors PIL raises for unreadable, truncated or hostile files.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError, EOFError)


def to_rgb(image: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Convert a PIL image of any mode to 8-bit RGB.

    Transparency (LA, RGBA, PA, P with a transparent index) is composited over `background`; 16-bit and 32-bit integer
    images (I;16, I) are rescaled from their full range rather than clipped; float images (F) are read as [0, 1] when
    their maximum is <= 1, else as [0, 255]; CMYK, YCbCr, LAB, HSV and 1-bit images go through PIL's converters.
    """
    if image.mode == "RGB":
        return image
    if image.mode in ("LA", "PA", "RGBA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, background)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    if image.mode.startswith("I") or image.mode == "F":
        array = np.asarray(image).astype(np.float64)
        if image.mode == "F":
            scale = 1.0 if array.size and np.nanmax(array) <= 1.0 else 1 / 255.0
        else:
            scale = 1 / 65535.0 if array.size and array.max() > 255 else 1 / 255.0
        array = np.clip(np.nan_to_num(array * scale) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(array, mode="L").convert("RGB")
    return image.convert("RGB")


def decode_image(value: Any) -> Image.Image | None:
    """Decode one image given as a `datasets` `{"bytes", "path"}` dict, a path, raw bytes or a PIL image.

    Returns an RGB PIL image with its EXIF orientation applied, or `None` when the file cannot be read or decoded
    (missing, truncated, corrupt, not an image).
    """
    try:
        if isinstance(value, dict):  # its bytes, else its path
            value = value["bytes"] if value.get("bytes") is not None else value.get("path")
        if isinstance(value, (bytes, bytearray)):
            value = io.BytesIO(value)
        if isinstance(value, (str, os.PathLike, io.BytesIO)) and value != "":
            value = Image.open(value)
        if not isinstance(value, Image.Image):
            return None
        value.load()  # force a full decode so truncated files fail here, not in a worker later
        return to_rgb(ImageOps.exif_transpose(value))
    except _DECODE_ERRORS:
        return None


class ImageTransform:
    r"""PIL image -> `(3, resolution, resolution)` float tensor in [-1, 1] (or its uint8 values with `uint8=True`, a
    quarter of the bytes for dataloader workers to ship; [`uint8_to_pixels`] converts them on the device).

    Resize so the shorter side equals `resolution` (bicubic, antialiased), then a center crop or a random crop, then
    an optional horizontal flip with probability 0.5. Random draws use torch's global RNG, which Accelerate seeds and
    restores on resume.

    Args:
        resolution (`int`): output side length.
        center_crop (`bool`, *optional*, defaults to `True`): center crop; otherwise a random crop.
        random_flip (`bool`, *optional*, defaults to `False`): random horizontal flip.
        uint8 (`bool`, *optional*, defaults to `False`): return the uint8 values `(3, resolution, resolution)`.
    """

    def __init__(self, resolution: int, center_crop: bool = True, random_flip: bool = False, uint8: bool = False):
        if not is_int(resolution) or resolution <= 0:
            raise ValueError(f"resolution must be a positive int, got {resolution!r}.")
        self.resolution, self.center_crop, self.random_flip = resolution, center_crop, random_flip
        self.uint8 = uint8

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = to_rgb(image)
        width, height = image.size
        scale = self.resolution / min(width, height)
        size = (max(self.resolution, round(width * scale)), max(self.resolution, round(height * scale)))
        if size != image.size:
            image = image.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
        width, height = image.size
        if self.center_crop:
            left, top = (width - self.resolution) // 2, (height - self.resolution) // 2
        else:
            left = int(torch.randint(0, width - self.resolution + 1, ()).item())
            top = int(torch.randint(0, height - self.resolution + 1, ()).item())
        image = image.crop((left, top, left + self.resolution, top + self.resolution))
        if self.random_flip and torch.rand(()).item() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous() if self.uint8 else pil_to_tensor(image)


def uint8_to_pixels(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """uint8 values in [0, 255] -> float32 in [-1, 1], same layout. The one uint8 -> pixel conversion of glotok-hf."""
    return torch.as_tensor(images).float() / 127.5 - 1.0


def pixels_to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float pixels in [-1, 1] (clamped) -> uint8 in [0, 255], rounded, same layout. The inverse of
    [`uint8_to_pixels`] on uint8 values (exact round trip)."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> `(3, H, W)` float32 tensor in [-1, 1]."""
    return uint8_to_pixels(np.array(to_rgb(image))).permute(2, 0, 1).contiguous()  # a writable copy for torch


def tensor_to_pil(images: torch.Tensor) -> list[Image.Image]:
    """`(B, 3, H, W)` or `(3, H, W)` tensor in [-1, 1] -> list of RGB PIL images."""
    images = images[None] if images.ndim == 3 else images
    return [Image.fromarray(a.permute(1, 2, 0).cpu().numpy()) for a in pixels_to_uint8(images)]


def image_grid(images: list[Image.Image], cols: int, background: tuple[int, int, int] = (0, 0, 0)) -> Image.Image:
    """Paste equally sized images row by row into a grid `cols` wide (the last row padded with `background`)."""
    sizes = {image.size for image in images}
    if len(sizes) != 1:
        raise ValueError(f"image_grid needs at least one image, all of one size, got sizes {sorted(sizes)}.")
    ((width, height),) = sizes
    cols = max(1, min(int(cols), len(images)))
    rows = -(-len(images) // cols)
    grid = Image.new("RGB", (cols * width, rows * height), background)
    for i, image in enumerate(images):
        grid.paste(image.convert("RGB"), (i % cols * width, i // cols * height))
    return grid


def is_saved_dataset(path: Path) -> bool:
    """Whether `path` is a folder written by `Dataset.save_to_disk` (or `DatasetDict.save_to_disk`)."""
    return path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists())


def load_image_dataset(
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    train_data_dir: str | os.PathLike | None = None,
    split: str = "train",
    image_column: str = "image",
    label_column: str | None = "label",
    cache_dir: str | None = None,
) -> datasets.Dataset:
    """Load an image dataset with its images left undecoded (`datasets.Image(decode=False)`).

    Args:
        dataset_name (`str`, *optional*): a Hub dataset name or a local folder written by `Dataset.save_to_disk`.
        dataset_config_name (`str`, *optional*): the dataset's configuration.
        train_data_dir (`str`, *optional*): an `imagefolder` directory; class labels come from sub-folder names.
        split (`str`, *optional*, defaults to `"train"`): the split to load.
        image_column (`str`, *optional*, defaults to `"image"`): the column holding images.
        label_column (`str`, *optional*, defaults to `"label"`): the class-label column; `None` when not needed.
            A label column that is asked for but missing is an error.
        cache_dir (`str`, *optional*): where `datasets` caches.
    """
    import datasets  # 1 s and pyarrow: only when a dataset is loaded

    if (dataset_name is None) == (train_data_dir is None):
        raise ValueError("Give exactly one of dataset_name (a Hub name or a saved dataset) or train_data_dir.")
    if train_data_dir is not None:
        root = str(train_data_dir)
        try:
            dataset = datasets.load_dataset("imagefolder", data_dir=root, split=split, cache_dir=cache_dir)
        except (ValueError, FileNotFoundError) as err:  # a missing folder, or "No (supported) data files found"
            raise ValueError(f"Found no images under train_data_dir {root!r} (split {split!r}): {err}") from err
    elif is_saved_dataset(Path(dataset_name)):
        dataset = datasets.load_from_disk(dataset_name)
        if isinstance(dataset, datasets.DatasetDict):
            dataset = dataset[split]  # a KeyError names a missing split
    else:
        dataset = datasets.load_dataset(dataset_name, dataset_config_name, split=split, cache_dir=cache_dir)
    if len(dataset) == 0:
        raise ValueError(f"The dataset {dataset_name or str(train_data_dir)!r} (split {split!r}) is empty.")
    for name, column in (("image_column", image_column), ("label_column", label_column)):
        if column is not None and column not in dataset.column_names:
            raise ValueError(
                f"{name} {column!r} is not a column of the dataset; available: {dataset.column_names}. For an "
                "imagefolder, put images in one sub-folder per class."
            )
    if isinstance(dataset.features[image_column], datasets.Image):
        dataset = dataset.cast_column(image_column, datasets.Image(decode=False))
    return dataset


def class_names(dataset: datasets.Dataset, label_column: str | None = "label") -> list[str] | None:
    """The class names of a `ClassLabel` column, or `None` when the column is absent or not a `ClassLabel`."""
    import datasets  # already imported: `dataset` is one

    feature = dataset.features.get(label_column)  # None for label_column=None
    return list(feature.names) if isinstance(feature, datasets.ClassLabel) else None


class DecodedImages(torch.utils.data.Dataset):
    """Rows `indices` (default: all) of an undecoded image dataset -> `{"index", "label", "pixel_values"}`, with
    `pixel_values = transform(image)`, or `None` (and `label` `None`) for an unreadable image, for
    [`collate_readable`] to drop and count. `label` is `-1` without `label_column`."""

    def __init__(self, dataset, transform: Callable, image_column: str = "image", label_column: str | None = None,
                 indices: range | None = None):  # fmt: skip
        self.dataset, self.transform = dataset, transform
        self.image_column, self.label_column = image_column, label_column
        self.indices = range(len(dataset)) if indices is None else indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        index = self.indices[i]
        row = self.dataset[index]
        image = decode_image(row[self.image_column])
        if image is None:
            return {"index": index, "label": None, "pixel_values": None}
        label = row[self.label_column] if self.label_column is not None else -1
        return {"index": index, "label": label, "pixel_values": self.transform(image)}


class ImageDataset(DecodedImages):
    """Map-style torch dataset over a `datasets.Dataset` of undecoded images, for training.

    Item `i` is `{"pixel_values": (3, R, R) tensor, "labels": int, "num_skipped": int}`. An unreadable image at `i` is
    replaced by the next readable one (wrapping around) and `num_skipped` counts how many were passed over, so a corrupt
    file never crashes training and batches keep their size. Arguments as [`DecodedImages`]; `label_column`
    defaults to `"label"`.
    """

    def __init__(self, dataset: datasets.Dataset, transform: Callable, image_column="image", label_column="label"):
        super().__init__(dataset, transform, image_column, label_column)

    def __getitem__(self, index: int) -> dict[str, Any]:
        for skipped in range(len(self)):
            item = super().__getitem__((index + skipped) % len(self))
            if item["pixel_values"] is not None:
                return {"pixel_values": item["pixel_values"], "labels": int(item["label"]), "num_skipped": skipped}
            if skipped == 0:
                warn_unreadable([index], self.dataset[index][self.image_column])
        raise ValueError("No image in the dataset could be decoded; every file is unreadable or not an image.")


def warn_unreadable(indices: list[int], value: Any = None) -> None:
    """The one warning for skipped unreadable images: `Skipping unreadable image(s) at index ...` (with the file path
    of `value`, a `datasets` image dict, when given)."""
    where = f" ({value['path']})" if isinstance(value, dict) and value.get("path") else ""
    plural = "s" if len(indices) > 1 else ""
    warnings.warn(f"Skipping unreadable image{plural} at index{'es' if plural else ''} {', '.join(map(str, indices))}"
                  f"{where}.", stacklevel=3)  # fmt: skip


def collate_readable(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch [`DecodedImages`] items, dropping unreadable ones: `index` and `label` lists, `pixel_values`
    `(B, ...)` (`None` when no image in the batch was readable), and `skipped`, the indices of the dropped rows (pass
    them to [`warn_unreadable`] and count them)."""
    readable = [item for item in items if item["pixel_values"] is not None]
    return {
        "index": [item["index"] for item in readable],
        "label": [item["label"] for item in readable],
        "pixel_values": torch.stack([item["pixel_values"] for item in readable]) if readable else None,
        "skipped": [item["index"] for item in items if item["pixel_values"] is None],
    }


def collate_images(examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack `ImageDataset` items: `pixel_values (B, 3, R, R)`, `labels (B,)`, `num_skipped ()` (a sum)."""
    return {
        "pixel_values": torch.stack([e["pixel_values"] for e in examples]),
        "labels": torch.tensor([e["labels"] for e in examples], dtype=torch.long),
        "num_skipped": torch.tensor(sum(e["num_skipped"] for e in examples), dtype=torch.long),
    }


__all__ = [
    "DecodedImages",
    "ImageDataset",
    "ImageTransform",
    "class_names",
    "collate_images",
    "collate_readable",
    "decode_image",
    "image_grid",
    "is_saved_dataset",
    "load_image_dataset",
    "pil_to_tensor",
    "pixels_to_uint8",
    "tensor_to_pil",
    "to_rgb",
    "uint8_to_pixels",
    "warn_unreadable",
]
