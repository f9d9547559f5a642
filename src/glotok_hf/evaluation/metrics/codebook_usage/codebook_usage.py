# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""Codebook usage and perplexity as an `evaluate` metric, from the code indices of each image."""

import datasets
import evaluate
import numpy as np
import torch

from glotok_hf.evaluation.codebook import code_counts, codebook_statistics
from glotok_hf.utils import is_int

_DESCRIPTION = """
How much of a codebook a tokenizer uses, from all code indices given: usage is the fraction of the num_codes codes that
occur at least once; perplexity is exp(H(p)) of the code frequencies p, the effective number of codes in use (num_codes
when all are equally frequent, 1 when one takes everything); normalized_perplexity is perplexity / num_codes.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list[int]`): the code indices of each image (e.g. a flattened (h, w) index map).
    num_codes (`int`): the size of the codebook.
Returns:
    usage (`float`): fraction of codes used, in [0, 1].
    perplexity (`float`): exp of the entropy (nats) of the code frequencies, in [1, num_codes].
    normalized_perplexity (`float`): perplexity / num_codes, in [1 / num_codes, 1].
    num_indices (`int`): how many indices were counted.
Examples:
    >>> usage = evaluate.load("path/to/glotok_hf/evaluation/metrics/codebook_usage")
    >>> usage.compute(predictions=[[0, 1], [2, 3]], num_codes=8)
    {'usage': 0.5, 'perplexity': 4.0, 'normalized_perplexity': 0.5, 'num_indices': 4}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class CodebookUsage(evaluate.Metric):
    def _info(self):
        features = datasets.Features({"predictions": datasets.List(datasets.Value("int64"))})
        return evaluate.MetricInfo(_DESCRIPTION, "", inputs_description=_KWARGS_DESCRIPTION, features=features)

    def _compute(self, predictions, num_codes=None):
        if not is_int(num_codes) or num_codes <= 0:
            raise ValueError(
                f"codebook_usage needs num_codes, the codebook size, as a positive int; got {num_codes!r}."
            )
        indices = np.concatenate([np.asarray(p, dtype=np.int64).reshape(-1) for p in predictions] or [np.zeros(0)])
        if indices.size == 0 or indices.min() < 0 or indices.max() >= num_codes:
            raise ValueError(f"codebook_usage needs one or more code indices in [0, {num_codes}), got {indices}.")
        statistics = codebook_statistics(code_counts(torch.from_numpy(indices), num_codes))
        del statistics["size"]  # num_codes, given
        return {**statistics, "num_indices": int(indices.size)}
