# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""Evaluation of a class-conditional generator: balanced samples with per-image seeds ([`sample_for_evaluation`]),
then gFID against reference statistics or real images, Inception Score, and class consistency under a classifier."""

import os
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from .consistency import ClassConsistency
from .fid import FrechetDistance, InceptionScore
from .sampling import SampleBatch, process_state, sample_for_evaluation


@torch.no_grad()
def evaluate_generation(
    pipeline: Callable,
    class_labels: Sequence[int],
    *,
    seed: int = 0,
    batch_size: int = 32,
    feature_network: nn.Module | None = None,
    reference_statistics: tuple[np.ndarray, np.ndarray] | None = None,
    reference_batches: Iterable | None = None,
    logits_network: nn.Module | None = None,
    inception_score_splits: int = 10,
    classifier: Callable[[torch.Tensor], torch.Tensor] | None = None,
    num_classes: int | None = None,
    npz_path: str | os.PathLike | None = None,
    png_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    device: torch.device | str | None = None,
    generator_device: str | torch.device = "cpu",
    progress: bool = False,
    **sampling_kwargs,
) -> dict:
    r"""
    Sample the evaluation set and score it. Run it on every process of an `accelerate launch`: each process draws and
    scores its shard, and the metrics are combined across processes.

    Args:
        pipeline (`Callable`): the class-conditional pipeline (see `glotok_hf.evaluation.sampling`).
        class_labels (`Sequence[int]`): the label of every image, e.g. `balanced_class_labels(1000, 50)`.
        seed, batch_size, generator_device, **sampling_kwargs: see [`iter_samples`].
        feature_network (`nn.Module`, *optional*): FID feature network; gFID needs it and a reference.
        reference_statistics (`tuple`, *optional*): `(mu, sigma)` of the reference features (e.g. an ADM `.npz`).
        reference_batches (iterable, *optional*): real images in [-1, 1] (tensors or dicts with `pixel_values`); each
            process passes its own shard. Used instead of `reference_statistics`.
        logits_network (`nn.Module`, *optional*): class-logit network for the Inception Score.
        inception_score_splits (`int`, *optional*, defaults to 10): splits of the Inception Score.
        classifier (`Callable`, *optional*): `images in [-1, 1] -> logits` for class consistency.
        num_classes (`int`, *optional*): classes of the classifier (defaults to its `num_classes` attribute, or to
            `max(class_labels) + 1`).
        npz_path, png_dir, overwrite: lossless export, see [`sample_for_evaluation`].
        device (`torch.device`, *optional*): where the metric networks run (defaults to accelerate's device).
        progress (`bool`, *optional*, defaults to `False`): show progress bars.

    Returns:
        `dict` with `num_images`, `gfid` (and `gfid_reference`: `"statistics"` or `"images"`), `inception_score` and
        `inception_score_std`, `class_consistency` (`accuracy`, `per_class_accuracy`), and `sampling` (the protocol:
        seed, images per class, batch size, processes and the pipeline arguments), depending on what was given.
    """
    num_references = (reference_statistics is not None) + (reference_batches is not None)
    if num_references > 1 or (feature_network is None) != (num_references == 0):
        raise ValueError(
            "gFID needs a reference, reference statistics (.npz with mu/sigma) or real images (not both), and a "
            "feature network (Inception weights or a feature network file); give all or none of them."
        )
    state = process_state()
    device = torch.device(device) if device is not None else state.device
    fid = None
    if feature_network is not None:
        fid = FrechetDistance(feature_network).to(device)
        if reference_statistics is not None:
            fid.set_reference_statistics(*reference_statistics)
        else:
            for batch in reference_batches:
                images = batch["pixel_values"] if isinstance(batch, dict) else batch
                fid.update(images.to(device), real=True)
    inception = InceptionScore(logits_network, splits=inception_score_splits).to(device) if logits_network else None
    consistency = None
    if classifier is not None:
        num_classes = num_classes or getattr(classifier, "num_classes", None) or max(class_labels) + 1
        consistency = ClassConsistency(int(num_classes), classifier).to(device)

    def on_batch(batch: SampleBatch) -> None:
        images = batch.to_tensor().to(device)
        if fid is not None:
            fid.update(images, real=False)
        if inception is not None:
            inception.update(images)
        if consistency is not None:
            consistency.update(images, torch.from_numpy(batch.labels))

    local = sample_for_evaluation(
        pipeline,
        class_labels,
        seed=seed,
        batch_size=batch_size,
        npz_path=npz_path,
        png_dir=png_dir,
        overwrite=overwrite,
        on_batch=on_batch,
        generator_device=generator_device,
        progress=progress,
        **sampling_kwargs,
    )
    counts = np.bincount(np.asarray(class_labels, dtype=np.int64))
    result = {
        "num_images": len(class_labels),
        "num_images_this_process": len(local.indices),
        "sampling": {
            "seed": seed,
            "seed_rule": "image i uses a generator seeded seed + i",
            "num_classes": int((counts > 0).sum()),
            "images_per_class": int(counts[counts > 0].min()) if (counts > 0).any() else 0,
            "balanced": bool(len(set(counts[counts > 0].tolist())) == 1),
            "batch_size": batch_size,
            "num_processes": state.num_processes,
            "generator_device": str(generator_device),
            **{k: v for k, v in sampling_kwargs.items() if isinstance(v, (int, float, str, bool, type(None)))},
        },
    }
    if fid is not None:
        result["gfid"] = fid.compute()
        result["gfid_reference"] = "statistics" if reference_statistics is not None else "images"
    if inception is not None:
        result["inception_score"], result["inception_score_std"] = inception.compute()
    if consistency is not None:
        result["class_consistency"] = consistency.compute()
    return result


__all__ = ["evaluate_generation"]
