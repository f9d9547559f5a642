# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
#
# Model sizes follow LlamaGen's GPT-B/L/XL/XXL/3B (FoundationVision/LlamaGen, MIT); re-implemented as LlamaConfigs.
"""The stage-2 class-conditional AR prior: a stock `transformers.LlamaForCausalLM` over GloTok codes.

The prior needs no modeling code of its own: `prior_config` returns a `LlamaConfig` whose vocabulary follows the
[`TokenLayout`] (image codes, class tokens, null class), so checkpoints load with `AutoModelForCausalLM`. This module
also holds the batch-building helper of the prior's training stage.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from .sampling import TokenLayout, draw_uniforms


@dataclass(frozen=True)
class PriorSize:
    """A LlamaGen GPT size: depth, width and attention heads (head dim 64, except 3B's 100)."""

    num_hidden_layers: int
    hidden_size: int
    num_attention_heads: int
    reference_parameters: int  # LlamaGen's reported parameter count, for 16,384 codes and 1,000 classes


PRIOR_SIZES: dict[str, PriorSize] = {
    "B": PriorSize(12, 768, 12, 111_000_000),
    "L": PriorSize(24, 1024, 16, 343_000_000),
    "XL": PriorSize(36, 1280, 20, 775_000_000),
    "XXL": PriorSize(48, 1536, 24, 1_400_000_000),
    "3B": PriorSize(24, 3200, 32, 3_100_000_000),
}


def prior_config(
    size: str,
    tokenizer_config,
    num_classes: int,
    *,
    num_positions: int | None = None,
    **overrides,
) -> LlamaConfig:
    r"""
    The `LlamaConfig` of a class-conditional prior of LlamaGen size `size` over the codes of `tokenizer_config`.

    The vocabulary is `V + S + num_classes + 1` (see [`TokenLayout`]), `max_position_embeddings` is the full sequence
    length `1 + num_positions * tokens_per_position`, `image_grid_size` records the (square) token grid the prior
    models (a pipeline refuses a tokenizer of another grid), bos/eos/pad are `None` (generation never stops early), and
    the rest is LlamaGen's: SwiGLU of width `find_multiple(8/3 * d, 256)`, RMSNorm eps 1e-5, and, as LlamaConfig's
    defaults, SiLU, init std 0.02, RoPE theta 10,000 (1-D; LlamaGen uses 2-D RoPE), an untied output head, no biases.

    Args:
        size (`str`): one of `PRIOR_SIZES`: `"B"` (12 layers, width 768, ~111M parameters), `"L"` (24, 1024, ~343M),
            `"XL"` (36, 1280, ~775M), `"XXL"` (48, 1536, ~1.4B) or `"3B"` (24, 3200, ~3.1B).
        tokenizer_config (`GloTokConfig`): the tokenizer whose codes the prior models.
        num_classes (`int`): number of class labels.
        num_positions (`int`, *optional*): grid positions per image; defaults to `latent_grid_size ** 2` of the
            tokenizer (256 for 256x256 images).
        overrides: any `LlamaConfig` field, applied last (e.g. `num_hidden_layers=2` for a test model). Overriding
            `hidden_size` alone also rescales what follows from it, as in LlamaGen: `intermediate_size` (SwiGLU width)
            and the heads (head dimension 64) unless they are given too.

    Example:

    ```python
    >>> from glotok_hf import GloTokConfig
    >>> from glotok_hf.prior import prior_config
    >>> config = prior_config("B", GloTokConfig(), num_classes=1000)
    >>> config.vocab_size, config.max_position_embeddings, config.num_hidden_layers
    (17385, 513, 12)

    ```
    """
    if size not in PRIOR_SIZES:
        raise ValueError(f"Unknown prior size {size!r}; choose one of {sorted(PRIOR_SIZES)}.")
    layout = TokenLayout(tokenizer_config.visual_codebook_size, tokenizer_config.semantic_codebook_size, num_classes)
    if num_positions is None:
        num_positions = int(tokenizer_config.latent_grid_size) ** 2
    preset = PRIOR_SIZES[size]
    width = overrides.get("hidden_size", preset.hidden_size)  # a new width rescales what follows from it
    heads = max(1, width // 64) if "hidden_size" in overrides else preset.num_attention_heads
    heads = overrides.get("num_attention_heads", heads)
    kwargs = dict(
        vocab_size=layout.vocab_size,
        hidden_size=width,
        intermediate_size=-(-int(8 * width / 3) // 256) * 256,  # LlamaGen's SwiGLU width: 8/3 d, rounded up
        num_hidden_layers=preset.num_hidden_layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=layout.sequence_length(num_positions),
        image_grid_size=[math.isqrt(num_positions)] * 2 if math.isqrt(num_positions) ** 2 == num_positions else None,
        rms_norm_eps=1e-5,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    kwargs.update(overrides)
    if kwargs["vocab_size"] != layout.vocab_size:
        raise ValueError(
            f"vocab_size={kwargs['vocab_size']} cannot be overridden: the token layout needs {layout.vocab_size} ids "
            f"({layout.visual_codebook_size} visual + {layout.semantic_codebook_size} semantic + {num_classes} classes "
            "+ 1 null class)."
        )
    return LlamaConfig(**kwargs)


def layout_from_configs(tokenizer_config, prior_config: LlamaConfig, id2label: Mapping | None = None) -> TokenLayout:
    """The [`TokenLayout`] of a prior over a tokenizer's codes. The number of classes follows from the prior's
    `vocab_size` and the codebook sizes; when `id2label` is given its length must agree (`ValueError` otherwise)."""
    sizes = tokenizer_config.visual_codebook_size, tokenizer_config.semantic_codebook_size
    return TokenLayout.from_vocab_size(prior_config.vocab_size, *sizes, None if id2label is None else list(id2label))


def build_prior(config: LlamaConfig) -> LlamaForCausalLM:
    """A freshly initialised `LlamaForCausalLM` for `config` (from [`prior_config`])."""
    return LlamaForCausalLM(config)


def prior_training_batch(
    codes: torch.Tensor,
    labels: torch.Tensor,
    layout: TokenLayout,
    class_dropout_prob: float = 0.1,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    r"""
    Build the causal-LM batch of the prior's training stage: the class token in front of the image tokens, with
    class dropout (the class token replaced by the null class with probability `class_dropout_prob`, which trains the
    unconditional branch of classifier-free guidance). The loss is on image tokens only. The arguments are trusted: the
    training stage checks its options and code dataset when it starts ([`TokenLayout.validate_tokens`] checks codes).

    Args:
        codes (`torch.LongTensor` of shape `(B, N)`): image-token ids in the layout (no class token), e.g. the
            `codes` column of an extracted code dataset.
        labels (`torch.LongTensor` of shape `(B,)`): class labels in `[0, layout.num_classes)`.
        layout (`TokenLayout`): the prior's token layout.
        class_dropout_prob (`float`, *optional*, defaults to 0.1): probability of replacing a class by the null class.
        generator (`torch.Generator`, *optional*): source of the dropout draws.

    Returns:
        `dict` with `input_ids` `(B, N + 1)` and `labels` `(B, N + 1)` (a copy of `input_ids` with -100 at the class
        position; transformers shifts labels internally, so position 0 predicts the first image token).
    """
    class_ids = labels.to(codes.device).long() + layout.codebook_size
    if class_dropout_prob > 0:
        drop = draw_uniforms(generator, 1, labels.shape[0], codes.device)[0] < class_dropout_prob
        class_ids = torch.where(drop, torch.full_like(class_ids, layout.null_class_id), class_ids)
    input_ids = torch.cat([class_ids[:, None], codes.long()], dim=1)
    targets = input_ids.clone()
    targets[:, 0] = -100
    return {"input_ids": input_ids, "labels": targets}


__all__ = ["PRIOR_SIZES", "PriorSize", "build_prior", "layout_from_configs", "prior_config", "prior_training_batch"]
