# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""Token layout of the GloTok AR prior and its classifier-free-guidance sampler.

This file is shipped as Hub remote code next to the pipeline module, so it imports only torch and transformers.

The layout is a public contract (pipelines, saved checkpoints and users rely on it). With `V` visual codes, `S`
semantic codes and `C` classes the prior's vocabulary has exactly `V + S + C + 1` ids:

| ids             | meaning                                                      |
|-----------------|--------------------------------------------------------------|
| `[0, V)`        | visual codes                                                 |
| `[V, V + S)`    | semantic codes (`id = V + semantic index`)                   |
| `[V + S, V+S+C)`| class tokens (`id = V + S + label`)                          |
| `V + S + C`     | the null class (unconditional rows of classifier-free guidance) |

An image is the sequence `[class, v_0, s_0, v_1, s_1, ...]` over the token grid in raster order, the visual code
before the semantic code of each position (the order FQGAN samples in). With a single codebook it is
`[class, c_0, c_1, ...]`. The prior has no bos/eos/pad token.
"""

import importlib
import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers import (
    DynamicCache,
    LogitsProcessorList,
    StaticCache,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from .utils import is_int

_INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def _check_integer_tensor(name: str, value) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.dtype not in _INTEGER_DTYPES:
        raise TypeError(f"{name} must be an integer torch.Tensor, got {getattr(value, 'dtype', value)!r}.")
    return value


# ------------------------------------------------------------------------------------------------------ layout
@dataclass(frozen=True)
class TokenLayout:
    r"""
    Vocabulary layout of a class-conditional AR prior over GloTok codes (see the module docstring for the table).

    Args:
        visual_codebook_size (`int`): visual codes `V` (0 when the tokenizer has no visual codebook).
        semantic_codebook_size (`int`): semantic codes `S` (0 when the tokenizer has no semantic codebook).
        num_classes (`int`): class labels `C`; label `C` ([`TokenLayout.null_label`]) is the null class.

    Example:

    ```python
    >>> layout = TokenLayout(visual_codebook_size=12288, semantic_codebook_size=4096, num_classes=1000)
    >>> layout.vocab_size, layout.null_class_id, layout.sequence_length(256)
    (17385, 17384, 513)
    >>> layout.allowed_range(0), layout.allowed_range(1)
    ((0, 12288), (12288, 16384))

    ```
    """

    visual_codebook_size: int
    semantic_codebook_size: int
    num_classes: int

    def __post_init__(self):
        for name, minimum in (("visual_codebook_size", 0), ("semantic_codebook_size", 0), ("num_classes", 1)):
            if not is_int(getattr(self, name)) or getattr(self, name) < minimum:
                raise ValueError(f"TokenLayout.{name} must be an int >= {minimum}, got {getattr(self, name)!r}.")
        if self.codebook_size == 0:
            raise ValueError("TokenLayout needs at least one codebook: both codebook sizes are 0.")

    # ---------------------------------------------------------------------------------------- sizes and ids
    @property
    def codebook_size(self) -> int:
        """Number of image-code ids, `V + S`; class tokens start here."""
        return self.visual_codebook_size + self.semantic_codebook_size

    @property
    def vocab_size(self) -> int:
        """`V + S + C + 1`: image codes, class tokens and the null class."""
        return self.codebook_size + self.num_classes + 1

    @property
    def null_label(self) -> int:
        """The class label meaning "no class" (`C`, as in LlamaGen); its token is [`TokenLayout.null_class_id`]."""
        return self.num_classes

    @property
    def null_class_id(self) -> int:
        """Token id of the null class, `V + S + C`, used for the unconditional rows of classifier-free guidance."""
        return self.codebook_size + self.num_classes

    @property
    def tokens_per_position(self) -> int:
        """Image tokens per grid position: 2 with both codebooks (visual, then semantic), else 1."""
        return int(self.visual_codebook_size > 0) + int(self.semantic_codebook_size > 0)

    @property
    def _codebooks(self) -> tuple[tuple[str, int, int], ...]:
        v, s = self.visual_codebook_size, self.semantic_codebook_size
        return tuple(book for book in (("visual", 0, v), ("semantic", v, v + s)) if book[2] > book[1])

    def num_image_tokens(self, num_positions: int) -> int:
        """Image tokens of an image with `num_positions` grid positions (class token excluded)."""
        return num_positions * self.tokens_per_position

    def sequence_length(self, num_positions: int) -> int:
        """Length of a full training sequence, class token included: `1 + num_positions * tokens_per_position`."""
        return 1 + self.num_image_tokens(num_positions)

    def allowed_range(self, step: int) -> tuple[int, int]:
        """The id range `[lo, hi)` the prior may emit at image-token step `step` (0 = first token after the class)."""
        return self._codebooks[step % self.tokens_per_position][1:]

    # ------------------------------------------------------------------------------------------- classes
    def class_token_ids(self, labels: torch.Tensor | Sequence[int] | int) -> torch.LongTensor:
        """Class labels in `[0, num_classes]` (`num_classes` = [`TokenLayout.null_label`]) -> class token ids.

        Returns a `torch.LongTensor` of the labels' shape (1-d for a list, 0-d for an int), on the labels' device.
        """
        if not isinstance(labels, torch.Tensor):
            ints = labels if isinstance(labels, Sequence) and not isinstance(labels, (str, bytes)) else [labels]
            if not all(is_int(x) for x in ints):
                raise TypeError(f"class labels must be ints or an integer tensor, got {labels!r}.")
            labels = torch.tensor(labels if ints is labels else int(labels), dtype=torch.long)
        bad = (_check_integer_tensor("class labels", labels) < 0) | (labels > self.num_classes)
        if bool(bad.any()):
            value = int(labels[bad].flatten()[0])
            raise ValueError(
                f"class label {value} is out of range: labels must lie in [0, {self.num_classes}) "
                f"(num_classes={self.num_classes}), or equal the null label {self.null_label} for unconditional "
                "generation."
            )
        return labels.long() + self.codebook_size

    # ------------------------------------------------------------------------------------- codes <-> tokens
    def validate_tokens(self, tokens: torch.Tensor, name: str = "tokens") -> None:
        """Raise a `ValueError` naming the first image token of `tokens` (`(B, L)`, class token excluded) whose id
        lies outside the range its position allows."""
        t = self.tokens_per_position
        if _check_integer_tensor(name, tokens).ndim != 2 or tokens.shape[1] % t:
            raise ValueError(
                f"{name} must have shape (batch, num_image_tokens) with a multiple of {t} (the tokens per grid "
                f"position) image tokens per row, got shape {tuple(tokens.shape)}."
            )
        for slot, (kind, lo, hi) in enumerate(self._codebooks):
            column = tokens[:, slot::t]
            bad = (column < lo) | (column >= hi)
            if bool(bad.any()):
                row, pos = bad.nonzero()[0].tolist()
                raise ValueError(
                    f"{name} break the token layout: row {row}, image token {pos * t + slot} (grid position {pos}) "
                    f"is {int(column[row, pos])}, but that step allows only {kind} code ids in [{lo}, {hi})."
                )

    def to_tokens(
        self, visual_indices: torch.Tensor | None = None, semantic_indices: torch.Tensor | None = None
    ) -> torch.LongTensor:
        """Codebook indices `(B, h, w)` or `(B, h*w)` -> image-token ids `(B, h*w*tokens_per_position)` in layout
        order (visual before semantic at each position, raster order, no class token). Pass the indices of exactly
        the codebooks the layout has; they are trusted to lie in them (e.g. a tokenizer's `encode` output)."""
        given = {"visual": visual_indices, "semantic": semantic_indices}
        for name, indices in given.items():
            size = getattr(self, f"{name}_codebook_size")
            if (indices is None) != (size == 0):
                raise ValueError(
                    f"{name}_indices must be given exactly when the layout has a {name} codebook "
                    f"(it has {size} {name} codes)."
                )
        return torch.stack([given[name].flatten(1).long() + lo for name, lo, _ in self._codebooks], dim=-1).flatten(1)

    def to_indices(
        self, tokens: torch.Tensor, grid: tuple[int, int] | int | None = None
    ) -> tuple[torch.LongTensor | None, torch.LongTensor | None]:
        """Image-token ids `(B, h*w*tokens_per_position)` -> `(visual_indices, semantic_indices)`, each `(B, h, w)`
        or `None` when the layout lacks that codebook. `grid` is `(h, w)`, a side length, or `None` for a square
        grid."""
        self.validate_tokens(tokens)
        num_positions = tokens.shape[1] // self.tokens_per_position
        grid = math.isqrt(num_positions) if grid is None else grid
        grid = (grid, grid) if is_int(grid) else tuple(grid)
        if len(grid) != 2 or grid[0] * grid[1] != num_positions:
            raise ValueError(
                f"grid {grid!r} does not match the tokens: they hold {num_positions} grid positions "
                f"({tokens.shape[1]} tokens / {self.tokens_per_position} per position); pass grid=(h, w)."
            )
        per_slot = tokens.long().view(tokens.shape[0], num_positions, self.tokens_per_position)
        out = {"visual": None, "semantic": None}
        for slot, (name, lo, _) in enumerate(self._codebooks):
            out[name] = (per_slot[..., slot] - lo).reshape(tokens.shape[0], *grid)
        return out["visual"], out["semantic"]

    # -------------------------------------------------------------------------------------- construction
    @classmethod
    def from_vocab_size(
        cls, vocab_size: int, visual_codebook_size: int, semantic_codebook_size: int, label_ids: Sequence | None = None
    ) -> "TokenLayout":
        """The layout of a prior with `vocab_size` ids over a tokenizer with these codebook sizes; the number of
        classes is `vocab_size - V - S - 1`, and `label_ids` (the ids of the label names) must be `0..classes - 1`."""
        codes = visual_codebook_size + semantic_codebook_size
        num_classes = vocab_size - codes - 1
        problems = [
            (num_classes < 1, f"the prior's vocab_size {vocab_size} does not fit the tokenizer's codebooks: it needs "
             f"at least {codes} visual+semantic codes ({visual_codebook_size} + {semantic_codebook_size}) + 1 class + "
             f"1 null class = {codes + 2} ids"),
            (label_ids is not None and list(label_ids) != list(range(num_classes)), f"the prior's vocab_size "
             f"{vocab_size} implies {num_classes} classes ({vocab_size} - {visual_codebook_size} visual - "
             f"{semantic_codebook_size} semantic - 1 null), but {len(label_ids or ())} label names were given for ids "
             f"{list(label_ids or ())[:5]}: id2label must name classes 0..{num_classes - 1}"),
        ]  # fmt: skip
        for failed, message in problems:
            if failed:
                raise ValueError(f"The prior does not fit the tokenizer: {message}.")
        return cls(visual_codebook_size, semantic_codebook_size, num_classes)


# ----------------------------------------------------------------------------------------------------- sampler
def cache_keyword(model: torch.nn.Module) -> str:
    """The KV-cache keyword of `model.forward`: `cache` from transformers 5.24 on, `past_key_values` before."""
    parameters = inspect.signature(model.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def guidance_scales(
    num_positions: int,
    tokens_per_position: int,
    guidance_scale: float | Sequence[float],
    guidance_schedule: str = "constant",
    guidance_interval: tuple[float, float] | None = None,
) -> list[float]:
    """The guidance scale of every image-token step (`num_positions * tokens_per_position` floats).

    `guidance_scale` is one float for every token, or one per token of a position (per codebook: visual, semantic).
    `"linear"` ramps from 1 (no guidance) at the first position to `guidance_scale` at the last (`1 + (s - 1) * p /
    (num_positions - 1)` at position `p`); `"constant"` is `guidance_scale` everywhere. Outside `guidance_interval = (start, end)`, given as fractions of the grid positions
    (position `p` is inside when `start <= p / num_positions < end`), the scale is 1. The arguments are those
    [`check_sampling_inputs`] accepts.
    """
    per_token = guidance_scale if isinstance(guidance_scale, (list, tuple)) else [guidance_scale] * tokens_per_position
    scales = []
    for p in range(num_positions):
        for scale in map(float, per_token):
            if guidance_schedule == "linear":
                scale = 1.0 + (scale - 1.0) * (p / (num_positions - 1) if num_positions > 1 else 1.0)
            if guidance_interval is not None and not guidance_interval[0] <= p / num_positions < guidance_interval[1]:
                scale = 1.0
            scales.append(scale)
    return scales


def _logits_processors(temperature: float, top_k: int | None, top_p: float | None) -> LogitsProcessorList:
    processors = LogitsProcessorList()
    if temperature != 1.0:
        processors.append(TemperatureLogitsWarper(float(temperature)))
    if top_k:
        processors.append(TopKLogitsWarper(top_k))
    if top_p is not None and top_p < 1.0:
        processors.append(TopPLogitsWarper(float(top_p)))
    return processors


def draw_uniforms(
    generator: torch.Generator | Sequence[torch.Generator] | None,
    batch_size: int,
    num_steps: int,
    device: torch.device,
) -> torch.FloatTensor:
    """`(batch_size, num_steps)` uniforms in [0, 1): row `i` holds the first `num_steps` draws of `generator[i]`
    when a list (one generator per row) is given, so a sample never depends on the rest of the batch. Each generator
    draws on its own device; the result is moved to `device`."""
    if isinstance(generator, (list, tuple)):
        return torch.stack([torch.rand(num_steps, generator=g, device=g.device).to(device) for g in generator])
    draw_device = device if generator is None else generator.device
    return torch.rand(batch_size, num_steps, generator=generator, device=draw_device).to(device)


def sample_from_logits(logits: torch.Tensor, uniforms: torch.Tensor) -> torch.LongTensor:
    """Sample one index per row of `logits` `(B, n)` by inverse CDF with `uniforms` `(B,)` in [0, 1).

    Indices with zero probability (filtered to `-inf`) are never returned, even when rounding in the cumulative sum
    would land the draw on one of them.
    """
    probs = torch.softmax(logits.float(), dim=-1)
    cdf = probs.cumsum(dim=-1)
    target = uniforms.to(cdf.dtype)[:, None] * cdf[:, -1:]
    index = torch.searchsorted(cdf, target, right=True).clamp_max(probs.shape[-1] - 1)
    # Snap to the nearest index <= the drawn one that has positive probability (a no-op unless rounding misled us).
    positive = torch.arange(probs.shape[-1], device=probs.device).expand_as(probs)
    last_positive = torch.where(probs > 0, positive, -1).cummax(dim=-1).values
    snapped = last_positive.gather(-1, index)
    first_positive = (probs > 0).float().argmax(dim=-1, keepdim=True)  # draws before any mass (impossible) -> first
    return torch.where(snapped >= 0, snapped, first_positive).squeeze(-1)


def sampling_memory_bytes(
    prior: torch.nn.Module, layout: TokenLayout, batch_size: int, num_positions: int, guided: bool = True
) -> int:
    """A lower bound of the memory [`sample_image_tokens`] needs for `batch_size` samples: the KV cache of every row
    (twice the batch with guidance) at full length, plus the random draws and the token sequences. The cache holds
    one entry per layer and image token for an interleaved prior; for a factorized prior one per backbone layer and
    grid position, and the head's entries of one position."""
    config, steps = prior.config, layout.num_image_tokens(num_positions)
    rows = 2 * batch_size if guided else batch_size
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    entry = 2 * (getattr(config, "num_key_value_heads", None) or heads) * head_dim
    if hasattr(prior, "sample_factorized"):
        entries = config.num_hidden_layers * num_positions + config.head_layers * layout.tokens_per_position
    else:
        entries = config.num_hidden_layers * steps
    draws_and_sequences = batch_size * (4 * steps + 8 * (1 + steps))
    return entry * entries * rows * next(prior.parameters()).element_size() + draws_and_sequences


def available_memory_bytes(device: torch.device | str) -> int | None:
    """Memory free for new tensors on `device` (CUDA: free plus cached by torch; CPU: available RAM), or `None` where
    it cannot be told."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    if device.type == "cpu":
        try:  # psutil comes with accelerate; imported by name so remote-code loaders do not ask for it
            return importlib.import_module("psutil").virtual_memory().available
        except ImportError:
            return None
    return None


def _is_real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_sampling_inputs(
    prior: torch.nn.Module,
    layout: TokenLayout,
    batch_size: int,
    num_positions: int,
    *,
    guidance_scale: float | Sequence[float] = 2.0,
    guidance_schedule: str = "constant",
    guidance_interval: tuple[float, float] | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    cache_implementation: str = "dynamic",
    device: torch.device | str = "cpu",
) -> None:
    r"""
    Raise a clear `ValueError` or `TypeError` for any input [`sample_image_tokens`] cannot take (the arguments are
    its own, with `batch_size` for the class labels), and when `batch_size` samples certainly do not fit in `device`'s
    memory (see [`sampling_memory_bytes`]) instead of an out-of-memory error from deep inside torch or a machine
    brought to a crawl by swapping. `sample_image_tokens(..., validate=True)` and `GloTokPipeline.check_inputs` call
    it once; the sampling loop trusts what it accepted.
    """
    config, interval = prior.config, guidance_interval
    per_book = list(guidance_scale) if isinstance(guidance_scale, (list, tuple)) else [guidance_scale]
    positive = is_int(num_positions) and num_positions > 0
    num_steps = layout.num_image_tokens(num_positions) if positive else 0
    max_positions = getattr(config, "max_position_embeddings", None) or num_steps
    problems = [
        (getattr(config, "vocab_size", None) != layout.vocab_size,
         f"The prior's vocab_size {getattr(config, 'vocab_size', None)} does not match the token layout's "
         f"{layout.vocab_size} ({layout.visual_codebook_size} visual + {layout.semantic_codebook_size} semantic "
         f"codes + {layout.num_classes} classes + 1 null class)"),
        (not positive, f"num_positions must be a positive int, got {num_positions!r}"),
        (num_steps > max_positions,
         f"{num_positions} grid positions need {num_steps} input positions (class token + {num_steps - 1} image "
         f"tokens), more than the prior's max_position_embeddings={max_positions}"),
        (cache_implementation not in ("dynamic", "static"),
         f"cache_implementation must be 'dynamic' or 'static', got {cache_implementation!r}"),
        (guidance_schedule not in ("constant", "linear"),
         f"guidance_schedule must be 'constant' or 'linear', got {guidance_schedule!r}"),
        (not all(_is_real(s) and s >= 0 for s in per_book) or len(per_book) not in (1, layout.tokens_per_position),
         f"guidance_scale must be a finite float >= 0 (1 disables guidance) or one per codebook, got "
         f"{guidance_scale!r}"),
        (interval is not None and not (isinstance(interval, (tuple, list)) and len(interval) == 2
                                       and all(_is_real(x) for x in interval) and 0 <= interval[0] < interval[1] <= 1),
         "guidance_interval must be (start, end) fractions of the grid positions with 0 <= start < end <= 1, "
         f"got {interval!r}"),
        (not _is_real(temperature) or not temperature > 0, f"temperature must be a float > 0, got {temperature!r}"),
        (top_k is not None and (not is_int(top_k) or top_k < 0),
         f"top_k must be None or an int >= 0 (0 or None disables it), got {top_k!r}"),
        (top_p is not None and (not _is_real(top_p) or not 0 < top_p <= 1),
         f"top_p must be None or a float in (0, 1] (1 or None disables it), got {top_p!r}"),
    ]  # fmt: skip
    for failed, message in problems:
        if failed:
            raise ValueError(message + ".")
    many = isinstance(generator, (list, tuple))
    if not all(
        isinstance(g, torch.Generator) for g in (generator if many else [] if generator is None else [generator])
    ):
        raise TypeError(
            f"generator must be a torch.Generator, a list of them (one per image), or None; got {generator!r}."
        )
    if many and len(generator) != batch_size:
        raise ValueError(
            f"Got {len(generator)} generators for {batch_size} images; pass one generator or exactly one per image."
        )
    scales = guidance_scales(num_positions, len(per_book), per_book, guidance_schedule, guidance_interval)
    needed = sampling_memory_bytes(prior, layout, batch_size, num_positions, guided=any(s != 1.0 for s in scales))
    available = available_memory_bytes(device)
    if available is not None and needed > available:
        raise ValueError(
            f"Sampling {batch_size} images at once needs at least {needed / 2**30:.3g} GiB on {device} (the prior's "
            f"KV cache), more than the {available / 2**30:.3g} GiB available: generate fewer images per call."
        )


@torch.no_grad()
def sample_image_tokens(
    prior: torch.nn.Module,
    layout: TokenLayout,
    class_labels: torch.Tensor | Sequence[int],
    num_positions: int,
    *,
    guidance_scale: float | Sequence[float] = 2.0,
    guidance_schedule: str = "constant",
    guidance_interval: tuple[float, float] | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    callback: Callable[[int, torch.LongTensor], torch.LongTensor | None] | None = None,
    cache_implementation: str = "dynamic",
    device: torch.device | str | None = None,
    validate: bool = True,
) -> torch.LongTensor:
    r"""
    Sample image tokens from a class-conditional causal LM prior with classifier-free guidance and a KV cache. A
    factorized prior (`GloTokPriorForCausalLM`) runs its own loop, one backbone step per grid position, after the
    checks and preparations here.

    Conditional and unconditional (null-class) rows run in one batched forward of `2 * B` rows per step; the guided
    logits are `uncond + s * (cond - uncond)`. At each step only the id range the layout allows there (visual or
    semantic codes) is considered, so no other id can be emitted. Once guidance is off for the rest of the sequence
    (scale 1 everywhere, or past `guidance_interval`), the unconditional rows are dropped from the batch and cache.

    Args:
        prior (`transformers.PreTrainedModel`):
            A causal LM (e.g. `LlamaForCausalLM`) whose vocabulary is `layout.vocab_size`, or a factorized
            `GloTokPriorForCausalLM` (which runs its own loop).
        layout (`TokenLayout`): the token layout the prior was trained on.
        class_labels (`torch.LongTensor` of shape `(B,)` or a list of ints):
            Labels in `[0, layout.num_classes)`, or `layout.null_label` for an unconditional sample.
        num_positions (`int`): grid positions to generate (`h * w`, e.g. 256 for a 16x16 grid).
        guidance_scale (`float` or `list[float]`, *optional*, defaults to 2.0):
            Classifier-free guidance scale `s >= 0`, or one per codebook (visual, semantic); 1 disables guidance, 0
            samples unconditionally, `0 < s < 1` interpolates (LlamaGen and FQGAN do not guide at all for `s <= 1`:
            pass 1 to reproduce such a run).
        guidance_schedule (`str`, *optional*, defaults to `"constant"`):
            `"constant"`, or `"linear"`: the scale ramps from 1 at the first grid position to `guidance_scale` at the
            last.
        guidance_interval (`tuple[float, float]`, *optional*):
            `(start, end)` fractions of the grid positions outside which guidance is off (scale 1).
        temperature (`float`, *optional*, defaults to 1.0): softmax temperature (> 0), via `TemperatureLogitsWarper`.
        top_k (`int`, *optional*): keep the `top_k` most likely ids (`TopKLogitsWarper`); `None` or 0 disables it.
        top_p (`float`, *optional*): nucleus sampling threshold (`TopPLogitsWarper`); `None` or 1 disables it.
        generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
            One generator per sample makes every sample independent of the batch it is generated in: sample `i` is
            identical whether generated alone with `generator[i]` or in a batch. A single generator seeds the batch.
        callback (`Callable[[int, torch.LongTensor], torch.LongTensor | None]`, *optional*):
            Called after each sampled token as `callback(step, tokens)`: `step` counts from 0, `tokens` is a view of
            the `(B, step + 1)` image tokens sampled so far. Return `None` to go on, or a tensor of that shape to
            continue from instead (do not edit the view in place); when tokens before the last one change, the KV
            cache is rebuilt from the edited prefix.
        cache_implementation (`str`, *optional*, defaults to `"dynamic"`): `"dynamic"` (`DynamicCache`) or
            `"static"` (`StaticCache`, pre-allocated; for `torch.compile`).
        device (`torch.device`, *optional*): where to run; defaults to the prior's device.
        validate (`bool`, *optional*, defaults to `True`):
            Check the labels and every argument first ([`check_sampling_inputs`]); `False` trusts a caller that
            checked them already (as `GloTokPipeline.check_inputs` does).

    Returns:
        `torch.LongTensor` of shape `(B, num_positions * layout.tokens_per_position)`: image-token ids (class token
        excluded); convert to codebook indices with `layout.to_indices(tokens, grid=(h, w))`.

    Example:

    ```python
    >>> import torch
    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> layout = TokenLayout(visual_codebook_size=16, semantic_codebook_size=12, num_classes=10)
    >>> prior = LlamaForCausalLM(LlamaConfig(
    ...     vocab_size=layout.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    ...     num_attention_heads=4, max_position_embeddings=layout.sequence_length(4),
    ...     bos_token_id=None, eos_token_id=None, pad_token_id=None)).eval()
    >>> generator = [torch.Generator().manual_seed(seed) for seed in (0, 1)]
    >>> tokens = sample_image_tokens(prior, layout, [3, 7], num_positions=4, guidance_scale=2.0,
    ...                              top_k=5, generator=generator)
    >>> tokens.shape
    torch.Size([2, 8])
    >>> visual, semantic = layout.to_indices(tokens, grid=(2, 2))
    >>> visual.shape, bool((semantic < 12).all())
    (torch.Size([2, 2, 2]), True)

    ```
    """
    device = torch.device(prior.device if device is None else device)
    options = dict(guidance_scale=guidance_scale, guidance_schedule=guidance_schedule,
                   guidance_interval=guidance_interval, temperature=temperature, top_k=top_k, top_p=top_p)  # fmt: skip
    if validate:
        class_ids = layout.class_token_ids(class_labels)
        if class_ids.ndim != 1 or class_ids.numel() == 0:
            raise ValueError(
                f"class_labels must be a non-empty 1-d sequence of labels, got shape {tuple(class_ids.shape)}."
            )
        check_sampling_inputs(prior, layout, class_ids.shape[0], num_positions, generator=generator,
                              cache_implementation=cache_implementation, device=device, **options)  # fmt: skip
    else:
        class_ids = torch.as_tensor(class_labels, dtype=torch.long) + layout.codebook_size
    class_ids = class_ids.to(device)
    batch, per_position = class_ids.shape[0], layout.tokens_per_position
    num_steps = layout.num_image_tokens(num_positions)
    scales = guidance_scales(num_positions, per_position, guidance_scale, guidance_schedule, guidance_interval)
    processors = _logits_processors(temperature, top_k, top_p)
    uniforms = draw_uniforms(generator, batch, num_steps, device)
    if hasattr(prior, "sample_factorized"):  # a factorized prior (GloTokPriorForCausalLM) runs its own loop
        return prior.sample_factorized(layout, class_ids - layout.codebook_size, num_positions, scales, processors,
                                       uniforms, callback, cache_implementation)  # fmt: skip
    guided_steps = [i for i, s in enumerate(scales) if s != 1.0]
    # paired: the null-class rows are in the batch
    last_guided, paired = (guided_steps or [-1])[-1], bool(guided_steps)
    config, keyword = prior.config, cache_keyword(prior)

    # sequences[:, 0] is the class token; sequences[:, 1 + i] the i-th image token. Logits processors see the prefix.
    sequences = torch.empty(batch, 1 + num_steps, dtype=torch.long, device=device)
    sequences[:, 0] = class_ids

    def new_cache() -> DynamicCache | StaticCache:
        static = cache_implementation == "static"
        return StaticCache(config=config, max_cache_len=num_steps) if static else DynamicCache(config=config)

    def model_inputs(start: int, end: int) -> torch.LongTensor:  # every row, then its null-class twin if paired
        rows = sequences[:, start:end]
        null = torch.cat([torch.full_like(rows[:, :1], layout.null_class_id), rows[:, 1:]], 1) if start == 0 else rows
        return torch.cat([rows, null]) if paired else rows

    cache, inputs = new_cache(), model_inputs(0, 1)
    for step in range(num_steps):
        logits = prior(input_ids=inputs, use_cache=True, **{keyword: cache}).logits[:, -1]
        lo, hi = layout.allowed_range(step)
        logits = logits[:, lo:hi].float()
        if paired:
            cond, uncond = logits[:batch], logits[batch:]
            logits = cond if scales[step] == 1.0 else uncond + scales[step] * (cond - uncond)
        logits = processors(sequences[:, : step + 1], logits)
        sequences[:, step + 1] = sample_from_logits(logits, uniforms[:, step]) + lo
        edited = None if callback is None else callback(step, sequences[:, 1 : step + 2])
        rebuild = edited is not None and not torch.equal(edited[:, :-1], sequences[:, 1 : step + 1])
        if edited is not None:
            sequences[:, 1 : step + 2] = edited
        if step == num_steps - 1:
            break
        if paired and step >= last_guided and isinstance(cache, DynamicCache):
            cache.batch_select_indices(torch.arange(batch, device=device))  # guidance is over: drop uncond rows
            paired = False
        if rebuild:  # the callback edited earlier tokens: recompute the cache from the whole prefix
            cache = new_cache()
        inputs = model_inputs(0 if rebuild else step + 1, step + 2)
    return sequences[:, 1:]


__all__ = [
    "TokenLayout",
    "available_memory_bytes",
    "cache_keyword",
    "check_sampling_inputs",
    "draw_uniforms",
    "guidance_scales",
    "sample_from_logits",
    "sample_image_tokens",
    "sampling_memory_bytes",
]
