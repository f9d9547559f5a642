"""Token layout and the classifier-free-guidance sampler, checked against naive no-cache references."""

import pytest
import torch
from prior_utils import naive_guided_logits, one_torch_thread, tiny_layout, tiny_prior
from torch import nn

from glotok_hf.sampling import (
    TokenLayout,
    cache_keyword,
    check_sampling_inputs,
    guidance_scales,
    sample_from_logits,
    sample_image_tokens,
)

NUM_POSITIONS = 6


def generators(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def layout():
    return tiny_layout()


@pytest.fixture(scope="module")
def prior(layout):
    return tiny_prior(layout, NUM_POSITIONS)


# --------------------------------------------------------------------------------------------------- layout
def test_layout_ids_and_ranges():
    layout = TokenLayout(visual_codebook_size=12288, semantic_codebook_size=4096, num_classes=1000)
    assert layout.vocab_size == 12288 + 4096 + 1000 + 1
    assert layout.null_class_id == layout.vocab_size - 1 == 17384
    assert layout.null_label == 1000
    assert layout.tokens_per_position == 2
    assert layout.sequence_length(256) == 513
    assert [layout.allowed_range(i) for i in range(4)] == [(0, 12288), (12288, 16384)] * 2
    assert layout.class_token_ids([0, 999, 1000]).tolist() == [16384, 17383, 17384]

    visual_only = TokenLayout(16, 0, 3)
    assert visual_only.tokens_per_position == 1 and visual_only.allowed_range(5) == (0, 16)
    assert visual_only.vocab_size == 20 and visual_only.null_class_id == 19
    semantic_only = TokenLayout(0, 12, 3)
    assert semantic_only.allowed_range(0) == (0, 12) and semantic_only.sequence_length(4) == 5


def test_to_tokens_interleaves_visual_before_semantic(layout):
    visual = torch.tensor([[[1, 2], [3, 4]]])
    semantic = torch.tensor([[[5, 6], [7, 8]]])
    tokens = layout.to_tokens(visual, semantic)
    v = layout.visual_codebook_size
    assert tokens.tolist() == [[1, v + 5, 2, v + 6, 3, v + 7, 4, v + 8]]
    back_visual, back_semantic = layout.to_indices(tokens, grid=(2, 2))
    assert torch.equal(back_visual, visual) and torch.equal(back_semantic, semantic)


@pytest.mark.parametrize("sizes", [(16, 12), (16, 0), (0, 12)])
def test_layout_round_trip(sizes):
    layout = TokenLayout(*sizes, num_classes=4)
    g = torch.Generator().manual_seed(0)
    visual = torch.randint(0, sizes[0], (3, 2, 4), generator=g) if sizes[0] else None
    semantic = torch.randint(0, sizes[1], (3, 2, 4), generator=g) if sizes[1] else None
    tokens = layout.to_tokens(visual, semantic)
    assert tokens.shape == (3, 8 * layout.tokens_per_position) and tokens.dtype == torch.long
    layout.validate_tokens(tokens)
    back = layout.to_indices(tokens, grid=(2, 4))
    for got, expected in zip(back, (visual, semantic)):
        assert (got is None and expected is None) or torch.equal(got, expected)


def test_layout_rejects_codes_that_break_it(layout):
    v, s = layout.visual_codebook_size, layout.semantic_codebook_size
    good = layout.to_tokens(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long))
    semantic_at_visual_step = good.clone()
    semantic_at_visual_step[1, 2] = v + 1
    with pytest.raises(ValueError, match=r"row 1, image token 2 \(grid position 1\) is 17.*visual.*\[0, 16\)"):
        layout.to_indices(semantic_at_visual_step, grid=3)
    class_token_inside = good.clone()
    class_token_inside[0, 5] = layout.null_class_id
    with pytest.raises(ValueError, match=r"image token 5 .* semantic code ids in \[16, 28\)"):
        layout.validate_tokens(class_token_inside)
    with pytest.raises(ValueError, match="multiple of 2"):
        layout.validate_tokens(good[:, :5])
    with pytest.raises(ValueError, match="grid"):
        layout.to_indices(good, grid=(2, 2))
    with pytest.raises(ValueError, match="semantic_indices must be given exactly when the layout has a semantic"):
        layout.to_tokens(torch.tensor([[0, 0]]))
    with pytest.raises(ValueError, match=r"semantic_indices must be given .*\(it has 0 semantic codes\)"):
        TokenLayout(v, 0, 2).to_tokens(torch.tensor([[0]]), torch.tensor([[0]]))
    with pytest.raises(TypeError, match="tokens must be an integer torch.Tensor"):
        layout.validate_tokens(good.float())
    assert s == 12


