# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""PSNR as an `evaluate` metric (a thin wrapper of torchmetrics; for many images use the torch API of
`glotok_hf.evaluation.reconstruction`, which avoids the Arrow round trip)."""

from torchmetrics.functional.image import peak_signal_noise_ratio

from glotok_hf.evaluation.evaluate_modules import image_pair_metric

_DESCRIPTION = """
Peak signal-to-noise ratio in dB, computed per image as 10 log10(data_range^2 / MSE) and averaged over images.
Identical images give inf.
"""

_RETURNS = """    psnr (`float`): mean per-image PSNR in dB.
Examples:
    >>> import numpy as np
    >>> psnr = evaluate.load("path/to/glotok_hf/evaluation/metrics/psnr")
    >>> image = np.zeros((4, 4, 3))
    >>> round(psnr.compute(predictions=[image + 0.1], references=[image])["psnr"], 4)  # 10 log10(4 / 0.01)
    26.0206
"""


Psnr = image_pair_metric("psnr", peak_signal_noise_ratio, _DESCRIPTION, _RETURNS)
