"""GloTokModel: shapes, the token round trip, save/load, Auto classes, remote code, mixed precision, bad input."""

import json
import subprocess
import textwrap

import pytest
import torch
from conftest import BLOCK_GLOTOK_HF, PYTHON, dummy_images, tiny_glotok_config, tiny_glotok_model
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModel

import glotok_hf.modeling_glotok as modeling
from glotok_hf import GloTokConfig, GloTokModel
from glotok_hf.modeling_glotok import residual_loss, vector_quantization_loss


# ------------------------------------------------------------------------------------------------- shapes and API
def test_default_config_is_the_papers_glotok():
    config = GloTokConfig()
    assert config.block_out_channels == (128, 128, 256, 256, 512)
    assert (config.semantic_codebook_size, config.visual_codebook_size, config.codebook_dim) == (4096, 12288, 8)
    assert config.downsample_factor == 16 and config.latent_grid_size == 16
    assert config.use_residual and config.codebook_l2_norm and config.commitment_beta == 0.25


@pytest.mark.slow
def test_default_model_gives_16x16_grid_for_256_images():
    torch.manual_seed(0)
    model = GloTokModel(GloTokConfig()).eval()
    assert model.semantic.quantizer.num_codes == 4096 and model.visual.quantizer.num_codes == 12288
    n_params = sum(p.numel() for p in model.parameters())
    assert 100e6 < n_params < 125e6  # VQ-16 CNN (~72M) + two 6-layer adapters + residual modules
    with torch.no_grad():
        enc = model.encode(torch.zeros(1, 3, 256, 256))
    assert enc.semantic_indices.shape == enc.visual_indices.shape == (1, 16, 16)
    assert enc.semantic_quantized.shape == (1, 8, 16, 16)


def test_single_codebook_default_matches_llamagen_vq16_size():
    """semantic_codebook_size=0 without residual is LlamaGen's VQ-16 (~72M parameters): same CNN, no adapter."""
    with torch.device("meta"):
        model = GloTokModel(GloTokConfig(semantic_codebook_size=0, visual_codebook_size=16384, use_residual=False))
    n_params = sum(p.numel() for p in model.parameters())
    assert abs(n_params - 71.9e6) / 71.9e6 < 0.01


def test_forward_outputs(tiny_model, images):
    out = tiny_model(images)
    assert out.sample.shape == images.shape
    for name in ("codebook_loss", "commitment_loss", "residual_loss"):
        assert getattr(out, name).shape == () and torch.isfinite(getattr(out, name))
    assert out.semantic_codebook_usage.shape == (12,) and out.visual_codebook_usage.shape == (16,)
    assert out.semantic_codebook_usage.sum() == out.visual_codebook_usage.sum() == 2 * 8 * 8
    for name, size in (("semantic", 12), ("visual", 16)):
        expected = torch.bincount(getattr(out, f"{name}_indices").flatten(), minlength=size)
        assert torch.equal(getattr(out, f"{name}_codebook_usage"), expected)
    assert out.semantic_indices.dtype == torch.long and out.semantic_indices.shape == (2, 8, 8)


def test_decode_of_encode_equals_forward_in_eval(tiny_model, images):
    with torch.no_grad():
        enc = tiny_model.encode(images)
        decoded = tiny_model.decode(**enc.indices).sample
        forward = tiny_model(images).sample
    torch.testing.assert_close(decoded, forward, atol=1e-5, rtol=1e-5)
    assert tiny_model.decode(**enc.indices, return_dict=False)[0].shape == images.shape


def test_encode_indices_are_nearest_codes(tiny_model, images):
    """Known answer: each index is the arg-max cosine similarity against the l2-normalised codebook."""
    enc = tiny_model.encode(images)
    for name in ("semantic", "visual"):
        latents = getattr(enc, f"{name}_latents").permute(0, 2, 3, 1)
        codebook = torch.nn.functional.normalize(getattr(tiny_model, name).quantizer.embedding.weight, dim=-1)
        expected = (latents @ codebook.T).argmax(-1)
        assert torch.equal(getattr(enc, f"{name}_indices"), expected)
        torch.testing.assert_close(latents.norm(dim=-1), torch.ones_like(latents[..., 0]))
        torch.testing.assert_close(getattr(enc, f"{name}_quantized"), codebook[expected].permute(0, 3, 1, 2))


