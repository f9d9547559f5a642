"""Tiny priors and reference implementations shared by the prior, sampling and code-extraction tests."""

import contextlib

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from glotok_hf.sampling import TokenLayout


@contextlib.contextmanager
def one_torch_thread():
    """Run tiny models on one intra-op thread: on the shared 2-core machine, two OpenMP threads contending with
    other processes make millisecond forwards take seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def tiny_layout(visual: int = 16, semantic: int = 12, num_classes: int = 5) -> TokenLayout:
    """The layout of the tiny GloTok from conftest (16 visual + 12 semantic codes) with 5 classes."""
    return TokenLayout(visual, semantic, num_classes)


def tiny_prior(layout: TokenLayout, num_positions: int = 6, seed: int = 0, hidden_size: int = 32) -> LlamaForCausalLM:
    """A 2-layer Llama over `layout`, in eval mode, random enough that samples differ by seed."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=layout.vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=layout.sequence_length(num_positions),
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
        tie_word_embeddings=False,
        initializer_range=0.2,
    )
    return LlamaForCausalLM(config).eval()


def naive_guided_logits(prior, layout: TokenLayout, sequences: torch.Tensor, scale: float) -> torch.Tensor:
    """Reference without cache: one full forward over `sequences` (B, 1 + L) for the conditional rows and one with
    the class token replaced by the null class. Returns the guided logits `(B, 1 + L, vocab)`; position `t` predicts
    token `t + 1`."""
    uncond = sequences.clone()
    uncond[:, 0] = layout.null_class_id
    with torch.no_grad():
        cond_logits = prior(input_ids=sequences).logits.float()
        uncond_logits = prior(input_ids=uncond).logits.float()
    return uncond_logits + scale * (cond_logits - uncond_logits)
