"""GloTokPipeline: what diffusers' common pipeline tests ask of a pipeline (save/load, call signature, batch
independence with per-image generators, dict/tuple outputs, device/dtype, num_images_per_label, CFG, callbacks,
progress bar, components, CPU offload), plus class-label parsing and construction errors."""

import inspect
import json

import numpy as np
import pytest
import torch
from conftest import tiny_glotok_model
from diffusers import DiffusionPipeline
from PIL import Image
from pipeline_utils import ID2LABEL, generators, single_thread, tiny_pipeline, tiny_prior  # noqa: F401
from transformers import LlamaConfig, LlamaForCausalLM

from glotok_hf.pipeline_glotok import GloTokPipeline, GloTokPipelineOutput

pytestmark = pytest.mark.usefixtures("single_thread")
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


def run(pipe, labels, seeds, **kwargs):
    return pipe(labels, generator=generators(*seeds), output_type="pt", **kwargs)


# --------------------------------------------------------------------------------------------------- outputs
@pytest.mark.parametrize("output_type", ["pil", "np", "pt", "latent"])
def test_output_types(pipe, output_type):
    out = pipe([2, 0], generator=generators(0, 1), output_type=output_type)
    assert isinstance(out, GloTokPipelineOutput)
    assert out.visual_indices.shape == out.semantic_indices.shape == (2, 4, 4)
    assert out.visual_indices.dtype == torch.long
    assert int(out.visual_indices.max()) < 16 and int(out.semantic_indices.max()) < 12  # each its own codebook
    if output_type == "pil":
        assert len(out.images) == 2 and all(isinstance(i, Image.Image) and i.size == (8, 8) for i in out.images)
    elif output_type == "np":
        assert out.images.shape == (2, 8, 8, 3) and out.images.dtype == np.float32
        assert 0 <= out.images.min() and out.images.max() <= 1
    elif output_type == "pt":
        assert out.images.shape == (2, 3, 8, 8) and 0 <= out.images.min() and out.images.max() <= 1
    else:
        assert out.images is None


def test_images_are_the_tokenizer_decoding_of_the_sampled_indices(pipe):
    out = run(pipe, [1, 2], [3, 4])
    with torch.no_grad():
        decoded = pipe.vqmodel.decode(semantic_indices=out.semantic_indices, visual_indices=out.visual_indices).sample
    torch.testing.assert_close(out.images, (decoded / 2 + 0.5).clamp(0, 1))
    latent = pipe([1, 2], generator=generators(3, 4), output_type="latent")
    assert torch.equal(latent.visual_indices, out.visual_indices)


def test_pt_np_pil_outputs_agree(pipe):
    pt = run(pipe, [0], [5]).images
    np_images = pipe([0], generator=generators(5), output_type="np").images
    pil = pipe([0], generator=generators(5)).images
    np.testing.assert_allclose(pt.permute(0, 2, 3, 1).numpy(), np_images, atol=1e-6)
    assert np.abs(np.asarray(pil[0], dtype=np.float32) - np_images[0] * 255).max() <= 1.0


def test_dict_and_tuple_outputs_are_equivalent(pipe):
    out = run(pipe, [0, 1], [0, 1])
    images, visual, semantic = run(pipe, [0, 1], [0, 1], return_dict=False)
    torch.testing.assert_close(images, out.images, atol=0, rtol=0)
    assert torch.equal(visual, out.visual_indices) and torch.equal(semantic, out.semantic_indices)


def test_same_generator_same_images_and_different_seeds_differ(pipe):
    a, b, c = run(pipe, [1], [7]), run(pipe, [1], [7]), run(pipe, [1], [8])
    torch.testing.assert_close(a.images, b.images, atol=0, rtol=0)
    assert not torch.equal(a.visual_indices, c.visual_indices)


def test_single_generator_seeds_the_whole_batch(pipe):
    a = pipe([0, 1], generator=torch.Generator().manual_seed(0), output_type="latent")
    b = pipe([0, 1], generator=torch.Generator().manual_seed(0), output_type="latent")
    assert torch.equal(a.visual_indices, b.visual_indices)
    assert a.visual_indices.shape[0] == 2