def test_non_native_resolution_interpolates_position_embeddings(tiny_model):
    with torch.no_grad():
        enc = tiny_model.encode(dummy_images(1, size=24))
        assert enc.visual_indices.shape == (1, 12, 12)
        assert tiny_model.decode(**enc.indices).sample.shape == (1, 3, 24, 24)


def test_determinism(tiny_model, images):
    with torch.no_grad():
        a, b = tiny_model(images), tiny_model(images)
    assert torch.equal(a.sample, b.sample) and torch.equal(a.visual_indices, b.visual_indices)


def test_return_dict_false_matches_dict(tiny_model, images):
    with torch.no_grad():
        as_dict = tiny_model(images)
        as_tuple = tiny_model(images, return_dict=False)
    assert len(as_tuple) == len(as_dict.to_tuple())
    for x, y in zip(as_tuple, as_dict.to_tuple()):
        torch.testing.assert_close(x, y)
    enc_tuple = tiny_model.encode(images, return_dict=False)
    assert torch.equal(enc_tuple[0], tiny_model.encode(images).semantic_indices)


def test_residual_module_starts_as_identity(tiny_model):
    codes = torch.randn(2, 4, 8, 8)
    for branch in (tiny_model.semantic, tiny_model.visual):
        refined, residual = branch.refine(codes)
        assert torch.equal(refined, codes) and torch.count_nonzero(residual) == 0


@pytest.mark.parametrize(
    "overrides, enabled",
    [
        ({"semantic_codebook_size": 0}, ("visual",)),
        ({"visual_codebook_size": 0}, ("semantic",)),
        ({"use_residual": False}, ("semantic", "visual")),
    ],
)
def test_ablation_variants(overrides, enabled, images):
    model = tiny_glotok_model(**overrides)
    with torch.no_grad():
        out = model(images)
        enc = model.encode(images)
        torch.testing.assert_close(model.decode(**enc.indices).sample, out.sample, atol=1e-5, rtol=1e-5)
    for name in ("semantic", "visual"):
        branch = getattr(model, name)
        assert (branch is not None) == (name in enabled)
        assert (getattr(enc, f"{name}_indices") is not None) == (name in enabled)
        if branch is not None:
            assert (branch.adapter is not None) == (
                len(enabled) == 2
            )  # a single codebook is LlamaGen's VQ: no adapter
            assert (branch.residual is not None) == model.config.use_residual
    assert model.post_quant_conv.in_channels == 4 * len(enabled)
    if not model.config.use_residual:
        assert out.residual_loss == 0 and out.semantic_residual is None


def test_backward_reaches_every_parameter(images):
    model = tiny_glotok_model().train()
    # A non-zero residual output projection so that gradients reach the whole residual module.
    for branch in (model.semantic, model.visual):
        torch.nn.init.normal_(branch.residual.proj_out.weight, std=0.1)
    out = model(images)
    loss = (out.sample - images).pow(2).mean() + out.codebook_loss + out.commitment_loss + out.residual_loss
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert missing == []


def test_gradient_checkpointing_is_equivalent(images):
    def grads(checkpointing):
        model = tiny_glotok_model(seed=3, dropout=0.0).train()
        if checkpointing:
            model.activation_checkpointing_enable()
        out = model(images)
        (out.sample.square().mean() + out.commitment_loss).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain, ckpt = grads(False), grads(True)
    assert plain.keys() == ckpt.keys()
    for name in plain:
        torch.testing.assert_close(plain[name], ckpt[name], msg=name)


# ------------------------------------------------------------------------------------------------ model-side losses
def test_vq_loss_places_beta_on_the_commitment_term():
    """Analytic: z = 1, z_q = 3 (one element). codebook = (3-1)^2 = 4 with d/dz_q = 2*(3-1) = 4 and nothing on z;
    commitment = beta*(1-3)^2 = 1 with d/dz = 2*beta*(1-3) = -1 and nothing on z_q."""
    z = torch.tensor([1.0], requires_grad=True)
    zq = torch.tensor([3.0], requires_grad=True)
    terms = vector_quantization_loss(z, zq, beta=0.25)
    assert terms["codebook_loss"].item() == 4.0 and terms["commitment_loss"].item() == 1.0
    (gz_cb, gq_cb) = torch.autograd.grad(terms["codebook_loss"], (z, zq), allow_unused=True)
    assert gz_cb is None and gq_cb.item() == 4.0
    (gz_cm, gq_cm) = torch.autograd.grad(terms["commitment_loss"], (z, zq), allow_unused=True)
    assert gz_cm.item() == -1.0 and gq_cm is None


