"""The factorized AR prior (GloTokPriorForCausalLM): presets, forward, and its cached sampler against a literal
uncached reference (one full teacher-forced forward per sub-token)."""

import pytest
import torch
from prior_utils import one_torch_thread
from transformers import AutoConfig, AutoModelForCausalLM, LogitsProcessorList, TopKLogitsWarper

from glotok_hf import PRIOR_PRESETS, GloTokPriorConfig, GloTokPriorForCausalLM, prior_preset
from glotok_hf.sampling import TokenLayout, draw_uniforms, guidance_scales, sample_from_logits, sample_image_tokens

GRID = 3


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_torch_thread():
        yield


def tiny_config(sizes=(16, 12), **overrides) -> GloTokPriorConfig:
    fields = dict(codebook_sizes=list(sizes), num_classes=5, grid_size=GRID, hidden_size=32, intermediate_size=64,
                  num_hidden_layers=2, num_attention_heads=4, head_layers=1 if len(sizes) > 1 else 0,
                  initializer_range=0.2)  # fmt: skip
    fields.update(overrides)
    return GloTokPriorConfig(**fields)


def tiny_model(sizes=(16, 12), seed: int = 0, **overrides) -> GloTokPriorForCausalLM:
    torch.manual_seed(seed)
    return GloTokPriorForCausalLM(tiny_config(sizes, **overrides)).eval()


def layout_of(config: GloTokPriorConfig) -> TokenLayout:
    sizes = config.codebook_sizes
    return TokenLayout(sizes[0], sizes[1] if len(sizes) > 1 else 0, config.num_classes)


def generators(*seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


@torch.no_grad()
def reference_sample(model, layout, labels, scales, processors, uniforms, callback=None):
    """Literal reference: for every sub-token, a full uncached forward of the conditional rows and of the null-class
    rows over all positions so far (the not yet sampled sub-tokens are zeros: the model is causal, so they do not
    matter), then guidance, the processors and inverse-CDF sampling with the same uniforms."""
    count, positions = len(model.config.codebook_sizes), model.config.num_positions
    offsets = [lo for _, lo, _ in layout._codebooks]
    labels = torch.as_tensor(labels)
    null = torch.full_like(labels, layout.null_label)
    codes = torch.zeros(len(labels), positions, count, dtype=torch.long)
    tokens = torch.zeros(len(labels), positions * count, dtype=torch.long)
    for p in range(positions):
        for j in range(count):
            step = p * count + j
            cond = model(codes[:, : p + 1], labels).logits[j][:, p]
            uncond = model(codes[:, : p + 1], null).logits[j][:, p]
            logits = cond if scales[step] == 1.0 else uncond + scales[step] * (cond - uncond)
            prefix = torch.cat([labels[:, None] + layout.codebook_size, tokens[:, :step]], 1)
            codes[:, p, j] = sample_from_logits(processors(prefix, logits), uniforms[:, step])
            tokens[:, step] = codes[:, p, j] + offsets[j]
            edited = None if callback is None else callback(step, tokens[:, : step + 1])
            if edited is not None:
                tokens[:, : step + 1] = edited
                codes.view(len(labels), -1)[:, : step + 1] = edited - torch.tensor(offsets).repeat(p + 1)[: step + 1]
    return tokens


# ------------------------------------------------------------------------------------------------- config
def test_presets_match_published_parameter_counts():
    for name, (_, _, _, head_layers, published) in PRIOR_PRESETS.items():
        with torch.device("meta"):
            model = GloTokPriorForCausalLM(prior_preset(name, [16384] * (2 if head_layers else 1), 1000))
        count = sum(p.numel() for p in model.parameters())
        assert abs(count - published) / published < 0.01, (name, count)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(codebook_sizes=[]), "codebook_sizes"),
        (dict(codebook_sizes=[4, 4, 4], head_layers=1), "at most two"),
        (dict(codebook_sizes=[4, 4], head_layers=0), "head_layers >= 1"),
        (dict(num_attention_heads=5), "must divide"),
        (dict(hidden_size=24, num_attention_heads=4), "divisible by 4"),
        (dict(class_dropout_prob=1.0), "class_dropout_prob"),
    ],
)
def test_config_rejects_bad_values(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)


