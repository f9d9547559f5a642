# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""Reconstruction metrics of a tokenizer: PSNR, SSIM (torchmetrics), LPIPS (local weights), rFID, codebook usage and
perplexity per codebook, and optionally the uniformity of a branch's latent space, on images in [-1, 1] with the
reconstructions clamped and (by default) rounded to 8-bit levels. Definitions: docs/evaluation.md.
"""

from collections.abc import Iterable

import torch
from torch import nn
from torchmetrics.aggregation import MeanMetric, SumMetric
from torchmetrics.functional.image import peak_signal_noise_ratio
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure
from tqdm.auto import tqdm

from ..data import pixels_to_uint8, uint8_to_pixels
from .codebook import code_counts, codebook_statistics
from .fid import FrechetDistance
from .uniformity import latent_uniformity

DATA_RANGE = 2.0  # images live in [-1, 1]


def prepare_images(images: torch.Tensor, quantize: bool = True) -> torch.Tensor:
    """Clamp images to [-1, 1] (float32) and, when `quantize`, round them to the 256 levels of an 8-bit PNG."""
    return uint8_to_pixels(pixels_to_uint8(images)) if quantize else images.detach().float().clamp(-1, 1)


class ReconstructionMetrics(nn.Module):
    r"""
    Accumulates PSNR, SSIM and, when given, LPIPS and rFID over batches of (reconstruction, original) pairs.
    The states are torchmetrics states, synchronised across processes at [`compute`] under `torch.distributed`.

    Args:
        lpips (`nn.Module`, *optional*): `(input, target) -> (batch,)` perceptual distances of images in [-1, 1],
            e.g. `glotok_hf.losses.lpips.LPIPS.from_pretrained(path)`.
        feature_network (`nn.Module`, *optional*): feature network for rFID (see `glotok_hf.evaluation.fid`).
        quantize (`bool`, *optional*, defaults to `True`): score reconstructions as 8-bit images.
    """

    def __init__(self, lpips: nn.Module | None = None, feature_network: nn.Module | None = None, quantize=True):
        super().__init__()
        self.quantize = quantize
        self.psnr = PeakSignalNoiseRatio(data_range=DATA_RANGE, dim=(1, 2, 3))
        self.ssim = StructuralSimilarityIndexMeasure(data_range=DATA_RANGE)
        self.num_images = SumMetric()
        self.lpips = lpips.eval() if lpips is not None else None
        self.lpips_mean = MeanMetric() if lpips is not None else None
        self.fid = FrechetDistance(feature_network, quantize=quantize) if feature_network is not None else None

    @torch.no_grad()
    def update(self, reconstructions: torch.Tensor, originals: torch.Tensor) -> None:
        """Add a batch: `reconstructions` and `originals` of shape `(batch, C, H, W)` in [-1, 1]."""
        recon = prepare_images(reconstructions, self.quantize)
        target = prepare_images(originals, self.quantize)
        self.psnr.update(recon, target)
        self.ssim.update(recon, target)
        self.num_images.update(torch.tensor(float(recon.shape[0]), device=recon.device))
        if self.lpips is not None:
            self.lpips_mean.update(self.lpips(recon, target).float())
        if self.fid is not None:
            self.fid.update(target, real=True)
            self.fid.update(recon, real=False)

    def compute(self) -> dict[str, float]:
        """`{"num_images", "psnr", "ssim"[, "lpips"][, "rfid"]}` as Python numbers."""
        out = {
            "num_images": int(self.num_images.compute()),
            "psnr": float(self.psnr.compute()),
            "ssim": float(self.ssim.compute()),
        }
        if self.lpips_mean is not None:
            out["lpips"] = float(self.lpips_mean.compute())
        if self.fid is not None:
            out["rfid"] = self.fid.compute()
        return out


@torch.no_grad()
def reconstruct(model, pixel_values: torch.Tensor) -> tuple:
    """Encode one batch of user images (validated) and decode its codes: `(codes, reconstructions, psnr)`, the
    reconstructions float32 on the CPU in [-1, 1], the PSNR (dB, on [0, 1] images) a list with one value per image.
    The one reconstruction of `glotok reconstruct` and the demo's Tokenize tab."""
    with torch.no_grad():
        codes = model.encode(pixel_values, validate=True)
        reconstructions = model.decode(**codes.indices).sample.float().clamp(-1, 1).cpu()
    originals = (pixel_values.float().cpu() + 1) / 2
    psnr = peak_signal_noise_ratio(
        (reconstructions + 1) / 2, originals, data_range=1.0, reduction="none", dim=(1, 2, 3)
    )
    return codes, reconstructions, psnr.tolist()


