# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""Sampling for evaluation with a fixed, reproducible protocol (docs/evaluation.md): balanced labels, a generator
seeded `seed + i` for image `i` whatever the number of processes or the batch size, contiguous shards per process (as
`accelerate`'s `split_between_processes`), and lossless storage as an ADM-style `.npz` (`arr_0`: uint8 `(N, H, W, 3)`,
`arr_1`: int64 labels, in index order) that the ADM evaluator reads as a sample batch, and optionally PNGs.

The pipeline is called as `pipeline(class_labels=[...], generator=[one per image], num_images_per_label=1,
output_type="np", **sampling_kwargs)` and must return an object with `images` (float `(B, H, W, 3)` in [0, 1], uint8,
or a list of PIL images), like [`GloTokPipeline`].
"""

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import PartialState
from accelerate.utils import parse_flag_from_env
from PIL import Image
from tqdm.auto import tqdm

from ..data import uint8_to_pixels
from ..utils import atomic_write, is_int


def process_state() -> PartialState:
    """accelerate's process state (process count, index, device), honouring `accelerate launch --cpu`
    (`ACCELERATE_USE_CPU`) as `Accelerator` does, so multi-CPU launches are distributed too."""
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


def balanced_class_labels(class_ids: int | Sequence[int], images_per_class: int) -> list[int]:
    r"""`images_per_class` labels for every class, grouped by class: image `i` gets `class_ids[i // images_per_class]`.

    Args:
        class_ids (`int` or sequence of `int`): the classes, or their number `C` for classes `0..C-1`.
        images_per_class (`int`): images per class.
    """
    class_ids = list(range(class_ids) if is_int(class_ids) else class_ids)
    valid_ids = class_ids and all(is_int(c) and c >= 0 for c in class_ids)
    if not valid_ids or not is_int(images_per_class) or images_per_class < 1:
        raise ValueError(
            "balanced_class_labels needs class_ids (a positive int or a non-empty list of ids >= 0) and "
            f"images_per_class >= 1, got {class_ids!r} and {images_per_class!r}."
        )
    return [c for c in class_ids for _ in range(images_per_class)]


def shard_indices(num_images: int, num_processes: int = 1, process_index: int = 0) -> range:
    """The contiguous block of image indices of one process: the first `num_images % num_processes` processes take
    one more image than the others (the split of `accelerate`'s `split_between_processes`)."""
    base, extra = divmod(num_images, num_processes)
    start = process_index * base + min(process_index, extra)
    return range(start, start + base + (process_index < extra))


@dataclass
class SampleBatch:
    """Samples of one call of the pipeline: `indices (B,)` and `labels (B,)` int64, `images (B, H, W, 3)` uint8."""

    indices: np.ndarray
    labels: np.ndarray
    images: np.ndarray

    def to_tensor(self) -> torch.Tensor:
        """The images as a float32 tensor `(B, 3, H, W)` in [-1, 1]."""
        return uint8_to_pixel_values(self.images)


def uint8_to_pixel_values(images: np.ndarray) -> torch.Tensor:
    """uint8 `(B, H, W, 3)` images (an ADM `.npz`, [`images_to_uint8`]) -> float32 `(B, 3, H, W)` in [-1, 1]."""
    return uint8_to_pixels(torch.from_numpy(images).permute(0, 3, 1, 2))


def images_to_uint8(images) -> np.ndarray:
    """Pipeline output (float `(B, H, W, 3)` in [0, 1], uint8 arrays, a `(B, 3, H, W)` tensor in [0, 1], or PIL
    images) -> uint8 `(B, H, W, 3)`."""
    if isinstance(images, (list, tuple)) and images and isinstance(images[0], Image.Image):
        return np.stack([np.asarray(image.convert("RGB")) for image in images])
    if isinstance(images, torch.Tensor):
        images = images.detach().float().cpu().permute(0, 2, 3, 1).numpy()
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"Pipeline images must be (batch, height, width, 3), got shape {images.shape}.")
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    if images.dtype == np.uint8:
        return images
    return (np.clip(images, 0.0, 1.0) * 255).round().astype(np.uint8)


