# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""The `evaluate` metric scripts shipped with glotok-hf (`glotok_hf/evaluation/metrics/`), loaded offline with
`evaluate.load(metric_path("psnr"))`; for many or large images the torch API is much faster (no Arrow).
"""

from pathlib import Path

import numpy as np
import torch

METRICS_DIR = Path(__file__).resolve().parent / "metrics"


def available_metrics() -> list[str]:
    """Names of the shipped `evaluate` metrics."""
    return sorted(p.name for p in METRICS_DIR.iterdir() if (p / f"{p.name}.py").is_file())


def metric_path(name: str) -> str:
    """The absolute folder of the shipped `evaluate` metric `name`, for `evaluate.load(metric_path(name))`.

    Example:

    ```python
    >>> import evaluate
    >>> from glotok_hf.evaluation.evaluate_modules import metric_path
    >>> usage = evaluate.load(metric_path("codebook_usage"))
    >>> usage.compute(predictions=[[0, 1, 2, 3]], num_codes=4)["perplexity"]
    4.0

    ```
    """
    folder = METRICS_DIR / str(name)
    if not (folder / f"{name}.py").is_file():
        raise ValueError(f"Unknown glotok-hf evaluate metric {name!r}; available: {available_metrics()}.")
    return str(folder)


IMAGE_PAIR_INPUTS = """
Args:
    predictions (`list` of images): reconstructed images, each an array of shape (height, width, channels).
    references (`list` of images): original images of the same shapes.
    data_range (`float`, *optional*, defaults to 2.0): max - min of the value range: 2.0 for images in [-1, 1] (the
        glotok-hf convention), 255 for uint8 images, 1.0 for images in [0, 1].
Returns:
"""


def image_pair_metric(name: str, metric_fn, description: str, returns: str, citation: str = "") -> type:
    """The `evaluate.Metric` class (named `name.capitalize()`) of the psnr and ssim scripts: `{name: mean over image
    pairs of metric_fn(prediction, reference, data_range=data_range)}`, images being `(height, width, channels)`;
    `returns` documents the result and gives examples."""
    import datasets
    import evaluate

    inputs_description = IMAGE_PAIR_INPUTS + returns

    def _info(self):
        image = datasets.List(datasets.List(datasets.List(datasets.Value("float32"))))
        features = datasets.Features({"predictions": image, "references": image})
        return evaluate.MetricInfo(description, citation, inputs_description=inputs_description, features=features)

    def _compute(self, predictions, references, data_range=2.0):
        pairs = [[torch.from_numpy(np.asarray(x, dtype=np.float64)).permute(2, 0, 1)[None] for x in pair]
                 for pair in zip(predictions, references)]  # fmt: skip
        if not pairs or len(predictions) != len(references) or any(a.shape != b.shape for a, b in pairs):
            raise ValueError(
                "Need one or more predictions and as many references, each one (height, width, channels) image of "
                "the same shape as its reference."
            )
        return {name: float(np.mean([float(metric_fn(a, b, data_range=float(data_range))) for a, b in pairs]))}

    attributes = {"__doc__": description + inputs_description, "_info": _info, "_compute": _compute}
    return type(name.capitalize(), (evaluate.Metric,), attributes)


__all__ = ["available_metrics", "image_pair_metric", "metric_path"]