def test_layout_from_vocab_size():
    layout = TokenLayout.from_vocab_size(16 + 12 + 5 + 1, 16, 12, label_ids=range(5))
    assert layout == TokenLayout(16, 12, 5)
    with pytest.raises(ValueError, match=r"vocab_size 29 does not fit .* at least 28 .* = 30 ids"):
        TokenLayout.from_vocab_size(29, 16, 12)
    with pytest.raises(ValueError, match="vocab_size 34 implies 5 classes .* but 7 label names"):
        TokenLayout.from_vocab_size(34, 16, 12, label_ids=range(7))
    with pytest.raises(ValueError, match="at least one codebook"):
        TokenLayout(0, 0, 3)
    with pytest.raises(ValueError, match="num_classes must be an int >= 1, got 2.0"):
        TokenLayout(4, 4, 2.0)


def test_class_token_ids_validation(layout):
    assert layout.class_token_ids(torch.tensor([0, 4, 5])).tolist() == [28, 32, layout.null_class_id]
    with pytest.raises(ValueError, match=r"class label 6 is out of range: labels must lie in \[0, 5\)"):
        layout.class_token_ids([1, 6])
    with pytest.raises(ValueError, match="class label -1"):
        layout.class_token_ids(torch.tensor([-1]))
    with pytest.raises(TypeError):
        layout.class_token_ids(["cat"])


# -------------------------------------------------------------------------------------------------- sampler
def naive_greedy(prior, layout, labels, num_positions, scale):
    """Greedy guided decoding without any cache: full forwards over the whole prefix at every step."""
    sequences = layout.class_token_ids(torch.tensor(labels))[:, None]
    for step in range(layout.num_image_tokens(num_positions)):
        logits = naive_guided_logits(prior, layout, sequences, scale)[:, -1]
        lo, hi = layout.allowed_range(step)
        sequences = torch.cat([sequences, logits[:, lo:hi].argmax(-1, keepdim=True) + lo], dim=1)
    return sequences[:, 1:]


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_cached_sampling_equals_naive_loop(prior, layout, scale):
    labels = [0, 3, 4, layout.null_label]
    expected = naive_greedy(prior, layout, labels, NUM_POSITIONS, scale)
    tokens = sample_image_tokens(prior, layout, labels, NUM_POSITIONS, guidance_scale=scale, top_k=1)
    assert torch.equal(tokens, expected)
    static = sample_image_tokens(
        prior, layout, labels, NUM_POSITIONS, guidance_scale=scale, top_k=1, cache_implementation="static"
    )
    assert torch.equal(static, expected)


def test_cached_sampling_equals_naive_loop_single_codebook():
    layout = TokenLayout(16, 0, 3)
    prior = tiny_prior(layout, num_positions=8, seed=1)
    expected = naive_greedy(prior, layout, [0, 2], 8, 2.5)
    assert torch.equal(sample_image_tokens(prior, layout, [0, 2], 8, guidance_scale=2.5, top_k=1), expected)


class LogitsRecorder:
    """Forward hook recording the input ids and last-position logits of every call of the prior."""

    def __init__(self, prior):
        self.inputs, self.logits = [], []
        self.handle = prior.register_forward_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs, output):
        self.inputs.append(kwargs["input_ids"].clone())
        self.logits.append(output.logits[:, -1].float().clone())

    def remove(self):
        self.handle.remove()


