# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""Data loading shared by both stages, built on `glotok_hf.data`.

Reproducibility contract: the order of examples in epoch `e` is a permutation seeded by `(seed, e)` only, and the
random augmentation of example `i` in epoch `e` is drawn from a generator seeded by `(seed, e, i)` only. Neither
depends on the number of processes, dataloader workers or on a resume, so a resumed run sees exactly the batches the
uninterrupted run would have seen, and `P` processes with batch `b` see the same global batches as one process with
batch `P * b` (accelerate hands process `p` every `P`-th batch of the shared order).
"""

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..data import ImageDataset, ImageTransform, class_names, collate_images, load_image_dataset
from .arguments import TrainingArguments

_MIX = 0x9E3779B97F4A7C15  # 64-bit golden-ratio constant for seed mixing


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed that depends only on `(seed, epoch, index)` (splitmix64-style mixing)."""
    x = (seed * _MIX + epoch * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    x ^= x >> 31
    x = (x * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x ^= x >> 29
    return x & 0x7FFFFFFFFFFFFFFF


class EpochShuffleSampler(Sampler[int]):
    """A random permutation of `range(num_items)` seeded by `(seed, epoch)`; call `begin_epoch` before each epoch.

    The method is deliberately not called `set_epoch`: accelerate's dataloader calls `set_epoch` with its own
    iteration counter, which is neither checkpointed nor advanced when an epoch is left early, so it must not
    drive the data order.
    """

    def __init__(self, num_items: int, seed: int):
        self.num_items, self.seed, self.epoch = num_items, seed, 0

    def begin_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(item_seed(self.seed, self.epoch, -1))
        return iter(torch.randperm(self.num_items, generator=generator).tolist())

    def __len__(self) -> int:
        return self.num_items


class SeededItems(Dataset):
    """Wraps a map-style dataset so item `i` is computed under torch's CPU RNG seeded by `(seed, epoch, i)`, and adds
    `"index": i` to it (and, with `draw_uniform`, `"uniform"`: a U[0, 1) draw of its own per `(seed, epoch, i)`, e.g.
    for class dropout). Random crops and flips of `ImageTransform` (which draw from torch's global RNG) then become a
    function of the example, the epoch and the seed only. (`begin_epoch`, not `set_epoch`: see `EpochShuffleSampler`.)"""

    def __init__(self, dataset: Dataset, seed: int, draw_uniform: bool = False):
        self.dataset, self.seed, self.draw_uniform, self.epoch = dataset, seed, draw_uniform, 0

    def begin_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        saved = torch.get_rng_state()  # (cheaper than torch.random.fork_rng, and touches no accelerator RNG)
        torch.random.default_generator.manual_seed(item_seed(self.seed, self.epoch, index))
        try:
            item = dict(self.dataset[index])
        finally:
            torch.set_rng_state(saved)
        item["index"] = index
        if self.draw_uniform:
            generator = torch.Generator().manual_seed(item_seed(self.seed + 1, self.epoch, index))
            item["uniform"] = float(torch.rand((), generator=generator))
        return item


def collate_with_index(examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    batch = collate_images(examples)
    for key, dtype in (("index", torch.long), ("uniform", torch.float32)):
        if key in examples[0]:
            batch[key] = torch.tensor([e[key] for e in examples], dtype=dtype)
    return batch


def build_image_data(args: TrainingArguments, num_processes: int, with_labels: bool = True, draw_uniform=False):
    """Training images (undecoded, cut to `--max_train_samples`) -> (`SeededItems`, `DataLoader`,
    `EpochShuffleSampler`, class names or None)."""
    label_column = args.label_column if with_labels else None
    raw = load_image_dataset(
        dataset_name=args.dataset_name,
        dataset_config_name=args.dataset_config_name,
        train_data_dir=args.train_data_dir,
        split=args.dataset_split,
        image_column=args.image_column,
        label_column=label_column,
        cache_dir=args.cache_dir,
    )
    if args.max_train_samples is not None:
        raw = raw.select(range(min(args.max_train_samples, len(raw))))
    # uint8 from the workers (a quarter of float32's bytes); the stages convert on the device (`uint8_to_pixels`)
    transform = ImageTransform(args.resolution, args.center_crop, args.random_flip, uint8=True)
    dataset = ImageDataset(raw, transform, args.image_column, label_column)
    items = SeededItems(dataset, seed=args.seed, draw_uniform=draw_uniform)
    sampler, loader = make_loader(items, args, num_processes, collate_with_index)
    return items, loader, sampler, class_names(raw, label_column)


def make_loader(items: Dataset, args: TrainingArguments, num_processes: int, collate_fn) -> tuple:
    global_batch = args.train_batch_size * num_processes
    if len(items) < global_batch:
        raise ValueError(
            f"The dataset has {len(items)} examples, fewer than one global batch ({args.train_batch_size} per "
            f"device x {num_processes} processes = {global_batch})."
        )
    sampler = EpochShuffleSampler(len(items), seed=args.seed)
    loader = DataLoader(
        items,
        batch_size=args.train_batch_size,
        sampler=sampler,
        drop_last=True,
        num_workers=args.dataloader_num_workers,
        collate_fn=collate_fn,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,  # workers are re-created each epoch, so they see `begin_epoch`
    )
    return sampler, loader


def validation_images(args: TrainingArguments, items: SeededItems, count: int) -> torch.Tensor | None:
    """The first `count` training images of `items`, center-cropped and unflipped: `(count, 3, R, R)` in [-1, 1]."""
    if count == 0:
        return None
    raw = items.dataset.dataset  # the undecoded images
    dataset = ImageDataset(raw, ImageTransform(args.resolution, center_crop=True), args.image_column, None)
    return torch.stack([dataset[i]["pixel_values"] for i in range(min(count, len(dataset)))])
