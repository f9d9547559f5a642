# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""Conversion of the public ImageNet tokenizers that are configurations of [`GloTokModel`], and back.

- `"llamagen-vq"`: LlamaGen's VQ (`vq_ds16_c2i.pt`, `vq_ds8_c2i.pt`; FoundationVision/LlamaGen, MIT) is
  `GloTokConfig(semantic_codebook_size=0, use_residual=False)`: one codebook, no adapter.
- `"fqgan-dual"`: FQGAN-Dual (`fqgan_dual_ds16.pt`, `fqgan_dual_ds8.pt`; showlab/FQGAN) is
  `GloTokConfig(semantic_codebook_size=V, visual_codebook_size=V, use_residual=False)`: GloTok without the histogram
  loss and the residual module. Its adapters' positional tables are fixed, so the converted config sets
  `fixed_sample_size=True`.

The key mapping is a list of renaming rules from GloTok names to the source names; the configuration is read off the
tensor shapes. Converting is exact: the same tensors, the same operations (GroupNorm eps 1e-6, LayerNorm eps 1e-5, exact
GELU, single-head spatial attention, `nn.MultiheadAttention`'s packed `in_proj` = GloTok's `qkv`, the decoder input
`[visual, semantic]`).
"""

import argparse
import math
import os
import pickle
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .configuration_glotok import GloTokConfig
from .hub import model_card
from .modeling_glotok import GloTokModel
from .utils import atomic_write

USAGE_BUFFER_SIZE = 65536  # both sources keep a `codebook_used` buffer of this size next to each codebook


@dataclass(frozen=True)
class SourceFormat:
    """A public checkpoint layout: where it comes from, its license and published rFID (ImageNet 256, by
    downsampling factor), and the GloTok branch -> source suffix of its codebook heads."""

    title: str
    url: str
    license: str
    rfid: dict[int, float]
    heads: dict[str, str]


FORMATS = {
    "llamagen-vq": SourceFormat(
        "LlamaGen VQ", "https://github.com/FoundationVision/LlamaGen", "mit", {16: 2.19, 8: 0.59}, {"visual": ""}
    ),
    "fqgan-dual": SourceFormat(
        "FQGAN-Dual",
        "https://github.com/showlab/FQGAN",
        "cc-by-nc-4.0",
        {16: 0.94, 8: 0.32},
        {"semantic": "_sem", "visual": "_vis"},
    ),
}

# GloTok name -> source name, applied in order (the CNN trunk and decoder are the same in both sources).
_TRUNK_RULES = [
    (r"^(encoder|decoder)\.levels\.(\d+)\.resnets\.", r"\1.conv_blocks.\2.res."),
    (r"^(encoder|decoder)\.levels\.(\d+)\.attentions\.", r"\1.conv_blocks.\2.attn."),
    (r"^encoder\.levels\.(\d+)\.resample\.", r"encoder.conv_blocks.\1.downsample."),
    (r"^decoder\.levels\.(\d+)\.resample\.", r"decoder.conv_blocks.\1.upsample."),
    (r"\.shortcut\.", ".nin_shortcut."),
    (r"\.to_([qkv])\.", r".\1."),
    (r"\.mid\.resnet_1\.", ".mid.0."),
    (r"\.mid\.attention\.", ".mid.1."),
    (r"\.mid\.resnet_2\.", ".mid.2."),
]
_ADAPTER_RULES = [
    (r"^(semantic|visual)\.adapter\.position_embedding$", r"encoder.\1_head.0.positional_embedding"),
    (r"^(semantic|visual)\.adapter\.norm_(pre|post)\.", r"encoder.\1_head.0.ln_\2."),
    (r"^(semantic|visual)\.adapter\.blocks\.", r"encoder.\1_head.0.transformer."),
    (r"\.norm([12])\.", r".ln_\1."),
    (r"\.qkv\.(weight|bias)$", r".attn.in_proj_\1"),
    (r"\.attn_out\.", ".attn.out_proj."),
    (r"\.fc1\.", ".mlp.c_fc."),
    (r"\.fc2\.", ".mlp.c_proj."),
]
# Source tensors that have no GloTok counterpart: usage statistics, and FQGAN's CLIP/DINO feature-prediction head.
DROPPED = re.compile(r"(^|\.)codebook_used$|^feat_pred_head\.")


def source_key(key: str, fmt: str) -> str:
    """The name in the `fmt` layout of the GloTok parameter `key` (of a model without residual modules)."""
    rules = _ADAPTER_RULES if ".adapter." in key else _TRUNK_RULES
    for branch, suffix in FORMATS[fmt].heads.items():
        rules = rules + [
            (rf"^{branch}\.(norm_out|conv_out)\.", rf"encoder.\1{suffix}."),
            (rf"^{branch}\.quant_conv\.", f"quant_conv{suffix}."),
            (rf"^{branch}\.quantizer\.", f"quantize{suffix}."),
        ]
    for pattern, replacement in rules:
        key = re.sub(pattern, replacement, key)
    return key


def _count(state: dict, prefix: str) -> int:
    """How many numbered children `prefix.<n>.` the keys of `state` have."""
    pattern = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.")
    return len({m[1] for key in state if (m := pattern.match(key))})


def _tensor(state: dict, key: str, fmt: str) -> torch.Tensor:
    if key not in state:
        raise ValueError(
            f"Missing tensor {key!r}: this is not a {FORMATS[fmt].title} checkpoint (see {FORMATS[fmt].url})."
        )
    return state[key]


def infer_config(state: dict, fmt: str, *, norm_num_groups: int = 32, adapter_num_heads: int = 8,
                 codebook_l2_norm: bool = True, sample_size: int = 256) -> GloTokConfig:  # fmt: skip
    r"""
    The [`GloTokConfig`] of a source state dict (in the `fmt` layout), read off its tensors: the number of levels
    (downsampling 8 or 16), channels, ResNet blocks per level, `z_channels`, attention, codebook sizes and dimension,
    adapter depth and, for FQGAN, `sample_size` (from its positional table). The arguments are what the tensors do
    not tell; their defaults are the published values.
    """
    num_levels = _count(state, "encoder.conv_blocks")
    if num_levels == 0:
        _tensor(state, "encoder.conv_blocks.0.res.0.conv1.weight", fmt)
    blocks = _count(state, "encoder.conv_blocks.0.res")
    channels = [_tensor(state, f"encoder.conv_blocks.{i}.res.{blocks - 1}.conv2.weight", fmt).shape[0]
                for i in range(num_levels)]  # fmt: skip
    sizes = {f"{branch}_codebook_size": 0 for branch in ("semantic", "visual")}
    for branch, suffix in FORMATS[fmt].heads.items():
        codebook = _tensor(state, f"quantize{suffix}.embedding.weight", fmt)
        sizes[f"{branch}_codebook_size"] = codebook.shape[0]
    adapter = "encoder.semantic_head.0"
    if fmt == "fqgan-dual":
        grid = math.isqrt(_tensor(state, f"{adapter}.positional_embedding", fmt).shape[0])
        sample_size = grid * 2 ** (num_levels - 1)
    return GloTokConfig(
        in_channels=_tensor(state, "encoder.conv_in.weight", fmt).shape[1],
        out_channels=_tensor(state, "decoder.conv_out.weight", fmt).shape[0],
        block_out_channels=tuple(channels),
        layers_per_block=blocks,
        norm_num_groups=norm_num_groups,
        latent_channels=_tensor(state, "post_quant_conv.weight", fmt).shape[0],
        mid_block_add_attention="encoder.mid.1.q.weight" in state,
        lowest_resolution_attention=_count(state, f"encoder.conv_blocks.{num_levels - 1}.attn") > 0,
        adapter_depth=_count(state, f"{adapter}.transformer") if fmt == "fqgan-dual" else 0,
        adapter_num_heads=adapter_num_heads,
        codebook_dim=codebook.shape[1],
        codebook_l2_norm=codebook_l2_norm,
        use_residual=False,
        sample_size=sample_size,
        fixed_sample_size=fmt == "fqgan-dual",
        **sizes,
    )


def _check_format(fmt: str) -> SourceFormat:
    if fmt not in FORMATS:
        raise ValueError(f"Unknown checkpoint format {fmt!r}; expected one of {sorted(FORMATS)}.")
    return FORMATS[fmt]


def to_glotok(state: dict, fmt: str, **config_kwargs) -> tuple[GloTokModel, list[str]]:
    """A source state dict -> (the exact `GloTokModel`, the dropped source keys). Every source tensor is either mapped
    or in `DROPPED`; a missing, unexpected or mis-shaped tensor raises a `ValueError` naming the key."""
    info = _check_format(fmt)
    config = infer_config(state, fmt, **config_kwargs)
    with torch.device("meta"):  # no memory, no initialisation: the tensors are assigned below
        model = GloTokModel(config)
    names, mapped = {key: source_key(key, fmt) for key in model.state_dict()}, {}
    for key, target in model.state_dict().items():
        name = names[key]
        tensor = _tensor(state, name, fmt)
        if tuple(tensor.shape) != tuple(target.shape):
            raise ValueError(
                f"Tensor {name!r} has shape {tuple(tensor.shape)}, but the configuration read off the checkpoint "
                f"needs {tuple(target.shape)} (GloTok {key!r}); inferred: {config.to_diff_dict()}."
            )
        mapped[key] = tensor.detach().to(torch.float32).contiguous()
    used = set(names.values())
    dropped = sorted(k for k in state if k not in used and DROPPED.search(k))
    if unexpected := sorted(k for k in state if k not in used and k not in dropped):
        raise ValueError(
            f"Unexpected tensor(s) for a {info.title} checkpoint with the configuration read off its tensors: "
            f"{unexpected[:5]}{' ...' if len(unexpected) > 5 else ''} ({len(unexpected)} in all)."
        )
    model.load_state_dict(mapped, assign=True)
    return model.eval(), dropped


def from_glotok(model: GloTokModel, fmt: str) -> dict[str, torch.Tensor]:
    """The state dict of `model` in the `fmt` layout (with zeroed `codebook_used` buffers, so the source code loads
    it strictly). Only a model of that layout's shape converts: no residual modules; one codebook for LlamaGen, two
    with adapters for FQGAN."""
    config, info = model.config, _check_format(fmt)
    problems = [
        (config.use_residual, "has residual modules (use_residual=True), which the source layout has no place for"),
        (fmt == "llamagen-vq" and config.num_codebooks != 1, "must have one codebook (the visual one)"),
        (fmt == "llamagen-vq" and not config.has_visual_codebook, "must have its single codebook as the visual one"),
        (fmt == "fqgan-dual" and (config.num_codebooks != 2 or config.adapter_depth == 0),
         "must have two codebooks with adapters (adapter_depth > 0)"),
    ]  # fmt: skip
    for failed, message in problems:
        if failed:
            raise ValueError(f"Cannot export to {info.title}: the model {message}.")
    state = {source_key(key, fmt): value.detach().cpu().clone() for key, value in model.state_dict().items()}
    for suffix in info.heads.values():
        state[f"quantize{suffix}.codebook_used"] = torch.zeros(USAGE_BUFFER_SIZE)
    return state


# ------------------------------------------------------------------------------------------------------------- files
def load_source_checkpoint(path: str | os.PathLike, ema: bool = False) -> dict[str, torch.Tensor]:
    """The model state dict of a LlamaGen / FQGAN checkpoint file: `"ema"` (with `ema=True`) or `"model"` of a
    training checkpoint, `"module"`, `"state_dict"`, or a bare state dict. Read with `torch.load(weights_only=True)`,
    allowing only `argparse.Namespace` (the pickled training `"args"`) beyond torch's safe types."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No such checkpoint file: {str(path)!r}.")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        raise ValueError(
            f"{path}: not a checkpoint that torch.load(weights_only=True) reads safely "
            f"({str(err).splitlines()[0] if str(err) else type(err).__name__})."
        ) from err
    if not isinstance(checkpoint, dict):
        raise ValueError(
            f"{path}: expected a dict (a state dict or a training checkpoint), got {type(checkpoint).__name__}."
        )
    if ema and "ema" not in checkpoint:
        raise ValueError(
            f"{path}: --ema asks for the 'ema' weights, but the checkpoint has only {sorted(checkpoint)[:8]}."
        )
    for name in ("ema",) if ema else ("model", "module", "state_dict"):
        if isinstance(checkpoint.get(name), dict):
            checkpoint = checkpoint[name]
            break
    if not checkpoint or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in checkpoint.items()):
        raise ValueError(
            f"{path}: no state dict found: expected a dict of tensors, or one under 'model', 'ema', 'module' or "
            f"'state_dict' (the keys are {sorted(map(str, checkpoint))[:8]})."
        )
    for prefix in ("module.", "_orig_mod."):  # DDP / torch.compile wrappers
        if all(k.startswith(prefix) for k in checkpoint):
            checkpoint = {k[len(prefix) :]: v for k, v in checkpoint.items()}
    return checkpoint


