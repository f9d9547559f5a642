# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""Evaluation utilities: codebook statistics (usage, perplexity) for training logs and evaluation reports."""

from .codebook import CodebookUsageWindow, code_counts, codebook_perplexity, codebook_usage

__all__ = ["CodebookUsageWindow", "code_counts", "codebook_perplexity", "codebook_usage"]
