# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""SSIM as an `evaluate` metric (a thin wrapper of torchmetrics; for many images use the torch API of
`glotok_hf.evaluation.reconstruction`, which avoids the Arrow round trip)."""

from torchmetrics.functional.image import structural_similarity_index_measure

from glotok_hf.evaluation.evaluate_modules import image_pair_metric

_DESCRIPTION = """
Structural similarity (Wang et al. 2004) with torchmetrics' Gaussian window (11x11, sigma 1.5), per image, averaged
over images. Identical images give 1.
"""

_RETURNS = """    ssim (`float`): mean per-image SSIM.
Examples:
    >>> import numpy as np
    >>> ssim = evaluate.load("path/to/glotok_hf/evaluation/metrics/ssim")
    >>> image = np.random.rand(16, 16, 3) * 2 - 1
    >>> ssim.compute(predictions=[image], references=[image])
    {'ssim': 1.0}
"""

_CITATION = """
@article{wang2004ssim,
  title={Image quality assessment: from error visibility to structural similarity},
  author={Wang, Zhou and Bovik, Alan C and Sheikh, Hamid R and Simoncelli, Eero P},
  journal={IEEE Transactions on Image Processing},
  year={2004}
}
"""


Ssim = image_pair_metric("ssim", structural_similarity_index_measure, _DESCRIPTION, _RETURNS, _CITATION)
