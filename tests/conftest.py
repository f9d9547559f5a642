"""Shared fixtures: an offline, isolated Hugging Face environment and tiny seeded models and inputs.

The environment variables are set at import time, before any test module imports huggingface_hub (which reads
`HF_ENDPOINT` / `HF_HUB_OFFLINE` once, at import).
"""

import os
import shutil
import sys
import tempfile
from pathlib import Path

_HF_HOME = tempfile.mkdtemp(prefix="glotok-test-hf-home-")
os.environ["HF_HOME"] = _HF_HOME
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.pop("HF_TOKEN", None)

import pytest  # noqa: E402
import torch  # noqa: E402

# `fake_hub` fixture: a loopback fake Hugging Face Hub (tests/fakehub.py).
pytest_plugins = ["fakehub"]

# Tiny models: thread start-up costs more than it saves, and one thread keeps timings stable on a shared machine.
torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]
SRC = REPO_ROOT / "src"


def tiny_glotok_kwargs(**overrides) -> dict:
    """Smallest GloTok config that still exercises every part: 2 levels (factor 2), both codebooks, adapters,
    residual modules and attention. 16x16 images give an 8x8 token grid."""
    kwargs = dict(
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        latent_channels=8,
        adapter_depth=1,
        adapter_num_heads=2,
        semantic_codebook_size=12,
        visual_codebook_size=16,
        codebook_dim=4,
        residual_hidden_size=8,
        residual_num_heads=2,
        sample_size=16,
    )
    kwargs.update(overrides)
    return kwargs


def tiny_glotok_config(**overrides):
    from glotok_hf import GloTokConfig

    return GloTokConfig(**tiny_glotok_kwargs(**overrides))


def tiny_glotok_model(seed: int = 0, **overrides):
    from glotok_hf import GloTokModel

    torch.manual_seed(seed)
    return GloTokModel(tiny_glotok_config(**overrides)).eval()


def dummy_images(batch: int = 2, size: int = 16, seed: int = 0, channels: int = 3) -> torch.Tensor:
    """Seeded images in [-1, 1]."""
    g = torch.Generator("cpu").manual_seed(seed)
    return torch.rand(batch, channels, size, size, generator=g) * 2 - 1


@pytest.fixture
def tiny_config():
    return tiny_glotok_config()


@pytest.fixture
def tiny_model():
    return tiny_glotok_model()


@pytest.fixture
def images():
    return dummy_images()


@pytest.fixture
def subprocess_env(tmp_path):
    """Environment for child processes: offline, private HF_HOME, this checkout's `src` first on the path."""
    env = dict(os.environ)
    env["HF_HOME"] = str(tmp_path / "hf_home")
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONUNBUFFERED"] = "1"
    env["OMP_NUM_THREADS"] = "1"  # same thread count as this process, so float results match bit for bit
    return env


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_HF_HOME, ignore_errors=True)


PYTHON = sys.executable

# Prepended to child-process scripts that must prove remote code works where glotok_hf cannot be imported.
from glotok_hf.commands.check_pipeline import BLOCK_GLOTOK_HF  # noqa: E402, F401