def convert_checkpoint(
    fmt: str,
    checkpoint: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    ema: bool = False,
    overwrite: bool = False,
    **config_kwargs,
) -> GloTokModel:
    r"""
    Convert a LlamaGen VQ (`fmt="llamagen-vq"`) or FQGAN-Dual (`fmt="fqgan-dual"`) checkpoint file into a
    `save_pretrained` folder (safetensors, `config.json` with `auto_map` for `trust_remote_code=True`, and a model card
    naming the source, its license and published rFID). `output_dir` is written to a temporary folder beside it and
    renamed at the end; an existing non-empty `output_dir` is refused unless `overwrite`.

    Args:
        fmt (`str`): `"llamagen-vq"` or `"fqgan-dual"`.
        checkpoint (`str` or `os.PathLike`): the `.pt` file (see [`load_source_checkpoint`] for the layouts).
        output_dir (`str` or `os.PathLike`): the folder to write.
        ema (`bool`, *optional*, defaults to `False`): convert the `"ema"` weights of a training checkpoint.
        overwrite (`bool`, *optional*, defaults to `False`): replace a non-empty `output_dir`.
        config_kwargs: what the tensors do not tell, as in [`infer_config`].

    Returns:
        The converted [`GloTokModel`] (eval mode).
    """
    output_dir = Path(output_dir)
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())) and not overwrite:
        raise FileExistsError(f"{str(output_dir)!r} exists and is not empty; pass --overwrite (overwrite=True).")
    state = load_source_checkpoint(checkpoint, ema=ema)
    model, dropped = to_glotok(state, fmt, **config_kwargs)
    if any(k.startswith("feat_pred_head.") for k in dropped):
        print(f"Dropped FQGAN's CLIP/DINO feature-prediction head (feat_pred_head, "
              f"{sum(k.startswith('feat_pred_head.') for k in dropped)} tensors): it is used in training only.")  # fmt: skip
    save_converted(model, fmt, output_dir, source=Path(checkpoint).name)
    return model