# ------------------------------------------------------------------------------------------ batches and CFG
def test_batched_equals_single_with_per_image_generators(pipe):
    batched = run(pipe, [2, 0, 1], [10, 11, 12])
    for i, (label, seed) in enumerate(zip([2, 0, 1], [10, 11, 12])):
        single = run(pipe, [label], [seed])
        assert torch.equal(single.visual_indices[0], batched.visual_indices[i])
        assert torch.equal(single.semantic_indices[0], batched.semantic_indices[i])
        torch.testing.assert_close(single.images[0], batched.images[i], atol=1e-5, rtol=0)


@pytest.mark.parametrize("labels, per_label", [([0], 1), ([0, 1, 2], 1), ([1, 2], 3)])
def test_batch_size_is_labels_times_images_per_label(pipe, labels, per_label):
    out = pipe(labels, num_images_per_label=per_label, output_type="latent")
    assert out.visual_indices.shape[0] == len(labels) * per_label


def test_num_images_per_label_groups_images_by_label(pipe):
    out = run(pipe, ["seven", "one"], [0, 1, 2, 3], num_images_per_label=2)
    assert out.images.shape[0] == 4
    for i, (label, seed) in enumerate([(2, 0), (2, 1), (1, 2), (1, 3)]):
        assert torch.equal(run(pipe, [label], [seed]).visual_indices[0], out.visual_indices[i])


@pytest.mark.parametrize("guidance_scale", [1.0, 2.0, 7.5])
def test_cfg_on_and_off_give_the_same_shapes(pipe, guidance_scale):
    out = run(pipe, [0, 1], [0, 1], guidance_scale=guidance_scale)
    assert out.images.shape == (2, 3, 8, 8)


def test_guidance_changes_samples_and_scale_zero_ignores_the_class(pipe):
    plain, guided = run(pipe, [2], [0], guidance_scale=1.0), run(pipe, [2], [0], guidance_scale=4.0)
    assert not torch.equal(plain.visual_indices, guided.visual_indices)
    # Scale 0 samples from the null-class (unconditional) logits only, so the class no longer matters.
    uncond = [run(pipe, [label], [0], guidance_scale=0.0) for label in range(3)]
    assert all(torch.equal(u.visual_indices, uncond[0].visual_indices) for u in uncond)
    assert not torch.equal(run(pipe, [0], [0]).visual_indices, run(pipe, [2], [0]).visual_indices)


def test_null_class_comes_from_the_layout(pipe):
    assert pipe.layout.null_class_id == pipe.prior.config.vocab_size - 1 == 16 + 12 + 3
    assert pipe.num_classes == 3


def test_sampling_options_reach_the_sampler(pipe):
    base = run(pipe, [0], [0])
    assert not torch.equal(run(pipe, [0], [0], top_k=1).visual_indices, base.visual_indices)
    greedy_a = run(pipe, [0], [0], top_k=1)
    greedy_b = run(pipe, [0], [1], top_k=1)  # top_k=1 is greedy: the seed no longer matters
    assert torch.equal(greedy_a.visual_indices, greedy_b.visual_indices)
    assert run(pipe, [0], [0], top_p=0.5, temperature=0.7, guidance_schedule="linear").images.shape[0] == 1
    with pytest.raises(ValueError, match="temperature"):
        run(pipe, [0], [0], temperature=0.0)


def test_single_codebook_tokenizer():
    pipe = tiny_pipeline(semantic_codebook_size=0)
    out = run(pipe, [0, 1], [0, 1])
    assert out.semantic_indices is None and out.visual_indices.shape == (2, 4, 4)
    assert pipe.num_timesteps == 16  # one token per grid position


# ----------------------------------------------------------------------------------------- save and load
def test_save_load_round_trip_gives_identical_images(pipe, tmp_path):
    pipe.save_pretrained(tmp_path)
    loaded = GloTokPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.id2label == ID2LABEL and loaded.labels == pipe.labels
    assert type(loaded.vqmodel).__module__ == "glotok_hf.modeling_glotok"
    torch.testing.assert_close(run(loaded, ["seven", 0], [0, 1]).images, run(pipe, ["seven", 0], [0, 1]).images,
                               atol=0, rtol=0)  # fmt: skip
    loaded.save_pretrained(tmp_path / "again")  # a reloaded pipeline saves the same config
    again = json.loads((tmp_path / "again" / "model_index.json").read_text())
    again.pop("_name_or_path")  # diffusers records where it was loaded from
    assert again == json.loads((tmp_path / "model_index.json").read_text())


