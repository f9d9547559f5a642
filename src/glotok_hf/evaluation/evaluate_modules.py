# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""The `evaluate` metric scripts shipped with glotok-hf (package data under `glotok_hf/evaluation/metrics/`).

Load one offline with `evaluate.load(metric_path("psnr"))`; nothing is fetched from the Hub. The scripts wrap the
same computations as the torch API (`glotok_hf.evaluation.reconstruction`, `glotok_hf.evaluation.codebook`) for
code that already reports through `evaluate`; for many or large images the torch API is much faster (no Arrow).
"""

from pathlib import Path

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


__all__ = ["available_metrics", "metric_path"]