def test_residual_loss_targets_detached_quantization_error():
    z, zq = torch.tensor([2.0], requires_grad=True), torch.tensor([0.5], requires_grad=True)
    r = torch.tensor([1.0], requires_grad=True)
    loss = residual_loss(r, z, zq)
    assert loss.item() == pytest.approx(0.25)  # (1 - (2 - 0.5))^2
    gr, gz, gq = torch.autograd.grad(loss, (r, z, zq), allow_unused=True)
    assert gr.item() == pytest.approx(-1.0) and gz is None and gq is None


# --------------------------------------------------------------------------------------------------- mixed precision
def test_bf16_autocast_keeps_quantizer_in_fp32(tiny_model, images):
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = tiny_model(images)
    for name in ("semantic", "visual"):
        quantized = getattr(out, f"{name}_quantized")
        assert quantized.dtype == getattr(out, f"{name}_latents").dtype == torch.float32
        lookup = getattr(tiny_model, name).quantizer.lookup(getattr(out, f"{name}_indices"))
        torch.testing.assert_close(quantized, lookup, atol=1e-6, rtol=0)  # exact fp32 codebook rows
    assert out.codebook_loss.dtype == torch.float32


def test_bf16_weights_load_with_fp32_codebooks(tiny_model, images, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    model = GloTokModel.from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    assert model.encoder.conv_in.weight.dtype == torch.bfloat16
    assert model.visual.quantizer.embedding.weight.dtype == torch.float32
    with torch.no_grad():
        out = model(images.bfloat16())
        enc = model.encode(images.bfloat16())
    assert out.sample.dtype == torch.bfloat16 and out.visual_quantized.dtype == torch.float32
    torch.testing.assert_close(model.decode(**enc.indices).sample, out.sample, atol=2e-2, rtol=0)


# ---------------------------------------------------------------------------------------------- saving and loading
def _assert_same_model(a, b, images):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
    with torch.no_grad():
        torch.testing.assert_close(a(images).sample, b.eval()(images).sample, atol=0, rtol=0)


def test_save_load_round_trip(tiny_model, images, tmp_path):
    tiny_model.save_pretrained(tmp_path / "a")
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    # transformers copies the remote-code modules and what they import relatively (utils.py)
    assert files == ["config.json", "configuration_glotok.py", "model.safetensors", "modeling_glotok.py", "utils.py"]
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["model_type"] == "glotok"
    assert config["auto_map"] == {
        "AutoConfig": "configuration_glotok.GloTokConfig",
        "AutoModel": "modeling_glotok.GloTokModel",
    }
    reloaded = GloTokModel.from_pretrained(tmp_path / "a")
    _assert_same_model(tiny_model, reloaded, images)
    # Save again from the reloaded model (from_pretrained may add config fields) and reload once more.
    reloaded.save_pretrained(tmp_path / "b")
    _assert_same_model(tiny_model, GloTokModel.from_pretrained(tmp_path / "b"), images)


def test_auto_classes_load_glotok(tiny_model, images, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), GloTokConfig)
    model = AutoModel.from_pretrained(tmp_path)
    assert type(model) is GloTokModel
    _assert_same_model(tiny_model, model, images)


def test_from_pretrained_with_state_dict_and_no_checkpoint(tiny_model, images):
    model = GloTokModel.from_pretrained(None, config=tiny_model.config, state_dict=tiny_model.state_dict())
    _assert_same_model(tiny_model, model, images)


