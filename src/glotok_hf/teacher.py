# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""Teacher histograms for codebook-wise histogram relation learning (GloTok section 3.3).

The teacher enters training only as a fixed soft histogram of pairwise cosine similarities (`num_bins` numbers), built
once, offline, from a token set: k-means centres of a vision backbone's patch features ([`teacher_from_backbone`],
as VQGAN-LC builds its codebook), a trained codebook ([`teacher_from_codebook`]), any `(n, d)` tensor
([`teacher_from_tokens`]), or the controls [`random_codebook_teacher`] and [`uniform_teacher`]. A [`TeacherHistogram`]
saves to one small safetensors file naming its source; [`load_teacher`] checks it against the training configuration.

Example:

```python
>>> import tempfile
>>> from glotok_hf.teacher import load_teacher, random_codebook_teacher
>>> teacher = random_codebook_teacher(size=1024, dim=8, seed=0)
>>> teacher.histogram.shape, teacher.alpha, teacher.metadata["source"]
(torch.Size([40]), 190.125, 'random')
>>> path = teacher.save(f"{tempfile.mkdtemp()}/teacher-random.safetensors")
>>> load_teacher(path, num_bins=40, alpha=190.125).metadata["seed"]
0
>>> load_teacher(path, num_bins=32)
Traceback (most recent call last):
...
ValueError: Teacher histogram ... has 40 bins but the training configuration uses num_bins=32; ...

```
"""

import datetime
import functools
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from . import __version__
from .losses.histogram import (
    _resolve_alpha,
    check_histogram,
    check_vectors,
    histogram_bin_centers,
    soft_cosine_histogram,
)
from .utils import atomic_write, is_int, resolve_source

FILE_FORMAT = "glotok-teacher-histogram"
FILE_FORMAT_VERSION = "1"


@dataclass
class TeacherHistogram:
    r"""
    A teacher distribution for [`~glotok_hf.losses.histogram.histogram_relation_loss`].

    Args:
        histogram (`torch.Tensor` of shape `(num_bins,)`): soft histogram of the teacher tokens' pairwise cosine
            similarities; fp64, non-negative, sums to 1.
        bin_centers (`torch.Tensor` of shape `(num_bins,)`): the bin centres, evenly spaced on [-1, 1].
        alpha (`float`): the kernel sharpness the histogram was computed with; training must use the same.
        metadata (`dict`): how it was built: `source` (backbone, codebook, random, uniform, tokens), `model`, `layer`,
            `k`, `per_class`, `dataset`, `image_count`, `num_tokens`, `created`, ... (JSON-serialisable).
        tokens (`torch.Tensor` of shape `(n, d)`, *optional*): the token set (k-means centres, codebook); kept in
            memory, saved only on request.
    """

    histogram: torch.Tensor
    bin_centers: torch.Tensor
    alpha: float
    metadata: dict[str, Any] = field(default_factory=dict)
    tokens: torch.Tensor | None = None

    def __post_init__(self):
        self.histogram = check_histogram(self.histogram, name="teacher histogram").detach().double().cpu()
        self.alpha = _resolve_alpha(self.alpha, self.num_bins)
        expected = histogram_bin_centers(self.num_bins, dtype=torch.float64)
        centers = torch.as_tensor(self.bin_centers).detach().double().cpu()
        if centers.shape != expected.shape or not torch.allclose(centers, expected, rtol=0, atol=1e-9):
            raise ValueError(f"teacher bin_centers must be {self.num_bins} centres evenly spaced on [-1, 1] (Eq. 5).")
        self.bin_centers = expected

    @property
    def num_bins(self) -> int:
        return self.histogram.shape[0]

    def save(self, path: str | os.PathLike, overwrite: bool = False, include_tokens: bool = False) -> Path:
        """Write one safetensors file: tensors `histogram`, `bin_centers` (and `tokens` with `include_tokens`),
        string metadata `format`, `num_bins`, `alpha` and `metadata` (JSON). An existing file is only replaced with
        `overwrite=True`, and atomically; missing parent folders are created."""
        tensors = {"histogram": self.histogram.contiguous(), "bin_centers": self.bin_centers.contiguous()}
        if include_tokens:
            if self.tokens is None:
                raise ValueError("include_tokens=True but this teacher keeps no tokens.")
            tensors["tokens"] = self.tokens.detach().float().cpu().contiguous()
        metadata = {
            "format": FILE_FORMAT,
            "format_version": FILE_FORMAT_VERSION,
            "num_bins": str(self.num_bins),
            "alpha": repr(self.alpha),
            "metadata": json.dumps(self.metadata, default=str, sort_keys=True),
        }
        return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata), overwrite=overwrite)

    def summary(self, width: int = 40) -> str:
        """A one-line picture of the histogram (for logs and the CLI)."""
        ramp = " .:-=+*#%@"
        scaled = self.histogram / self.histogram.max()
        picture = "".join(ramp[min(len(ramp) - 1, int(v * (len(ramp) - 1) + 0.5))] for v in scaled[:width].tolist())
        mean = float((self.histogram * self.bin_centers).sum())
        return f"[{picture}] -1..1, mean similarity {mean:+.3f}"


def load_teacher(path: str | os.PathLike, num_bins: int | None = None, alpha: float | None = None) -> TeacherHistogram:
    r"""Load a teacher histogram file and check it against the training configuration.

    Args:
        path (`str` or `os.PathLike`): a file written by [`TeacherHistogram.save`] / `glotok build-teacher`.
        num_bins (`int`, *optional*): the training configuration's bin count; a different one is an error.
        alpha (`float`, *optional*): the training configuration's kernel sharpness (resolve a `None` config value
            with `default_histogram_alpha(num_bins)` first); a different one is an error.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Teacher histogram file {str(path)!r} does not exist.")
    try:
        with safe_open(str(path), framework="pt") as handle:
            file_metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as err:  # safetensors raises its own error types for files that are not safetensors
        raise ValueError(f"{str(path)!r} is not a safetensors file ({err}).") from err
    if file_metadata.get("format") != FILE_FORMAT or "histogram" not in tensors:
        raise ValueError(
            f"{str(path)!r} is not a GloTok teacher histogram file (format {file_metadata.get('format')!r}, tensors "
            f"{sorted(tensors)}); build one with `glotok build-teacher`."
        )
    try:
        teacher = TeacherHistogram(
            histogram=tensors["histogram"],
            bin_centers=tensors.get("bin_centers", histogram_bin_centers(tensors["histogram"].shape[0])),
            alpha=float(file_metadata["alpha"]),
            metadata=json.loads(file_metadata.get("metadata", "{}")),
            tokens=tensors.get("tokens"),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"Teacher histogram file {str(path)!r} is invalid: {type(err).__name__}: {err}") from err
    if num_bins is not None and teacher.num_bins != num_bins:
        raise ValueError(
            f"Teacher histogram {str(path)!r} has {teacher.num_bins} bins but the training configuration uses "
            f"num_bins={num_bins}; rebuild it with `glotok build-teacher --num-bins {num_bins}`."
        )
    if alpha is not None and not math.isclose(teacher.alpha, alpha, rel_tol=1e-9):
        raise ValueError(
            f"Teacher histogram {str(path)!r} was built with alpha={teacher.alpha:g} but the training configuration "
            f"uses alpha={alpha:g}; the two histograms must use the same kernel (rebuild with --alpha {alpha:g})."
        )
    return teacher