@pytest.mark.parametrize("interval", [None, (0.0, 0.5)])
def test_logits_at_each_cached_step_equal_full_forward(prior, layout, interval):
    recorder = LogitsRecorder(prior)
    try:
        tokens = sample_image_tokens(
            prior, layout, [1, 2, 3], NUM_POSITIONS, guidance_scale=4.0, guidance_interval=interval,
            generator=generators(0, 1, 2),
        )  # fmt: skip
    finally:
        recorder.remove()
    sequences = torch.cat([layout.class_token_ids([1, 2, 3])[:, None], tokens], dim=1)
    unconditional = sequences.clone()
    unconditional[:, 0] = layout.null_class_id
    with torch.no_grad():
        full = prior(input_ids=torch.cat([sequences, unconditional])).logits.float()
    assert len(recorder.logits) == tokens.shape[1]
    for step, logits in enumerate(recorder.logits):
        torch.testing.assert_close(logits, full[: logits.shape[0], step], atol=1e-5, rtol=1e-5)
    # Guidance over the first half of the positions: the unconditional rows are dropped once it ends.
    rows = [x.shape[0] for x in recorder.inputs]
    if interval is None:
        assert rows == [6] * tokens.shape[1]
    else:
        assert rows == [6] * 6 + [3] * 6
    assert recorder.inputs[0][:, 0].tolist() == [29, 30, 31] + [layout.null_class_id] * 3


def test_batch_independence_with_per_sample_generators(prior, layout):
    labels, seeds = [4, 0, 2], [11, 12, 13]
    for kwargs in ({"guidance_scale": 3.0}, {"guidance_scale": 2.0, "guidance_interval": (0.2, 0.6)}):
        together = sample_image_tokens(prior, layout, labels, NUM_POSITIONS, generator=generators(*seeds), **kwargs)
        alone = [
            sample_image_tokens(prior, layout, [label], NUM_POSITIONS, generator=generators(seed), **kwargs)
            for label, seed in zip(labels, seeds)
        ]
        assert torch.equal(together, torch.cat(alone))
        assert len({tuple(row) for row in together.tolist()}) == 3  # the samples do differ


def test_seeding(prior, layout):
    first = sample_image_tokens(prior, layout, [1, 1], NUM_POSITIONS, generator=generators(0, 1))
    again = sample_image_tokens(prior, layout, [1, 1], NUM_POSITIONS, generator=generators(0, 1))
    assert torch.equal(first, again)
    assert not torch.equal(first[0], first[1])  # same class, different seeds
    one = sample_image_tokens(prior, layout, [1, 1], NUM_POSITIONS, generator=torch.Generator().manual_seed(0))
    assert torch.equal(one, sample_image_tokens(prior, layout, [1, 1], NUM_POSITIONS, generator=generators(0)[0]))


def test_null_class(prior, layout):
    """An unconditional label makes guidance a no-op; scale 0 samples the unconditional model for any label."""
    null = layout.null_label
    unconditional = sample_image_tokens(prior, layout, [null, null], NUM_POSITIONS, guidance_scale=5.0, top_k=1)
    assert torch.equal(unconditional, naive_greedy(prior, layout, [null, null], NUM_POSITIONS, 1.0))
    scale_zero = sample_image_tokens(prior, layout, [0, 3], NUM_POSITIONS, guidance_scale=0.0, top_k=1)
    assert torch.equal(scale_zero, unconditional)
    conditional = sample_image_tokens(prior, layout, [0, 3], NUM_POSITIONS, guidance_scale=1.0, top_k=1)
    assert not torch.equal(conditional, unconditional)


def test_never_emits_an_id_outside_the_allowed_range(prior, layout):
    """Every id the step does not allow gets a huge logit; the sampler still never emits one."""
    calls = []

    def boost_forbidden(module, args, kwargs, output):
        lo, hi = layout.allowed_range(len(calls))
        calls.append(1)
        forbidden = torch.ones(layout.vocab_size, dtype=torch.bool)
        forbidden[lo:hi] = False
        output.logits[..., forbidden] += 1e4
        return output

    handle = prior.register_forward_hook(boost_forbidden, with_kwargs=True)
    try:
        tokens = sample_image_tokens(
            prior, layout, [0, 1, 2, 3, 4, 5], NUM_POSITIONS, guidance_scale=3.0, temperature=50.0,
            generator=generators(*range(6)),
        )  # fmt: skip
    finally:
        handle.remove()
    layout.validate_tokens(tokens)
    v = layout.visual_codebook_size
    assert (tokens[:, 0::2] < v).all() and (tokens[:, 1::2] >= v).all() and (tokens < layout.codebook_size).all()


