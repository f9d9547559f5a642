"""Tiny GloTok pipelines shared by the pipeline, Hub and CLI tests."""

import pytest
import torch
from conftest import tiny_glotok_model
from transformers import LlamaForCausalLM

from glotok_hf.pipeline_glotok import GloTokPipeline
from glotok_hf.prior import prior_config

ID2LABEL = {0: "zero, nought", 1: "one", 2: "seven"}


def tiny_prior(vq_config, num_classes: int, seed: int = 0, **overrides) -> LlamaForCausalLM:
    """A 2-layer, width-32 Llama prior over the codes of `vq_config`, with logits sharp enough (initializer range
    0.5) that the sampled tokens depend on the class and on guidance."""
    kwargs = dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, num_key_value_heads=4,
                  intermediate_size=64, initializer_range=0.5)  # fmt: skip
    kwargs.update(overrides)
    torch.manual_seed(seed)
    return LlamaForCausalLM(prior_config("B", vq_config, num_classes, **kwargs)).eval()


def tiny_pipeline(id2label=ID2LABEL, num_classes: int | None = None, seed: int = 0, **vq_overrides) -> GloTokPipeline:
    """The conftest GloTok at 8x8 pixels (a 4x4 token grid: 32 sampling steps with both codebooks) plus a tiny
    prior; progress bars off."""
    vq = tiny_glotok_model(seed=seed, **{"sample_size": 8, **vq_overrides})
    num_classes = num_classes if num_classes is not None else len(id2label)
    pipe = GloTokPipeline(vqmodel=vq, prior=tiny_prior(vq.config, num_classes, seed=seed), id2label=id2label)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generators(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


@pytest.fixture
def single_thread():
    """One intra-op thread for the test: tiny models gain nothing from more threads, and on the busy 2-core dev
    machine two threads spin-wait on each other (a 32-step tiny pipeline call measured 0.13 s on one thread and
    1.5-7 s on two, at a load average of 8)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
