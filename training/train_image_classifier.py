#!/usr/bin/env python
"""Train a small image classifier on an offline dataset, for two jobs that need a pre-trained vision model when none
can be downloaded:

- `--arch vit`: a transformers `ViTForImageClassification` saved with `save_pretrained` plus its image processor. It
  stands in for DINOv2/CLIP as the **teacher backbone** of `glotok build-teacher --source backbone`.
- `--arch cnn`: a small convolutional network exported as TorchScript (input: float32 RGB in [0, 1]): `classifier.pt`
  (logits) is the **independent judge** of class consistency (`glotok eval generation --classifier`), a different
  architecture from the teacher trained only on real images; `features.pt` (pooled penultimate features) is the
  feature network of a digits FID (`--feature-network`), since no Inception weights are available offline.

    python training/train_image_classifier.py --arch vit --dataset_name data/digits --output_dir runs/digits_vit
    python training/train_image_classifier.py --arch cnn --dataset_name data/digits --output_dir runs/digits_cnn
    python training/train_image_classifier.py --arch vit --train_data_dir data/shapes --resolution 32 --output_dir runs/shapes_vit

Both print the accuracy on the held-out split (the test split, or `--holdout` of the train split when there is none,
e.g. for an image folder) and write it to `metrics.json`.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import ViTConfig, ViTForImageClassification
from transformers import ViTImageProcessorPil as ViTImageProcessor  # PIL backend: no torchvision needed

from glotok_hf.codes import count_classes
from glotok_hf.data import ImageDataset, ImageTransform, class_names, collate_images, load_image_dataset


class SmallCNN(nn.Module):
    """Three conv blocks and a linear head; takes RGB in [0, 1]."""

    def __init__(self, num_classes: int, width: int = 32):
        super().__init__()
        layers, channels = [], 3
        for out in (width, 2 * width, 4 * width):
            layers += [nn.Conv2d(channels, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(), nn.MaxPool2d(2)]
            channels = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels, num_classes)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled penultimate features `(batch, 4 * width)`: the feature space of a digits FID."""
        return self.features(images * 2 - 1).mean(dim=(2, 3))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(images))


class Adapter(nn.Module):
    """`call(model, images)` as a module's `forward`: the ViT on pixels in [0, 1] like the CNN (its processor uses
    mean = std = 0.5, i.e. [-1, 1]), and the CNN's features as the module to export."""

    def __init__(self, model: nn.Module, call):
        super().__init__()
        self.model, self.call = model, call

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.call(self.model, images)