def evaluate_reconstruction(
    model: nn.Module,
    batches: Iterable,
    *,
    lpips: nn.Module | None = None,
    feature_network: nn.Module | None = None,
    quantize: bool = True,
    autocast_dtype: torch.dtype | None = None,
    uniformity_images: int = 0,
    uniformity_branch: str = "semantic",
    uniformity_flip: bool = True,
    uniformity_kwargs: dict | None = None,
    progress: bool = False,
) -> dict:
    r"""
    Tokenize and detokenize every image (`model.encode` -> indices -> `model.decode`) and score the reconstructions.

    Every process passes its own shard of the data; the metrics, code counts and uniformity latents are combined
    across processes, so every process returns the global figures.

    Args:
        model ([`GloTokModel`]): the tokenizer (in eval mode; its device is used).
        batches (iterable): batches of images in [-1, 1], as tensors `(B, 3, H, W)`, dicts with `pixel_values`
            (as `glotok_hf.data.collate_images` makes them), or tuples whose first item is the images.
        lpips (`nn.Module`, *optional*): LPIPS distance (see [`ReconstructionMetrics`]).
        feature_network (`nn.Module`, *optional*): feature network for rFID.
        quantize (`bool`, *optional*, defaults to `True`): score reconstructions as 8-bit images.
        autocast_dtype (`torch.dtype`, *optional*): run the tokenizer under autocast with this dtype (e.g. bf16).
        uniformity_images (`int`, *optional*, defaults to 0): keep the latent maps of this many images (in total
            over processes) and report [`latent_uniformity`] on them; 0 skips it.
        uniformity_branch (`str`, *optional*, defaults to `"semantic"`): the branch whose quantized latents are
            measured (`"semantic"` or `"visual"`).
        uniformity_flip (`bool`, *optional*, defaults to `True`): also encode the flipped images for the draws.
        uniformity_kwargs (`dict`, *optional*): `num_points`, `num_repeats`, `seed`, `perplexity`, `max_iter` for
            [`latent_uniformity`].
        progress (`bool`, *optional*, defaults to `False`): show a progress bar.

    Returns:
        `dict` with `num_images`, `psnr`, `ssim`, `lpips` / `rfid` when their networks are given, `codebooks`
        (per enabled codebook: `size`, `usage`, `perplexity`, `normalized_perplexity = perplexity / size`), and
        `uniformity` when asked.
    """
    branches = [name for name in ("semantic", "visual") if getattr(model, name, None) is not None]
    if uniformity_images and uniformity_branch not in branches:
        raise ValueError(f"The tokenizer has no {uniformity_branch} codebook to measure the uniformity of.")
    device = next(model.parameters()).device
    metrics = ReconstructionMetrics(lpips=lpips, feature_network=feature_network, quantize=quantize).to(device)
    sizes = {name: getattr(model, name).quantizer.num_codes for name in branches}
    counts = {name: torch.zeros(size, dtype=torch.long, device=device) for name, size in sizes.items()}
    num_processes = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    keep_per_process = -(-uniformity_images // num_processes)
    kept, kept_flipped = [], []
    autocast = torch.autocast(device.type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None)
    for batch in tqdm(batches, desc="reconstruction", disable=not progress):
        if isinstance(batch, (dict, list, tuple)):  # a collate_images dict, or a tuple whose first item is the images
            batch = batch["pixel_values"] if isinstance(batch, dict) else batch[0]
        images = batch.to(device)
        with autocast:
            encoded = model.encode(images, validate=True)  # an entry point: reject e.g. [0, 255] images clearly
            reconstructions = model.decode(**encoded.indices).sample
        metrics.update(reconstructions.float(), images)
        for name in branches:
            counts[name] += code_counts(getattr(encoded, f"{name}_indices"), sizes[name])
        missing = keep_per_process - sum(len(k) for k in kept)
        if missing > 0:
            kept.append(getattr(encoded, f"{uniformity_branch}_quantized")[:missing].float().cpu())
            if uniformity_flip:
                with autocast:
                    flipped = model.encode(images[:missing].flip(-1))
                kept_flipped.append(getattr(flipped, f"{uniformity_branch}_quantized").float().cpu())
    result = metrics.compute()
    for branch_counts in counts.values():
        if num_processes > 1:
            torch.distributed.all_reduce(branch_counts, op=torch.distributed.ReduceOp.SUM)
    result["codebooks"] = {name: codebook_statistics(branch_counts) for name, branch_counts in counts.items()}
    if uniformity_images:
        maps = _gather_maps(kept, num_processes)[:uniformity_images]
        flipped_maps = _gather_maps(kept_flipped, num_processes)[:uniformity_images] if uniformity_flip else None
        stats = latent_uniformity(maps, flipped_maps, **(uniformity_kwargs or {}))
        result["uniformity"] = {"branch": uniformity_branch, "num_images": len(maps), **stats.to_dict()}
    return result


def _gather_maps(chunks: list[torch.Tensor], num_processes: int) -> torch.Tensor:
    local = torch.cat(chunks) if chunks else torch.empty(0)
    if num_processes == 1:
        return local
    gathered = [None] * num_processes
    torch.distributed.all_gather_object(gathered, local)
    return torch.cat([t for t in gathered if t.numel()])


__all__ = ["DATA_RANGE", "ReconstructionMetrics", "evaluate_reconstruction", "prepare_images"]