def teacher_from_tokens(
    tokens: torch.Tensor,
    num_bins: int = 40,
    alpha: float | None = None,
    metadata: dict[str, Any] | None = None,
    device: str | torch.device | None = None,
    block_size: int | None = None,
    name: str = "tokens",
) -> TeacherHistogram:
    r"""The teacher histogram of any token set `tokens (n, d)` (rows need not be normalised).

    The histogram is computed on `device` (default: the tokens' device) by the blocked
    [`~glotok_hf.losses.histogram.soft_cosine_histogram`], so 100k tokens fit in memory.
    """
    check_vectors(tokens, name=name)
    alpha = _resolve_alpha(alpha, num_bins)
    with torch.no_grad():
        histogram = soft_cosine_histogram(
            tokens.detach().to(device or tokens.device), num_bins=num_bins, alpha=alpha, block_size=block_size
        )
    info = {"source": "tokens", "num_tokens": tokens.shape[0], "token_dim": tokens.shape[1], **(metadata or {})}
    return TeacherHistogram(
        histogram=histogram.double(),
        bin_centers=histogram_bin_centers(num_bins, dtype=torch.float64),
        alpha=alpha,
        metadata={**_provenance(), **info},
        tokens=tokens.detach().cpu(),
    )


def uniform_teacher(num_bins: int = 40, alpha: float | None = None) -> TeacherHistogram:
    r"""Control: the uniform histogram, `1 / num_bins` in every bin. `alpha` is recorded for the consistency check
    against the training configuration (the histogram itself does not depend on it)."""
    alpha = _resolve_alpha(alpha, num_bins)
    return TeacherHistogram(
        histogram=torch.full((num_bins,), 1.0 / num_bins, dtype=torch.float64),
        bin_centers=histogram_bin_centers(num_bins, dtype=torch.float64),
        alpha=alpha,
        metadata={"source": "uniform", **_provenance()},
    )