def test_top_k_and_top_p_restrict_the_draws(prior, layout):
    many = sample_image_tokens(
        prior, layout, [2] * 64, 1, guidance_scale=2.0, top_k=3, generator=generators(*range(64))
    )
    assert 1 < len(set(many[:, 0].tolist())) <= 3
    for first in set(many[:, 0].tolist()):  # the second token is a top-3 draw given each first token
        assert len(set(many[many[:, 0] == first, 1].tolist())) <= 3
    greedy = sample_image_tokens(prior, layout, [2], 1, guidance_scale=2.0, top_k=1)
    tiny_p = sample_image_tokens(
        prior, layout, [2] * 8, 1, guidance_scale=2.0, top_p=1e-6, generator=generators(*range(8))
    )
    assert (tiny_p == greedy).all()


def test_callback_and_output_shape(prior, layout):
    seen = []
    tokens = sample_image_tokens(
        prior, layout, torch.tensor([1, 2]), 3, callback=lambda i, t: seen.append((i, t.clone()))
    )
    assert tokens.shape == (2, 6) and tokens.dtype == torch.long
    assert [i for i, _ in seen] == list(range(6))
    assert all(torch.equal(t, tokens[:, : i + 1]) for i, t in seen)


@pytest.mark.parametrize("cache", ["dynamic", "static"])
@pytest.mark.parametrize("interval", [None, (0.0, 0.5)])
def test_callback_edits_rebuild_the_cache(prior, layout, cache, interval):
    """A callback that replaces earlier tokens continues exactly as a run that had sampled them (greedy)."""
    kwargs = dict(guidance_scale=3.0, guidance_interval=interval, top_k=1, cache_implementation=cache)
    plain = sample_image_tokens(prior, layout, [1, 4], NUM_POSITIONS, **kwargs)
    forced = plain.clone()
    forced[:, 1] = layout.visual_codebook_size + (plain[:, 1] - layout.visual_codebook_size + 3) % 12
    first = sample_image_tokens(prior, layout, [1, 4], NUM_POSITIONS, **kwargs,
                                callback=lambda i, t: forced[:, :2] if i == 1 else None)  # fmt: skip
    assert torch.equal(first[:, :2], forced[:, :2]) and not torch.equal(first, plain)
    for step in (3, 8):  # inside and (with the interval) after guidance, when the null rows are gone
        again = sample_image_tokens(prior, layout, [1, 4], NUM_POSITIONS, **kwargs,
                                    callback=lambda i, t, s=step: first[:, : s + 1] if i == s else None)  # fmt: skip
        assert torch.equal(again, first)


class PastKeyValuesPrior(nn.Module):
    """A prior whose forward takes the pre-5.24 `past_key_values=` keyword (wraps a 5.24 Llama)."""

    def __init__(self, prior):
        super().__init__()
        self.prior = prior
        self.config = prior.config

    @property
    def device(self):
        return self.prior.device

    def forward(self, input_ids=None, past_key_values=None, use_cache=None):
        return self.prior(input_ids=input_ids, cache=past_key_values, use_cache=use_cache)


def test_old_past_key_values_keyword(prior, layout):
    assert cache_keyword(prior) == "cache"
    old = PastKeyValuesPrior(prior)
    assert cache_keyword(old) == "past_key_values"
    kwargs = {"guidance_scale": 2.0, "generator": generators(0, 1)}
    expected = sample_image_tokens(prior, layout, [0, 1], NUM_POSITIONS, **kwargs)
    kwargs["generator"] = generators(0, 1)
    assert torch.equal(sample_image_tokens(old, layout, [0, 1], NUM_POSITIONS, **kwargs), expected)


