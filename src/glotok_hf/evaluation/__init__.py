# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""Evaluation: reconstruction (PSNR, SSIM, LPIPS, rFID), generation (gFID, IS, class consistency), codebook usage and
perplexity, the VA-VAE uniformity metrics, reproducible class-balanced sampling with ADM `.npz` export, and offline
`evaluate` modules. See docs/evaluation.md for the protocol."""

from .codebook import CodebookUsageWindow, code_counts, codebook_perplexity, codebook_usage
from .consistency import ClassConsistency, class_consistency, load_image_classifier
from .evaluate_modules import available_metrics, metric_path
from .fid import (
    FrechetDistance,
    InceptionScore,
    load_feature_network,
    load_inception,
    load_reference_statistics,
    save_statistics,
)
from .generation import evaluate_generation
from .reconstruction import ReconstructionMetrics, evaluate_reconstruction
from .sampling import balanced_class_labels, iter_samples, load_samples_npz, sample_for_evaluation, save_samples_npz
from .uniformity import UniformityResult, density_statistics, latent_uniformity

__all__ = [
    "ClassConsistency",
    "CodebookUsageWindow",
    "FrechetDistance",
    "InceptionScore",
    "ReconstructionMetrics",
    "UniformityResult",
    "available_metrics",
    "balanced_class_labels",
    "class_consistency",
    "code_counts",
    "codebook_perplexity",
    "codebook_usage",
    "density_statistics",
    "evaluate_generation",
    "evaluate_reconstruction",
    "iter_samples",
    "latent_uniformity",
    "load_feature_network",
    "load_image_classifier",
    "load_inception",
    "load_reference_statistics",
    "load_samples_npz",
    "metric_path",
    "sample_for_evaluation",
    "save_samples_npz",
    "save_statistics",
]