def test_missing_weights_are_initialised_by_init_weights(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    dropped = [k for k in state if k.startswith("visual.residual.proj_out") or k.startswith("semantic.quantizer")]
    save_file({k: v for k, v in state.items() if k not in dropped}, tmp_path / "model.safetensors")
    model = GloTokModel.from_pretrained(tmp_path)
    assert torch.count_nonzero(model.visual.residual.proj_out.weight) == 0  # zero init, not garbage
    codebook = model.semantic.quantizer.embedding.weight
    assert torch.isfinite(codebook).all() and codebook.abs().max() <= 1.0 / 12


def test_config_round_trip_and_derived_fields(tmp_path):
    config = tiny_glotok_config(visual_codebook_size=0)
    config.save_pretrained(tmp_path)
    reloaded = GloTokConfig.from_pretrained(tmp_path)
    assert reloaded.to_dict() == config.to_dict()
    assert reloaded.block_out_channels == (8, 16) and reloaded.num_codebooks == 1
    assert GloTokConfig.from_json_file(tmp_path / "config.json").semantic_codebook_size == 12


def test_config_common_properties(tmp_path):
    """transformers' ConfigTester.run_common_tests, where it applies: JSON string and file round trips, a subfolder
    save/load, construction without arguments, and the public field names other code relies on."""
    config = tiny_glotok_config()
    assert GloTokConfig.from_dict(json.loads(config.to_json_string())).to_dict() == config.to_dict()
    config.to_json_file(tmp_path / "config.json")
    assert GloTokConfig.from_json_file(tmp_path / "config.json").to_dict() == config.to_dict()
    config.save_pretrained(tmp_path / "sub" / "folder")
    assert GloTokConfig.from_pretrained(tmp_path / "sub", subfolder="folder").to_dict() == config.to_dict()
    assert isinstance(GloTokConfig(), GloTokConfig)
    for name in ("in_channels", "block_out_channels", "layers_per_block", "latent_channels", "semantic_codebook_size",
                 "visual_codebook_size", "codebook_dim", "use_residual", "sample_size"):  # fmt: skip
        assert hasattr(config, name), name


def test_sharded_checkpoint_round_trip(tiny_model, images, tmp_path):
    tiny_model.save_pretrained(tmp_path, max_shard_size="20KB")
    shards = sorted(p.name for p in tmp_path.glob("model-*.safetensors"))
    assert len(shards) > 1 and (tmp_path / "model.safetensors.index.json").is_file()
    _assert_same_model(tiny_model, GloTokModel.from_pretrained(tmp_path), images)


def test_modeling_module_exposes_pretrained_model_for_diffusers():
    # diffusers resolves the loading method of a component via getattr(defining_module, "PreTrainedModel").
    assert modeling.PreTrainedModel.__name__ == "PreTrainedModel"


REMOTE_CODE_SCRIPT = BLOCK_GLOTOK_HF + textwrap.dedent(
    """
    import torch
    from transformers import AutoModel
    folder, ref = sys.argv[1], torch.load(sys.argv[2], weights_only=True)
    try:
        import glotok_hf  # noqa
        raise SystemExit("glotok_hf import was not blocked")
    except ImportError:
        pass
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    assert "glotok_hf" not in type(model).__module__, type(model).__module__
    with torch.no_grad():
        out = model(ref["images"]).sample
        dec = model.decode(**{k: ref[k] for k in ("semantic_indices", "visual_indices")}).sample
    torch.testing.assert_close(out, ref["sample"], atol=0, rtol=0)
    torch.testing.assert_close(dec, ref["sample"], atol=1e-5, rtol=1e-5)
    print("REMOTE_OK", type(model).__module__)
    """
)


def test_remote_code_loads_without_the_package(tiny_model, images, tmp_path, subprocess_env):
    folder = tmp_path / "tokenizer"
    tiny_model.save_pretrained(folder)
    with torch.no_grad():
        enc = tiny_model.encode(images)
        ref = {"images": images, "sample": tiny_model(images).sample, **enc.indices}
    torch.save(ref, tmp_path / "ref.pt")
    subprocess_env.pop("PYTHONPATH", None)
    proc = subprocess.run(
        [PYTHON, "-c", REMOTE_CODE_SCRIPT, str(folder), str(tmp_path / "ref.pt")],
        capture_output=True, text=True, env=subprocess_env, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "REMOTE_OK transformers_modules" in proc.stdout


# ------------------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "pixel_values, error, match",
    [
        ([[0.0]], TypeError, "must be a torch.Tensor"),
        (torch.zeros(3, 16, 16), ValueError, r"shape \(batch, 3, height, width\)"),
        (torch.zeros(1, 3, 16, 16, dtype=torch.long), ValueError, "floating-point"),
        (torch.zeros(1, 4, 16, 16), ValueError, "must have 3 channels, got 4"),
        (torch.zeros(1, 3, 15, 16), ValueError, "multiples of the downsampling factor 2"),
    ],
)
def test_bad_pixel_values(tiny_model, pixel_values, error, match):
    with pytest.raises(error, match=match):
        tiny_model.encode(pixel_values)
    with pytest.raises(error, match=match):
        tiny_model(pixel_values)


def test_value_checks_are_opt_in(tiny_model):
    """Checks that read values back from the device (a sync) run only with validate=True; shapes always."""
    x = torch.rand(1, 3, 16, 16) * 255
    with torch.no_grad():
        enc = tiny_model.eval().encode(x)  # no sync, no check: 8-bit images go through
        assert enc.semantic_indices.shape == (1, 8, 8)
        tiny_model(x)
    with pytest.raises(ValueError, match=r"must be images in \[-1, 1\]"):
        tiny_model.encode(x, validate=True)
    with pytest.raises(ValueError, match="NaN or inf"):
        tiny_model.encode(x * float("nan"), validate=True)
    with pytest.raises(ValueError, match=r"\[0, 16\)"):
        tiny_model.decode(semantic_indices=enc.semantic_indices, visual_indices=enc.visual_indices + 16, validate=True)


def test_hot_paths_read_no_values_back(tiny_model, images, monkeypatch):
    """forward / encode / decode never turn a tensor into a Python value (a device sync on accelerators)."""
    for name in ("item", "tolist", "__bool__", "__int__", "__float__", "__index__"):
        monkeypatch.setattr(
            torch.Tensor, name, lambda self, *a, _name=name, **k: pytest.fail(f"Tensor.{_name} called")
        )
    for mode in (tiny_model.train, tiny_model.eval):
        mode()
        tiny_model(images)
        tiny_model.decode(**tiny_model.encode(images).indices)


def _idx(*shape, high=12, dtype=torch.long):
    return torch.randint(0, high, shape).to(dtype)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"visual_indices": _idx(1, 8, 8)}, ValueError, "needs semantic_indices"),
        ({"semantic_indices": _idx(1, 8, 8)}, ValueError, "needs visual_indices"),
        ({"semantic_indices": _idx(1, 8, 8), "visual_indices": _idx(1, 8, 8, dtype=torch.float32)}, TypeError,
         "torch.Tensor of integer indices, got torch.float32"),
        ({"semantic_indices": _idx(8, 8), "visual_indices": _idx(8, 8)}, ValueError, r"shape \(batch, height, width\)"),
        ({"semantic_indices": _idx(1, 8, 8) + 12, "visual_indices": _idx(1, 8, 8)}, ValueError, r"\[0, 12\)"),
        ({"semantic_indices": _idx(1, 8, 8) - 13, "visual_indices": _idx(1, 8, 8)}, ValueError, r"\[0, 12\)"),
        ({"semantic_indices": _idx(1, 8, 8), "visual_indices": _idx(1, 4, 4)}, ValueError, "same shape"),
        ({"semantic_indices": [[1]], "visual_indices": _idx(1, 8, 8)}, TypeError, "torch.Tensor of integer"),
    ],
)  # fmt: skip
def test_bad_indices(tiny_model, kwargs, error, match):
    with pytest.raises(error, match=match):
        tiny_model.decode(**kwargs, validate=True)


