# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""Class consistency of class-conditional samples: how often a classifier (any callable `images in [-1, 1] ->
logits` whose class ids are the generator's) recognises the class each image was generated for, overall and per class.
"""

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchmetrics.classification import MulticlassStatScores

from ..data import pixels_to_uint8
from .sampling import uint8_to_pixel_values


class ClassConsistency(nn.Module):
    r"""
    Accuracy of a classifier on class-conditional samples, overall (over images) and per class, from torchmetrics'
    per-class stat scores (synchronised across processes at [`compute`] under `torch.distributed`).

    Args:
        num_classes (`int`): number of classes of the classifier (and the generator).
        classifier (`Callable`, *optional*): `images in [-1, 1] -> logits`; needed only for [`update`] with images.

    Example:

    ```python
    >>> import torch
    >>> from glotok_hf.evaluation.consistency import ClassConsistency
    >>> metric = ClassConsistency(num_classes=3)
    >>> metric.update_logits(torch.eye(3)[[0, 1, 2, 2]], labels=torch.tensor([0, 1, 2, 0]))
    >>> metric.compute()["accuracy"]
    0.75

    ```
    """

    def __init__(self, num_classes: int, classifier: Callable[[torch.Tensor], torch.Tensor] | None = None):
        super().__init__()
        self.num_classes = num_classes
        self.classifier = classifier
        self.stats = MulticlassStatScores(num_classes=num_classes, average="none")

    @torch.no_grad()
    def update_logits(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Add classifier outputs `logits (batch, num_classes)` for images generated for `labels (batch,)`."""
        logits = logits.detach().float().to(self.stats.device)
        labels = torch.as_tensor(labels, device=logits.device).long().reshape(-1)
        # torchmetrics checks the logits' shape, but neither the label count nor the label range
        if len(labels) != len(logits) or not ((labels >= 0) & (labels < self.num_classes)).all():
            raise ValueError(f"Need one label in [0, {self.num_classes}) per image, got {labels.tolist()}.")
        self.stats.update(logits, labels)

    @torch.no_grad()
    def update(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        """Classify `images (batch, 3, H, W)` in [-1, 1] generated for `labels (batch,)` and add the result."""
        if self.classifier is None:
            raise ValueError("ClassConsistency.update needs a classifier; pass one or use update_logits.")
        self.update_logits(self.classifier(images), labels)

    def compute(self) -> dict:
        """`{"accuracy": float, "per_class_accuracy": list[float | None]}`; a class without images gets `None`."""
        stats = self.stats.compute().cpu().double()  # (num_classes, [tp, fp, tn, fn, support])
        correct, support = stats[:, 0], stats[:, 4]
        return {
            "accuracy": float(correct.sum() / support.sum()) if support.sum() > 0 else float("nan"),
            "per_class_accuracy": [float(c / n) if n > 0 else None for c, n in zip(correct, support)],
        }


class ImageClassifier(nn.Module):
    r"""A classifier as `images in [-1, 1] -> logits`: a transformers image-classification model fed through its image
    processor (8-bit RGB arrays, exactly as decoded files, so the resizing, cropping and normalisation are the ones it
    was trained with), or a TorchScript network fed float32 images in [0, 1] (`processor=None`).
    """

    def __init__(self, model: nn.Module, processor=None, num_classes: int | None = None):
        super().__init__()
        self.model, self.processor, self.num_classes = model.eval(), processor, num_classes

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.processor is None:
            return self.model((images.detach().float().clamp(-1, 1) + 1) / 2).float()
        arrays = list(pixels_to_uint8(images).permute(0, 2, 3, 1).cpu().numpy())
        pixel_values = self.processor(images=arrays, return_tensors="pt")["pixel_values"]
        return self.model(pixel_values=pixel_values.to(self.model.device, self.model.dtype)).logits.float()


def load_image_classifier(path: str | os.PathLike, device: torch.device | str = "cpu") -> nn.Module:
    r"""
    A classifier `images in [-1, 1] (batch, 3, H, W) -> logits (batch, num_classes)` from a local path:

    - a folder saved by transformers (`config.json` + weights + `preprocessor_config.json`), loaded with
      `AutoModelForImageClassification` and `AutoImageProcessor`;
    - a TorchScript file taking float32 images in [0, 1].

    The result is an [`ImageClassifier`] with a `num_classes` attribute (`None` for TorchScript).
    """
    path = Path(path).expanduser()
    if not path.is_dir():  # torch.jit.load names a missing or foreign file
        return ImageClassifier(torch.jit.load(str(path), map_location=device))
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    # never transformers' interactive trust prompt: a classifier that ships its own code is refused with an error
    model = AutoModelForImageClassification.from_pretrained(path, trust_remote_code=False).to(device)
    processor = AutoImageProcessor.from_pretrained(path, trust_remote_code=False)
    return ImageClassifier(model, processor, num_classes=model.config.num_labels)


def class_consistency(
    classifier: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray,
    num_classes: int,
    batch_size: int = 64,
) -> dict:
    r"""One-shot class consistency of `images` (`(N, 3, H, W)` float in [-1, 1], or `(N, H, W, 3)` uint8 as in an
    ADM `.npz`) generated for `labels (N,)`; see [`ClassConsistency.compute`] for the result."""
    if isinstance(images, np.ndarray):
        images = uint8_to_pixel_values(images)
    labels = torch.as_tensor(np.asarray(labels)).long()
    metric = ClassConsistency(num_classes, classifier)
    for start in range(0, images.shape[0], batch_size):
        metric.update(images[start : start + batch_size], labels[start : start + batch_size])
    return metric.compute()


__all__ = ["ClassConsistency", "ImageClassifier", "class_consistency", "load_image_classifier"]
