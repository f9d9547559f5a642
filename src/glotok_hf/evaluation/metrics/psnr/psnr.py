# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""PSNR as an `evaluate` metric (a thin wrapper of torchmetrics; for many images use the torch API of
`glotok_hf.evaluation.reconstruction`, which avoids the Arrow round trip)."""

from torchmetrics.functional.image import peak_signal_noise_ratio

from glotok_hf.evaluation.evaluate_modules import image_pair_metric

_DESCRIPTION = """
Peak signal-to-noise ratio in dB, computed per image as 10 log10(data_range^2 / MSE) and averaged over images.
Identical images give inf. The default data_range of 2.0 is for images in [-1, 1] (the glotok-hf convention); use 255
for uint8 images and 1.0 for images in [0, 1].
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of images): reconstructed images, each an array of shape (height, width, channels).
    references (`list` of images): original images of the same shapes.
    data_range (`float`, *optional*, defaults to 2.0): max - min of the value range.
Returns:
    psnr (`float`): mean per-image PSNR in dB.
Examples:
    >>> import numpy as np
    >>> psnr = evaluate.load("path/to/glotok_hf/evaluation/metrics/psnr")
    >>> image = np.zeros((4, 4, 3))
    >>> round(psnr.compute(predictions=[image + 0.1], references=[image])["psnr"], 4)  # 10 log10(4 / 0.01)
    26.0206
"""

_CITATION = ""


Psnr = image_pair_metric("psnr", peak_signal_noise_ratio, _DESCRIPTION, _KWARGS_DESCRIPTION, _CITATION)