def random_codebook_teacher(
    size: int,
    dim: int,
    seed: int = 0,
    num_bins: int = 40,
    alpha: float | None = None,
    device: str | torch.device | None = None,
) -> TeacherHistogram:
    r"""Control: the histogram of a random isotropic codebook, `size` standard-normal vectors of dimension `dim`
    (directions uniform on the sphere), drawn from `torch.Generator().manual_seed(seed)` on CPU. With `dim=8` and the
    size of the semantic codebook it is what an untrained codebook already looks like."""
    tokens = torch.randn(size, dim, generator=torch.Generator().manual_seed(seed))
    metadata = {"source": "random", "size": size, "dim": dim, "seed": seed, "distribution": "isotropic normal"}
    return teacher_from_tokens(tokens, num_bins=num_bins, alpha=alpha, device=device, metadata=metadata)


def teacher_from_codebook(
    codebook: str | os.PathLike | torch.Tensor,
    key: str | None = None,
    branch: str = "semantic",
    num_bins: int = 40,
    alpha: float | None = None,
    device: str | torch.device | None = None,
) -> TeacherHistogram:
    r"""The histogram of an existing codebook.

    Args:
        codebook (`str`, `os.PathLike` or `torch.Tensor`):
            - a GloTok checkpoint (a `save_pretrained` folder or a Hub id): its `branch` codebook as used for lookup
              (l2-normalised when `codebook_l2_norm`; the cosine histogram does not depend on row norms anyway);
            - a `.safetensors` file: the tensor `key` (optional when the file holds a single 2-D tensor, or a GloTok
              state dict);
            - a `(n, d)` tensor.
        key (`str`, *optional*): tensor name inside a .safetensors file.
        branch (`str`, *optional*, defaults to `"semantic"`): `"semantic"` or `"visual"` codebook of a checkpoint.
        num_bins (`int`, *optional*, defaults to 40), alpha (`float`, *optional*): histogram settings.
        device (`str`, *optional*): where to compute the histogram.
    """
    if isinstance(codebook, torch.Tensor):
        tokens, info = codebook, {"model": "<tensor>"}
    else:
        source = resolve_source(codebook, "the codebook (a GloTok checkpoint or a .safetensors file)")
        if isinstance(source, Path) and source.is_file():
            tokens, info = _tensor_from_safetensors(source, key, branch)
        else:
            tokens, info = _codebook_from_checkpoint(str(source), branch)
    info = {"source": "codebook", **info}
    return teacher_from_tokens(tokens, num_bins=num_bins, alpha=alpha, device=device, metadata=info, name="codebook")