def test_save_load_without_label_names(tmp_path):
    pipe = tiny_pipeline(id2label=None, num_classes=4)
    pipe.save_pretrained(tmp_path)
    loaded = GloTokPipeline.from_pretrained(tmp_path)
    assert loaded.id2label is None and loaded.labels == {} and loaded.num_classes == 4
    assert loaded.get_label_ids([3, "2"]) == [3, 2]


def test_generic_diffusion_pipeline_cannot_load_a_plain_save(pipe, tmp_path):
    # A plain save names glotok_hf's modules: load it with GloTokPipeline (or export the remote-code layout).
    pipe.save_pretrained(tmp_path)
    with pytest.raises(AttributeError, match="GloTokPipeline"):
        DiffusionPipeline.from_pretrained(tmp_path)


def test_components_rebuild_the_pipeline(pipe):
    assert set(pipe.components) == {"vqmodel", "prior"}
    rebuilt = GloTokPipeline(**pipe.components, id2label=pipe.id2label)
    rebuilt.set_progress_bar_config(disable=True)
    assert torch.equal(run(rebuilt, [1], [0]).visual_indices, run(pipe, [1], [0]).visual_indices)
    assert pipe.config.id2label == {"0": "zero, nought", "1": "one", "2": "seven"}


def test_call_signature():
    parameters = inspect.signature(GloTokPipeline.__call__).parameters
    required = [k for k, v in parameters.items() if v.default is inspect.Parameter.empty and k != "self"]
    assert required == ["class_labels"]
    optional = {"guidance_scale": 2.0, "num_images_per_label": 1, "generator": None, "temperature": 1.0,
                "top_k": None, "top_p": 1.0, "output_type": "pil", "return_dict": True, "callback_on_step_end": None,
                "callback_on_step_end_tensor_inputs": None}  # fmt: skip
    assert {k: parameters[k].default for k in optional} == optional  # FQGAN's sampling defaults


# ------------------------------------------------------------------------------------ devices and dtypes
def test_to_dtype_bfloat16():
    pipe = tiny_pipeline()
    reference = run(pipe, [0], [0]).images
    pipe.to(torch.bfloat16)
    assert pipe.dtype == torch.bfloat16
    assert {p.dtype for p in pipe.prior.parameters()} == {torch.bfloat16}
    out = pipe([0, 1], generator=generators(0, 1), output_type="np")
    assert out.images.dtype == np.float32 and np.isfinite(out.images).all()
    assert out.images.shape == (2, 8, 8, 3) and reference.shape == (1, 3, 8, 8)


def test_to_device_cpu(pipe):
    pipe.to("cpu")
    assert pipe.device.type == "cpu"
    assert all(p.device.type == "cpu" for m in pipe.components.values() for p in m.parameters())


@requires_cuda
def test_cuda_bf16_matches_shapes_and_indices_stay_in_range():
    pipe = tiny_pipeline().to("cuda", torch.bfloat16)
    out = pipe([0, 1, 2], generator=[torch.Generator("cuda").manual_seed(i) for i in range(3)], output_type="pt")
    assert out.images.device.type == "cuda" and torch.isfinite(out.images.float()).all()
    assert out.visual_indices.device.type == "cuda" and int(out.visual_indices.max()) < 16


@requires_cuda
def test_model_cpu_offload_forward_pass_twice_matches_plain_cuda():
    reference = run(tiny_pipeline().to("cuda"), [0, 2], [0, 1])
    pipe = tiny_pipeline()
    pipe.enable_model_cpu_offload(device="cuda")
    for _ in range(2):  # the second pass checks that the hooks re-load what the first pass offloaded
        out = run(pipe, [0, 2], [0, 1])
        torch.testing.assert_close(out.images.cpu(), reference.images.cpu(), atol=1e-4, rtol=0)
        assert all(p.device.type == "cpu" for m in pipe.components.values() for p in m.parameters())


def test_model_cpu_offload_seq_names_every_component_in_order(pipe):
    assert pipe.model_cpu_offload_seq.split("->") == ["prior", "vqmodel"]
    assert set(pipe.model_cpu_offload_seq.split("->")) == set(pipe.components)