def test_a_preset_with_another_width_rescales_what_follows_from_it():
    config = prior_preset("GPT-B", [16], 10, hidden_size=256)
    assert (config.num_attention_heads, config.intermediate_size, config.num_hidden_layers) == (4, 768, 12)
    assert prior_preset("FAR-B", [16, 8], 10, hidden_size=256, num_attention_heads=2).num_attention_heads == 2


def test_unknown_preset_names_the_choices():
    with pytest.raises(ValueError, match="GPT-B"):
        prior_preset("GPT-Q", [16], 10)


def test_config_exposes_the_token_layout_view():
    config = tiny_config()
    assert config.vocab_size == layout_of(config).vocab_size
    assert config.max_position_embeddings == layout_of(config).sequence_length(GRID * GRID)
    assert config.image_grid_size == [GRID, GRID]


# -------------------------------------------------------------------------------------------------- model
def test_forward_is_causal_and_the_loss_averages_codebooks():
    model = tiny_model()
    codes = torch.stack([torch.randint(0, 16, (2, 9)), torch.randint(0, 12, (2, 9))], -1)
    out = model(codes, torch.tensor([0, 4]), labels=codes)
    changed = codes.clone()
    changed[:, 5, 1] = (changed[:, 5, 1] + 1) % 12  # the semantic code of position 5 is seen from position 6 on
    again = model(changed, torch.tensor([0, 4]))
    torch.testing.assert_close(again.logits[0][:, :6], out.logits[0][:, :6])
    torch.testing.assert_close(again.logits[1][:, :6], out.logits[1][:, :6])
    assert not torch.allclose(again.logits[0][:, 6:], out.logits[0][:, 6:])
    ce = [
        torch.nn.functional.cross_entropy(lg.flatten(0, 1), codes[..., j].flatten()) for j, lg in enumerate(out.logits)
    ]
    torch.testing.assert_close(out.loss, (ce[0] + ce[1]) / 2)