def test_indices_for_a_disabled_codebook_are_rejected():
    model = tiny_glotok_model(semantic_codebook_size=0)
    with pytest.raises(ValueError, match=r"needs semantic_indices exactly when .* \(semantic_codebook_size=0\)"):
        model.decode(semantic_indices=_idx(1, 8, 8), visual_indices=_idx(1, 8, 8))


@pytest.mark.parametrize(
    "overrides, error, match",
    [
        ({"semantic_codebook_size": "4096"}, TypeError, "semantic_codebook_size must be an int"),
        ({"use_residual": 1}, TypeError, "use_residual must be a bool"),
        ({"block_out_channels": [8, "16"]}, TypeError, "block_out_channels must be a non-empty list"),
        ({"semantic_codebook_size": 0, "visual_codebook_size": 0}, ValueError, "at least one codebook"),
        ({"visual_codebook_size": -1}, ValueError, "visual_codebook_size must be >= 0"),
        ({"norm_num_groups": 3}, ValueError, "must divide every channel count"),
        ({"sample_size": 15}, ValueError, "divisible by the downsampling factor"),
        ({"adapter_num_heads": 3}, ValueError, "adapter_num_heads=3 must divide"),
        ({"residual_num_heads": 3}, ValueError, "residual module needs"),
        ({"dropout": 1.5}, ValueError, r"dropout must be in \[0, 1\)"),
    ],
)
def test_bad_config(overrides, error, match):
    with pytest.raises(error, match=match):
        tiny_glotok_config(**overrides)