# ------------------------------------------------------------------------------- callbacks and progress bar
def test_callback_on_step_end_runs_once_per_token(pipe):
    calls = []

    def callback(pipeline, step, timestep, callback_kwargs):
        calls.append((pipeline, step, timestep, callback_kwargs))
        return callback_kwargs

    run(pipe, [0, 1], [0, 1], callback_on_step_end=callback, callback_on_step_end_tensor_inputs=[])
    assert [c[1] for c in calls] == list(range(32)) == [c[2] for c in calls]  # 4x4 grid, 2 codebooks
    assert all(c[0] is pipe and c[3] == {} for c in calls) and pipe.num_timesteps == 32


def test_callback_tensor_inputs_are_checked(pipe):
    assert GloTokPipeline._callback_tensor_inputs == ["latents"]
    with pytest.raises(ValueError, match="callback_on_step_end_tensor_inputs may only name"):
        run(pipe, [0], [0], callback_on_step_end=lambda *a: {}, callback_on_step_end_tensor_inputs=["noise"])


def test_callback_reads_the_tokens_sampled_so_far_as_latents(pipe):
    """Diffusers' test_callback_inputs: the callback gets exactly the tensors it asks for; `latents` holds the image
    tokens sampled so far, `(batch, step + 1)` long ids of the conditional rows."""
    seen = []

    def callback(pipeline, step, timestep, callback_kwargs):
        assert set(callback_kwargs) <= set(pipeline._callback_tensor_inputs)
        seen.append((step, callback_kwargs.get("latents")))
        return callback_kwargs

    out = run(pipe, [0, 1], [0, 1], callback_on_step_end=callback, callback_on_step_end_tensor_inputs=["latents"])
    assert [s for s, _ in seen] == list(range(32))
    assert all(t.shape == (2, s + 1) and t.dtype == torch.long for s, t in seen)
    tokens = pipe.layout.to_tokens(out.visual_indices, out.semantic_indices)
    assert all(torch.equal(t, tokens[:, : s + 1]) for s, t in seen)
    seen.clear()
    run(pipe, [0], [0], callback_on_step_end=callback, callback_on_step_end_tensor_inputs=[])
    assert len(seen) == 32 and all(t is None for _, t in seen)


def force(step_index: int, tokens: torch.Tensor):
    """A step-end callback that replaces the tokens sampled so far with `tokens[:, :step_index + 1]` at that step."""

    def callback(pipeline, step, timestep, callback_kwargs):
        if step == step_index:
            callback_kwargs["latents"] = tokens[:, : step + 1].clone()
        return callback_kwargs

    return callback


def test_callback_edits_the_tokens_sampling_continues_from(pipe):
    kwargs = dict(top_k=1, output_type="latent", callback_on_step_end_tensor_inputs=["latents"])  # greedy
    plain = pipe([0, 2], **kwargs)
    tokens = pipe.layout.to_tokens(plain.visual_indices, plain.semantic_indices)
    forced = tokens.clone()
    forced[:, 0] = (tokens[:, 0] + 5) % 16  # another visual code as the first token
    edited = pipe([0, 2], callback_on_step_end=force(0, forced), **kwargs)
    assert torch.equal(edited.visual_indices[:, 0, 0], forced[:, 0])  # the output grid holds the edit
    edited_tokens = pipe.layout.to_tokens(edited.visual_indices, edited.semantic_indices)
    assert not torch.equal(edited_tokens[:, 1:], tokens[:, 1:])  # and what follows was sampled after it
    # Replacing a longer prefix later (the KV cache is rebuilt) continues exactly as if it had been sampled.
    again = pipe([0, 2], callback_on_step_end=force(6, edited_tokens), **kwargs)
    assert torch.equal(again.visual_indices, edited.visual_indices)
    assert torch.equal(again.semantic_indices, edited.semantic_indices)


def test_callback_may_change_the_guidance_scale_attribute(pipe):
    """Diffusers' test_callback_cfg: the callback sees the pipeline and its guidance_scale property."""

    def callback(pipeline, step, timestep, callback_kwargs):
        pipeline._guidance_scale += 1.0
        return callback_kwargs

    run(pipe, [0], [0], guidance_scale=2.0, callback_on_step_end=callback,
        callback_on_step_end_tensor_inputs=pipe._callback_tensor_inputs)  # fmt: skip
    assert pipe.guidance_scale == 2.0 + pipe.num_timesteps