def test_cached_backbone_matches_the_full_forward():
    from transformers import DynamicCache

    model, codes = tiny_model(), torch.stack([torch.randint(0, 16, (2, 9)), torch.randint(0, 12, (2, 9))], -1)
    full = model.backbone(torch.tensor([1, 2]), codes)
    cache = DynamicCache()
    steps = [model.backbone(torch.tensor([1, 2]), codes[:, :3], cache=cache)]
    steps += [model.backbone(None, codes[:, p : p + 1], cache=cache) for p in range(3, 9)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_1d_and_2d_rope_differ_and_the_class_token_is_not_rotated():
    from glotok_hf.modeling_glotok_prior import rotary_table

    cos2, sin2 = rotary_table(tiny_config())
    cos1, _ = rotary_table(tiny_config(rope_2d=False))
    assert cos2.shape == (1 + GRID * GRID, 8)
    assert not cos2[0].any() and not sin2[0].any()  # LlamaGen zeroes the class token's rotation
    torch.testing.assert_close(cos2[1], torch.ones(8))  # grid position (0, 0)
    # position (1, 0) turns only the row half of the pairs, (0, 1) only the column half
    assert (cos2[1 + GRID, [0, 1, 4, 5]] != 1).all() and (cos2[1 + GRID, [2, 3, 6, 7]] == 1).all()
    assert (cos2[2, [0, 1, 4, 5]] == 1).all() and (cos2[2, [2, 3, 6, 7]] != 1).all()
    assert not torch.allclose(cos1, cos2)


def test_the_class_token_keeps_its_query_and_key_without_zero_class_rotary():
    from glotok_hf.modeling_glotok_prior import rotary_table

    cos, sin = rotary_table(tiny_config(zero_class_rotary=False))
    llamagen_cos, llamagen_sin = rotary_table(tiny_config())
    assert (cos[0] == 1).all() and not sin[0].any()  # the identity rotation: the class token is attended by content
    torch.testing.assert_close((cos[1:], sin[1:]), (llamagen_cos[1:], llamagen_sin[1:]))  # grid positions unchanged
    codes, labels = torch.stack([torch.randint(0, 16, (2, 9)), torch.randint(0, 12, (2, 9))], -1), torch.tensor([0, 4])
    zeroed, keyed = tiny_model(), tiny_model(zero_class_rotary=False)  # the same weights (same seed)
    # the class token alone: one key, attended whatever its logit; the head's first slot (row 0 too) alone likewise
    torch.testing.assert_close(zeroed(codes[:, :1], labels).logits[0], keyed(codes[:, :1], labels).logits[0])
    assert not torch.allclose(zeroed(codes, labels).logits[0][:, 1:], keyed(codes, labels).logits[0][:, 1:])


def test_gradient_checkpointing_gives_the_same_gradients():
    grads = []
    for checkpointing in (False, True):
        model = tiny_model().train()
        if checkpointing:
            model.activation_checkpointing_enable()
        g = torch.Generator().manual_seed(0)
        codes = torch.stack([torch.randint(0, 16, (2, 9), generator=g), torch.randint(0, 12, (2, 9), generator=g)], -1)
        model(codes, torch.tensor([1, 2]), labels=codes).loss.backward()
        grads.append(model.layers[0].mlp.up_proj.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_save_and_load_with_auto_classes(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    assert type(AutoConfig.from_pretrained(tmp_path)) is GloTokPriorConfig
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    codes = torch.stack([torch.randint(0, 16, (1, 9)), torch.randint(0, 12, (1, 9))], -1)
    for a, b in zip(model(codes, torch.tensor([3])).logits, loaded(codes, torch.tensor([3])).logits):
        torch.testing.assert_close(a, b)


# ----------------------------------------------------------------------------------------------- sampling
@pytest.mark.parametrize("sizes, scale", [((16, 12), 2.0), ((16, 12), [3.0, 1.5]), ((16,), 2.5), ((16, 12), 1.0)])
def test_cached_sampler_matches_the_uncached_reference(sizes, scale):
    model = tiny_model(sizes)
    layout = layout_of(model.config)
    labels, seeds = [1, 4, 5], (0, 1, 2)  # 5 is the null label: an unconditional sample
    tokens = sample_image_tokens(model, layout, labels, GRID * GRID, guidance_scale=scale, top_k=6,
                                 generator=generators(*seeds))  # fmt: skip
    count = len(sizes)
    scales = guidance_scales(GRID * GRID, count, scale)
    uniforms = draw_uniforms(generators(*seeds), 3, GRID * GRID * count, torch.device("cpu"))
    expected = reference_sample(model, layout, labels, scales, LogitsProcessorList([TopKLogitsWarper(6)]), uniforms)
    torch.testing.assert_close(tokens, expected, rtol=0, atol=0)
    layout.validate_tokens(tokens)


def test_static_cache_and_linear_schedule_match_the_reference():
    model = tiny_model()
    layout = layout_of(model.config)
    options = dict(guidance_scale=2.0, guidance_schedule="linear", guidance_interval=(0.0, 0.5))
    dynamic = sample_image_tokens(model, layout, [2, 3], 9, generator=generators(5, 6), **options)
    static = sample_image_tokens(model, layout, [2, 3], 9, generator=generators(5, 6),
                                 cache_implementation="static", **options)  # fmt: skip
    scales = guidance_scales(9, 2, 2.0, "linear", (0.0, 0.5))
    uniforms = draw_uniforms(generators(5, 6), 2, 18, torch.device("cpu"))
    expected = reference_sample(model, layout, [2, 3], scales, LogitsProcessorList(), uniforms)
    torch.testing.assert_close(dynamic, expected, rtol=0, atol=0)
    torch.testing.assert_close(static, expected, rtol=0, atol=0)


def test_samples_do_not_depend_on_the_batch():
    model = tiny_model()
    layout = layout_of(model.config)
    batch = sample_image_tokens(model, layout, [1, 2, 3], 9, generator=generators(7, 8, 9))
    for i, (label, seed) in enumerate(zip([1, 2, 3], (7, 8, 9))):
        alone = sample_image_tokens(model, layout, [label], 9, generator=generators(seed))
        torch.testing.assert_close(batch[i : i + 1], alone, rtol=0, atol=0)


def test_top_k_1_is_deterministic_and_seeds_differ_otherwise():
    model = tiny_model()
    layout = layout_of(model.config)
    greedy = [sample_image_tokens(model, layout, [2], 9, top_k=1, generator=generators(s)) for s in (0, 1)]
    torch.testing.assert_close(greedy[0], greedy[1], rtol=0, atol=0)
    sampled = [sample_image_tokens(model, layout, [2], 9, generator=generators(s)) for s in (0, 1)]
    assert not torch.equal(sampled[0], sampled[1])


def test_callback_edits_are_sampled_from():
    model = tiny_model()
    layout = layout_of(model.config)

    def callback(step, tokens):  # force the first visual code to 3 once position 2 is sampled
        if step == 5:
            edited = tokens.clone()
            edited[:, 0] = 3
            return edited
        return None

    tokens = sample_image_tokens(model, layout, [1, 2], 9, generator=generators(3, 4), callback=callback)
    uniforms = draw_uniforms(generators(3, 4), 2, 18, torch.device("cpu"))
    scales = guidance_scales(9, 2, 2.0)
    expected = reference_sample(model, layout, [1, 2], scales, LogitsProcessorList(), uniforms, callback)
    assert (tokens[:, 0] == 3).all()
    torch.testing.assert_close(tokens, expected, rtol=0, atol=0)


def test_sampler_rejects_a_per_codebook_scale_of_the_wrong_length_and_another_layout():
    model = tiny_model()
    with pytest.raises(ValueError, match="one per codebook"):
        sample_image_tokens(model, layout_of(model.config), [1], 9, guidance_scale=[2.0, 2.0, 2.0])
    with pytest.raises(ValueError, match="codebook_sizes"):
        sample_image_tokens(model, TokenLayout(12, 16, 5), [1], 9)


def test_docstring_examples():
    import doctest

    import glotok_hf.configuration_glotok_prior

    result = doctest.testmod(glotok_hf.configuration_glotok_prior, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.slow  # fresh processes importing torch + transformers
@pytest.mark.parametrize(
    "first", ["glotok_hf.modeling_glotok_prior", "glotok_hf.sampling", "glotok_hf.pipeline_glotok", "transformers"]
)
def test_importing_any_module_first_registers_the_auto_classes(first, tmp_path, subprocess_env):
    import subprocess

    from conftest import PYTHON

    tiny_model().save_pretrained(tmp_path)
    code = (
        f"import {first}\nimport glotok_hf\nfrom transformers import AutoModelForCausalLM\n"
        f"print(type(AutoModelForCausalLM.from_pretrained({str(tmp_path)!r})).__module__)"
    )
    proc = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, env=subprocess_env,
                          stdin=subprocess.DEVNULL, timeout=300)  # fmt: skip
    assert proc.returncode == 0 and proc.stdout.split()[-1] == "glotok_hf.modeling_glotok_prior", proc.stderr


def test_eager_attention_matches_sdpa(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    codes = torch.stack([torch.randint(0, 16, (2, 9)), torch.randint(0, 12, (2, 9))], -1)
    logits = [
        GloTokPriorForCausalLM.from_pretrained(tmp_path, attn_implementation=impl)
        .eval()(codes, torch.tensor([1, 2]))
        .logits
        for impl in ("eager", "sdpa")
    ]
    for a, b in zip(*logits):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
