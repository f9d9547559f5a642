# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
#
# The CNN follows the VQGAN / LlamaGen VQ-16 architecture (taming-transformers, MIT; LlamaGen, MIT) and the branch
# adapters follow FQGAN (showlab/FQGAN); everything here is re-implemented, nothing is copied.
"""GloTok image tokenizer: VQGAN CNN + two adapters + two l2-normalised codebooks + residual learning module.

This file is shipped as Hub remote code by `save_pretrained`, so it must stay self-contained: it imports only torch,
transformers and `configuration_glotok`.
"""

import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel  # noqa: F401  (diffusers looks this name up in the defining module)
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput, can_return_tuple

from .configuration_glotok import GloTokConfig

# `encode(..., validate=True)` rejects pixel values beyond +-PIXEL_RANGE_LIMIT: they are not [-1, 1] images (e.g.
# [0, 255]), while resampling overshoot of real [-1, 1] images stays well inside it.
PIXEL_RANGE_LIMIT = 1.5


# ----------------------------------------------------------------------------------------------------------- outputs
@dataclass
class GloTokEncoderOutput(ModelOutput):
    r"""
    Output of [`GloTokModel.encode`]. Per-branch fields are `None` when that codebook is disabled.

    Args:
        semantic_indices (`torch.LongTensor` of shape `(batch, h, w)`): indices into the semantic codebook.
        visual_indices (`torch.LongTensor` of shape `(batch, h, w)`): indices into the visual codebook.
        semantic_quantized (`torch.FloatTensor` of shape `(batch, codebook_dim, h, w)`):
            semantic code vectors (fp32; straight-through, so gradients reach the encoder).
        visual_quantized (`torch.FloatTensor` of shape `(batch, codebook_dim, h, w)`): visual code vectors.
        semantic_latents (`torch.FloatTensor` of shape `(batch, codebook_dim, h, w)`):
            continuous semantic latents before quantization (fp32, l2-normalised when `codebook_l2_norm`).
        visual_latents (`torch.FloatTensor` of shape `(batch, codebook_dim, h, w)`): continuous visual latents.
    """

    semantic_indices: torch.LongTensor | None = None
    visual_indices: torch.LongTensor | None = None
    semantic_quantized: torch.FloatTensor | None = None
    visual_quantized: torch.FloatTensor | None = None
    semantic_latents: torch.FloatTensor | None = None
    visual_latents: torch.FloatTensor | None = None

    @property
    def indices(self) -> dict[str, torch.LongTensor]:
        """The index maps as keyword arguments of [`GloTokModel.decode`]: `model.decode(**enc.indices)`."""
        return {"semantic_indices": self.semantic_indices, "visual_indices": self.visual_indices}


@dataclass
class GloTokDecoderOutput(ModelOutput):
    r"""
    Output of [`GloTokModel.decode`].

    Args:
        sample (`torch.FloatTensor` of shape `(batch, out_channels, H, W)`): decoded pixels in [-1, 1] (unclamped).
    """

    sample: torch.FloatTensor | None = None


@dataclass
class GloTokModelOutput(ModelOutput):
    r"""
    Output of [`GloTokModel.forward`]: the reconstruction, the model-side loss terms and codebook statistics.

    Args:
        sample (`torch.FloatTensor` of shape `(batch, out_channels, H, W)`): the reconstruction.
        codebook_loss (`torch.FloatTensor` of shape `()`):
            `||z_q - sg[z]||^2` summed over branches (trains the codebooks).
        commitment_loss (`torch.FloatTensor` of shape `()`):
            `beta * ||sg[z_q] - z||^2` summed over branches (beta = `config.commitment_beta`, already applied).
        residual_loss (`torch.FloatTensor` of shape `()`):
            `||R(z_q) - sg[z - z_q]||^2` summed over branches (Eq. 10); 0 when `use_residual=False`.
        semantic_codebook_usage (`torch.LongTensor` of shape `(semantic_codebook_size,)`): code counts in the batch.
        visual_codebook_usage (`torch.LongTensor` of shape `(visual_codebook_size,)`): code counts in the batch.
        semantic_indices, visual_indices, semantic_quantized, visual_quantized, semantic_latents, visual_latents:
            as in [`GloTokEncoderOutput`].
        semantic_residual (`torch.FloatTensor` of shape `(batch, codebook_dim, h, w)`):
            the residual module's output for the semantic branch (`None` without residual module).
        visual_residual (`torch.FloatTensor` of shape `(batch, codebook_dim, h, w)`): same for the visual branch.
    """

    sample: torch.FloatTensor | None = None
    codebook_loss: torch.FloatTensor | None = None
    commitment_loss: torch.FloatTensor | None = None
    residual_loss: torch.FloatTensor | None = None
    semantic_codebook_usage: torch.LongTensor | None = None
    visual_codebook_usage: torch.LongTensor | None = None
    semantic_indices: torch.LongTensor | None = None
    visual_indices: torch.LongTensor | None = None
    semantic_quantized: torch.FloatTensor | None = None
    visual_quantized: torch.FloatTensor | None = None
    semantic_latents: torch.FloatTensor | None = None
    visual_latents: torch.FloatTensor | None = None
    semantic_residual: torch.FloatTensor | None = None
    visual_residual: torch.FloatTensor | None = None