def test_guidance_scales():
    assert guidance_scales(3, 2, 4.0) == [4.0] * 6
    assert guidance_scales(3, 1, 3.0, "linear") == [1.0, 2.0, 3.0]
    assert guidance_scales(4, 1, 3.0, guidance_interval=(0.25, 0.75)) == [1.0, 3.0, 3.0, 1.0]
    assert guidance_scales(1, 2, 3.0, "linear") == [3.0, 3.0]


def test_sample_from_logits_inverse_cdf():
    logits = torch.tensor([[float("-inf"), 0.0, float("-inf"), 0.0, float("-inf")]]).log_softmax(-1)
    edges = torch.tensor([0.0, 0.49, 0.51, torch.nextafter(torch.tensor(1.0), torch.tensor(0.0)).item()])
    picks = [int(sample_from_logits(logits, u[None])) for u in edges]
    assert picks == [1, 1, 3, 3]
    # Quantiles of a known distribution: counts equal the probabilities exactly.
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4])
    u = (torch.arange(1000) + 0.5) / 1000
    draws = sample_from_logits(probs.log().expand(1000, 4), u)
    assert torch.bincount(draws, minlength=4).tolist() == [100, 200, 300, 400]


def test_sampler_bad_inputs(prior, layout):
    with pytest.raises(ValueError, match=r"vocab_size 34 does not match the token layout's 35"):
        sample_image_tokens(prior, TokenLayout(16, 12, 6), [0], 2)
    with pytest.raises(ValueError, match="class label 7 is out of range"):
        sample_image_tokens(prior, layout, [0, 7], 2)
    with pytest.raises(ValueError, match="max_position_embeddings=13"):
        sample_image_tokens(prior, layout, [0], NUM_POSITIONS + 1)
    with pytest.raises(ValueError, match="guidance_scale must be a finite float >= 0"):
        sample_image_tokens(prior, layout, [0], 2, guidance_scale=-1.0)
    with pytest.raises(ValueError, match="guidance_schedule"):
        sample_image_tokens(prior, layout, [0], 2, guidance_schedule="cosine")
    with pytest.raises(ValueError, match="guidance_interval"):
        sample_image_tokens(prior, layout, [0], 2, guidance_interval=(0.5, 0.2))
    with pytest.raises(ValueError, match="temperature"):
        sample_image_tokens(prior, layout, [0], 2, temperature=0.0)
    with pytest.raises(ValueError, match="top_p"):
        sample_image_tokens(prior, layout, [0], 2, top_p=1.5)
    with pytest.raises(ValueError, match="top_k"):
        sample_image_tokens(prior, layout, [0], 2, top_k=-2)
    with pytest.raises(ValueError, match="Got 2 generators for 3 images"):
        sample_image_tokens(prior, layout, [0, 1, 2], 2, generator=generators(0, 1))
    with pytest.raises(ValueError, match="num_positions must be a positive int"):
        sample_image_tokens(prior, layout, [0], 0)
    with pytest.raises(ValueError, match="non-empty 1-d"):
        sample_image_tokens(prior, layout, torch.tensor([[0]]), 2)
    with pytest.raises(ValueError, match="cache_implementation"):
        sample_image_tokens(prior, layout, [0], 2, cache_implementation="paged")
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        sample_image_tokens(prior, layout, [0], 2, generator=0)
    with pytest.raises(ValueError, match=r"Sampling 1000000000000 images at once needs .* GiB"):
        check_sampling_inputs(prior, layout, 10**12, 2)  # what the sampler and the pipeline check first


def test_docstring_examples():
    import doctest

    import glotok_hf.sampling

    result = doctest.testmod(glotok_hf.sampling, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_sampling_records_no_autograd_graph():
    """Like `generate`, the sampler runs without autograd: called directly (not through the pipeline) it must not keep
    every step's graph alive (at GPT-B size that was 22 GB)."""
    layout = tiny_layout()
    prior, seen = tiny_prior(layout), []
    prior.register_forward_hook(lambda module, args, out: seen.append(out.logits.requires_grad))
    sample_image_tokens(prior, layout, [0, 2], num_positions=4, guidance_scale=2.0)
    assert seen and not any(seen)
