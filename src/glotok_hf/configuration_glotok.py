# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""Configuration of the GloTok image tokenizer. Shipped next to `modeling_glotok.py` as Hub remote code, so it imports
only `transformers` and `utils` (which the remote-code bundle inlines).
"""

from transformers import PreTrainedConfig

from .utils import is_int


class GloTokConfig(PreTrainedConfig):
    r"""
    Configuration of a [`GloTokModel`]: a VQGAN CNN encoder/decoder whose latent grid is split by two transformer
    adapters into a *semantic* and a *visual* branch, each quantized with its own l2-normalised codebook, followed by
    a residual learning module per branch (GloTok, AAAI-26, arXiv 2511.14184). The defaults are the paper's GloTok
    (4,096 semantic + 12,288 visual codes of dimension 8, a 16x16 grid for 256x256 images).

    Setting `semantic_codebook_size=0` or `visual_codebook_size=0` gives a single-codebook tokenizer with no adapter
    (the LlamaGen VQ-16 baseline); `use_residual=False` turns the residual module off. GloTok(2x) is
    `semantic_codebook_size=16384, visual_codebook_size=16384`.

    Args:
        in_channels (`int`, *optional*, defaults to 3):
            Channels of the input images.
        out_channels (`int`, *optional*, defaults to 3):
            Channels of the reconstructed images.
        block_out_channels (`tuple[int, ...]`, *optional*, defaults to `(128, 128, 256, 256, 512)`):
            Output channels of each encoder level (the decoder mirrors them). The downsampling factor is
            `2 ** (len(block_out_channels) - 1)`.
        layers_per_block (`int`, *optional*, defaults to 2):
            ResNet blocks per encoder level (the decoder uses one more, as in VQGAN).
        norm_num_groups (`int`, *optional*, defaults to 32):
            Groups of every GroupNorm; must divide every entry of `block_out_channels`.
        latent_channels (`int`, *optional*, defaults to 256):
            Channels of each branch's latent before the 1x1 projection to `codebook_dim` (VQGAN's `z_channels`).
        mid_block_add_attention (`bool`, *optional*, defaults to `True`):
            Self-attention in the encoder and decoder mid blocks.
        lowest_resolution_attention (`bool`, *optional*, defaults to `True`):
            Self-attention after every ResNet block of the lowest-resolution level (VQGAN / LlamaGen VQ-16).
        adapter_depth (`int`, *optional*, defaults to 6):
            Transformer layers of each of the two branch adapters (FQGAN uses 6). Width is `block_out_channels[-1]`.
            Adapters exist only when both codebooks are enabled.
        adapter_num_heads (`int`, *optional*, defaults to 8):
            Attention heads of the adapters.
        semantic_codebook_size (`int`, *optional*, defaults to 4096):
            Entries of the semantic codebook (0 disables the semantic branch).
        visual_codebook_size (`int`, *optional*, defaults to 12288):
            Entries of the visual codebook (0 disables the visual branch).
        codebook_dim (`int`, *optional*, defaults to 8):
            Dimension of the code vectors of both codebooks.
        codebook_l2_norm (`bool`, *optional*, defaults to `True`):
            l2-normalise latents and codes, so lookup is by cosine similarity.
        commitment_beta (`float`, *optional*, defaults to 0.25):
            Weight of the commitment term `||sg[z_q] - z||^2` of the VQ loss.
        use_residual (`bool`, *optional*, defaults to `True`):
            Add the residual learning module (one transformer block per branch) in front of the decoder.
        residual_hidden_size (`int`, *optional*, defaults to 256):
            Width of the residual transformer block.
        residual_num_heads (`int`, *optional*, defaults to 8):
            Attention heads of the residual transformer block.
        residual_num_layers (`int`, *optional*, defaults to 1):
            Transformer layers of each residual module (the paper uses a single layer).
        sample_size (`int`, *optional*, defaults to 256):
            Training resolution. It sizes the learned positional embeddings (interpolated for other sizes) and is the
            resolution pipelines generate at.
        fixed_sample_size (`bool`, *optional*, defaults to `False`):
            Accept only `sample_size x sample_size` images in `encode` / `forward` (their positional embeddings are
            not interpolated to other grids). Set for tokenizers converted from FQGAN, whose adapters were trained
            with one fixed positional table.
        dropout (`float`, *optional*, defaults to 0.0):
            Dropout in the ResNet blocks.

    Example:

    ```python
    >>> from glotok_hf import GloTokConfig, GloTokModel
    >>> config = GloTokConfig(block_out_channels=(32, 64), norm_num_groups=8, latent_channels=16, adapter_depth=1,
    ...                       semantic_codebook_size=16, visual_codebook_size=32, sample_size=32)
    >>> model = GloTokModel(config)
    >>> config.downsample_factor, config.latent_grid_size
    (2, 16)

    ```
    """

    model_type = "glotok"

    in_channels: int = 3
    out_channels: int = 3
    block_out_channels: list[int] | tuple[int, ...] = (128, 128, 256, 256, 512)
    layers_per_block: int = 2
    norm_num_groups: int = 32
    latent_channels: int = 256
    mid_block_add_attention: bool = True
    lowest_resolution_attention: bool = True
    adapter_depth: int = 6
    adapter_num_heads: int = 8
    semantic_codebook_size: int = 4096
    visual_codebook_size: int = 12288
    codebook_dim: int = 8
    codebook_l2_norm: bool = True
    commitment_beta: float = 0.25
    use_residual: bool = True
    residual_hidden_size: int = 256
    residual_num_heads: int = 8
    residual_num_layers: int = 1
    sample_size: int = 256
    fixed_sample_size: bool = False
    dropout: float = 0.0

    def __post_init__(self, **kwargs):
        if isinstance(self.block_out_channels, list):
            self.block_out_channels = tuple(self.block_out_channels)
        self._validate()
        super().__post_init__(**kwargs)

    @property
    def downsample_factor(self) -> int:
        """Ratio of image side to token-grid side: `2 ** (len(block_out_channels) - 1)`."""
        return 2 ** (len(self.block_out_channels) - 1)

    @property
    def latent_grid_size(self) -> int:
        """Side of the token grid at `sample_size` (16 for the paper's 256x256 images)."""
        return self.sample_size // self.downsample_factor

    @property
    def has_semantic_codebook(self) -> bool:
        return self.semantic_codebook_size > 0

    @property
    def has_visual_codebook(self) -> bool:
        return self.visual_codebook_size > 0

    @property
    def num_codebooks(self) -> int:
        return int(self.has_semantic_codebook) + int(self.has_visual_codebook)

    def _validate(self) -> None:
        """The one validation of a GloTokConfig, run once by `__post_init__` (the model and its forward trust it)."""
        # Not transformers' `@strict`/`validate_architecture`: they raise `StrictDataclass*Error`s, reject `dropout=0`.
        name, channels = type(self).__name__, self.block_out_channels
        kinds = {int: (is_int, "an int"), bool: (lambda v: isinstance(v, bool), "a bool"),
                 float: (lambda v: is_int(v) or isinstance(v, float), "a float")}  # fmt: skip
        for field, annotation in GloTokConfig.__annotations__.items():  # the type of every field but the channels
            check, kind = kinds.get(annotation, (None, None))
            if check is not None and not check(value := getattr(self, field)):
                raise TypeError(f"{name}.{field} must be {kind}, got {type(value).__name__} {value!r}.")
        if not isinstance(channels, tuple) or len(channels) == 0 or not all(is_int(c) and c > 0 for c in channels):
            raise TypeError(f"{name}.block_out_channels must be a non-empty list of positive ints, got {channels!r}.")
        minimums = {field: 1 for field in ("in_channels", "out_channels", "layers_per_block", "norm_num_groups",
                                           "latent_channels", "codebook_dim", "sample_size")}  # fmt: skip
        minimums.update(semantic_codebook_size=0, visual_codebook_size=0, adapter_depth=0, commitment_beta=0)
        for field, minimum in minimums.items():
            if getattr(self, field) < minimum:
                raise ValueError(f"{name}.{field} must be >= {minimum}, got {getattr(self, field)}.")
        problems = [
            (self.num_codebooks == 0,
             "needs at least one codebook: semantic_codebook_size and visual_codebook_size are both 0"),
            (any(c % self.norm_num_groups for c in (*channels, self.latent_channels)),
             f"norm_num_groups={self.norm_num_groups} must divide every channel count (block_out_channels="
             f"{list(channels)}, latent_channels={self.latent_channels})"),
            (self.sample_size % self.downsample_factor != 0,
             f"sample_size={self.sample_size} must be divisible by the downsampling factor "
             f"2**(len(block_out_channels)-1) = {self.downsample_factor}"),
            (self.num_codebooks == 2 and self.adapter_depth > 0 and channels[-1] % self.adapter_num_heads != 0,
             f"adapter_num_heads={self.adapter_num_heads} must divide the adapter width block_out_channels[-1]="
             f"{channels[-1]}"),
            (self.use_residual and (self.residual_num_layers < 1 or self.residual_hidden_size % self.residual_num_heads),
             "the residual module needs residual_num_layers >= 1 and residual_num_heads dividing residual_hidden_size, "
             f"got {self.residual_num_layers} layers, hidden size {self.residual_hidden_size}, "
             f"{self.residual_num_heads} heads"),
            (not 0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}"),
        ]  # fmt: skip
        for failed, message in problems:
            if failed:
                raise ValueError(f"{name}: {message}.")


__all__ = ["GloTokConfig"]