@contextmanager
def full_fp32_matmul():
    """fp32 matmuls inside run in full fp32, not TF32, whatever `torch.backends` allows globally (restored after)."""
    matmul = torch.backends.cuda.matmul
    saved, matmul.fp32_precision = matmul.fp32_precision, "ieee"
    try:
        yield
    finally:
        matmul.fp32_precision = saved


# ------------------------------------------------------------------------------------------------ model-side losses
def vector_quantization_loss(latents: torch.Tensor, codes: torch.Tensor, beta: float) -> dict[str, torch.Tensor]:
    r"""VQ loss of Eq. 1: `codebook_loss = ||z_q - sg[z]||^2` and `commitment_loss = beta * ||sg[z_q] - z||^2`.

    `beta` weighs the commitment term, the one whose gradient reaches the encoder (VQ-VAE, van den Oord et al.), not
    the codebook term. Both are means over all elements and computed in fp32.
    """
    latents, codes = latents.float(), codes.float()
    return {
        "codebook_loss": F.mse_loss(codes, latents.detach()),
        "commitment_loss": beta * F.mse_loss(latents, codes.detach()),
    }


def residual_loss(residual: torch.Tensor, latents: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    r"""Residual loss of Eq. 10 for one branch: MSE between the residual prediction `R(z_q)` and the detached
    quantization error `sg[z - z_q]`. Only the residual module receives gradients from it."""
    return F.mse_loss(residual.float(), (latents.float() - codes.float()).detach())


# ------------------------------------------------------------------------------------------------ CNN building blocks
def _group_norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=groups, num_channels=channels, eps=1e-6, affine=True)