def iter_samples(
    pipeline: Callable,
    class_labels: Sequence[int],
    *,
    seed: int = 0,
    batch_size: int = 32,
    num_processes: int | None = None,
    process_index: int | None = None,
    generator_device: str | torch.device = "cpu",
    progress: bool = False,
    **sampling_kwargs,
) -> Iterator[SampleBatch]:
    r"""
    Generate this process's shard of the evaluation images, batch by batch.

    Args:
        pipeline (`Callable`): a class-conditional pipeline such as [`GloTokPipeline`] (see the module docstring).
        class_labels (`Sequence[int]`): the label of every image, e.g. [`balanced_class_labels`].
        seed (`int`, *optional*, defaults to 0): image `i` is drawn with a generator seeded `seed + i`.
        batch_size (`int`, *optional*, defaults to 32): images per pipeline call.
        num_processes, process_index (`int`, *optional*): the shard to draw; by default those of accelerate's
            [`process_state`] (1 and 0 outside a distributed launch).
        generator_device (`str` or `torch.device`, *optional*, defaults to `"cpu"`): device of the per-image
            generators (CPU generators give the same numbers on every machine).
        progress (`bool`, *optional*, defaults to `False`): show a progress bar.
        **sampling_kwargs: passed to the pipeline (`guidance_scale`, `temperature`, `top_k`, `top_p`, ...).
    """
    if not is_int(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
    if num_processes is None or process_index is None:
        state = process_state()
        num_processes, process_index = state.num_processes, state.process_index
    labels = np.asarray(list(class_labels), dtype=np.int64)
    mine = shard_indices(len(labels), num_processes, process_index)
    for start in tqdm(range(mine.start, mine.stop, batch_size), desc="sampling", disable=not progress):
        indices = np.arange(start, min(start + batch_size, mine.stop), dtype=np.int64)
        generators = [torch.Generator(generator_device).manual_seed(seed + int(i)) for i in indices]
        output = pipeline(
            class_labels=labels[indices].tolist(),
            num_images_per_label=1,
            generator=generators,
            output_type="np",
            **sampling_kwargs,
        )
        images = images_to_uint8(output.images if hasattr(output, "images") else output[0])
        if images.shape[0] != len(indices):
            raise ValueError(f"The pipeline returned {images.shape[0]} images for {len(indices)} labels.")
        yield SampleBatch(indices=indices, labels=labels[indices], images=images)


def save_samples_npz(
    path: str | os.PathLike, images: np.ndarray, labels: np.ndarray | None = None, overwrite: bool = False
) -> Path:
    """Write an ADM-style sample batch: `arr_0` uint8 `(N, H, W, 3)` and, when given, `arr_1` int64 labels `(N,)`.
    Refuses to replace an existing file unless `overwrite`."""
    images = np.asarray(images)
    arrays = {"arr_0": images} if labels is None else {"arr_0": images, "arr_1": np.asarray(labels, dtype=np.int64)}
    if not _is_uint8_batch(images) or len(arrays.get("arr_1", images)) != len(images):
        raise ValueError(f"Need uint8 images (N, H, W, 3) and N labels, got {images.dtype} {images.shape}, {labels}.")
    return write_npz(path, arrays, overwrite=overwrite)


def write_npz(path: str | os.PathLike, arrays: dict, overwrite: bool = False) -> Path:
    """`np.savez` of `arrays` to `path` through [`~glotok_hf.utils.atomic_write`] (any file name)."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to other names
            np.savez(f, **arrays)

    return atomic_write(path, write, overwrite=overwrite)


def _is_uint8_batch(images: np.ndarray) -> bool:
    return images.dtype == np.uint8 and images.ndim == 4 and images.shape[-1] == 3


def load_samples_npz(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None]:
    """`(images uint8 (N, H, W, 3), labels (N,) or None)` from an ADM-style `.npz` (`arr_0`, optional `arr_1`)."""
    with np.load(path, allow_pickle=False) as data:
        images, labels = (data[key] if key in data else None for key in ("arr_0", "arr_1"))
    if images is None or not _is_uint8_batch(images):
        raise ValueError(f"{path} is not an ADM-style sample batch (arr_0: uint8 images (N, H, W, 3)).")
    return images, labels


def sample_for_evaluation(
    pipeline: Callable,
    class_labels: Sequence[int],
    *,
    seed: int = 0,
    batch_size: int = 32,
    npz_path: str | os.PathLike | None = None,
    png_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    on_batch: Callable[[SampleBatch], None] | None = None,
    generator_device: str | torch.device = "cpu",
    progress: bool = False,
    **sampling_kwargs,
) -> SampleBatch:
    r"""
    Generate all evaluation images over the processes of the current `accelerate` launch, hand every batch to
    `on_batch` (e.g. to update FID/IS/consistency metrics), and store them losslessly.

    Args:
        pipeline, class_labels, seed, batch_size, generator_device, progress, **sampling_kwargs: see [`iter_samples`].
        npz_path (`str`, *optional*): write all images in index order to this ADM-style `.npz` (main process; each
            process first writes its shard next to it, then the main process merges and removes the shards).
        png_dir (`str`, *optional*): also write every image as `{index:06d}.png` into this folder.
        overwrite (`bool`, *optional*, defaults to `False`): allow replacing an existing `.npz` or PNGs.
        on_batch (`Callable`, *optional*): called with every [`SampleBatch`] of this process.

    Returns:
        [`SampleBatch`]: this process's samples.
    """
    state = process_state()
    npz_path = Path(npz_path) if npz_path is not None else None
    png_dir = Path(png_dir) if png_dir is not None else None
    if npz_path is not None and npz_path.suffix != ".npz":
        raise ValueError(f"npz_path must end in .npz, got {npz_path.name}.")
    if npz_path is not None and npz_path.exists() and not overwrite:  # before hours of sampling, not after
        raise FileExistsError(f"{npz_path} exists; pass overwrite=True (--overwrite) to replace it.")
    if png_dir is not None and png_dir.is_dir() and any(png_dir.glob("*.png")) and not overwrite:
        raise FileExistsError(f"{png_dir} already holds PNG files; pass overwrite=True (--overwrite) to replace them.")
    if png_dir is not None:
        png_dir.mkdir(parents=True, exist_ok=True)
    batches = []
    for batch in iter_samples(
        pipeline,
        class_labels,
        seed=seed,
        batch_size=batch_size,
        generator_device=generator_device,
        progress=progress and state.is_local_main_process,
        **sampling_kwargs,
    ):
        if on_batch is not None:
            on_batch(batch)
        if png_dir is not None:
            for index, image in zip(batch.indices, batch.images):
                Image.fromarray(image).save(png_dir / f"{index:06d}.png")
        batches.append(batch)
    local = _concatenate(batches)
    if npz_path is not None:
        if state.num_processes == 1:
            save_samples_npz(npz_path, local.images, local.labels, overwrite=overwrite)
        else:
            shard = npz_path.with_name(f"{npz_path.stem}.shard-{state.process_index:05d}.npz")
            save_samples_npz(shard, local.images, local.labels, overwrite=True)
            state.wait_for_everyone()
            if state.is_main_process:
                shards = [npz_path.with_name(f"{npz_path.stem}.shard-{r:05d}.npz") for r in range(state.num_processes)]
                parts = [p for p in map(load_samples_npz, shards) if p[0].shape[0]]
                save_samples_npz(npz_path, *(np.concatenate(arrays) for arrays in zip(*parts)), overwrite=overwrite)
                for s in shards:
                    s.unlink()
            state.wait_for_everyone()
    return local


def _concatenate(batches: list[SampleBatch]) -> SampleBatch:
    if not batches:
        return SampleBatch(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 0, 0, 3), np.uint8))
    return SampleBatch(
        *(np.concatenate([getattr(b, name) for b in batches]) for name in ("indices", "labels", "images"))
    )


__all__ = [
    "SampleBatch",
    "balanced_class_labels",
    "images_to_uint8",
    "uint8_to_pixel_values",
    "iter_samples",
    "load_samples_npz",
    "process_state",
    "sample_for_evaluation",
    "save_samples_npz",
    "shard_indices",
    "write_npz",
]
