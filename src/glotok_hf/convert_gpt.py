# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
#
# The key layout is that of LlamaGen's c2i GPT (FoundationVision/LlamaGen, MIT) and FQGAN's FAR (showlab/FQGAN);
# nothing of their code is used.
"""Exact conversion of LlamaGen c2i GPT and FQGAN FAR checkpoints into [`GloTokPriorForCausalLM`] folders.

The checkpoints are read with `torch.load(weights_only=True)`, allowing only `argparse.Namespace` (the training
arguments the original scripts save next to the weights). Sizes are inferred from the tensors; only the number of
attention heads (from `--preset` or `--num-attention-heads`) and the grid side are not in them.
"""

import argparse
import re
import shutil
from pathlib import Path

import torch

from .configuration_glotok_prior import PRIOR_PRESETS, GloTokPriorConfig
from .modeling_glotok_prior import GloTokPriorForCausalLM

KINDS = ("llamagen-gpt", "fqgan-far")
# per-block parameter names: original -> ours (wqkv is split into q/k/v_proj)
_BLOCK = {"attention.wo": "self_attn.o_proj", "feed_forward.w1": "mlp.gate_proj", "feed_forward.w3": "mlp.up_proj",
          "feed_forward.w2": "mlp.down_proj", "attention_norm": "input_layernorm",
          "ffn_norm": "post_attention_layernorm"}  # fmt: skip
_TOP = {"cls_embedding.embedding_table.weight": "class_embedding.weight", "norm.weight": "norm.weight",
        "tok_embeddings.weight": "embed_tokens.0.weight", "output.weight": "lm_heads.0.weight",
        "tok_embeddings_1.weight": "embed_tokens.0.weight", "tok_embeddings_2.weight": "embed_tokens.1.weight",
        "output_1.weight": "lm_heads.0.weight", "output_2.weight": "lm_heads.1.weight",
        "aggregation_layer.weight": "aggregate.weight", "aggregation_layer.bias": "aggregate.bias"}  # fmt: skip


def load_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The model state dict of a LlamaGen/FQGAN training checkpoint (`model`, `module` or `state_dict` entry, or
    the bare state dict), without `torch.compile`'s `_orig_mod.` and DDP's `module.` prefixes."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # an unpickling error names the global it refused
        raise ValueError(f"Could not read {path} with torch.load(weights_only=True): {err}") from err
    keys = [k for k in ("model", "module", "state_dict") if isinstance(checkpoint, dict) and k in checkpoint]
    entry = checkpoint[keys[0]] if keys else checkpoint
    if not isinstance(entry, dict) or not all(isinstance(v, torch.Tensor) for v in entry.values()):
        raise ValueError(f"{path} holds no state dict of tensors (looked at 'model', 'module', 'state_dict').")
    return {re.sub(r"^(_orig_mod\.|module\.)+", "", key): value for key, value in entry.items()}