class GloTokResnetBlock(GradientCheckpointingLayer):
    """VQGAN ResNet block: (GroupNorm, SiLU, conv3x3) twice, with a 1x1 shortcut when the channel count changes."""

    def __init__(self, in_channels: int, out_channels: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = _group_norm(in_channels, groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _group_norm(out_channels, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.shortcut(x) + h


class GloTokSpatialAttention(GradientCheckpointingLayer):
    """Single-head self-attention over the pixels of a feature map (VQGAN's AttnBlock), through SDPA."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = _group_norm(channels, groups)
        self.to_q = nn.Conv2d(channels, channels, 1)
        self.to_k = nn.Conv2d(channels, channels, 1)
        self.to_v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.norm(x)
        q, k, v = (proj(y).flatten(2).transpose(1, 2).unsqueeze(1) for proj in (self.to_q, self.to_k, self.to_v))
        y = F.scaled_dot_product_attention(q, k, v).squeeze(1).transpose(1, 2).reshape(b, c, h, w)
        return x + self.proj_out(y)


class GloTokResample(nn.Module):
    """Resolution change of a level: a stride-2 conv3x3 halving it (`down`), or nearest-neighbour x2 then a conv3x3."""

    def __init__(self, channels: int, down: bool):
        super().__init__()
        self.down = down
        self.conv = nn.Conv2d(channels, channels, 3, stride=2 if down else 1, padding=0 if down else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.down:
            return self.conv(F.pad(x, (0, 1, 0, 1)))  # asymmetric padding, as in VQGAN
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class GloTokLevel(nn.Module):
    """One resolution level: ResNet blocks, optional attention after each, optional resampling (`down` or up)."""

    def __init__(self, channels_in, channels_out, num_blocks, groups, dropout, attention: bool, down: bool | None):
        super().__init__()
        inputs = [channels_in] + [channels_out] * (num_blocks - 1)
        self.resnets = nn.ModuleList(GloTokResnetBlock(c, channels_out, groups, dropout) for c in inputs)
        self.attentions = nn.ModuleList(GloTokSpatialAttention(channels_out, groups) for _ in inputs if attention)
        self.resample = GloTokResample(channels_out, down) if down is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, resnet in enumerate(self.resnets):
            x = resnet(x)
            if self.attentions:
                x = self.attentions[i](x)
        return self.resample(x) if self.resample is not None else x


def _levels(config: GloTokConfig, channels: list[int], num_blocks: int, down: bool) -> nn.ModuleList:
    """The levels of the encoder (`down`, channels in order) or decoder (channels reversed); attention at the lowest
    resolution, resampling between levels."""
    levels, lowest = [], len(channels) - 1 if down else 0
    for i, (prev, ch) in enumerate(zip([channels[0], *channels], channels)):
        attention = i == lowest and config.lowest_resolution_attention
        resample = None if i == len(channels) - 1 else down
        levels.append(GloTokLevel(prev, ch, num_blocks, config.norm_num_groups, config.dropout, attention, resample))
    return nn.ModuleList(levels)


class GloTokMidBlock(nn.Module):
    """ResNet block, optional spatial attention, ResNet block (VQGAN's middle block)."""

    def __init__(self, channels: int, groups: int, dropout: float, attention: bool):
        super().__init__()
        self.resnet_1 = GloTokResnetBlock(channels, channels, groups, dropout)
        self.attention = GloTokSpatialAttention(channels, groups) if attention else nn.Identity()
        self.resnet_2 = GloTokResnetBlock(channels, channels, groups, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resnet_2(self.attention(self.resnet_1(x)))


class GloTokEncoder(nn.Module):
    """VQGAN encoder trunk up to and including the mid block; the branch heads add norm/conv_out."""

    def __init__(self, config: GloTokConfig):
        super().__init__()
        channels, groups = config.block_out_channels, config.norm_num_groups
        self.conv_in = nn.Conv2d(config.in_channels, channels[0], 3, padding=1)
        self.levels = _levels(config, list(channels), config.layers_per_block, down=True)
        self.mid = GloTokMidBlock(channels[-1], groups, config.dropout, config.mid_block_add_attention)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for level in self.levels:
            x = level(x)
        return self.mid(x)


class GloTokDecoder(nn.Module):
    """VQGAN decoder: conv_in, mid block, mirrored levels with `layers_per_block + 1` ResNets, norm, conv_out."""

    def __init__(self, config: GloTokConfig):
        super().__init__()
        channels, groups = config.block_out_channels, config.norm_num_groups
        self.conv_in = nn.Conv2d(config.latent_channels, channels[-1], 3, padding=1)
        self.mid = GloTokMidBlock(channels[-1], groups, config.dropout, config.mid_block_add_attention)
        self.levels = _levels(config, list(reversed(channels)), config.layers_per_block + 1, down=False)
        self.norm_out = _group_norm(channels[0], groups)
        self.conv_out = nn.Conv2d(channels[0], config.out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.mid(self.conv_in(z))
        for level in self.levels:
            x = level(x)
        return self.conv_out(F.silu(self.norm_out(x)))


# -------------------------------------------------------------------------------------------- transformer components
class GloTokTransformerBlock(GradientCheckpointingLayer):
    """Pre-LN transformer block (multi-head SDPA attention + GELU MLP) on token sequences `(batch, tokens, width)`."""

    def __init__(self, width: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.attn_out = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, int(width * mlp_ratio))
        self.fc2 = nn.Linear(int(width * mlp_ratio), width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c)
        x = x + self.attn_out(y)
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


def _grid_position_embedding(embedding: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """A learned `(grid*grid, C)` embedding, bicubically resized when the token grid differs from the trained one."""
    grid = math.isqrt(embedding.shape[0])
    if (height, width) == (grid, grid):
        return embedding
    emb = embedding.reshape(1, grid, grid, -1).permute(0, 3, 1, 2).float()
    emb = F.interpolate(emb, size=(height, width), mode="bicubic", align_corners=False)
    return emb.permute(0, 2, 3, 1).reshape(height * width, -1).to(embedding.dtype)


class GloTokAdapter(nn.Module):
    """FQGAN-style factorized adapter: a transformer over the encoder's token grid that specialises one branch."""

    def __init__(self, config: GloTokConfig):
        super().__init__()
        width, heads = config.block_out_channels[-1], config.adapter_num_heads
        self.position_embedding = nn.Parameter(torch.empty(config.latent_grid_size**2, width))
        self.norm_pre = nn.LayerNorm(width)
        self.blocks = nn.ModuleList(GloTokTransformerBlock(width, heads) for _ in range(config.adapter_depth))
        self.norm_post = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2) + _grid_position_embedding(self.position_embedding, h, w)
        tokens = self.norm_pre(tokens)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm_post(tokens).transpose(1, 2).reshape(b, c, h, w)


class GloTokResidualModule(nn.Module):
    """Residual learning module (Eqs. 8-9): predicts the quantization error from the code vectors of one branch.

    Linear in -> learned 2-D position embedding -> transformer block(s) -> LayerNorm -> Linear out. The output
    projection is zero-initialised, so the module starts as the identity on `z_q + R(z_q)`.
    """

    def __init__(self, config: GloTokConfig):
        super().__init__()
        dim, hidden, heads = config.codebook_dim, config.residual_hidden_size, config.residual_num_heads
        self.proj_in = nn.Linear(dim, hidden)
        self.position_embedding = nn.Parameter(torch.empty(config.latent_grid_size**2, hidden))
        self.blocks = nn.ModuleList(GloTokTransformerBlock(hidden, heads) for _ in range(config.residual_num_layers))
        self.norm = nn.LayerNorm(hidden)
        self.proj_out = nn.Linear(hidden, dim)
        self.proj_out._zero_init = True  # read by `_init_weights`

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        b, d, h, w = codes.shape
        x = self.proj_in(codes.flatten(2).transpose(1, 2)) + _grid_position_embedding(self.position_embedding, h, w)
        for block in self.blocks:
            x = block(x)
        return self.proj_out(self.norm(x)).transpose(1, 2).reshape(b, d, h, w)


# --------------------------------------------------------------------------------------------------------- quantizer
class GloTokVectorQuantizer(nn.Module):
    """Nearest-neighbour vector quantizer. With `l2_norm`, latents and codes are l2-normalised and the lookup is by
    cosine similarity. All of its math runs in fp32 with autocast and TF32 disabled, whatever the model dtype."""

    def __init__(self, num_codes: int, dim: int, l2_norm: bool):
        super().__init__()
        self.l2_norm = l2_norm
        self.embedding = nn.Embedding(num_codes, dim)

    @property
    def num_codes(self) -> int:
        return self.embedding.num_embeddings

    def codebook(self) -> torch.Tensor:
        """The code vectors used for lookup, `(num_codes, dim)` in fp32 (l2-normalised when `l2_norm`)."""
        weight = self.embedding.weight.float()
        return F.normalize(weight, dim=-1) if self.l2_norm else weight

    def forward(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.LongTensor]:
        """`latents (B, D, h, w)` -> (normalised fp32 latents, fp32 code vectors, indices `(B, h, w)`)."""
        with torch.autocast(device_type=latents.device.type, enabled=False), full_fp32_matmul():
            z = latents.float().permute(0, 2, 3, 1)
            z = F.normalize(z, dim=-1) if self.l2_norm else z
            codebook = self.codebook()
            flat = z.reshape(-1, z.shape[-1])
            if self.l2_norm:  # unit vectors: nearest in L2 == largest cosine similarity
                indices = torch.argmax(flat @ codebook.t(), dim=1)
            else:
                distances = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ codebook.t() + codebook.pow(2).sum(1)
                indices = torch.argmin(distances, dim=1)
            indices = indices.view(z.shape[:-1])
            codes = codebook[indices]
        return z.permute(0, 3, 1, 2), codes.permute(0, 3, 1, 2), indices

    def lookup(self, indices: torch.LongTensor) -> torch.Tensor:
        """Indices `(B, h, w)` -> fp32 code vectors `(B, D, h, w)`."""
        with torch.autocast(device_type=indices.device.type, enabled=False):
            return self.codebook()[indices].permute(0, 3, 1, 2)


class GloTokBranch(nn.Module):
    """One branch (semantic or visual): [adapter] -> GroupNorm/SiLU/conv3x3 -> 1x1 to codebook_dim -> quantizer,
    plus its residual module on the decode side."""

    def __init__(self, config: GloTokConfig, num_codes: int, with_adapter: bool):
        super().__init__()
        width, dim = config.block_out_channels[-1], config.codebook_dim
        self.adapter = GloTokAdapter(config) if with_adapter and config.adapter_depth > 0 else None
        self.norm_out = _group_norm(width, config.norm_num_groups)
        self.conv_out = nn.Conv2d(width, config.latent_channels, 3, padding=1)
        self.quant_conv = nn.Conv2d(config.latent_channels, dim, 1)
        self.quantizer = GloTokVectorQuantizer(num_codes, dim, config.codebook_l2_norm)
        self.residual = GloTokResidualModule(config) if config.use_residual else None

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """Encoder trunk features -> pre-quantization latents `(B, codebook_dim, h, w)`."""
        if self.adapter is not None:
            features = self.adapter(features)
        return self.quant_conv(self.conv_out(F.silu(self.norm_out(features))))

    def refine(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Code vectors -> (`z_q + R(z_q)`, `R(z_q)`), Eqs. 11-12; identity without residual module."""
        if self.residual is None:
            return codes, None
        residual = self.residual(codes.to(self.residual.proj_in.weight.dtype))
        return codes + residual.float(), residual


# ------------------------------------------------------------------------------------------------------------- model
class GloTokPreTrainedModel(PreTrainedModel):
    """Weight initialisation and transformers class attributes shared by GloTok models."""

    config: GloTokConfig
    base_model_prefix = "glotok"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["GloTokResnetBlock", "GloTokSpatialAttention", "GloTokTransformerBlock"]
    _keep_in_fp32_modules_strict = ["quantizer"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # PyTorch's default init for convolutions and linears, as in VQGAN / LlamaGen / FQGAN (the transformers
        # default, N(0, 0.02), starves a deep CNN); codebooks as LlamaGen; the residual output projection zeroed.
        if getattr(module, "_zero_init", False):
            init.zeros_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, (nn.Conv2d, nn.Linear)):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                bound = module.weight[0].numel() ** -0.5  # 1 / sqrt(fan_in)
                init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, (nn.GroupNorm, nn.LayerNorm)):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):  # the codebooks
            init.uniform_(module.weight, -1.0 / module.num_embeddings, 1.0 / module.num_embeddings)
        elif isinstance(module, GloTokAdapter):
            init.normal_(module.position_embedding, std=module.position_embedding.shape[-1] ** -0.5)
        elif isinstance(module, GloTokResidualModule):
            init.normal_(module.position_embedding, std=0.02)


class GloTokModel(GloTokPreTrainedModel):
    r"""
    The GloTok tokenizer. Images `(B, C, H, W)` in [-1, 1] with `H` and `W` divisible by `config.downsample_factor`
    map to one `(B, H/f, W/f)` index grid per enabled codebook and back. Shapes and dtypes are always checked; value
    checks that need a device synchronisation (NaN/inf or out-of-range pixels, out-of-range indices) run only with
    `encode(..., validate=True)` / `decode(..., validate=True)`. As in transformers, `encode`, `decode` and `forward`
    return tuples with `return_dict=False` (or `config.return_dict=False`).

    Example:

    ```python
    >>> import torch
    >>> from glotok_hf import GloTokConfig, GloTokModel
    >>> model = GloTokModel(GloTokConfig(block_out_channels=(32, 32), norm_num_groups=8, latent_channels=16,
    ...     adapter_depth=1, semantic_codebook_size=16, visual_codebook_size=32, residual_hidden_size=32,
    ...     residual_num_heads=2, sample_size=16)).eval()
    >>> enc = model.encode(torch.rand(1, 3, 16, 16) * 2 - 1)
    >>> enc.semantic_indices.shape, enc.visual_indices.shape
    (torch.Size([1, 8, 8]), torch.Size([1, 8, 8]))
    >>> model.decode(**enc.indices).sample.shape
    torch.Size([1, 3, 16, 16])

    ```
    """

    def __init__(self, config: GloTokConfig):
        super().__init__(config)
        dual = config.num_codebooks == 2
        self.encoder = GloTokEncoder(config)
        for name in ("semantic", "visual"):
            size = getattr(config, f"{name}_codebook_size")
            setattr(self, name, GloTokBranch(config, size, dual) if size else None)
        self.post_quant_conv = nn.Conv2d(config.num_codebooks * config.codebook_dim, config.latent_channels, 1)
        self.decoder = GloTokDecoder(config)
        self.post_init()

    # --------------------------------------------------------------------------------------------- helpers
    def _branches(self) -> dict[str, GloTokBranch]:
        """Enabled branches in decoder-input order: visual first, then semantic (FQGAN's `[vis, sem]`)."""
        return {name: b for name, b in (("visual", self.visual), ("semantic", self.semantic)) if b is not None}

    def _check_pixel_values(self, pixel_values, validate: bool = False) -> None:
        """Shape and dtype checks of `encode` / `forward`; the value checks (a device sync) only with `validate`."""
        if not isinstance(pixel_values, torch.Tensor):
            raise TypeError(f"pixel_values must be a torch.Tensor, got {type(pixel_values).__name__}.")
        c, f, shape = self.config.in_channels, self.config.downsample_factor, tuple(pixel_values.shape)
        size = self.config.sample_size
        channels, height, width = (*shape, 0, 0, 0)[1:4]  # only read once the shape is known to be 4-d
        problems = [
            (len(shape) != 4, f"must have shape (batch, {c}, height, width), got shape {shape}"),
            (not pixel_values.is_floating_point(), f"must be a floating-point tensor in [-1, 1], got {pixel_values.dtype}"),
            (channels != c, f"must have {c} channels, got {channels} (shape {shape})"),
            (height % f or width % f or not height * width,
             f"height and width must be positive multiples of the downsampling factor {f}, got {height}x{width}"),
            (self.config.fixed_sample_size and (height, width) != (size, size),
             f"must be {size}x{size} images: this tokenizer's positional tables are fixed at its sample_size "
             f"(config.fixed_sample_size, e.g. converted from FQGAN), got {height}x{width}"),
        ]  # fmt: skip
        if validate and not any(failed for failed, _ in problems):  # a device sync: only on request
            low, high = (float(v) for v in torch.aminmax(pixel_values.detach().float()))
            problems += [
                (not (math.isfinite(low) and math.isfinite(high)), "contain NaN or inf values"),
                (low < -PIXEL_RANGE_LIMIT or high > PIXEL_RANGE_LIMIT, f"must be images in [-1, 1], got values in "
                 f"[{low:g}, {high:g}]. Map 8-bit images with pixels / 127.5 - 1"),
            ]  # fmt: skip
        for failed, message in problems:
            if failed:
                raise ValueError(f"pixel_values {message}.")

    def _check_indices(self, semantic_indices, visual_indices, validate: bool = False) -> None:
        """Presence, dtype and shape checks of `decode`; the range check (a device sync) only with `validate`."""
        given = {"semantic": semantic_indices, "visual": visual_indices}
        for name, indices in given.items():
            branch, key = getattr(self, name), f"{name}_indices"
            if (branch is None) != (indices is None):
                raise ValueError(f"decode() needs {key} exactly when the {name} codebook is enabled "
                                 f"({name}_codebook_size={getattr(self.config, f'{name}_codebook_size')}).")  # fmt: skip
            if indices is None:
                continue
            if not isinstance(indices, torch.Tensor) or indices.is_floating_point() or indices.dtype == torch.bool:
                raise TypeError(
                    f"{key} must be a torch.Tensor of integer indices, got {getattr(indices, 'dtype', indices)!r}."
                )
            if indices.ndim != 3:
                raise ValueError(f"{key} must have shape (batch, height, width), got shape {tuple(indices.shape)}.")
            num_codes = branch.quantizer.num_codes
            if validate and indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= num_codes):
                raise ValueError(
                    f"{key} must lie in [0, {num_codes}), got values in [{int(indices.min())}, {int(indices.max())}]."
                )
        shapes = {f"{n}_indices": tuple(x.shape) for n, x in given.items() if x is not None}
        if len(set(shapes.values())) > 1:
            raise ValueError(f"semantic_indices and visual_indices must have the same shape, got {shapes}.")

    def _quantize(self, pixel_values: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        features = self.encoder(pixel_values)
        return {name: branch.quantizer(branch.project(features)) for name, branch in self._branches().items()}

    # ------------------------------------------------------------------------------------------ public API
    def decode_quantized(
        self, semantic_quantized: torch.Tensor | None = None, visual_quantized: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Code vectors `(B, codebook_dim, h, w)` -> residual modules -> decoder -> pixels `(B, C, H, W)`."""
        quantized = {"semantic": semantic_quantized, "visual": visual_quantized}
        return self._decode_refined([branch.refine(quantized[name])[0] for name, branch in self._branches().items()])

    def _decode_refined(self, refined: list[torch.Tensor]) -> torch.Tensor:
        latent = torch.cat(refined, dim=1).to(self.post_quant_conv.weight.dtype)
        return self.decoder(self.post_quant_conv(latent))

    @can_return_tuple
    def encode(self, pixel_values: torch.Tensor, validate: bool = False) -> GloTokEncoderOutput | tuple:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch, in_channels, H, W)`): images in [-1, 1], `H` and `W`
                multiples of `config.downsample_factor`.
            validate (`bool`, *optional*, defaults to `False`): also reject NaN/inf pixels and values beyond +-1.5
                (e.g. 8-bit images in [0, 255]) with a `ValueError`. This reads the values back from the device (a
                synchronisation), so it is off by default; entry points (pipeline, CLI, `glotok eval`) turn it on.

        Returns:
            [`GloTokEncoderOutput`] with one `(batch, H/f, W/f)` index map per enabled codebook.
        """
        self._check_pixel_values(pixel_values, validate)
        out = {}
        for name, (latents, codes, indices) in self._quantize(pixel_values).items():
            quantized = latents + (codes - latents).detach()  # straight-through
            out.update({f"{name}_indices": indices, f"{name}_quantized": quantized, f"{name}_latents": latents})
        return GloTokEncoderOutput(**out)

    @can_return_tuple
    def decode(
        self,
        semantic_indices: torch.LongTensor | None = None,
        visual_indices: torch.LongTensor | None = None,
        validate: bool = False,
    ) -> GloTokDecoderOutput | tuple:
        r"""
        Args:
            semantic_indices (`torch.LongTensor` of shape `(batch, h, w)`): required when the semantic codebook is on.
            visual_indices (`torch.LongTensor` of shape `(batch, h, w)`): required when the visual codebook is on.
            validate (`bool`, *optional*, defaults to `False`): also check that every index lies in its codebook
                (a device synchronisation, so off by default; without it an out-of-range index fails in the lookup).

        Returns:
            [`GloTokDecoderOutput`] whose `sample` is `(batch, out_channels, h*f, w*f)` in [-1, 1] (unclamped).
        """
        self._check_indices(semantic_indices, visual_indices, validate)
        given = {"semantic": semantic_indices, "visual": visual_indices}
        codes = {f"{name}_quantized": b.quantizer.lookup(given[name]) for name, b in self._branches().items()}
        return GloTokDecoderOutput(sample=self.decode_quantized(**codes))

    @can_return_tuple
    def forward(self, pixel_values: torch.Tensor) -> GloTokModelOutput | tuple:
        r"""
        Reconstruct `pixel_values` and return the model-side loss terms (VQ and residual) with codebook usage.
        Image-space losses (reconstruction, perceptual, GAN, histogram relation) live in `glotok_hf.losses`.

        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch, in_channels, H, W)`): images in [-1, 1].
        """
        self._check_pixel_values(pixel_values)
        zero = pixel_values.new_zeros((), dtype=torch.float32)
        out = dict.fromkeys(("codebook_loss", "commitment_loss", "residual_loss"), zero)
        refined = []
        for name, (latents, codes, indices) in self._quantize(pixel_values).items():
            branch = getattr(self, name)
            losses = vector_quantization_loss(latents, codes, self.config.commitment_beta)
            quantized = latents + (codes - latents).detach()  # straight-through estimator
            refined_codes, residual = branch.refine(quantized)
            if residual is not None:
                losses["residual_loss"] = residual_loss(residual, latents, codes)
            out.update({key: out[key] + value for key, value in losses.items()})
            refined.append(refined_codes)
            flat = indices.flatten()  # counted by scatter_add, not bincount: no device sync
            usage = flat.new_zeros(branch.quantizer.num_codes).scatter_add_(0, flat, torch.ones_like(flat))
            out.update({f"{name}_indices": indices, f"{name}_quantized": quantized, f"{name}_latents": latents})
            out.update({f"{name}_codebook_usage": usage, f"{name}_residual": residual})
        return GloTokModelOutput(sample=self._decode_refined(refined), **out)

    def get_last_layer(self) -> torch.Tensor:
        """The decoder's output convolution weight (for the adaptive GAN weight)."""
        return self.decoder.conv_out.weight


__all__ = ["GloTokDecoderOutput", "GloTokEncoderOutput", "GloTokModel", "GloTokModelOutput", "GloTokPreTrainedModel"]