def test_progress_bar_counts_token_steps(capsys):
    pipe = tiny_pipeline()
    pipe.set_progress_bar_config(disable=False)
    pipe([0], output_type="latent")
    assert "32/32" in capsys.readouterr().err
    pipe.set_progress_bar_config(disable=True)
    pipe([0], output_type="latent")
    assert capsys.readouterr().err == ""


# --------------------------------------------------------------------------------------------- class labels
@pytest.mark.parametrize(
    "labels, expected",
    [
        ("seven", [2]),  # one label, never split into characters
        (["seven", "one"], [2, 1]),
        ("nought", [0]),  # a comma-separated synonym
        ("  Seven ", [2]),  # surrounding spaces and case are ignored
        ("ZERO", [0]),
        (1, [1]),
        ("1", [1]),  # a numeric string names no label, so it is the id
        ([2, "2", "seven"], [2, 2, 2]),
        (np.int64(2), [2]),
        (torch.tensor([0, 2]), [0, 2]),
        (np.array([1, 0]), [1, 0]),
        ((0, 1), [0, 1]),
    ],
)
def test_label_parsing(pipe, labels, expected):
    assert pipe.get_label_ids(labels) == expected


@pytest.mark.parametrize("nested", [[[2], [0]], [[2, 0]], [(2,), 0], ([2], ["nought"])])
def test_class_labels_nested_one_level_as_dit_accepts(pipe, nested):
    """Diffusers' batched common tests pass `batch_size * [class_labels]`, e.g. `[[1], [1]]`: one level of nesting is
    flattened, as `DiTPipeline` does."""
    assert pipe.get_label_ids(nested) == [2, 0]
    flat, out = run(pipe, [2, 0], [3, 4]), run(pipe, nested, [3, 4])
    torch.testing.assert_close(out.images, flat.images, atol=0, rtol=0)


def test_a_label_name_wins_over_an_id():
    pipe = tiny_pipeline(id2label={0: "2", 1: "one", 2: "two"})
    assert pipe.get_label_ids(["2", 2, "two"]) == [0, 2, 2]


def test_labels_dict_lists_every_synonym(pipe):
    assert pipe.labels == {"nought": 0, "one": 1, "seven": 2, "zero": 0}


@pytest.mark.parametrize(
    "labels, error, match",
    [
        ("sevne", ValueError, r"Unknown class label 'sevne': did you mean 'seven'\?"),
        ("elephant", ValueError, r"no close match among the 4 names"),
        (3, ValueError, r"Class id 3 is out of range: this pipeline has 3 classes, ids 0 to 2"),
        (-1, ValueError, "Class id -1 is out of range"),
        ("3", ValueError, "Class id 3 is out of range"),
        ([], ValueError, "non-empty list"),
        (True, TypeError, "must be an int, a label name"),
        (1.0, TypeError, "must be an int, a label name"),
        ([0, None], TypeError, "must be an int or a label name"),
        ([[[0]]], TypeError, "must be an int or a label name"),  # nested two levels
        ([[], []], ValueError, "non-empty list"),
        (torch.tensor([0.5]), ValueError, "1-d array of integer ids"),
        (torch.zeros(2, 2, dtype=torch.long), ValueError, "1-d array of integer ids"),
    ],
)
def test_bad_labels(pipe, labels, error, match):
    with pytest.raises(error, match=match):
        pipe(labels, output_type="latent")


def test_a_name_shared_by_two_classes_is_ambiguous():
    pipe = tiny_pipeline(id2label={0: "crane, bird", 1: "crane", 2: "truck"})
    with pytest.raises(ValueError, match=r"names several classes \[0, 1\]; pass the class id"):
        pipe.get_label_ids("crane")
    assert "crane" not in pipe.labels and pipe.get_label_ids(["bird", 1]) == [0, 1]


def test_names_without_id2label_ask_for_ids():
    pipe = tiny_pipeline(id2label=None, num_classes=3)
    with pytest.raises(ValueError, match="no label names"):
        pipe.get_label_ids("seven")


@pytest.mark.parametrize("value", [0, -1, 1.5, None, True])
def test_bad_num_images_per_label(pipe, value):
    with pytest.raises(ValueError, match="num_images_per_label must be a positive int"):
        pipe([0], num_images_per_label=value)


