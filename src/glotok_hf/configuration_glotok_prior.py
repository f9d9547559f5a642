# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
#
# Sizes follow LlamaGen's c2i GPTs (FoundationVision/LlamaGen, MIT) and FQGAN's FAR (showlab/FQGAN); re-implemented.
"""Configuration of the factorized class-conditional AR prior. Shipped as Hub remote code next to
`modeling_glotok_prior.py`, so it imports only `transformers` and `utils`.
"""

from transformers import PreTrainedConfig

from .utils import is_int

# name -> (num_hidden_layers, hidden_size, num_attention_heads, head_layers, published parameter count); LlamaGen's
# counts are for 16,384 codes and 1,000 classes, FAR's for two codebooks of 16,384 codes.
PRIOR_PRESETS = {
    "GPT-B": (12, 768, 12, 0, 111_000_000),
    "GPT-L": (24, 1024, 16, 0, 343_000_000),
    "GPT-XL": (36, 1280, 20, 0, 775_000_000),
    "GPT-XXL": (48, 1536, 24, 0, 1_400_000_000),
    "GPT-3B": (24, 3200, 32, 0, 3_100_000_000),
    "FAR-B": (24, 1024, 16, 3, 415_000_000),
    "FAR-L": (36, 1280, 20, 4, 898_000_000),
}


class GloTokPriorConfig(PreTrainedConfig):
    r"""
    Configuration of a [`GloTokPriorForCausalLM`]: a class-conditional autoregressive prior over a token grid with one
    backbone step per grid position and a factorized head over the sub-tokens (one per codebook) of each position
    (FQGAN's FAR). With one codebook and `head_layers=0` it is exactly LlamaGen's c2i GPT.

    The backbone input of a position is its sub-token embedding (one codebook) or the concatenation of its sub-token
    embeddings through a linear layer (several). The backbone's hidden state of a position, followed by the embeddings
    of the position's sub-tokens, is the sequence the `head_layers` Llama layers run over; a final RMSNorm and one
    output projection per codebook give the logits of each sub-token. Rotary embeddings are LlamaGen's: 2-D over the
    grid (half of each head's pairs rotate with the row, half with the column) or 1-D over the raster order, and by
    default the class token's rotation is zero (its queries and keys are zeroed, as in LlamaGen); the head uses the
    first rows of the same table, as FAR does.

    Args:
        codebook_sizes (`list[int]`, *optional*, defaults to `[16384]`):
            Codes of each codebook, in sampling order: `[V]` for one codebook, `[V, S]` visual then semantic.
        num_classes (`int`, *optional*, defaults to 1000): class labels; label `num_classes` is the null class.
        class_dropout_prob (`float`, *optional*, defaults to 0.1): probability with which the training stage replaces
            a label by the null class (classifier-free guidance); the model itself never drops labels.
        grid_size (`int`, *optional*, defaults to 16): side of the (square) token grid.
        hidden_size (`int`, *optional*, defaults to 768): width.
        intermediate_size (`int`, *optional*, defaults to 2048): SwiGLU width (LlamaGen: 8/3 of the width rounded up
            to a multiple of 256).
        num_hidden_layers (`int`, *optional*, defaults to 12): backbone layers.
        num_attention_heads (`int`, *optional*, defaults to 12): attention heads.
        num_key_value_heads (`int`, *optional*): key/value heads; defaults to `num_attention_heads`.
        head_layers (`int`, *optional*, defaults to 0): layers of the factorized head (needs >= 1 with two codebooks).
        rope_2d (`bool`, *optional*, defaults to `True`): 2-D rotary embeddings over the grid; `False` for 1-D.
        rope_theta (`float`, *optional*, defaults to 10000.0): rotary base.
        zero_class_rotary (`bool`, *optional*, defaults to `True`): LlamaGen's and FQGAN's rotary row 0 (the class
            token; in the head, the backbone state's slot): all zeros, which zeroes its query and key, so every
            attention logit to it is 0. `False` makes row 0 the identity, so it is attended by content; on the digits
            this recovers the class consistency a small prior loses with the zeroed row (docs/replication.md).
            Converted checkpoints need `True`.
        rms_norm_eps (`float`, *optional*, defaults to 1e-5): RMSNorm epsilon.
        attention_dropout (`float`, *optional*, defaults to 0.0): attention dropout in training.
        initializer_range (`float`, *optional*, defaults to 0.02): std of the normal weight init.

    Example:

    ```python
    >>> from glotok_hf.configuration_glotok_prior import prior_preset
    >>> config = prior_preset("FAR-B", codebook_sizes=[12288, 4096], num_classes=1000)
    >>> config.num_hidden_layers, config.head_layers, config.vocab_size
    (24, 3, 17385)

    ```
    """

    model_type = "glotok_prior"

    codebook_sizes: list[int] | tuple[int, ...] = (16384,)
    num_classes: int = 1000
    class_dropout_prob: float = 0.1
    grid_size: int = 16
    hidden_size: int = 768
    intermediate_size: int = 2048
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    num_key_value_heads: int | None = None
    head_layers: int = 0
    rope_2d: bool = True
    rope_theta: float = 10000.0
    zero_class_rotary: bool = True
    rms_norm_eps: float = 1e-5
    attention_dropout: float = 0.0
    initializer_range: float = 0.02
    # fixed Llama fields the decoder layers read
    hidden_act: str = "silu"
    attention_bias: bool = False
    mlp_bias: bool = False

    def __post_init__(self, **kwargs):
        self.codebook_sizes = list(self.codebook_sizes)
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        kwargs.setdefault("tie_word_embeddings", False)
        name = type(self).__name__
        problems = [
            (not self.codebook_sizes or not all(is_int(s) and s > 0 for s in self.codebook_sizes),
             f"codebook_sizes must be a non-empty list of positive ints, got {self.codebook_sizes!r}"),
            (len(self.codebook_sizes) > 2, "codebook_sizes takes at most two codebooks (visual, semantic)"),
            (len(self.codebook_sizes) > 1 and self.head_layers < 1, "two codebooks need head_layers >= 1"),
            (not all(is_int(v) and v > 0 for v in (self.num_classes, self.grid_size, self.hidden_size,
                                                   self.intermediate_size, self.num_hidden_layers))
             or not is_int(self.head_layers) or self.head_layers < 0,
             "num_classes, grid_size, hidden_size, intermediate_size and num_hidden_layers must be positive ints "
             "and head_layers an int >= 0"),
            (self.hidden_size % self.num_attention_heads or self.num_attention_heads % self.num_key_value_heads,
             f"num_attention_heads={self.num_attention_heads} must divide hidden_size={self.hidden_size} and be a "
             f"multiple of num_key_value_heads={self.num_key_value_heads}"),
            (self.rope_2d and self.head_dim % 4,
             f"2-D RoPE needs a head dimension divisible by 4, got {self.head_dim}"),
            (not 0 <= self.class_dropout_prob < 1,
             f"class_dropout_prob must be in [0, 1), got {self.class_dropout_prob}"),
        ]  # fmt: skip
        for failed, message in problems:
            if failed:
                raise ValueError(f"{name}: {message}.")
        super().__post_init__(**kwargs)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def num_positions(self) -> int:
        """Grid positions of an image, `grid_size ** 2`: the backbone runs `1 + num_positions` steps."""
        return self.grid_size**2

    # The prior as glotok_hf.sampling.TokenLayout sees it (the token sequence [class, v0, s0, v1, s1, ...]), which
    # is what GloTokPipeline and the sampler check.
    @property
    def vocab_size(self) -> int:
        return sum(self.codebook_sizes) + self.num_classes + 1

    @property
    def max_position_embeddings(self) -> int:
        return 1 + self.num_positions * len(self.codebook_sizes)

    @property
    def image_grid_size(self) -> list[int]:
        return [self.grid_size, self.grid_size]


