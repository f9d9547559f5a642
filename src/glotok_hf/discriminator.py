# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""PatchGAN discriminator of the GloTok tokenizer's adversarial loss, as a transformers model (safetensors weights,
`AutoModel` once registered). The layout follows pix2pix (Isola et al. 2017) as used by taming-transformers, LlamaGen
and FQGAN; it is re-implemented here, nothing is copied."""

from functools import partial

import torch
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel
from transformers import initialization as init

from .utils import is_int

NORM_TYPES = ("batch", "group", "none")


class GloTokDiscriminatorConfig(PreTrainedConfig):
    r"""
    Configuration of a [`GloTokDiscriminator`]: a PatchGAN (pix2pix) discriminator of `num_layers` stride-2 4x4
    convolutions, one stride-1 4x4 convolution and a stride-1 4x4 output convolution. The defaults are the
    taming-transformers / LlamaGen / FQGAN discriminator (70x70 receptive field, 30x30 logits for 256x256 images).

    Args:
        in_channels (`int`, *optional*, defaults to 3): channels of the images.
        base_channels (`int`, *optional*, defaults to 64):
            channels of the first convolution; each further layer doubles them, up to `8 * base_channels`.
        num_layers (`int`, *optional*, defaults to 3): stride-2 convolutions; images need a side of at least
            `3 * 2**num_layers` pixels.
        norm_type (`str`, *optional*, defaults to `"batch"`):
            normalisation after each inner convolution: `"batch"` (taming / LlamaGen / FQGAN), `"group"` (batch-size
            and process-count independent, so 1- and 2-process training agree) or `"none"`.
        norm_num_groups (`int`, *optional*, defaults to 32): groups of `"group"` normalisation; must divide every
            inner width (`base_channels * 2**n`, capped at `8 * base_channels`).
        leaky_relu_slope (`float`, *optional*, defaults to 0.2): negative slope of the LeakyReLU activations.
    """

    model_type = "glotok_discriminator"

    in_channels: int = 3
    base_channels: int = 64
    num_layers: int = 3
    norm_type: str = "batch"
    norm_num_groups: int = 32
    leaky_relu_slope: float = 0.2

    def __post_init__(self, **kwargs):
        self._validate()
        super().__post_init__(**kwargs)

    @property
    def channels(self) -> list[int]:
        """Output channels of every convolution but the last (1 channel of logits)."""
        return [self.base_channels * min(2**n, 8) for n in range(self.num_layers + 1)]

    @property
    def min_image_size(self) -> int:
        """Smallest image side that gives at least one logit: `3 * 2**num_layers`."""
        return 3 * 2**self.num_layers

    def _validate(self) -> None:
        """The one validation of the config, run by `__post_init__`."""
        name, slope = type(self).__name__, self.leaky_relu_slope
        ints = {f: getattr(self, f) for f in ("in_channels", "base_channels", "num_layers", "norm_num_groups")}
        for field, value in ints.items():
            if not is_int(value):
                raise TypeError(f"{name}.{field} must be an int, got {type(value).__name__} {value!r}.")
        problems = [
            *((value < 1, f"{field} must be >= 1, got {value}") for field, value in ints.items()),
            (self.norm_type not in NORM_TYPES, f"norm_type must be one of {NORM_TYPES}, got {self.norm_type!r}"),
            (isinstance(slope, bool) or not isinstance(slope, (int, float)) or not 0 <= slope < 1,
             f"leaky_relu_slope must be a float in [0, 1), got {slope!r}"),
            (self.norm_type == "group" and any(c % self.norm_num_groups for c in self.channels[1:]),
             f"norm_num_groups={self.norm_num_groups} must divide every inner width {self.channels[1:]}"),
        ]  # fmt: skip
        for failed, message in problems:
            if failed:
                raise ValueError(f"{name}.{message}.")


class GloTokDiscriminator(PreTrainedModel):
    r"""
    PatchGAN discriminator: images `(batch, in_channels, H, W)` in [-1, 1] -> per-patch logits
    `(batch, 1, H // 2**num_layers - 2, W // 2**num_layers - 2)`; a large logit means "real". Pair it with the
    losses of `glotok_hf.losses.gan` / [`GloTokObjective`].

    Example:

    ```python
    >>> import torch
    >>> from glotok_hf.discriminator import GloTokDiscriminator, GloTokDiscriminatorConfig
    >>> discriminator = GloTokDiscriminator(GloTokDiscriminatorConfig(base_channels=8, num_layers=2, norm_type="group",
    ...                                                               norm_num_groups=4))
    >>> discriminator(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 1, 6, 6])

    ```
    """

    config: GloTokDiscriminatorConfig
    base_model_prefix = "discriminator"
    main_input_name = "pixel_values"
    input_modalities = ("image",)

    def __init__(self, config: GloTokDiscriminatorConfig):
        super().__init__(config)
        channels, slope = config.channels, config.leaky_relu_slope
        norms = {"batch": nn.BatchNorm2d, "group": partial(nn.GroupNorm, config.norm_num_groups), "none": nn.Identity}
        layers = [nn.Conv2d(config.in_channels, channels[0], 4, stride=2, padding=1), nn.LeakyReLU(slope)]
        for n in range(1, config.num_layers + 1):
            stride = 2 if n < config.num_layers else 1  # the last inner convolution keeps the resolution (-1 px)
            conv = nn.Conv2d(channels[n - 1], channels[n], 4, stride, padding=1, bias=config.norm_type == "none")
            layers += [conv, norms[config.norm_type](channels[n]), nn.LeakyReLU(slope)]
        layers.append(nn.Conv2d(channels[-1], 1, 4, stride=1, padding=1))
        self.layers = nn.Sequential(*layers)
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # pix2pix / taming initialisation: convolutions N(0, 0.02), norm scales N(1, 0.02), biases 0.
        if isinstance(module, nn.Conv2d):
            init.normal_(module.weight, 0.0, 0.02)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
            init.normal_(module.weight, 1.0, 0.02)
            init.zeros_(module.bias)
            if isinstance(module, nn.BatchNorm2d):
                init.zeros_(module.running_mean)
                init.ones_(module.running_var)
                init.zeros_(module.num_batches_tracked)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch, in_channels, H, W)`):
                real images or reconstructions in [-1, 1]; `H, W >= config.min_image_size`. Unchecked: the training
                loop hands it what the tokenizer and the data pipeline already checked.

        Returns:
            `torch.FloatTensor` of shape `(batch, 1, H // 2**num_layers - 2, W // 2**num_layers - 2)`: logits.
        """
        return self.layers(pixel_values.to(self.layers[0].weight.dtype))


__all__ = ["GloTokDiscriminator", "GloTokDiscriminatorConfig"]
