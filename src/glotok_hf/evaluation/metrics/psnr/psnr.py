# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""PSNR as an `evaluate` metric (a thin wrapper of torchmetrics; for many images use the torch API of
`glotok_hf.evaluation.reconstruction`, which avoids the Arrow round trip)."""

import datasets
import evaluate
import numpy as np
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio

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


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Psnr(evaluate.Metric):
    def _info(self):
        image = datasets.List(datasets.List(datasets.List(datasets.Value("float32"))))
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": image, "references": image}),
        )

    def _compute(self, predictions, references, data_range=2.0):
        if len(predictions) == 0:
            raise ValueError("psnr needs at least one image.")
        values = []
        for prediction, reference in zip(predictions, references):
            prediction = torch.from_numpy(np.asarray(prediction, dtype=np.float64))
            reference = torch.from_numpy(np.asarray(reference, dtype=np.float64))
            if prediction.shape != reference.shape or prediction.ndim != 3:
                raise ValueError(
                    f"Each prediction and reference must be one (height, width, channels) image of the same shape, "
                    f"got {tuple(prediction.shape)} and {tuple(reference.shape)}."
                )
            values.append(float(peak_signal_noise_ratio(prediction, reference, data_range=float(data_range))))
        return {"psnr": float(np.mean(values))}