def build_model(args, num_classes: int, names: list[str] | None) -> nn.Module:
    if args.arch == "cnn":
        return SmallCNN(num_classes, width=args.width)
    config = ViTConfig(
        image_size=args.resolution, patch_size=args.patch_size, num_channels=3, hidden_size=args.width,
        num_hidden_layers=args.depth, num_attention_heads=max(1, args.width // 32), intermediate_size=4 * args.width,
        num_labels=num_classes, id2label={i: n for i, n in enumerate(names or range(num_classes))},
    )  # fmt: skip
    return Adapter(ViTForImageClassification(config), lambda vit, images: vit(pixel_values=images * 2 - 1).logits)


def load_splits(args):
    """The train and test splits; without a test split (a plain image folder), a seeded `--holdout` fraction of the
    train split is held out. Returns `(train, test, what the test set is)`."""
    source = dict(dataset_name=args.dataset_name, train_data_dir=args.train_data_dir, label_column=args.label_column)
    train = load_image_dataset(split=args.train_split, **source)
    try:
        return train, load_image_dataset(split=args.test_split, **source), args.test_split
    except ValueError:  # no such split
        parts = train.train_test_split(test_size=args.holdout, seed=args.seed)
        print(f"No {args.test_split!r} split: {len(parts['test'])} of the {len(train)} training images are held out.")
        return parts["train"], parts["test"], f"{args.holdout:g} of {args.train_split} (seed {args.seed})"


def loader(args, dataset, train: bool):
    transform = ImageTransform(args.resolution, center_crop=True)
    torch_dataset = ImageDataset(dataset, transform, label_column=args.label_column)
    generator = torch.Generator().manual_seed(args.seed)
    return torch.utils.data.DataLoader(
        torch_dataset, batch_size=args.batch_size, shuffle=train, generator=generator, collate_fn=collate_images
    )


@torch.no_grad()
def accuracy(model: nn.Module, data) -> float:
    model.eval()
    correct = total = 0
    for batch in data:
        logits = model((batch["pixel_values"] + 1) / 2)
        correct += int((logits.argmax(-1) == batch["labels"]).sum())
        total += len(batch["labels"])
    return correct / total


def augment(images: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Random translations by up to `max_shift` pixels (zero padding): cheap robustness to off-centre samples."""
    if max_shift == 0:
        return images
    padded = F.pad(images, [max_shift] * 4)
    dx, dy = torch.randint(0, 2 * max_shift + 1, (2,)).tolist()
    return padded[..., dy : dy + images.shape[-2], dx : dx + images.shape[-1]]


def train(args) -> dict:
    torch.manual_seed(args.seed)
    train_split, test_split, test_name = load_splits(args)
    names = class_names(train_split, args.label_column)
    train_data, test_data = loader(args, train_split, train=True), loader(args, test_split, train=False)
    num_classes = count_classes(names, train_split[args.label_column])
    model = build_model(args, num_classes, names)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=0.05)
    steps = args.epochs * len(train_data)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.learning_rate, total_steps=steps)
    start = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        for batch in train_data:
            images = augment((batch["pixel_values"] + 1) / 2, args.max_shift)
            loss = F.cross_entropy(model(images), batch["labels"], label_smoothing=0.1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        print(f"epoch {epoch + 1}/{args.epochs}: loss {loss.item():.4f}", flush=True)
    metrics = {
        "arch": args.arch,
        "dataset": args.dataset_name or args.train_data_dir,
        "test_split": test_name,
        "test_accuracy": accuracy(model, test_data),
        "train_seconds": round(time.perf_counter() - start, 1),
        "num_parameters": sum(p.numel() for p in model.parameters()),
    }
    save(model, args, metrics)
    return metrics


def save(model: nn.Module, args, metrics: dict) -> None:
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    model.eval()
    if args.arch == "cnn":
        example = torch.rand(1, 3, args.resolution, args.resolution)
        torch.jit.trace(model, example).save(str(output / "classifier.pt"))
        torch.jit.trace(Adapter(model, SmallCNN.embed), example).save(str(output / "features.pt"))
    else:
        model.model.save_pretrained(output)
        ViTImageProcessor(
            size={"height": args.resolution, "width": args.resolution}, image_mean=[0.5] * 3, image_std=[0.5] * 3
        ).save_pretrained(output)
    (output / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=["vit", "cnn"], required=True)
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument("--dataset_name", help="A folder written by prepare_offline_data.py (or a Hub dataset).")
    data.add_argument("--train_data_dir", help="An image folder: one sub-folder per class.")
    parser.add_argument("--train_split", default="train")
    parser.add_argument(
        "--test_split", default="test", help="Held-out split; when missing, --holdout of the train split."
    )
    parser.add_argument("--holdout", type=float, default=0.1, help="Fraction held out when there is no --test_split.")
    parser.add_argument("--label_column", default="label")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--overwrite_output_dir", action="store_true")
    parser.add_argument("--resolution", type=int, default=24)
    parser.add_argument("--patch_size", type=int, default=4, help="vit: patch size.")
    parser.add_argument("--width", type=int, default=None, help="vit: hidden size (64); cnn: base width (32).")
    parser.add_argument("--depth", type=int, default=4, help="vit: transformer layers.")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--learning_rate", type=float, default=2e-3)
    parser.add_argument("--max_shift", type=int, default=2, help="Random translation augmentation, in pixels.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.width is None:
        args.width = 64 if args.arch == "vit" else 32
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if Path(args.output_dir).exists() and any(Path(args.output_dir).iterdir()) and not args.overwrite_output_dir:
        print(f"error: {args.output_dir} is not empty; pass --overwrite_output_dir.", file=sys.stderr)
        return 2
    print(json.dumps(train(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
