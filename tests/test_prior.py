"""The prior's LlamaConfig presets, layout inference and the training-batch helper."""

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_glotok_config
from prior_utils import one_torch_thread
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from glotok_hf.prior import PRIOR_SIZES, build_prior, layout_from_configs, prior_config, prior_training_batch
from glotok_hf.sampling import TokenLayout, sample_image_tokens


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_torch_thread():
        yield


def tiny_prior_config(**overrides) -> LlamaConfig:
    """`prior_config("B", tiny GloTok, 5 classes)` shrunk to 2 layers of width 32."""
    kwargs = dict(
        num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=4
    )
    kwargs.update(overrides)
    return prior_config("B", tiny_glotok_config(), 5, **kwargs)


@pytest.mark.parametrize("size", ["B", "L", "XL", "XXL", "3B"])
def test_parameter_counts_match_llamagen(size):
    """With the paper's tokenizer (12,288 + 4,096 codes) and 1,000 classes the sizes match LlamaGen's GPTs (within
    5%: 111M, 343M, 775M, 1.4B, 3.1B). Built on the meta device, so nothing is allocated."""
    from glotok_hf import GloTokConfig

    config = prior_config(size, GloTokConfig(), num_classes=1000)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    count = sum(p.numel() for p in model.parameters())
    reference = PRIOR_SIZES[size].reference_parameters
    assert abs(count / reference - 1) < 0.05, (size, count, reference)
    assert config.hidden_size // config.num_attention_heads == (100 if size == "3B" else 64)


def test_prior_config_fields():
    from glotok_hf import GloTokConfig

    config = prior_config("L", GloTokConfig(), num_classes=1000)
    assert config.vocab_size == 12288 + 4096 + 1000 + 1
    assert config.max_position_embeddings == 1 + 256 * 2
    assert (config.num_hidden_layers, config.hidden_size, config.intermediate_size) == (24, 1024, 2816)
    assert config.bos_token_id is None and config.eos_token_id is None and config.pad_token_id is None
    assert config.tie_word_embeddings is False and config.rms_norm_eps == 1e-5
    assert config.rope_parameters["rope_theta"] == 10000.0
    assert prior_config("B", GloTokConfig(), 10).intermediate_size == 2048
    assert prior_config("XL", GloTokConfig(), 10).intermediate_size == 3584

    single = prior_config(
        "B", GloTokConfig(semantic_codebook_size=0, visual_codebook_size=16384), 10, num_positions=64
    )
    assert single.vocab_size == 16384 + 10 + 1 and single.max_position_embeddings == 65
    assert prior_config("B", GloTokConfig(), 10, num_hidden_layers=3, attention_dropout=0.1).num_hidden_layers == 3


def test_prior_config_bad_inputs():
    with pytest.raises(ValueError, match=r"Unknown prior size 'M'; choose one of \['3B', 'B', 'L', 'XL', 'XXL'\]"):
        prior_config("M", tiny_glotok_config(), 5)
    with pytest.raises(ValueError, match="vocab_size=100 cannot be overridden: the token layout needs 34 ids"):
        tiny_prior_config(vocab_size=100)
    with pytest.raises(ValueError, match="num_classes must be an int >= 1"):
        prior_config("B", tiny_glotok_config(), 0)


def test_layout_from_configs():
    tokenizer = tiny_glotok_config()
    config = tiny_prior_config()
    assert layout_from_configs(tokenizer, config) == TokenLayout(16, 12, 5)
    assert layout_from_configs(tokenizer, config, id2label={i: str(i) for i in range(5)}).num_classes == 5
    with pytest.raises(ValueError, match="vocab_size 34 implies 5 classes .* but 3 label names"):
        layout_from_configs(tokenizer, config, id2label={0: "a", 1: "b", 2: "c"})
    with pytest.raises(ValueError, match="vocab_size 34 does not fit"):
        layout_from_configs(tiny_glotok_config(visual_codebook_size=32), config)