def prior_preset(name: str, codebook_sizes, num_classes: int, grid_size: int = 16, **overrides) -> GloTokPriorConfig:
    """The [`GloTokPriorConfig`] of the preset `name` (a key of `PRIOR_PRESETS`: LlamaGen's `GPT-B`, `GPT-L`,
    `GPT-XL`, `GPT-XXL`, `GPT-3B`, FQGAN's `FAR-B`, `FAR-L`) over these codebooks and classes; `overrides` are any
    config fields, applied last. Overriding `hidden_size` alone also rescales the SwiGLU width and the heads (head
    dimension 64), as `glotok_hf.prior.prior_config` does."""
    if name not in PRIOR_PRESETS:
        raise ValueError(f"Unknown prior preset {name!r}; choose one of {sorted(PRIOR_PRESETS)}.")
    layers, width, heads, head_layers, _ = PRIOR_PRESETS[name]
    if "hidden_size" in overrides:
        width, heads = overrides["hidden_size"], max(1, overrides["hidden_size"] // 64)
    fields = dict(num_hidden_layers=layers, hidden_size=width, num_attention_heads=heads, head_layers=head_layers,
                  intermediate_size=-(-int(8 * width / 3) // 256) * 256)  # fmt: skip
    fields.update(codebook_sizes=list(codebook_sizes), num_classes=num_classes, grid_size=grid_size, **overrides)
    return GloTokPriorConfig(**fields)


__all__ = ["PRIOR_PRESETS", "GloTokPriorConfig", "prior_preset"]