def save_converted(model: GloTokModel, fmt: str, output_dir: Path, source: str) -> None:
    """`model.save_pretrained` plus its model card into a temporary folder beside `output_dir`, renamed into place."""
    info, config = FORMATS[fmt], model.config
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.partial-", dir=output_dir.parent))
    try:
        model.save_pretrained(tmp)
        rfid = info.rfid.get(config.downsample_factor)
        codebooks = " + ".join(f"{getattr(config, f'{b}_codebook_size')} {b}" for b in info.heads)
        card = model_card(
            "tokenizer",
            license=info.license,
            description=f"{info.title} ({info.url}), converted exactly to a glotok-hf `GloTokModel` from `{source}` "
            f"with `glotok convert {fmt}`: the same tensors, the same codes and reconstructions. The weights keep the "
            f"license of their source ({info.license}).",
            details={
                "source": f"[{info.title}]({info.url}) `{source}`",
                "resolution": config.sample_size,
                "token grid": f"{config.latent_grid_size}x{config.latent_grid_size}",
                "codebooks": f"{codebooks} codes of dimension {config.codebook_dim}",
            },  # fmt: skip
            metrics={"rFID (ImageNet val 256x256, published)": rfid} if rfid is not None else None,
            metrics_description=f"As published by the authors of {info.title} ({info.url}); not re-measured here.",
            training_data="ImageNet-1k (ILSVRC 2012) train, by the original authors.",
            tags=("converted", fmt),
        )
        card.save(tmp / "README.md")
        if output_dir.exists():
            shutil.rmtree(output_dir) if output_dir.is_dir() else output_dir.unlink()
        os.replace(tmp, output_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def export_checkpoint(model: GloTokModel, fmt: str, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write `model` as a `{"model": state_dict}` checkpoint in the `fmt` layout (what LlamaGen's / FQGAN's scripts
    load with `--vq-ckpt`), atomically; an existing file is refused unless `overwrite`."""
    state = from_glotok(model, fmt)
    return atomic_write(path, lambda tmp: torch.save({"model": state}, tmp), overwrite=overwrite)


__all__ = [
    "FORMATS",
    "convert_checkpoint",
    "export_checkpoint",
    "from_glotok",
    "infer_config",
    "load_source_checkpoint",
    "source_key",
    "to_glotok",
]
