"""The embedded default pipeline (`pipelines/glotok-digits`) that `make demo` runs: what ships, that it loads, and
that what it generates is deterministic and lies on its own tokenizer's manifold."""

import json

import numpy as np
import pytest
import torch
from transformers import AutoModel

from glotok_hf import GloTokModel, GloTokPipeline
from glotok_hf.loading import embedded_pipeline_path

FOLDER = embedded_pipeline_path()


@pytest.fixture(scope="module")
def pipe():
    pipeline = GloTokPipeline.from_pretrained(FOLDER)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def test_ships_small_safetensors_only():
    files = [p for p in FOLDER.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 20 * 2**20
    weights = [p for p in files if p.suffix in {".safetensors", ".bin", ".pt", ".pth", ".ckpt"}]
    assert sorted(p.relative_to(FOLDER).as_posix() for p in weights) == [
        "prior/model.safetensors",
        "vqmodel/model.safetensors",
    ]
    assert not [p for p in files if p.suffix == ".py"]  # the checkout's glotok_hf is the code; no copy to drift
    index = json.loads((FOLDER / "model_index.json").read_text())
    assert "_name_or_path" not in index  # no path of the machine that built it
    assert (FOLDER / "README.md").read_text().count("class consistency") >= 1


def test_loads_as_documented(pipe):
    assert isinstance(pipe.vqmodel, GloTokModel)
    assert isinstance(AutoModel.from_pretrained(FOLDER / "vqmodel"), GloTokModel)
    config = pipe.vqmodel.config
    assert config.semantic_codebook_size > 0 and config.visual_codebook_size > 0 and config.use_residual
    assert pipe.id2label == {
        i: name for i, name in enumerate("zero one two three four five six seven eight nine".split())
    }
    assert pipe.prior.config.vocab_size == config.visual_codebook_size + config.semantic_codebook_size + 10 + 1


def test_generation_is_deterministic_and_batch_independent(pipe):
    labels = ["three", 7]
    batched = pipe(labels, generator=[torch.Generator().manual_seed(s) for s in (0, 1)], output_type="np")
    alone = pipe([7], generator=[torch.Generator().manual_seed(1)], output_type="np")
    assert batched.images.shape == (2, 24, 24, 3)
    np.testing.assert_allclose(batched.images[1], alone.images[0], atol=1e-5)
    assert torch.equal(batched.visual_indices[1], alone.visual_indices[0])


def second_pass_psnr(vqmodel, images: torch.Tensor) -> float:
    """PSNR (dB) between images in [-1, 1] and their reconstruction by the tokenizer."""
    with torch.no_grad():
        again = vqmodel(images).sample.clamp(-1, 1)
    return 10 * np.log10(4 / torch.mean((again - images) ** 2).item())


def test_samples_lie_on_the_tokenizer_manifold(pipe):
    """Samples survive a second pass through the tokenizer almost unchanged (35 dB here), far better than images
    decoded from random code maps (23 dB): the prior generates code maps like those the tokenizer produces."""
    out = pipe(list(range(10)), generator=[torch.Generator().manual_seed(s) for s in range(10)], output_type="pt")
    sampled = second_pass_psnr(pipe.vqmodel, out.images * 2 - 1)
    config, generator = pipe.vqmodel.config, torch.Generator().manual_seed(0)
    random_codes = {
        "semantic_indices": torch.randint(config.semantic_codebook_size, (10, 6, 6), generator=generator),
        "visual_indices": torch.randint(config.visual_codebook_size, (10, 6, 6), generator=generator),
    }
    with torch.no_grad():
        random_images = pipe.vqmodel.decode(**random_codes).sample.clamp(-1, 1)
    assert sampled > 30
    assert sampled > second_pass_psnr(pipe.vqmodel, random_images) + 6
