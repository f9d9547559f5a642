"""Tiny networks, pipelines and data shared by the evaluation tests (`tests/test_eval_*.py`)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_glotok_model
from PIL import Image
from torch import nn
from transformers import LlamaForCausalLM

from glotok_hf.pipeline_glotok import GloTokPipeline
from glotok_hf.prior import prior_config


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models on one intra-op thread: on a shared 2-core machine, OpenMP threads contending with other
    processes turn millisecond forwards into seconds. Import it into a test module to apply it there."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# Class c of the colour classifier is the image whose mean colour is closest to PALETTE[c] (values in [-1, 1]).
PALETTE = torch.tensor([[1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0]])


def tiny_feature_net(seed: int = 0, num_features: int = 6) -> nn.Module:
    """A tiny random conv net: images in [0, 1] `(B, 3, H, W)` -> `(B, num_features)`."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.Tanh(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        nn.Linear(16, num_features),
    ).eval()  # fmt: skip


class FlattenPixels(nn.Module):
    """Feature network whose features are the pixels themselves, for closed-form FID checks."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1)


class ConstantLogits(nn.Module):
    """Logit network predicting the same (uniform) distribution for every image."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.num_classes = num_classes

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.new_zeros(images.shape[0], self.num_classes)


class ColourClassifier(nn.Module):
    """Stand-in classifier: images in [-1, 1] -> logits that pick the PALETTE colour nearest the image's mean colour.
    Classes beyond the palette never win."""

    def __init__(self, num_classes: int = len(PALETTE)):
        super().__init__()
        self.num_classes = num_classes

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        mean = images.float().mean(dim=(2, 3))
        logits = -torch.cdist(mean, PALETTE.to(mean.device))
        return torch.cat([logits, logits.new_full((len(images), self.num_classes - len(PALETTE)), -1e9)], dim=1)


class UnitColourClassifier(nn.Module):
    """The same classifier for images in [0, 1] (the TorchScript convention)."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        mean = images.float().mean(dim=(2, 3)) * 2 - 1
        palette = torch.tensor([[1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0]], device=mean.device)
        return -torch.cdist(mean, palette)


def coloured_images(labels, size: int = 8, noise: float = 0.2, seed: int = 0) -> torch.Tensor:
    """Images in [-1, 1] whose colour is PALETTE[label] plus uniform noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.as_tensor(labels)
    base = PALETTE[labels][:, :, None, None].expand(-1, -1, size, size)
    return (base + noise * (2 * torch.rand(base.shape, generator=g) - 1)).clamp(-1, 1)


class FakeTorchScriptInception(nn.Module):
    """Has the call signature of the StyleGAN2-ADA TorchScript Inception (`inception-2015-12-05.pt`): images with
    values in [0, 255]; `return_features=True` -> (B, 2048) features, else softmax probabilities over 1008 classes."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Linear(3, 2048)
        self.output = nn.Linear(2048, 1008)  # the real network's name of its output layer

    def forward(
        self, img: torch.Tensor, return_features: bool = False, use_fp16: bool = False, no_output_bias: bool = False
    ) -> torch.Tensor:
        features = self.proj(img.float().mean(dim=(2, 3)) / 255.0)
        if return_features:
            return features
        logits = features @ self.output.weight.t()
        if not no_output_bias:
            logits = logits + self.output.bias
        return logits.softmax(dim=1)


def tiny_pipeline(num_classes: int = 3, seed: int = 0) -> GloTokPipeline:
    """The conftest GloTok at 8x8 pixels (a 4x4 token grid) with a 2-layer, width-32 Llama prior."""
    vq = tiny_glotok_model(seed=seed, sample_size=8)
    torch.manual_seed(seed)
    config = prior_config(
        "B", vq.config, num_classes, num_hidden_layers=2, hidden_size=32, num_attention_heads=4,
        num_key_value_heads=4, intermediate_size=64, initializer_range=0.5,
    )  # fmt: skip
    pipe = GloTokPipeline(
        vqmodel=vq, prior=LlamaForCausalLM(config).eval(), id2label={i: f"c{i}" for i in range(num_classes)}
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def write_image_folder(root: Path, num_images: int = 6, size: int = 16, seed: int = 0) -> Path:
    """An imagefolder of random RGB PNGs in one class sub-folder."""
    rng = np.random.default_rng(seed)
    folder = root / "cls"
    folder.mkdir(parents=True)
    for i in range(num_images):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root