def test_generator_list_must_have_one_generator_per_image(pipe):
    with pytest.raises(ValueError, match=r"Got 2 generators for 4 images; pass one generator or exactly one per"):
        pipe([0, 1], num_images_per_label=2, generator=generators(0, 1))


def test_bad_output_type(pipe):
    with pytest.raises(ValueError, match="output_type must be one of"):
        pipe([0], output_type="latents")


# ---------------------------------------------------------------------------------------------- construction
def test_prior_vocabulary_must_fit_the_tokenizer():
    pipe = tiny_pipeline()
    small = LlamaForCausalLM(LlamaConfig(vocab_size=20, hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                                         num_attention_heads=2))  # fmt: skip
    with pytest.raises(ValueError, match="The prior does not fit the tokenizer: .*vocab_size 20"):
        GloTokPipeline(vqmodel=pipe.vqmodel, prior=small)
    other = tiny_pipeline(semantic_codebook_size=8)  # 4 codes fewer: the prior now reads as 4 classes more
    with pytest.raises(ValueError, match="implies 7 classes .* but 3 label names"):
        GloTokPipeline(vqmodel=other.vqmodel, prior=pipe.prior, id2label=ID2LABEL)


def test_id2label_must_name_exactly_the_priors_classes(pipe):
    with pytest.raises(ValueError, match="implies 3 classes .* but 2 label names"):
        GloTokPipeline(pipe.vqmodel, pipe.prior, id2label={0: "a", 1: "b"})
    with pytest.raises(ValueError, match=r"must name classes 0..2"):
        GloTokPipeline(pipe.vqmodel, pipe.prior, id2label={0: "a", 1: "b", 5: "c"})
    with pytest.raises(ValueError, match="keys must be class ids"):
        GloTokPipeline(pipe.vqmodel, pipe.prior, id2label={"a": "b"})
    with pytest.raises(ValueError, match="non-empty label name"):
        GloTokPipeline(pipe.vqmodel, pipe.prior, id2label={0: "a", 1: "", 2: "c"})
    with pytest.raises(TypeError, match="id2label must be a mapping"):
        GloTokPipeline(pipe.vqmodel, pipe.prior, id2label=["a", "b", "c"])


def test_prior_context_must_hold_the_token_grid(pipe):
    short = tiny_prior(pipe.vqmodel.config, 3, max_position_embeddings=16)
    with pytest.raises(ValueError, match="sequence of 33 positions .* max_position_embeddings=16"):
        GloTokPipeline(pipe.vqmodel, short)


def test_components_must_be_a_glotok_model_and_a_causal_lm(pipe):
    with pytest.raises(TypeError, match="vqmodel must be a GloTokModel"):
        GloTokPipeline(vqmodel=pipe.prior, prior=pipe.prior)
    with pytest.raises(TypeError, match="prior must be a causal LM"):
        GloTokPipeline(vqmodel=pipe.vqmodel, prior=torch.nn.Linear(1, 1))


def test_a_prior_trained_on_another_grid_is_refused_at_construction_and_load(tmp_path):
    """A tokenizer saved at sample_size 8 (4x4 grid) with a prior of 6x6 grids: scrambled images, so refused."""
    pipe = tiny_pipeline()
    other = tiny_prior(tiny_glotok_model(sample_size=12).config, num_classes=3)  # a 6x6-grid prior
    assert other.config.image_grid_size == [6, 6] and pipe.prior.config.image_grid_size == [4, 4]
    with pytest.raises(ValueError, match=r"trained on 6x6 token grids, but the tokenizer \(sample_size 8\) makes 4x4"):
        GloTokPipeline(vqmodel=pipe.vqmodel, prior=other, id2label=ID2LABEL)
    pipe.prior = other  # a folder whose prior/ was replaced by hand
    pipe.register_modules(prior=other)
    pipe.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="trained on 6x6 token grids"):
        GloTokPipeline.from_pretrained(tmp_path)


def test_a_prior_without_a_recorded_grid_is_held_to_its_position_budget():
    pipe = tiny_pipeline()
    other = tiny_prior(tiny_glotok_model(sample_size=12).config, num_classes=3)
    other.config.image_grid_size = None  # e.g. a prior built by hand: only max_position_embeddings says its grid
    with pytest.raises(ValueError, match=r"sequence of 33 positions .* max_position_embeddings=73"):
        GloTokPipeline(vqmodel=pipe.vqmodel, prior=other, id2label=ID2LABEL)