def test_prior_is_a_stock_causal_lm(tmp_path):
    """Saved priors reload with AutoModelForCausalLM (no custom code) and sample identically."""
    tokenizer = tiny_glotok_config()
    torch.manual_seed(0)
    prior = build_prior(tiny_prior_config(num_positions=4)).eval()
    prior.save_pretrained(tmp_path)
    assert not list(tmp_path.glob("*.py"))
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is LlamaForCausalLM
    assert loaded.generation_config.eos_token_id is None and loaded.generation_config.bos_token_id is None
    layout = layout_from_configs(tokenizer, loaded.config)
    kwargs = {"guidance_scale": 2.0, "top_k": 1}
    assert torch.equal(
        sample_image_tokens(prior, layout, [0, 4], 4, **kwargs),
        sample_image_tokens(loaded, layout, [0, 4], 4, **kwargs),
    )


def codes_and_labels(layout: TokenLayout, batch: int, num_positions: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    visual = torch.randint(0, layout.visual_codebook_size, (batch, num_positions), generator=g)
    semantic = torch.randint(0, layout.semantic_codebook_size, (batch, num_positions), generator=g)
    labels = torch.randint(0, layout.num_classes, (batch,), generator=g)
    return layout.to_tokens(visual, semantic), labels


def test_training_batch_layout_and_loss():
    """Class token first, -100 on it; the model's loss is the cross-entropy over image tokens only."""
    layout = TokenLayout(16, 12, 5)
    codes, labels = codes_and_labels(layout, 3)
    batch = prior_training_batch(codes, labels, layout, class_dropout_prob=0.0)
    assert batch["input_ids"].shape == batch["labels"].shape == (3, 9)
    assert torch.equal(batch["input_ids"][:, 0], labels + 28) and torch.equal(batch["input_ids"][:, 1:], codes)
    assert (batch["labels"][:, 0] == -100).all() and torch.equal(batch["labels"][:, 1:], codes)

    torch.manual_seed(0)
    prior = build_prior(tiny_prior_config(num_positions=4))
    out = prior(**batch)
    logits = out.logits[:, :-1].reshape(-1, layout.vocab_size)
    torch.testing.assert_close(out.loss, F.cross_entropy(logits.float(), codes.reshape(-1)))


def test_class_dropout_rate():
    layout = TokenLayout(16, 12, 5)
    codes, labels = codes_and_labels(layout, 20000, num_positions=1)
    g = torch.Generator().manual_seed(0)
    first = prior_training_batch(codes, labels, layout, class_dropout_prob=0.1, generator=g)["input_ids"][:, 0]
    dropped = first == layout.null_class_id
    assert 0.09 < dropped.float().mean().item() < 0.11
    assert torch.equal(first[~dropped], labels[~dropped] + layout.codebook_size)  # kept rows keep their class
    again = prior_training_batch(codes, labels, layout, 0.1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again["input_ids"][:, 0], first)  # seeded
    all_null = prior_training_batch(codes[:50], labels[:50], layout, class_dropout_prob=1.0)["input_ids"][:, 0]
    assert (all_null == layout.null_class_id).all()
    assert (
        prior_training_batch(codes[:50], labels[:50], layout, 0.0)["input_ids"][:, 0] != layout.null_class_id
    ).all()


def test_training_batch_trusts_its_arguments():
    """No check (and no device sync) in the training step: the stage checked its code dataset when it started."""
    layout = TokenLayout(16, 12, 5)
    codes, labels = codes_and_labels(layout, 2)
    swapped = codes.clone()
    swapped[0, 0], swapped[0, 1] = codes[0, 1], codes[0, 0]
    assert torch.equal(prior_training_batch(swapped, labels, layout, 0.0)["input_ids"][:, 1:], swapped)
    with pytest.raises(ValueError, match=r"codes break the token layout: row 0, image token 0 .* \[0, 16\)"):
        layout.validate_tokens(swapped, name="codes")  # the check for codes from elsewhere


def test_docstring_examples():
    import doctest

    import glotok_hf.prior

    result = doctest.testmod(glotok_hf.prior, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_overriding_the_width_rescales_swiglu_and_heads_like_llamagen():
    config = prior_config("B", tiny_glotok_config(), num_classes=10, hidden_size=256, num_hidden_layers=2)
    assert (config.intermediate_size, config.num_attention_heads, config.num_key_value_heads) == (768, 4, 4)
    explicit = prior_config(
        "B", tiny_glotok_config(), 10, hidden_size=256, intermediate_size=512, num_attention_heads=2
    )
    assert (explicit.intermediate_size, explicit.num_attention_heads, explicit.num_key_value_heads) == (512, 2, 2)