def _tensor_from_safetensors(path: Path, key: str | None, branch: str) -> tuple[torch.Tensor, dict]:
    with safe_open(str(path), framework="pt") as handle:
        keys = list(handle.keys())
        if key is None:
            matrices = [k for k in keys if len(handle.get_slice(k).get_shape()) == 2]
            key = f"{branch}.quantizer.embedding.weight"
            if key not in keys and len(matrices) != 1:
                raise ValueError(
                    f"{str(path)!r} holds {len(matrices)} 2-D tensors; choose one with key= (--key): {matrices}."
                )
            key = key if key in keys else matrices[0]
        if key not in keys:
            raise ValueError(f"{str(path)!r} has no tensor {key!r}; available: {keys}.")
        tokens = handle.get_tensor(key)  # checked by teacher_from_tokens (check_vectors)
    return tokens, {"model": str(path), "key": key}


def _codebook_from_checkpoint(name_or_path: str, branch: str) -> tuple[torch.Tensor, dict]:
    from .modeling_glotok import GloTokModel

    model = GloTokModel.from_pretrained(name_or_path)
    module = getattr(model, branch)
    if module is None:
        raise ValueError(
            f"The GloTok checkpoint {name_or_path!r} has no {branch} codebook ({branch}_codebook_size=0)."
        )
    with torch.no_grad():
        tokens = module.quantizer.codebook().detach().clone()
    return tokens, {"model": name_or_path, "branch": branch, "codebook_l2_norm": model.config.codebook_l2_norm}


