# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""`--sharding fsdp`: torch's FSDP2 (`fully_shard`) applied by the script under accelerate's plain multi-process
launch (Accelerate enables its FSDP plugin only on accelerator devices, so this is the one path both GPUs and the CPU
tests run), sharded checkpoints with `torch.distributed.checkpoint` and a gathered full state dict for the final
`save_pretrained` folder."""

import os
import pickle
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.metadata import StorageMeta
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# What DCP's `.metadata` pickle holds (torch 2.13); torch reads it with a plain `pickle.load`, which would run code
# from a tampered checkpoint, so it is read with this allow-list instead.
METADATA_CLASSES = {
    ("torch.distributed.checkpoint.metadata", name)
    for name in ("Metadata", "MetadataIndex", "StorageMeta", "TensorProperties", "TensorStorageMetadata",
                 "BytesStorageMetadata", "ChunkStorageMetadata", "_MEM_FORMAT_ENCODING")  # fmt: skip
} | {("torch.distributed.checkpoint.filesystem", "_StorageInfo"), ("torch", "Size"),
     ("torch.serialization", "_get_layout"), ("pathlib", "PosixPath"), ("pathlib", "PurePosixPath")}  # fmt: skip


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in METADATA_CLASSES or (
            module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)
        ):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a distributed checkpoint's metadata")


def read_metadata(folder: Path):
    """The `.metadata` of a DCP folder, unpickled with the allow-list (`pickle.UnpicklingError` otherwise)."""
    with open(Path(folder) / ".metadata", "rb") as f:
        return _MetadataUnpickler(f).load()


class SafeReader(dcp.FileSystemReader):
    """torch's reader with the metadata read through [`read_metadata`] (tensors are read with weights_only=True)."""

    def read_metadata(self, *args, **kwargs):
        metadata = read_metadata(self.path)
        metadata.storage_meta = metadata.storage_meta or StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


def check_launch(sharding: str, num_processes: int) -> None:
    """Refuse accelerate's FSDP launch (on CPU it silently trains unsharded under DDP): the script shards itself; and
    --sharding fsdp without a multi-process launch (nothing to shard)."""
    if sharding == "fsdp" and num_processes < 2:
        raise ValueError("--sharding fsdp shards across processes: launch N >= 2 of them with `accelerate launch "
                         "--multi_gpu --num_processes N training/train.py ...`, or use --sharding ddp.")  # fmt: skip
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true"):
        raise ValueError(
            "train.py shards with FSDP2 itself: launch it without --use_fsdp or an FSDP accelerate config, as "
            "`accelerate launch --multi_gpu --num_processes N training/train.py --sharding fsdp ...` "
            f"(ACCELERATE_USE_CPU=true on CPU){'' if sharding == 'fsdp' else '; this run asked for --sharding ddp'}."
        )


def shard_model(model: torch.nn.Module, mixed_precision: str) -> torch.nn.Module:
    """`fully_shard` each module of `model._no_split_modules` (decoder layers; the tokenizer's CNN blocks and adapter
    layers) and each module kept in fp32 (`_keep_in_fp32_modules_strict`: the quantizers, their own units computing in
    fp32), bottom-up, then the root (embeddings, norms, output projections, convolutions between blocks); parameters
    stay fp32, compute in `mixed_precision`, gradients are reduced in fp32."""
    dtype = DTYPES.get(mixed_precision)
    policy = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32 if dtype else None)
    fp32 = set(getattr(model, "_keep_in_fp32_modules_strict", None) or ())
    for name, module in reversed(list(model.named_modules())[1:]):
        if name.rsplit(".", 1)[-1] in fp32:
            fully_shard(module, mp_policy=MixedPrecisionPolicy())
        elif type(module).__name__ in model._no_split_modules:
            fully_shard(module, mp_policy=policy)
    return fully_shard(model, mp_policy=policy)


def full(tensor: torch.Tensor) -> torch.Tensor:
    """A sharded parameter gathered (differentiably) outside the forward pass, e.g. a codebook for a loss term."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def regroup(groups: list[dict], names: dict[int, str], model: torch.nn.Module) -> list[dict]:
    """The optimizer groups of `model`'s parameters before sharding (`names`: id -> name), on its sharded ones."""
    sharded = dict(model.named_parameters())
    return [{**group, "params": [sharded[names[id(p)]] for p in group["params"]]} for group in groups]


def save_sharded(folder: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Each process writes its shards of the weights and Adam states (all processes call this)."""
    model_state, optimizer_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=folder)


def load_sharded(folder: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Read what `save_sharded` wrote into the sharded model and optimizer, resharding if needed."""
    model_state, optimizer_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optimizer_state}
    dcp.load(state, storage_reader=SafeReader(folder))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])


def consolidate(model: torch.nn.Module, model_class: type) -> torch.nn.Module | None:
    """The full model as a plain `model_class` on the main process (`None` elsewhere); all processes call this."""
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not full:
        return None
    plain = model_class(model.config)
    plain.load_state_dict(full)
    return plain.to(next(iter(full.values())).device).train(model.training)
