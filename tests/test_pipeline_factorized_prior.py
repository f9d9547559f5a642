"""GloTokPipeline with the factorized prior (GloTokPriorForCausalLM) and the embedded digits tokenizer: the same
`__call__` and outputs as with the stock Llama prior, save/load, and the remote-code layout pushed to a fake Hub and
loaded without glotok_hf."""

import json
import subprocess
import textwrap

import pytest
import torch
from conftest import BLOCK_GLOTOK_HF, PYTHON, REPO_ROOT
from pipeline_utils import generators, single_thread  # noqa: F401

from glotok_hf import GloTokModel, GloTokPipeline, GloTokPriorConfig, GloTokPriorForCausalLM
from glotok_hf.hub import save_remote_code_pipeline
from glotok_hf.sampling import sample_image_tokens, sampling_memory_bytes

pytestmark = pytest.mark.usefixtures("single_thread")
NAMES = "zero one two three four five six seven eight nine".split()
LABELS = ["seven", 3]


@pytest.fixture(scope="module")
def pipe():
    vqmodel = GloTokModel.from_pretrained(REPO_ROOT / "pipelines" / "glotok-digits" / "vqmodel").eval()
    grid, sizes = (
        vqmodel.config.latent_grid_size,
        [vqmodel.config.visual_codebook_size, vqmodel.config.semantic_codebook_size],
    )
    torch.manual_seed(0)
    config = GloTokPriorConfig(codebook_sizes=sizes, num_classes=10, grid_size=grid, hidden_size=32,
                               intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, head_layers=1,
                               initializer_range=0.3)  # fmt: skip
    pipe = GloTokPipeline(
        vqmodel=vqmodel, prior=GloTokPriorForCausalLM(config).eval(), id2label=dict(enumerate(NAMES))
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_pipeline_samples_with_the_factorized_prior(pipe):
    grid = pipe.vqmodel.config.latent_grid_size
    out = pipe(LABELS, guidance_scale=[2.0, 1.5], generator=generators(0, 1), output_type="pt")
    tokens = sample_image_tokens(pipe.prior, pipe.layout, [7, 3], grid * grid, guidance_scale=[2.0, 1.5],
                                 generator=generators(0, 1))  # fmt: skip
    visual, semantic = pipe.layout.to_indices(tokens, grid=grid)
    torch.testing.assert_close(out.visual_indices, visual, rtol=0, atol=0)
    torch.testing.assert_close(out.semantic_indices, semantic, rtol=0, atol=0)
    assert out.images.shape == (2, 3, pipe.vqmodel.config.sample_size, pipe.vqmodel.config.sample_size)
    latent = pipe(LABELS, guidance_scale=[2.0, 1.5], generator=generators(0, 1), output_type="latent")
    assert latent.images is None and torch.equal(latent.visual_indices, visual)
    steps = []
    pipe(LABELS, generator=generators(0, 1), output_type="latent",
         callback_on_step_end=lambda p, i, t, kwargs: steps.append(i) or {})  # fmt: skip
    assert steps == list(range(2 * grid * grid))


def test_a_prior_of_another_grid_is_refused(pipe):
    config = GloTokPriorConfig(**{**pipe.prior.config.to_dict(), "grid_size": 5})
    with pytest.raises(ValueError, match="token grids"):
        GloTokPipeline(vqmodel=pipe.vqmodel, prior=GloTokPriorForCausalLM(config))


def test_save_and_load_round_trip(pipe, tmp_path):
    pipe.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "model_index.json").read_text())["prior"] == [
        "glotok_hf.modeling_glotok_prior", "GloTokPriorForCausalLM"
    ]  # fmt: skip
    loaded = GloTokPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded.prior) is GloTokPriorForCausalLM
    expected = pipe(LABELS, generator=generators(2, 3), output_type="pt").images
    torch.testing.assert_close(loaded(LABELS, generator=generators(2, 3), output_type="pt").images, expected)


def test_remote_code_layout_ships_the_prior_code(pipe, tmp_path):
    save_remote_code_pipeline(pipe, tmp_path, sample_grid=None)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["prior"] == ["modeling_glotok_prior", "GloTokPriorForCausalLM"]
    assert sorted(p.name for p in (tmp_path / "prior").iterdir()) == [
        "config.json", "model.safetensors", "modeling_glotok_prior.py"
    ]  # fmt: skip
    assert json.loads((tmp_path / "prior" / "config.json").read_text())["auto_map"] == {
        "AutoConfig": "modeling_glotok_prior.GloTokPriorConfig",
        "AutoModelForCausalLM": "modeling_glotok_prior.GloTokPriorForCausalLM",
    }
    assert "from ." not in (tmp_path / "prior" / "modeling_glotok_prior.py").read_text()


REMOTE_LOAD_SCRIPT = BLOCK_GLOTOK_HF + textwrap.dedent(
    """
    import torch
    from diffusers import DiffusionPipeline

    reference = torch.load(sys.argv[1], weights_only=True)
    for source in sys.argv[2:]:
        pipe = DiffusionPipeline.from_pretrained(source, trust_remote_code=True)
        pipe.set_progress_bar_config(disable=True)
        assert "glotok_hf" not in type(pipe).__module__ + type(pipe.prior).__module__
        generator = [torch.Generator().manual_seed(i) for i in range(2)]
        out = pipe(["seven", 3], guidance_scale=[2.0, 1.5], generator=generator, output_type="latent")
        torch.testing.assert_close(out.visual_indices, reference["visual"], atol=0, rtol=0)
        print("REMOTE_OK", type(pipe.prior).__name__)
    """
)


@pytest.mark.slow  # a child process importing torch + diffusers
def test_push_to_hub_then_load_without_the_package(pipe, tmp_path, fake_hub, subprocess_env):
    reference = pipe(LABELS, guidance_scale=[2.0, 1.5], generator=generators(0, 1), output_type="latent")
    torch.save({"visual": reference.visual_indices}, tmp_path / "reference.pt")
    pipe.push_to_hub("tester/glotok-far")
    files = fake_hub.files("tester/glotok-far")
    assert {"prior/modeling_glotok_prior.py", "prior/config.json", "prior/model.safetensors"} <= set(files)
    assert fake_hub.token_leaks() == []
    env = fake_hub.env(subprocess_env)
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([PYTHON, "-c", REMOTE_LOAD_SCRIPT, str(tmp_path / "reference.pt"), "tester/glotok-far"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "REMOTE_OK GloTokPriorForCausalLM" in proc.stdout


def test_the_memory_check_counts_the_cache_the_factorized_sampler_holds(pipe, monkeypatch):
    """`sampling_memory_bytes` (behind the out-of-memory check) is exactly the peak KV cache the sampler fills plus
    the draws and sequences: for a factorized prior one backbone entry per grid position, not one per image token."""
    prior, grid, peak = pipe.prior, pipe.vqmodel.config.latent_grid_size, {}
    for name in ("backbone", "head_states"):
        method = getattr(prior, name)

        def spy(*args, _method=method, _name=name, **kwargs):
            out, cache = _method(*args, **kwargs), kwargs.get("cache", args[-1])
            held = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
            peak[_name] = max(peak.get(_name, 0), held)
            return out

        monkeypatch.setattr(prior, name, spy)
    sample_image_tokens(prior, pipe.layout, [7, 3], grid * grid, guidance_scale=2.0, generator=generators(0, 1))
    steps = pipe.layout.num_image_tokens(grid * grid)
    expected = sum(peak.values()) + 2 * (4 * steps + 8 * (1 + steps))
    assert sampling_memory_bytes(prior, pipe.layout, 2, grid * grid) == expected