def teacher_from_backbone(
    model_name_or_path: str,
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    train_data_dir: str | os.PathLike | None = None,
    split: str = "train",
    image_column: str = "image",
    label_column: str = "label",
    layer: int = -1,
    pool_size: int | None = None,
    num_clusters: int = 4096,
    per_class: bool = False,
    normalize_features: bool = False,
    max_images: int | None = None,
    batch_size: int = 32,
    num_workers: int = 0,
    num_bins: int = 40,
    alpha: float | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    cache_dir: str | None = None,
    progress: bool = True,
) -> TeacherHistogram:
    r"""
    The histogram of k-means centres of a vision backbone's patch features over an image dataset.

    Images are preprocessed by the backbone's `AutoImageProcessor`; the model (`AutoModel`; for CLIP/SigLIP its
    `vision_model`) runs with `output_hidden_states=True`; the tokens of hidden state `layer` lose their CLS and
    register tokens and form a patch grid, optionally average-pooled to `pool_size x pool_size` (VQGAN-LC pools CLIP's
    16x16 grid to 4x4). The features are clustered with scikit-learn's `MiniBatchKMeans` into `num_clusters` centres
    (per class with `per_class`, `num_clusters` each, as VQGAN-LC's 100 per ImageNet class), and the teacher is their
    soft cosine histogram. Features are kept in memory: `images x tokens_per_image x hidden_size x 4` bytes (use
    `pool_size` and `max_images` for large datasets).

    Args:
        model_name_or_path (`str`): a local folder or Hub id with a model and its image processor (DINOv2, CLIP,
            SigLIP, ViT ...).
        dataset_name (`str`, *optional*), dataset_config_name (`str`, *optional*), train_data_dir (`str`,
            *optional*), split (`str`, defaults to `"train"`), image_column (`str`, defaults to `"image"`),
            label_column (`str`, defaults to `"label"`): the images, as in [`~glotok_hf.data.load_image_dataset`];
            labels are only read with `per_class`.
        layer (`int`, *optional*, defaults to -1): index into the hidden states (0 = embeddings, -1 = last layer).
        pool_size (`int`, *optional*): average-pool the patch grid to `pool_size x pool_size` tokens per image.
        num_clusters (`int`, *optional*, defaults to 4096): k-means centres (per class with `per_class`).
        per_class (`bool`, *optional*, defaults to `False`): cluster each class separately and concatenate.
        normalize_features (`bool`, *optional*, defaults to `False`): l2-normalise features before k-means.
        max_images (`int`, *optional*): use a seeded random subset of this many images.
        batch_size (`int`, *optional*, defaults to 32), num_workers (`int`, *optional*, defaults to 0): extraction.
        num_bins (`int`, *optional*, defaults to 40), alpha (`float`, *optional*): histogram settings.
        device (`str`, *optional*): defaults to the current accelerator (CUDA ...) when there is one, else CPU.
        dtype (`torch.dtype`, *optional*, defaults to fp32): backbone dtype (bf16 on GPUs is fine).
        seed (`int`, *optional*, defaults to 0): image subset and k-means seed.
        cache_dir (`str`, *optional*): cache for `datasets` and `transformers`.
        progress (`bool`, *optional*, defaults to `True`): show a progress bar.
    """
    from transformers import AutoImageProcessor, AutoModel

    from .data import DecodedImages, class_names, collate_readable, load_image_dataset
    from .loading import resolve_device

    for name, value, minimum in (("num_clusters", num_clusters, 1), ("batch_size", batch_size, 1),
                                 ("num_workers", num_workers, 0), ("pool_size", pool_size or 1, 1),
                                 ("max_images", max_images or 1, 1)):  # fmt: skip
        if not is_int(value) or value < minimum:
            raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}.")
    alpha = _resolve_alpha(alpha, num_bins)
    device = resolve_device(device)

    processor = AutoImageProcessor.from_pretrained(model_name_or_path, cache_dir=cache_dir, trust_remote_code=False)
    model = AutoModel.from_pretrained(model_name_or_path, cache_dir=cache_dir, dtype=dtype, trust_remote_code=False)
    vision = getattr(model, "vision_model", model).to(device).eval()
    vision_config = getattr(model.config, "vision_config", model.config)
    num_hidden_states = vision_config.num_hidden_layers + 1
    if not is_int(layer) or not -num_hidden_states <= layer < num_hidden_states:
        raise ValueError(
            f"Unknown layer {layer!r} for {model_name_or_path!r}: it has {num_hidden_states} hidden states (the "
            f"embeddings and {num_hidden_states - 1} transformer layers); use 0..{num_hidden_states - 1} or a negative "
            "index (-1 is the last layer)."
        )

    used_label_column = label_column if per_class else None
    dataset = load_image_dataset(
        dataset_name, dataset_config_name, train_data_dir, split, image_column, used_label_column, cache_dir
    )
    if max_images is not None and max_images < len(dataset):
        dataset = dataset.shuffle(seed=seed).select(range(max_images))
    images = DecodedImages(dataset, functools.partial(_preprocess, processor), image_column, used_label_column)
    loader = torch.utils.data.DataLoader(images, batch_size, num_workers=num_workers, collate_fn=collate_readable)
    features, labels, image_count, skipped = _extract_dataset_features(
        vision, loader, layer, vision_config.patch_size, pool_size, device, dtype, progress
    )
    if image_count == 0:
        raise ValueError(
            f"No readable image in the dataset {dataset_name or str(train_data_dir)!r} (split {split!r}); "
            f"{skipped} file(s) could not be decoded."
        )
    if normalize_features:
        features /= np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    groups = {None: features} if not per_class else {int(c): features[labels == c] for c in np.unique(labels)}
    names = class_names(dataset, label_column) if per_class else None
    centers = []
    for group, group_features in groups.items():
        if len(group_features) < num_clusters:
            where = "the dataset" if group is None else f"class {names[group] if names else group!r}"
            raise ValueError(
                f"k-means needs at least num_clusters={num_clusters} features but {where} has {len(group_features)}; "
                "use fewer clusters, more images or a larger pool_size."
            )
        centers.append(kmeans_centers(group_features, num_clusters, seed=seed))
    tokens = torch.from_numpy(np.concatenate(centers))
    metadata = {
        "source": "backbone",
        "model": str(model_name_or_path),
        "model_type": getattr(vision_config, "model_type", None),
        "layer": layer,
        "pool_size": pool_size,
        "k": num_clusters,
        "per_class": per_class,
        "num_classes": len(groups) if per_class else None,
        "normalize_features": normalize_features,
        "dataset": dataset_name or str(train_data_dir),
        "dataset_config_name": dataset_config_name,
        "split": split,
        "image_count": image_count,
        "skipped_images": skipped,
        "num_features": int(features.shape[0]),
        "feature_dim": int(features.shape[1]),
        "seed": seed,
        "kmeans": "sklearn.cluster.MiniBatchKMeans",
    }
    return teacher_from_tokens(tokens, num_bins=num_bins, alpha=alpha, device=device, metadata=metadata)


