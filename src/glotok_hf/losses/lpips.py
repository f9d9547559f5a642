# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
#
# LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric", BSD-2) with the
# VGG16 backbone (Simonyan & Zisserman 2015); re-implemented here, nothing is copied. torchvision is not a dependency.
"""LPIPS perceptual distance (VGG16 variant, v0.1 linear heads) that loads only from a local safetensors file.

Nothing is ever downloaded. Make the weights file once from two public checkpoints:

1. torchvision's ImageNet VGG16, https://download.pytorch.org/models/vgg16-397923af.pth (528 MB; only the 13
   convolutions, 59 MB, are kept);
2. the LPIPS v0.1 linear heads for VGG, `vgg.pth` (7 kB), shipped in the `lpips` package (`lpips/weights/v0.1/vgg.pth`)
   and in torchmetrics (`torchmetrics/functional/image/lpips_models/vgg.pth`; used when no heads file is given);

with `glotok convert-lpips --vgg16 vgg16-397923af.pth --output lpips_vgg16.safetensors` (or
[`convert_lpips_checkpoint`]), then load it with `LPIPS.from_pretrained("lpips_vgg16.safetensors")` or set
`GloTokLossConfig.perceptual_model_path`.
"""

import os
import pickle
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from ..utils import atomic_write

WEIGHTS_NAME = "lpips_vgg16.safetensors"
FORMAT_KEY, FORMAT_VALUE = "glotok_lpips", "vgg16-lin-v0.1"

# VGG16 "features" layout as in torchvision: an int is a 3x3 convolution (+ ReLU) with that many output channels,
# "M" a 2x2 max-pool. LPIPS taps the ReLU outputs relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3 (the last ReLU of
# each stage), so the final max-pool is not needed.
VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
LPIPS_CHANNELS = (64, 128, 256, 512, 512)
# Per-channel shift and scale that LPIPS applies to images in [-1, 1] before VGG (ImageNet statistics in that range).
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)


def _vgg16_features() -> tuple[nn.Sequential, tuple[int, ...]]:
    """VGG16's convolutional trunk with torchvision's module indices, and the indices of the tapped ReLUs."""
    layers, taps, in_channels = [], [], 3
    for item in VGG16_LAYOUT:
        if item == "M":
            taps.append(len(layers) - 1)  # the ReLU before each pool ends a stage
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(in_channels, item, kernel_size=3, padding=1), nn.ReLU()]
            in_channels = item
    taps.append(len(layers) - 1)
    return nn.Sequential(*layers), tuple(taps)


