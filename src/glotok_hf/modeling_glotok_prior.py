# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
#
# The architecture follows LlamaGen's c2i GPT (FoundationVision/LlamaGen, MIT) and FQGAN's FAR (showlab/FQGAN);
# it is built from transformers' Llama modules, nothing is copied.
"""The factorized class-conditional AR prior (FQGAN's FAR; LlamaGen's c2i GPT with one codebook) on transformers'
Llama decoder layers, with its KV-cached sampler.

Shipped as Hub remote code, so it imports only torch, transformers, `configuration_glotok_prior` and `sampling`.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache, LogitsProcessorList, PreTrainedModel, StaticCache
from transformers.masking_utils import create_causal_mask
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRMSNorm
from transformers.utils import ModelOutput

from .configuration_glotok_prior import GloTokPriorConfig
from .sampling import TokenLayout, sample_from_logits


@dataclass
class GloTokPriorOutput(ModelOutput):
    r"""
    Output of [`GloTokPriorForCausalLM.forward`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*): the mean over codebooks of each codebook's
            cross-entropy (returned when `labels` are given).
        logits (`tuple[torch.FloatTensor]`): one `(batch, positions, codebook_size)` tensor per codebook; position `i`
            predicts the codes of grid position `i`.
    """

    loss: torch.FloatTensor | None = None
    logits: tuple[torch.FloatTensor, ...] | None = None


def rotary_table(config: GloTokPriorConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """`(cos, sin)`, each `(1 + num_positions, head_dim)` in transformers' rotate-half layout: row 0 is the class
    token (all zero, LlamaGen's convention, or the identity without `zero_class_rotary`), row `1 + p` grid position
    `p` in raster order. With `rope_2d`, pair `k` of the first half of the pairs turns with the row at frequency
    `theta ** (-4k / head_dim)`, of the second half with the column; otherwise every pair turns with `p` at
    `theta ** (-2k / head_dim)`."""
    half, grid = config.head_dim // 2, config.grid_size
    if config.rope_2d:
        freqs = 1.0 / config.rope_theta ** (torch.arange(0, half, 2).float() / half)
        rows, cols = torch.arange(grid).repeat_interleave(grid), torch.arange(grid).repeat(grid)
        angles = torch.cat([rows[:, None] * freqs, cols[:, None] * freqs], dim=1)
    else:
        freqs = 1.0 / config.rope_theta ** (torch.arange(0, 2 * half, 2).float() / (2 * half))
        angles = torch.arange(grid * grid)[:, None] * freqs
    angles = torch.cat([angles, angles], dim=1)
    class_cos = 0.0 if config.zero_class_rotary else 1.0
    return F.pad(torch.cos(angles), (0, 0, 1, 0), value=class_cos), F.pad(torch.sin(angles), (0, 0, 1, 0))


class GloTokPriorForCausalLM(PreTrainedModel):
    r"""
    The factorized class-conditional AR prior of [`GloTokPriorConfig`]: one backbone step per grid position (a
    class token first), a factorized head predicting the position's sub-tokens in codebook order, one output
    projection per codebook. Registered with `AutoModel` / `AutoModelForCausalLM`.

    Codes are given per codebook: `input_ids` of shape `(batch, positions, num_codebooks)` (or `(batch, positions)`
    with one codebook), each entry an index into its own codebook.
    """

    config: GloTokPriorConfig
    base_model_prefix = "prior"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["LlamaDecoderLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def __init__(self, config: GloTokPriorConfig):
        super().__init__(config)
        width, sizes = config.hidden_size, config.codebook_sizes
        self.class_embedding = nn.Embedding(config.num_classes + 1, width)
        self.embed_tokens = nn.ModuleList(nn.Embedding(size, width) for size in sizes)
        self.aggregate = nn.Linear(len(sizes) * width, width) if len(sizes) > 1 else None
        self.layers = nn.ModuleList(LlamaDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.head = nn.ModuleList(LlamaDecoderLayer(config, i) for i in range(config.head_layers))
        self.norm = LlamaRMSNorm(width, eps=config.rms_norm_eps)
        self.lm_heads = nn.ModuleList(nn.Linear(width, size, bias=False) for size in sizes)
        self._rotary = {}  # (device, dtype) -> the rotary table there (computed, never saved)
        self.post_init()

    # ------------------------------------------------------------------------------------------------ pieces
    def embed_positions(self, input_ids: torch.LongTensor) -> torch.FloatTensor:
        """Backbone inputs of grid positions: `(B, L, num_codebooks)` codes -> `(B, L, hidden_size)`."""
        embeds = [embed(input_ids[..., j]) for j, embed in enumerate(self.embed_tokens)]
        return embeds[0] if self.aggregate is None else self.aggregate(torch.cat(embeds, dim=-1))

    def _run(self, layers, hidden, cache=None, past: int = 0, **kwargs) -> torch.FloatTensor:
        key = (hidden.device, hidden.dtype)
        if key not in self._rotary:
            self._rotary[key] = tuple(t.to(*key) for t in rotary_table(self.config))
        cos, sin = (t[None, past : past + hidden.shape[1]] for t in self._rotary[key])
        position_ids = torch.arange(past, past + hidden.shape[1], device=hidden.device)[None]
        mask = create_causal_mask(
            config=self.config, inputs_embeds=hidden, attention_mask=None, cache=cache, position_ids=position_ids
        )
        for layer in layers:
            hidden = layer(hidden, attention_mask=mask, position_embeddings=(cos, sin), cache=cache,
                           position_ids=position_ids, **kwargs)  # fmt: skip
        return hidden

    def backbone(
        self,
        class_labels: torch.LongTensor | None = None,
        input_ids: torch.LongTensor | None = None,
        cache: DynamicCache | StaticCache | None = None,
        **kwargs,
    ) -> torch.FloatTensor:
        """Backbone hidden states `(B, L, hidden_size)` of the sequence `[class token] + positions`: the class token
        when `class_labels` `(B,)` (labels, `num_classes` for the null class) are given, then one step per position
        of `input_ids` `(B, L', num_codebooks)`. With a `cache`, the sequence continues the cached one."""
        parts = [] if class_labels is None else [self.class_embedding(class_labels)[:, None]]
        if input_ids is not None and input_ids.shape[1] > 0:
            parts.append(self.embed_positions(input_ids))
        hidden = torch.cat(parts, dim=1)
        past = 0 if cache is None else cache.get_seq_length()
        return self._run(self.layers, hidden, cache=cache, past=past, **kwargs)

    def head_states(
        self, hidden: torch.FloatTensor, sub_ids: torch.LongTensor | None = None, cache: DynamicCache | None = None
    ) -> torch.FloatTensor:
        """Normalised head outputs `(B, L, k + 1, hidden_size)` of backbone states `hidden` `(B, L, hidden_size)`
        followed by the first `k` sub-tokens `sub_ids` `(B, L, k)` of each position; slot `j` feeds the output
        projection of codebook `j`. With a `cache` (of the head's layers) holding the first slots, only the slots
        after them are computed and returned."""
        count = 0 if sub_ids is None else sub_ids.shape[-1]
        past = 0 if cache is None else cache.get_seq_length()
        slots = [hidden] + [self.embed_tokens[j](sub_ids[..., j]) for j in range(count)]
        states = torch.stack(slots[past:], dim=2)
        batch, length, count, width = states.shape
        if len(self.head) > 0:  # rotary rows 0, 1, ... of the backbone's table, as FAR
            states = self._run(self.head, states.reshape(batch * length, count, width), cache=cache, past=past)
        return self.norm(states.reshape(batch, length, count, width))

    # ----------------------------------------------------------------------------------------------- forward
    def forward(
        self,
        input_ids: torch.LongTensor,
        class_labels: torch.LongTensor,
        labels: torch.LongTensor | None = None,
        **kwargs,
    ) -> GloTokPriorOutput:
        r"""
        Teacher-forced logits of every grid position of `input_ids` given the class and the positions before it.

        Args:
            input_ids (`torch.LongTensor` of shape `(batch, positions, num_codebooks)` or `(batch, positions)`):
                codes of each codebook (indices into that codebook).
            class_labels (`torch.LongTensor` of shape `(batch,)`): labels; `num_classes` is the null class.
            labels (`torch.LongTensor`, *optional*): targets of `input_ids`' shape (usually `input_ids`; -100 is
                ignored); the loss is the mean of the codebooks' cross-entropies.
        """
        if input_ids.ndim == 2:
            input_ids = input_ids[..., None]
        hidden = self.backbone(class_labels, input_ids[:, :-1], **kwargs)
        states = self.head_states(hidden, input_ids[..., :-1])
        logits = tuple(head(states[:, :, j]).float() for j, head in enumerate(self.lm_heads))
        loss = None
        if labels is not None:
            labels = labels.reshape(input_ids.shape)
            losses = [F.cross_entropy(lg.flatten(0, 1), labels[..., j].flatten()) for j, lg in enumerate(logits)]
            loss = torch.stack(losses).mean()
        return GloTokPriorOutput(loss=loss, logits=logits)

    # ---------------------------------------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample_factorized(
        self,
        layout: TokenLayout,
        labels: torch.LongTensor,
        num_positions: int,
        scales: list[float],
        processors: LogitsProcessorList,
        uniforms: torch.FloatTensor,
        callback: Callable[[int, torch.LongTensor], torch.LongTensor | None] | None = None,
        cache_implementation: str = "dynamic",
    ) -> torch.LongTensor:
        r"""
        The sampling loop [`glotok_hf.sampling.sample_image_tokens`] hands this prior to, after checking and preparing
        its arguments (call that function, not this one): one KV-cached backbone step per grid position (the class
        token prefilled), the position's sub-tokens sampled in codebook order by the head within the step, the
        conditional and null-class rows in one batched forward, logits `uncond + s * (cond - uncond)` with the scale
        `scales[step]` of each sub-token. `callback(step, tokens)` is called after every sub-token, as there.

        Returns:
            `torch.LongTensor` of shape `(B, num_positions * num_codebooks)`: token ids in `layout`.
        """
        sizes = [hi - lo for _, lo, hi in layout._codebooks]
        if sizes != self.config.codebook_sizes:
            raise ValueError(f"The tokenizer's codebooks {sizes} are not the prior's codebook_sizes "
                             f"{self.config.codebook_sizes}.")  # fmt: skip
        batch, count, device = labels.shape[0], len(sizes), labels.device
        guided = [i for i, s in enumerate(scales) if s != 1.0]
        last_guided, paired = (guided or [-1])[-1], bool(guided)
        offsets = torch.tensor([lo for _, lo, _ in layout._codebooks], device=device)
        codes = torch.zeros(batch, num_positions, count, dtype=torch.long, device=device)
        sequences = torch.empty(batch, 1 + num_positions * count, dtype=torch.long, device=device)
        sequences[:, 0] = labels + layout.codebook_size

        def new_cache():
            static = cache_implementation == "static"
            return StaticCache(config=self.config, max_cache_len=1 + num_positions) if static else DynamicCache()

        def rows(x: torch.Tensor) -> torch.Tensor:
            return torch.cat([x, x]) if paired else x

        def prefill(position: int) -> torch.FloatTensor:  # the class token and the positions before `position`
            class_rows = torch.cat([labels, torch.full_like(labels, layout.null_label)]) if paired else labels
            return self.backbone(class_rows, rows(codes[:, :position]), cache=cache)[:, -1:]

        cache, fresh = new_cache(), True
        for position in range(num_positions):
            if fresh:
                hidden, fresh = prefill(position), False
            else:
                hidden = self.backbone(None, rows(codes[:, position - 1 : position]), cache=cache)
            head_cache = DynamicCache()
            for j in range(count):
                step = position * count + j
                states = self.head_states(hidden, rows(codes[:, position : position + 1, :j]), head_cache)
                logits = self.lm_heads[j](states[:, 0, -1]).float()
                if paired:
                    cond, uncond = logits[:batch], logits[batch:]
                    logits = cond if scales[step] == 1.0 else uncond + scales[step] * (cond - uncond)
                logits = processors(sequences[:, : step + 1], logits)
                codes[:, position, j] = sample_from_logits(logits, uniforms[:, step])
                sequences[:, step + 1] = codes[:, position, j] + offsets[j]
                edited = None if callback is None else callback(step, sequences[:, 1 : step + 2])
                if edited is not None:  # edits of earlier positions: recompute the backbone (and the head)
                    before = bool((edited[:, : position * count] != sequences[:, 1 : position * count + 1]).any())
                    sequences[:, 1 : step + 2] = edited
                    codes.view(batch, -1)[:, : step + 1] = edited - offsets.repeat(position + 1)[: step + 1]
                    if before:  # (the head reads this position's codes afresh; it caches none of them yet)
                        cache, fresh = new_cache(), True
                    if fresh and j + 1 < count:
                        hidden, fresh, head_cache = prefill(position), False, DynamicCache()
            if paired and (position + 1) * count > last_guided and isinstance(cache, DynamicCache):
                cache.batch_select_indices(torch.arange(batch, device=device))  # guidance is over: drop uncond rows
                paired = False
        return sequences[:, 1:]


__all__ = ["GloTokPriorForCausalLM", "GloTokPriorOutput", "rotary_table"]