def _to_rotate_half(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """Rows of a q/k projection from LlamaGen's interleaved rotary pairs (2i, 2i+1) to transformers' (i, i+d/2)."""
    return weight.reshape(heads, -1, 2, weight.shape[-1]).transpose(1, 2).reshape(weight.shape)


def convert_state_dict(
    state_dict: dict[str, torch.Tensor], num_attention_heads: int, grid_size: int = 16
) -> GloTokPriorForCausalLM:
    """A [`GloTokPriorForCausalLM`] holding the weights of a LlamaGen c2i GPT or FQGAN FAR state dict exactly;
    every size but the heads and the grid is inferred from the tensors. Raises a `ValueError` naming missing or
    unknown keys and shapes that do not fit."""
    names = (
        ("tok_embeddings_1", "tok_embeddings_2") if "tok_embeddings_1.weight" in state_dict else ("tok_embeddings",)
    )
    embeddings = [state_dict[f"{name}.weight"] for name in names if f"{name}.weight" in state_dict]
    if not embeddings or "cls_embedding.embedding_table.weight" not in state_dict:
        raise ValueError("Not a LlamaGen c2i GPT / FQGAN FAR state dict: it lacks tok_embeddings(_1).weight or "
                         "cls_embedding.embedding_table.weight.")  # fmt: skip
    width = embeddings[0].shape[1]
    blocks = {prefix: {int(m[1]) for k in state_dict if (m := re.match(rf"{prefix}\.(\d+)\.", k))}
              for prefix in ("layers", "ar_head")}  # fmt: skip
    wqkv = state_dict.get("layers.0.attention.wqkv.weight")
    if wqkv is None or width % num_attention_heads:
        raise ValueError(f"The state dict has no layers.0.attention.wqkv.weight, or {num_attention_heads} attention "
                         f"heads do not divide its width {width}.")  # fmt: skip
    head_dim = width // num_attention_heads
    kv_heads = (wqkv.shape[0] // head_dim - num_attention_heads) // 2
    config = GloTokPriorConfig(
        codebook_sizes=[e.shape[0] for e in embeddings], grid_size=grid_size, hidden_size=width,
        num_classes=state_dict["cls_embedding.embedding_table.weight"].shape[0] - 1,  # the last row: the null class
        intermediate_size=state_dict["layers.0.feed_forward.w1.weight"].shape[0],
        num_hidden_layers=len(blocks["layers"]), num_attention_heads=num_attention_heads, num_key_value_heads=kv_heads,
        head_layers=len(blocks["ar_head"]),
    )  # fmt: skip
    converted = {_TOP[k]: v for k, v in state_dict.items() if k in _TOP}
    for key, value in state_dict.items():
        match = re.fullmatch(r"(layers|ar_head)\.(\d+)\.(.+)\.weight", key)
        if match is None:
            continue
        prefix = f"{'layers' if match[1] == 'layers' else 'head'}.{match[2]}."
        if match[3] == "attention.wqkv":
            q, k, v = value.split([width, kv_heads * head_dim, kv_heads * head_dim])
            converted |= {prefix + "self_attn.q_proj.weight": _to_rotate_half(q, num_attention_heads),
                          prefix + "self_attn.k_proj.weight": _to_rotate_half(k, kv_heads),
                          prefix + "self_attn.v_proj.weight": v}  # fmt: skip
        elif match[3] in _BLOCK:
            converted[prefix + _BLOCK[match[3]] + ".weight"] = value
    unknown = sorted(k for k in state_dict if k not in _TOP and not re.fullmatch(
        r"(layers|ar_head)\.\d+\.(attention\.wqkv|" + "|".join(map(re.escape, _BLOCK)) + r")\.weight", k))  # fmt: skip
    with torch.device("meta"):
        model = GloTokPriorForCausalLM(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(converted))
    wrong = [k for k in converted if k in expected and converted[k].shape != expected[k].shape]
    if unknown or missing or wrong:
        raise ValueError(f"The state dict does not fit a {config.num_hidden_layers}-layer prior of width {width} with "
                         f"{num_attention_heads} heads: unknown keys {unknown[:5]}, missing {missing[:5]}, wrong "
                         f"shapes {wrong[:5]}.")  # fmt: skip
    model.load_state_dict({k: v.float() for k, v in converted.items()}, assign=True)
    return model.eval()


def convert_checkpoint(
    kind: str,
    checkpoint: str | Path,
    output_dir: str | Path,
    *,
    preset: str | None = None,
    num_attention_heads: int | None = None,
    grid_size: int = 16,
    overwrite: bool = False,
) -> Path:
    r"""
    Convert a LlamaGen c2i GPT (`kind="llamagen-gpt"`) or FQGAN FAR (`"fqgan-far"`) checkpoint into a
    `save_pretrained` folder of [`GloTokPriorForCausalLM`] at `output_dir`, written atomically (a folder beside it,
    renamed into place); an existing `output_dir` is replaced only with `overwrite`. The heads come from `preset`
    (a key of `PRIOR_PRESETS`, whose depth and width must match the tensors) or `num_attention_heads`.
    """
    output_dir = Path(output_dir)
    if kind not in KINDS:
        raise ValueError(f"Unknown checkpoint kind {kind!r}; choose one of {sorted(KINDS)}.")
    if (preset is None) == (num_attention_heads is None):
        raise ValueError("Give exactly one of preset (e.g. GPT-B) and num_attention_heads.")
    if preset is not None and preset not in PRIOR_PRESETS:
        raise ValueError(f"Unknown preset {preset!r}; choose one of {sorted(PRIOR_PRESETS)}.")
    if output_dir.exists() and not overwrite:
        raise FileExistsError(f"{output_dir} already exists; pass --overwrite to replace it.")
    heads = PRIOR_PRESETS[preset][2] if preset is not None else num_attention_heads
    model = convert_state_dict(load_checkpoint(checkpoint), heads, grid_size)
    config = model.config
    if (kind == "fqgan-far") != (len(config.codebook_sizes) == 2):
        raise ValueError(f"{checkpoint} is a {'FAR' if len(config.codebook_sizes) == 2 else 'single-codebook GPT'} "
                         f"checkpoint, not {kind}.")  # fmt: skip
    if preset is not None and PRIOR_PRESETS[preset][:2] != (config.num_hidden_layers, config.hidden_size):
        raise ValueError(f"{checkpoint} has {config.num_hidden_layers} layers of width {config.hidden_size}, not the "
                         f"{preset} preset's {PRIOR_PRESETS[preset][0]} of width "
                         f"{PRIOR_PRESETS[preset][1]}.")  # fmt: skip
    partial = output_dir.with_name(f".{output_dir.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        model.save_pretrained(partial)
        if output_dir.exists():
            shutil.rmtree(output_dir)
        partial.rename(output_dir)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return output_dir


__all__ = ["convert_checkpoint", "convert_state_dict", "load_checkpoint"]