def extract_patch_features(
    vision_model: torch.nn.Module,
    pixel_values: torch.Tensor,
    layer: int,
    patch_size: int,
    pool_size: int | None = None,
) -> torch.Tensor:
    r"""Patch tokens of hidden state `layer`: `(batch, h * w, hidden)`, or `(batch, pool_size**2, hidden)` after
    average pooling. CLS and register tokens, which ViT-style models put before the patches, are dropped."""
    tokens = vision_model(pixel_values=pixel_values, output_hidden_states=True).hidden_states[layer]
    grid_h, grid_w = pixel_values.shape[-2] // patch_size, pixel_values.shape[-1] // patch_size
    patches = tokens[:, tokens.shape[1] - grid_h * grid_w :]
    if pool_size is None:
        return patches
    if pool_size > min(grid_h, grid_w):
        raise ValueError(f"pool_size={pool_size} is larger than the {grid_h}x{grid_w} patch grid.")
    grid = patches.transpose(1, 2).reshape(patches.shape[0], -1, grid_h, grid_w)
    return F.adaptive_avg_pool2d(grid.float(), pool_size).flatten(2).transpose(1, 2)


def _extract_dataset_features(vision, loader, layer, patch_size, pool_size, device, dtype, progress):
    """Run the backbone over `loader`: `(features (N, C) float32, labels (N,), image count, skipped count)`."""
    from .data import warn_unreadable

    features, labels, image_count, skipped = [], [], 0, 0
    with torch.no_grad():
        for batch in tqdm(loader, desc="Extracting patch features", disable=not progress, unit="batch"):
            if batch["skipped"]:
                warn_unreadable(batch["skipped"])
            skipped += len(batch["skipped"])
            if batch["pixel_values"] is None:
                continue
            pixel_values = batch["pixel_values"].to(device=device, dtype=dtype)
            tokens = extract_patch_features(vision, pixel_values, layer, patch_size, pool_size)
            image_count += tokens.shape[0]
            features.append(tokens.reshape(-1, tokens.shape[-1]).float().cpu().numpy())
            labels.append(np.repeat(np.asarray(batch["label"], dtype=np.int64), tokens.shape[1]))
    if not features:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int64), 0, skipped
    return np.concatenate(features), np.concatenate(labels), image_count, skipped


def kmeans_centers(features: np.ndarray, num_clusters: int, seed: int = 0) -> np.ndarray:
    """`num_clusters` k-means centres of `features (n, d)` with scikit-learn's `MiniBatchKMeans` (k-means++ init,
    3 restarts, seeded), as float32."""
    from sklearn.cluster import MiniBatchKMeans

    kmeans = MiniBatchKMeans(
        n_clusters=num_clusters, batch_size=max(4096, 3 * num_clusters), n_init=3, random_state=seed
    )
    return kmeans.fit(features).cluster_centers_.astype(np.float32)


def _preprocess(processor, image) -> torch.Tensor:
    return processor(images=image, return_tensors="pt")["pixel_values"][0]


def _provenance() -> dict[str, str]:
    return {"created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "glotok_hf_version": __version__}  # fmt: skip


__all__ = [
    "TeacherHistogram",
    "extract_patch_features",
    "kmeans_centers",
    "load_teacher",
    "random_codebook_teacher",
    "teacher_from_backbone",
    "teacher_from_codebook",
    "teacher_from_tokens",
    "uniform_teacher",
]