class LPIPS(nn.Module):
    r"""
    LPIPS distance with a VGG16 backbone: for images `x`, `y` in [-1, 1],
    `d(x, y) = sum_l mean_{h,w} w_l . (f_l(x) / ||f_l(x)|| - f_l(y) / ||f_l(y)||)^2`, with `f_l` the five VGG16 stage
    outputs (channel-normalised), and `w_l >= 0` the learned per-channel linear heads. `d(x, x) = 0` and
    `d(x, y) = d(y, x)`.

    The module is frozen (no parameter requires gradients) but differentiable with respect to its inputs. A freshly
    constructed `LPIPS()` has random weights and is meaningless as a metric; use [`LPIPS.from_pretrained`].
    """

    def __init__(self):
        super().__init__()
        self.features, self.taps = _vgg16_features()
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in LPIPS_CHANNELS)
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> "LPIPS":
        """Load the weights from a local `.safetensors` file made by [`convert_lpips_checkpoint`], or a folder holding
        one (`lpips_vgg16.safetensors`, or its only `.safetensors` file). Never downloads; a missing or wrong file
        raises `FileNotFoundError` / `ValueError` naming what was expected."""
        path = Path(path).expanduser()
        if path.is_dir():
            canonical = path / WEIGHTS_NAME
            candidates = [canonical] if canonical.is_file() else sorted(path.glob("*.safetensors"))
            if len(candidates) != 1:
                raise FileNotFoundError(
                    f"Expected {WEIGHTS_NAME} (or exactly one .safetensors file) in the folder {path}, found "
                    f"{[c.name for c in candidates]}. Make it with `glotok convert-lpips`."
                )
            path = candidates[0]
        elif not path.is_file():
            raise FileNotFoundError(
                f"LPIPS weights not found at {path}. Nothing is downloaded: make the file with `glotok convert-lpips` "
                "(see glotok_hf.losses.lpips for where to get torchvision's VGG16 and the LPIPS heads)."
            )
        elif path.suffix != ".safetensors":
            raise ValueError(
                f"LPIPS weights must be a .safetensors file made by `glotok convert-lpips`, got {path.name}; .pth "
                "files are converted first."
            )
        model = cls()
        model.load_state_dict(load_file(path, device="cpu"), strict=True)
        return model

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        r"""
        Args:
            input (`torch.FloatTensor` of shape `(batch, 3, H, W)`): images in [-1, 1] (e.g. reconstructions).
            target (`torch.FloatTensor` of the same shape): images in [-1, 1]. `H, W >= 16`.

        Returns:
            `torch.FloatTensor` of shape `(batch,)`: the distances (fp32).
        """
        if input.shape != target.shape or input.ndim != 4 or input.shape[1] != 3 or min(input.shape[-2:]) < 16:
            raise ValueError(
                "LPIPS needs input and target of the same shape (batch, 3, H, W): RGB images of at least 16x16 pixels "
                f"(4 poolings), got {tuple(input.shape)} and {tuple(target.shape)}."
            )
        features = self._normalized_features(input)
        # the target's activations are only kept for backward when it needs a gradient (it usually does not)
        with torch.set_grad_enabled(torch.is_grad_enabled() and target.requires_grad):
            target_features = self._normalized_features(target)
        with torch.autocast(device_type=input.device.type, enabled=False):  # the heads in fp32, as promised
            pairs = zip(self.heads, features, target_features)
            return sum(F.conv2d((f - g).pow(2), head.weight.float()).mean(dim=(1, 2, 3)) for head, f, g in pairs)

    def _normalized_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The five tapped VGG16 activations of `images`, each l2-normalised along channels, in fp32."""
        dtype = self.features[0].weight.dtype
        x = (images.to(dtype) - self.shift.to(dtype)) / self.scale.to(dtype)
        outputs = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                f = x.float()
                # unit vectors along channels; vector_norm's gradient is finite (0) where all channels are 0
                outputs.append(f / (torch.linalg.vector_norm(f, dim=1, keepdim=True) + 1e-10))
        return outputs


def default_lpips_heads_path() -> Path:
    """The LPIPS v0.1 VGG heads that torchmetrics (a dependency) ships: `torchmetrics/functional/image/lpips_models/`
    `vgg.pth`."""
    import torchmetrics

    return Path(torchmetrics.__file__).parent / "functional" / "image" / "lpips_models" / "vgg.pth"


def _load_pth(path: Path, what: str) -> dict[str, torch.Tensor]:
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, ValueError, pickle.UnpicklingError) as err:  # not a (weights-only) checkpoint
        raise ValueError(f"Could not read {what} checkpoint {path} with torch.load(weights_only=True): {err}") from err
    return state_dict.get("state_dict", state_dict)


def convert_lpips_checkpoint(
    vgg16_path: str | os.PathLike,
    heads_path: str | os.PathLike | None = None,
    output_path: str | os.PathLike = WEIGHTS_NAME,
    *,
    overwrite: bool = False,
) -> Path:
    r"""
    Convert torchvision's VGG16 and the LPIPS v0.1 heads into the single safetensors file [`LPIPS.from_pretrained`]
    reads. Both `.pth` files are read with `torch.load(..., weights_only=True)` (no code is unpickled).

    Args:
        vgg16_path (`str` or `os.PathLike`): torchvision's `vgg16-397923af.pth` (keys `features.N.weight/bias`; the
            classifier is dropped). A `vgg16_bn` checkpoint is rejected.
        heads_path (`str` or `os.PathLike`, *optional*): the LPIPS heads `vgg.pth` (keys `lin{0..4}.model.1.weight`,
            as in the `lpips` package and torchmetrics). Defaults to the copy torchmetrics ships.
        output_path (`str` or `os.PathLike`, *optional*, defaults to `"lpips_vgg16.safetensors"`): where to write.
        overwrite (`bool`, *optional*, defaults to `False`): replace an existing `output_path`; without it an
            existing file raises `FileExistsError`.

    Returns:
        `Path` of the written file.
    """
    output_path = Path(output_path).expanduser()
    if output_path.suffix != ".safetensors":
        raise ValueError(f"output_path must end in .safetensors, got {output_path}.")
    if output_path.exists() and not overwrite:  # before reading the 528 MB checkpoint
        raise FileExistsError(f"{output_path} already exists; pass overwrite=True (--overwrite) to replace it.")
    heads_path = heads_path or default_lpips_heads_path()  # torch.load names a missing file
    vgg = _load_pth(Path(vgg16_path).expanduser(), "VGG16")
    heads = _load_pth(Path(heads_path).expanduser(), "LPIPS heads")

    state_dict = {}
    for key, expected in LPIPS().state_dict().items():
        if key.startswith("features."):
            source = vgg.get(key)
            if source is None:
                raise ValueError(
                    f"{vgg16_path} is not torchvision's VGG16 (no {key!r}); expected vgg16-397923af.pth from "
                    "https://download.pytorch.org/models/vgg16-397923af.pth."
                )
        else:
            index = int(key.split(".")[1])
            matches = [v for k, v in heads.items() if re.fullmatch(rf"lin{index}\.model\.(\d+\.)?weight", k)]
            if len(matches) != 1:
                raise ValueError(
                    f"{heads_path} is not an LPIPS VGG heads file (expected one key lin{index}.model.1.weight, found "
                    f"keys {sorted(heads)[:8]})."
                )
            source = matches[0]
        if source.shape != expected.shape:
            raise ValueError(
                f"{key}: expected shape {tuple(expected.shape)}, got {tuple(source.shape)}; is this the VGG16 (not "
                "VGG16-BN) checkpoint and the VGG (not AlexNet/SqueezeNet) LPIPS heads?"
            )
        state_dict[key] = source.detach().to(torch.float32).contiguous()
    metadata = {"format": "pt", FORMAT_KEY: FORMAT_VALUE}
    return atomic_write(output_path, lambda tmp: save_file(state_dict, str(tmp), metadata=metadata))


__all__ = ["LPIPS", "convert_lpips_checkpoint", "default_lpips_heads_path"]
