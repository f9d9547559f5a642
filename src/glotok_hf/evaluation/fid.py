# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""FID (rFID, gFID) and Inception Score through torchmetrics, with feature networks loaded from local files only.

Nothing here downloads (links in docs/evaluation.md). Feature networks: the TorchScript Inception-v3
`inception-2015-12-05.pt` of StyleGAN2-ADA / clean-fid (the ADM evaluator's network), torch-fidelity's
`weights-inception-2015-12-05-6726825d.pth` (needs `pip install torch-fidelity`), or any `nn.Module` / TorchScript
file mapping float32 images in [0, 1] `(batch, 3, H, W)` to `(batch, num_features)`. The metrics take images in
[-1, 1], rounded to 8-bit levels unless `quantize=False`. FIDs only compare with the same network and reference;
reference statistics come from real images or an `.npz` with `mu` and `sigma` (e.g. ADM's reference batches).
"""

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore as _TorchmetricsInceptionScore

from ..data import pixels_to_uint8
from ..utils import is_int
from .sampling import write_npz

INCEPTION_FEATURES = {"pool": "2048", "logits": "logits_unbiased"}
TORCHSCRIPT_INCEPTION = "inception-2015-12-05.pt"


def to_unit_range(images: torch.Tensor, quantize: bool = True) -> torch.Tensor:
    """Images in [-1, 1] -> float32 in [0, 1] (clamped; rounded to multiples of 1/255 when `quantize`)."""
    return pixels_to_uint8(images).float() / 255 if quantize else (images.detach().float().clamp(-1, 1) + 1) / 2


class _FrozenFeatures(nn.Module):
    """A feature network that stays in eval mode (like torchmetrics' `NoTrainInceptionV3`)."""

    def train(self, mode: bool = True) -> "_FrozenFeatures":
        return super().train(False)


class ImageFeatures(_FrozenFeatures):
    r"""Wraps a feature network so that it takes float32 images in [0, 1] `(batch, 3, H, W)` and returns float32
    features `(batch, num_features)` (flattened). `num_features` is the network's `num_features` attribute when it has
    one, else the size found by one probe pass on random `probe_size x probe_size` images.

    Args:
        network (`nn.Module` or `torch.jit.ScriptModule`): the feature network (set to eval mode, frozen).
        probe_size (`int`, *optional*, defaults to 64): image side of the probe pass that finds `num_features`.
        name (`str`, *optional*): a name for reports.
    """

    def __init__(self, network: nn.Module, probe_size: int = 64, name: str | None = None):
        super().__init__()
        self.network = network.eval()
        for parameter in network.parameters():
            parameter.requires_grad_(False)
        self.name = name or type(network).__name__
        num_features = getattr(network, "num_features", None)
        if not isinstance(num_features, int):
            device = next(iter(network.parameters()), torch.empty(0)).device
            with torch.no_grad():
                num_features = self(torch.rand(2, 3, probe_size, probe_size, device=device)).shape[1]
        self.num_features = num_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(images).flatten(1).float()


class InceptionV3Features(_FrozenFeatures):
    r"""torch-fidelity's Inception-v3 (through torchmetrics' `NoTrainInceptionV3`) built from a local weights file.

    Args:
        weights_path (`str` or `os.PathLike`): torch-fidelity's `weights-inception-2015-12-05-6726825d.pth`.
        output (`str`, *optional*, defaults to `"pool"`): `"pool"` (2048 pool features, for FID) or `"logits"`
            (1008 logits without bias, for the Inception Score).
    """

    def __init__(self, weights_path: str | os.PathLike, output: str = "pool"):
        super().__init__()
        path = Path(weights_path)
        try:
            import torch_fidelity  # noqa: F401
        except ImportError as err:
            raise ImportError(
                f"Loading the Inception weights {path.name} needs the torch-fidelity package (`pip install "
                "torch-fidelity`, which also installs torchvision). Without it, pass the TorchScript Inception "
                f"`{TORCHSCRIPT_INCEPTION}` of StyleGAN2-ADA / clean-fid instead (it needs no extra package), or any "
                "feature network as a TorchScript file."
            ) from err
        from torchmetrics.image.fid import NoTrainInceptionV3

        self.network = NoTrainInceptionV3(
            name="inception-v3-compat",
            features_list=[INCEPTION_FEATURES[output]],
            feature_extractor_weights_path=str(path),
        )
        self.name = f"torch-fidelity inception-v3-compat ({INCEPTION_FEATURES[output]})"
        self.num_features = 2048 if output == "pool" else 1008

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network((images * 255).round().clamp(0, 255).to(torch.uint8)).float()


class TorchScriptInceptionFeatures(_FrozenFeatures):
    r"""The TorchScript Inception-v3 of StyleGAN2-ADA / clean-fid (`inception-2015-12-05.pt`), a port of the
    TensorFlow network of the ADM evaluator. It takes images with values in [0, 255] at any size and resizes them
    itself.

    Args:
        network (`torch.jit.ScriptModule`): the loaded TorchScript module.
        output (`str`, *optional*, defaults to `"pool"`): `"pool"` (2048 features, `return_features=True`) or
            `"logits"` (log-probabilities over 1008 classes from its softmax without output bias, for the IS).
        pool ([`TorchScriptInceptionFeatures`], *optional*): a `"pool"` twin over the same network; given images it
            has just seen, `"logits"` applies the network's bias-free output layer to its features (one pass).
    """

    def __init__(self, network: nn.Module, output: str = "pool", pool: "TorchScriptInceptionFeatures | None" = None):
        super().__init__()
        self.network = network.eval()
        self.output, self.pool, self.last = output, pool, None
        self.name = f"torchscript inception-2015-12-05 ({output})"
        self.num_features = 2048 if output == "pool" else 1008

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images = (images * 255).round()
        if self.output == "pool":
            features = self.network(images, return_features=True).float()
            self.last = images, features
            return features
        seen = self.pool.last if self.pool is not None and hasattr(self.network, "output") else None
        if seen is not None and torch.equal(seen[0], images):
            probabilities = (seen[1] @ self.network.output.weight.float().t()).softmax(dim=1)
        else:
            probabilities = self.network(images, no_output_bias=True).float()
        # torchmetrics' Inception Score applies a softmax; log-probabilities give back the network's probabilities
        return probabilities.clamp_min(torch.finfo(torch.float32).tiny).log()


def _existing_file(path: str | os.PathLike, what: str) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}. Nothing is downloaded; give a local file.")
    return path


def load_inception(weights_path: str | os.PathLike, output: str = "pool", pool: nn.Module | None = None) -> nn.Module:
    r"""An Inception-v3 feature network from a local file: the TorchScript `inception-2015-12-05.pt`
    ([`TorchScriptInceptionFeatures`]) or torch-fidelity's `weights-inception-2015-12-05-6726825d.pth`
    ([`InceptionV3Features`], needs `torch-fidelity`). The file kind is read from its content.

    Args:
        weights_path (`str` or `os.PathLike`): the file.
        output (`str`, *optional*, defaults to `"pool"`): `"pool"` features (FID) or `"logits"` (Inception Score).
        pool (`nn.Module`, *optional*): the `"pool"` network loaded from the same file; a TorchScript `"logits"` one
            then shares its network and, for the images it has just seen, its pass (FID and IS in one pass).
    """
    if isinstance(pool, TorchScriptInceptionFeatures) and output == "logits":
        return TorchScriptInceptionFeatures(pool.network, output, pool=pool)
    if output not in INCEPTION_FEATURES:
        raise ValueError(f"output must be one of {list(INCEPTION_FEATURES)}, got {output!r}.")
    path = _existing_file(weights_path, "Inception weights")
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except RuntimeError:  # not a TorchScript archive: a state dict
        return InceptionV3Features(path, output=output)
    if "return_features" not in str(getattr(module.forward, "schema", "")):
        raise ValueError(
            f"{path} is a TorchScript module, but not the Inception-v3 of StyleGAN2-ADA / clean-fid (its forward has "
            "no `return_features` argument). Pass a generic TorchScript feature network as a feature network instead."
        )
    return TorchScriptInceptionFeatures(module, output=output)


def load_feature_network(path: str | os.PathLike, probe_size: int = 64) -> ImageFeatures:
    r"""A feature network saved as a TorchScript file (`torch.jit.save`): float32 images in [0, 1] `(batch, 3, H, W)`
    -> `(batch, num_features)` features."""
    file = _existing_file(path, "Feature network")
    try:
        module = torch.jit.load(str(file), map_location="cpu")
    except RuntimeError as err:
        raise ValueError(f"{file} is not a TorchScript file (save it with `torch.jit.save`): {err}") from err
    return ImageFeatures(module, probe_size=probe_size, name=file.name)


def _feature_network(network: nn.Module, probe_size: int) -> nn.Module:
    return network if isinstance(network, _FrozenFeatures) else ImageFeatures(network, probe_size=probe_size)


class FrechetDistance(nn.Module):
    r"""
    Fréchet distance between the feature distributions of real and generated (or reconstructed) images, accumulated
    batch by batch with torchmetrics' `FrechetInceptionDistance` (float64 sums; synchronised across processes when
    `torch.distributed` is initialised, e.g. under `accelerate launch`).

    Args:
        feature_network (`nn.Module`): images in [0, 1] -> `(batch, num_features)`; see [`load_inception`] and
            [`load_feature_network`]. Plain modules are wrapped in [`ImageFeatures`].
        quantize (`bool`, *optional*, defaults to `True`): round images to 8-bit levels before the features.
        probe_size (`int`, *optional*, defaults to 64): image side of the probe pass that finds the feature size of
            a plain module.

    Example:

    ```python
    >>> import torch
    >>> from glotok_hf.evaluation.fid import FrechetDistance
    >>> fid = FrechetDistance(torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten()))
    >>> images = torch.rand(16, 3, 8, 8) * 2 - 1
    >>> fid.update(images, real=True)
    >>> fid.update(images, real=False)
    >>> round(fid.compute(), 4)
    0.0

    ```
    """

    def __init__(self, feature_network: nn.Module, quantize: bool = True, probe_size: int = 64):
        super().__init__()
        self.feature_network = _feature_network(feature_network, probe_size)
        self.quantize = quantize
        self.metric = FrechetInceptionDistance(
            feature=self.feature_network, reset_real_features=False, normalize=True, sync_on_compute=True
        )

    @property
    def num_features(self) -> int:
        return self.feature_network.num_features

    @torch.no_grad()
    def update(self, images: torch.Tensor, real: bool) -> None:
        """Add a batch of images in [-1, 1] `(batch, 3, H, W)` to the real or the generated set."""
        self.metric.update(to_unit_range(images, self.quantize), real=real)

    def set_reference_statistics(self, mu: np.ndarray | torch.Tensor, sigma: np.ndarray | torch.Tensor) -> None:
        r"""Use precomputed reference statistics (mean `(F,)` and covariance `(F, F)`) as the real set, replacing any
        real images added so far. Under `torch.distributed` only rank 0 holds them, so the synchronised sums stay
        exact."""
        mu = torch.as_tensor(np.asarray(mu), dtype=torch.float64)
        sigma = torch.as_tensor(np.asarray(sigma), dtype=torch.float64)
        f = self.num_features
        if mu.shape != (f,) or sigma.shape != (f, f) or not (mu.isfinite().all() and sigma.isfinite().all()):
            raise ValueError(
                f"Reference statistics must be finite, with shapes mu ({f},) and sigma ({f}, {f}) to match the feature "
                f"network {self.feature_network.name!r}, got {tuple(mu.shape)} and {tuple(sigma.shape)}."
            )
        # torchmetrics keeps sum(x), sum(x x^T) and n; any n >= 2 reproduces (mu, sigma) exactly, 2 loses least.
        n = 2
        device = self.metric.real_features_sum.device
        scale = 0.0 if _distributed() and torch.distributed.get_rank() != 0 else 1.0
        self.metric.real_features_sum = (scale * n * mu).to(device)
        self.metric.real_features_cov_sum = (scale * ((n - 1) * sigma + n * torch.outer(mu, mu))).to(device)
        self.metric.real_features_num_samples = torch.tensor(int(scale) * n, device=device)

    def statistics(self, real: bool = True) -> tuple[np.ndarray, np.ndarray, int]:
        """`(mu, sigma, num_samples)` of the real or generated features so far (this process's share only)."""
        prefix = "real" if real else "fake"
        total = getattr(self.metric, f"{prefix}_features_sum")
        cov_sum = getattr(self.metric, f"{prefix}_features_cov_sum")
        n = int(getattr(self.metric, f"{prefix}_features_num_samples"))
        if n < 2:
            raise ValueError(f"Statistics need at least 2 {prefix} images, got {n}.")
        mu = total / n
        sigma = (cov_sum - n * torch.outer(mu, mu)) / (n - 1)
        return mu.cpu().numpy(), sigma.cpu().numpy(), n

    def compute(self) -> float:
        """The Fréchet distance (a Python float); torchmetrics refuses fewer than 2 real or generated images."""
        return float(self.metric.compute())

    def reset(self, real: bool = False) -> None:
        """Forget the generated images (and the real ones when `real=True`)."""
        self.metric.reset()
        if real:
            for name in ("real_features_sum", "real_features_cov_sum", "real_features_num_samples"):
                getattr(self.metric, name).zero_()


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


class InceptionScore(nn.Module):
    r"""
    Inception Score `exp(E_x KL(p(y|x) || p(y)))` with torchmetrics' `InceptionScore`, averaged over `splits` splits
    of the images (shuffled with a fixed `seed`, so results are reproducible).

    Args:
        logits_network (`nn.Module`): images in [0, 1] -> class logits `(batch, num_classes)`; for Inception, use
            [`load_inception`] with `output="logits"`.
        splits (`int`, *optional*, defaults to 10): number of splits (ADM uses splits of 5,000 of 50,000 images).
        quantize (`bool`, *optional*, defaults to `True`): round images to 8-bit levels first.
        seed (`int`, *optional*, defaults to 0): seed of the shuffle before splitting.
    """

    def __init__(self, logits_network: nn.Module, splits: int = 10, quantize: bool = True, seed: int = 0):
        super().__init__()
        if not is_int(splits) or splits < 1:
            raise ValueError(f"splits must be a positive int, got {splits!r}.")
        self.logits_network = _feature_network(logits_network, probe_size=64)
        self.quantize, self.seed = quantize, seed
        self.register_buffer("device_marker", torch.empty(0), persistent=False)  # follows `.to(device)`
        with warnings.catch_warnings():  # torchmetrics warns that it keeps every feature vector: that is intended
            warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
            self.metric = _TorchmetricsInceptionScore(feature=self.logits_network, splits=splits, normalize=False)

    @torch.no_grad()
    def update(self, images: torch.Tensor) -> None:
        """Add a batch of generated images in [-1, 1] `(batch, 3, H, W)`."""
        self.metric.update(to_unit_range(images, self.quantize))

    def compute(self) -> tuple[float, float]:
        """`(mean, std)` of the Inception Score over the splits."""
        if not self.metric.features and not _distributed():
            raise ValueError("The Inception Score needs images; none were added.")
        # torchmetrics all-gathers this list state element by element, so every process must hold the same number
        # of elements whatever its number of batches: exactly one (possibly empty) tensor.
        empty = torch.zeros(0, self.logits_network.num_features, device=self.device_marker.device)
        self.metric.features = [torch.cat(self.metric.features) if self.metric.features else empty]
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            torch.manual_seed(self.seed)
            warnings.filterwarnings("ignore", message=".*degrees of freedom.*")  # one split: no spread
            mean, std = self.metric.compute()
        return float(mean), float(std) if self.metric.splits > 1 else 0.0

    def reset(self) -> None:
        self.metric.reset()


def load_reference_statistics(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    r"""`(mu, sigma)` from an `.npz` with keys `mu` and `sigma` (ADM reference batches, or [`save_statistics`])."""
    with np.load(_existing_file(path, "Reference statistics"), allow_pickle=False) as data:
        if "mu" not in data or "sigma" not in data:
            raise ValueError(
                f"{path} holds {sorted(data.keys())}; reference statistics need the keys 'mu' and 'sigma' (an ADM "
                "reference batch or a file written by save_statistics). To use reference images instead, give "
                "an image folder or an ADM-style 'arr_0' image batch."
            )
        return np.asarray(data["mu"], dtype=np.float64), np.asarray(data["sigma"], dtype=np.float64)


def save_statistics(
    path: str | os.PathLike, mu: np.ndarray, sigma: np.ndarray, overwrite: bool = False, **metadata
) -> Path:
    """Write `mu` and `sigma` (and string/number `metadata`) to an `.npz` readable by [`load_reference_statistics`]
    and by the ADM evaluator's `read_statistics` for the `mu`/`sigma` part. Refuses to overwrite unless asked."""
    arrays = {"mu": np.asarray(mu), "sigma": np.asarray(sigma), **{k: np.asarray(v) for k, v in metadata.items()}}
    return write_npz(path, arrays, overwrite=overwrite)


__all__ = [
    "FrechetDistance",
    "ImageFeatures",
    "InceptionScore",
    "InceptionV3Features",
    "TorchScriptInceptionFeatures",
    "load_feature_network",
    "load_inception",
    "load_reference_statistics",
    "save_statistics",
    "to_unit_range",
]
