"""`glotok convert`: LlamaGen VQ and FQGAN-Dual checkpoints <-> GloTokModel.

The source checkpoints are built here from the public layouts' key names and shapes (tiny sizes), and the source
models' forward is re-implemented below with torch functional calls on the *source* tensors (`reference_encode`,
`reference_decode`), so the converted model is checked against an independent computation, not against the mapping.
"""

import argparse
import json
import math
import subprocess
import textwrap

import pytest
import torch
import torch.nn.functional as F
from conftest import BLOCK_GLOTOK_HF, PYTHON
from transformers import AutoModel

from glotok_hf import GloTokModel
from glotok_hf.cli import main
from glotok_hf.convert import (
    convert_checkpoint,
    export_checkpoint,
    from_glotok,
    load_source_checkpoint,
    source_key,
    to_glotok,
)

CHANNELS, BLOCKS, Z, CODES, DIM, GROUPS, HEADS, SIZE = (8, 16), 1, 8, 16, 4, 4, 2, 16
KWARGS = {"norm_num_groups": GROUPS, "adapter_num_heads": HEADS}


# ------------------------------------------------------------------------------------ public layouts, built by hand
def _add(state, prefix, **shapes):
    for name, shape in shapes.items():
        state[f"{prefix}.{name}"] = torch.Size(shape)


def _conv(state, prefix, cout, cin, k):
    _add(state, prefix, weight=(cout, cin, k, k), bias=(cout,))


def _norm(state, prefix, c):
    _add(state, prefix, weight=(c,), bias=(c,))


def _resnet(state, prefix, cin, cout):
    _norm(state, f"{prefix}.norm1", cin)
    _conv(state, f"{prefix}.conv1", cout, cin, 3)
    _norm(state, f"{prefix}.norm2", cout)
    _conv(state, f"{prefix}.conv2", cout, cout, 3)
    if cin != cout:
        _conv(state, f"{prefix}.nin_shortcut", cout, cin, 1)


def _attn(state, prefix, c):
    _norm(state, f"{prefix}.norm", c)
    for name in ("q", "k", "v", "proj_out"):
        _conv(state, f"{prefix}.{name}", c, c, 1)


def _mid(state, prefix, c):
    _resnet(state, f"{prefix}.mid.0", c, c)
    _attn(state, f"{prefix}.mid.1", c)
    _resnet(state, f"{prefix}.mid.2", c, c)


def _adapter(state, prefix, c, grid, depth):
    _add(state, prefix, positional_embedding=(grid * grid, c))
    for name in ("ln_pre", "ln_post"):
        _norm(state, f"{prefix}.{name}", c)
    for k in range(depth):
        p = f"{prefix}.transformer.{k}"
        _norm(state, f"{p}.ln_1", c)
        _norm(state, f"{p}.ln_2", c)
        _add(state, f"{p}.attn", in_proj_weight=(3 * c, c), in_proj_bias=(3 * c,))
        _add(state, f"{p}.attn.out_proj", weight=(c, c), bias=(c,))
        _add(state, f"{p}.mlp.c_fc", weight=(4 * c, c), bias=(4 * c,))
        _add(state, f"{p}.mlp.c_proj", weight=(c, 4 * c), bias=(c,))


def source_shapes(fmt, channels=CHANNELS, blocks=BLOCKS, z=Z, codes=CODES, dim=DIM, size=SIZE, depth=1,
                  feat_pred_head=False):  # fmt: skip
    """Key -> shape of a LlamaGen VQ / FQGAN-Dual state dict (their ch_mult, num_res_blocks, z_channels, ...)."""
    state, levels, top = {}, len(channels), channels[-1]
    _conv(state, "encoder.conv_in", channels[0], 3, 3)
    for i, c in enumerate(channels):
        cin = channels[max(i - 1, 0)]
        for j in range(blocks):
            _resnet(state, f"encoder.conv_blocks.{i}.res.{j}", cin if j == 0 else c, c)
            if i == levels - 1:
                _attn(state, f"encoder.conv_blocks.{i}.attn.{j}", c)
        if i != levels - 1:
            _conv(state, f"encoder.conv_blocks.{i}.downsample.conv", c, c, 3)
    _mid(state, "encoder", top)
    heads = {"": None} if fmt == "llamagen-vq" else {"_sem": "semantic", "_vis": "visual"}
    for suffix, head in heads.items():
        if head:
            _adapter(state, f"encoder.{head}_head.0", top, size // 2 ** (levels - 1), depth)
        _norm(state, f"encoder.norm_out{suffix}", top)
        _conv(state, f"encoder.conv_out{suffix}", z, top, 3)
        _conv(state, f"quant_conv{suffix}", dim, z, 1)
        _add(state, f"quantize{suffix}", **{"embedding.weight": (codes, dim), "codebook_used": (65536,)})
    _conv(state, "post_quant_conv", z, dim * len(heads), 1)
    _conv(state, "decoder.conv_in", top, z, 3)
    _mid(state, "decoder", top)
    cin = top
    for k, i in enumerate(reversed(range(levels))):
        for j in range(blocks + 1):
            _resnet(state, f"decoder.conv_blocks.{k}.res.{j}", cin, channels[i])
            cin = channels[i]
            if i == levels - 1:
                _attn(state, f"decoder.conv_blocks.{k}.attn.{j}", cin)
        if i != 0:
            _conv(state, f"decoder.conv_blocks.{k}.upsample.conv", cin, cin, 3)
    _norm(state, "decoder.norm_out", channels[0])
    _conv(state, "decoder.conv_out", 3, channels[0], 3)
    if feat_pred_head:
        _add(state, "feat_pred_head", class_embedding=(1, 32), positional_embedding=(17, 32))
        _add(state, "feat_pred_head.upscale.0", weight=(32, dim), bias=(32,))
    return state


def random_state(shapes, seed=0):
    """Random tensors of `shapes` with sensible scales (norm weights near 1, fan-in scaled weights)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        x = torch.randn(shape, generator=g)
        if key.endswith("codebook_used"):
            x = torch.zeros(shape)
        elif ("norm" in key or ".ln_" in key) and key.endswith("weight"):
            x = 1 + 0.1 * x
        elif key.endswith("bias"):
            x = 0.1 * x
        elif len(shape) >= 2 and "embedding" not in key:
            x = x / math.sqrt(math.prod(shape[1:]))
        elif "positional_embedding" in key:
            x = 0.3 * x
        state[key] = x
    return state


def save_training_checkpoint(path, state, **extra):
    """What LlamaGen's / FQGAN's training scripts save: the weights, the optimizer, steps and the argparse args."""
    checkpoint = {"model": state, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0]}]},
                  "steps": 10, "args": argparse.Namespace(vq_model="VQ-16", codebook_size=CODES), **extra}  # fmt: skip
    torch.save(checkpoint, path)
    return path


# ----------------------------------------------------------------------------- the source models, re-implemented
def _conv2d(x, sd, p, stride=1):
    w = sd[f"{p}.weight"]
    return F.conv2d(x, w, sd[f"{p}.bias"], stride=stride, padding=w.shape[-1] // 2 if stride == 1 else 0)


def _gn_silu(x, sd, p):
    return F.silu(F.group_norm(x, GROUPS, sd[f"{p}.weight"], sd[f"{p}.bias"], eps=1e-6))


def _resnet_ref(x, sd, p):
    h = _conv2d(_gn_silu(x, sd, f"{p}.norm1"), sd, f"{p}.conv1")
    h = _conv2d(_gn_silu(h, sd, f"{p}.norm2"), sd, f"{p}.conv2")
    return (_conv2d(x, sd, f"{p}.nin_shortcut") if f"{p}.nin_shortcut.weight" in sd else x) + h


def _attn_ref(x, sd, p):
    b, c, h, w = x.shape
    y = F.group_norm(x, GROUPS, sd[f"{p}.norm.weight"], sd[f"{p}.norm.bias"], eps=1e-6)
    q, k, v = (_conv2d(y, sd, f"{p}.{n}").reshape(b, c, h * w) for n in "qkv")
    weights = torch.softmax(torch.einsum("bci,bcj->bij", q, k) / math.sqrt(c), dim=-1)
    return x + _conv2d(torch.einsum("bij,bcj->bci", weights, v).reshape(b, c, h, w), sd, f"{p}.proj_out")


def _level_ref(x, sd, p, n):
    for j in range(n):
        x = _resnet_ref(x, sd, f"{p}.res.{j}")
        if f"{p}.attn.{j}.q.weight" in sd:
            x = _attn_ref(x, sd, f"{p}.attn.{j}")
    return x


def _mid_ref(x, sd, p):
    return _resnet_ref(_attn_ref(_resnet_ref(x, sd, f"{p}.mid.0"), sd, f"{p}.mid.1"), sd, f"{p}.mid.2")


def _adapter_ref(x, sd, p):
    """FQGAN's adapter, with torch's own nn.MultiheadAttention (sequence-first) loaded with the source tensors."""
    b, c, h, w = x.shape
    ln = lambda t, n: F.layer_norm(t, (c,), sd[f"{n}.weight"], sd[f"{n}.bias"])  # noqa: E731
    t = ln(x.flatten(2).transpose(1, 2) + sd[f"{p}.positional_embedding"], f"{p}.ln_pre").transpose(0, 1)
    depth = len({k.split(".")[4] for k in sd if k.startswith(f"{p}.transformer.")})
    for i in range(depth):
        q = f"{p}.transformer.{i}"
        mha = torch.nn.MultiheadAttention(c, HEADS)
        mha.load_state_dict({k[len(q) + 6 :]: v for k, v in sd.items() if k.startswith(f"{q}.attn.")})
        y = ln(t, f"{q}.ln_1")
        t = t + mha(y, y, y, need_weights=False)[0]
        y = F.linear(F.gelu(F.linear(ln(t, f"{q}.ln_2"), sd[f"{q}.mlp.c_fc.weight"], sd[f"{q}.mlp.c_fc.bias"])),
                     sd[f"{q}.mlp.c_proj.weight"], sd[f"{q}.mlp.c_proj.bias"])  # fmt: skip
        t = t + y
    return ln(t.transpose(0, 1), f"{p}.ln_post").transpose(1, 2).reshape(b, c, h, w)


def _codebook(sd, suffix):
    return F.normalize(sd[f"quantize{suffix}.embedding.weight"], dim=-1)


def reference_encode(sd, x, fmt):
    """Source encode: {"semantic"/"visual": indices (B, h, w)}; nearest code by Euclidean distance (torch.cdist)."""
    levels = len({k.split(".")[2] for k in sd if k.startswith("encoder.conv_blocks.")})
    blocks = len({k.split(".")[4] for k in sd if k.startswith("encoder.conv_blocks.0.res.")})
    x = _conv2d(x, sd, "encoder.conv_in")
    for i in range(levels):
        x = _level_ref(x, sd, f"encoder.conv_blocks.{i}", blocks)
        if i != levels - 1:
            x = _conv2d(F.pad(x, (0, 1, 0, 1)), sd, f"encoder.conv_blocks.{i}.downsample.conv", stride=2)
    x = _mid_ref(x, sd, "encoder")
    heads = {"visual": ""} if fmt == "llamagen-vq" else {"semantic": "_sem", "visual": "_vis"}
    out = {}
    for name, suffix in heads.items():
        h = _adapter_ref(x, sd, f"encoder.{name}_head.0") if suffix else x
        h = _conv2d(_gn_silu(h, sd, f"encoder.norm_out{suffix}"), sd, f"encoder.conv_out{suffix}")
        z = F.normalize(_conv2d(h, sd, f"quant_conv{suffix}").permute(0, 2, 3, 1), dim=-1)
        distances = torch.cdist(z.reshape(-1, z.shape[-1]), _codebook(sd, suffix))
        out[name] = distances.argmin(dim=1).view(z.shape[:-1])
    return out


def reference_decode(sd, indices, fmt):
    """Source decode_code: code vectors [visual, semantic] -> post_quant_conv -> decoder."""
    suffixes = {"visual": ""} if fmt == "llamagen-vq" else {"visual": "_vis", "semantic": "_sem"}
    x = torch.cat([_codebook(sd, s)[indices[n]].permute(0, 3, 1, 2) for n, s in suffixes.items()], dim=1)
    levels = len({k.split(".")[2] for k in sd if k.startswith("decoder.conv_blocks.")})
    blocks = len({k.split(".")[4] for k in sd if k.startswith("decoder.conv_blocks.0.res.")})
    x = _mid_ref(_conv2d(_conv2d(x, sd, "post_quant_conv"), sd, "decoder.conv_in"), sd, "decoder")
    for k in range(levels):
        x = _level_ref(x, sd, f"decoder.conv_blocks.{k}", blocks)
        if k != levels - 1:
            x = _conv2d(
                F.interpolate(x, scale_factor=2.0, mode="nearest"), sd, f"decoder.conv_blocks.{k}.upsample.conv"
            )
    return _conv2d(_gn_silu(x, sd, "decoder.norm_out"), sd, "decoder.conv_out")


def _images(batch=2, size=SIZE, seed=1):
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ---------------------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("fmt", ["llamagen-vq", "fqgan-dual"])
def test_converted_model_matches_the_source_computation(fmt, tmp_path, capsys):
    state = random_state(source_shapes(fmt, feat_pred_head=fmt == "fqgan-dual"))
    ckpt = save_training_checkpoint(tmp_path / "src.pt", state)
    convert_checkpoint(fmt, ckpt, tmp_path / "out", **KWARGS)
    dropped_head = "Dropped FQGAN's CLIP/DINO feature-prediction head" in capsys.readouterr().out
    assert dropped_head == (fmt == "fqgan-dual")
    model = AutoModel.from_pretrained(tmp_path / "out").eval()
    assert type(model) is GloTokModel and not model.config.use_residual
    assert model.config.num_codebooks == (1 if fmt == "llamagen-vq" else 2)
    images = _images()
    with torch.no_grad():
        enc = model.encode(images)
        ref = reference_encode(state, images, fmt)
        assert torch.equal(enc.visual_indices, ref["visual"])
        if fmt == "fqgan-dual":
            assert torch.equal(enc.semantic_indices, ref["semantic"])
        else:
            assert enc.semantic_indices is None
        decoded = model.decode(**enc.indices).sample
        expected = reference_decode(state, ref, fmt)
    assert decoded.shape == images.shape
    assert (decoded - expected).abs().max() <= 1e-4 * max(1.0, float(expected.abs().max()))
    assert len(ref["visual"].unique()) > 1  # the codes are not degenerate


def test_every_source_tensor_is_mapped_or_dropped_and_the_mapping_is_one_to_one():
    for fmt in ("llamagen-vq", "fqgan-dual"):
        state = random_state(source_shapes(fmt, feat_pred_head=fmt == "fqgan-dual", depth=2))
        model, dropped = to_glotok(state, fmt, **KWARGS)
        names = {key: source_key(key, fmt) for key in model.state_dict()}
        assert len(set(names.values())) == len(names)
        assert set(names.values()) | set(dropped) == set(state)
        assert all(k.endswith("codebook_used") or k.startswith("feat_pred_head.") for k in dropped)
        for key, tensor in model.state_dict().items():
            assert torch.equal(tensor, state[names[key]]), key
        assert model.config.adapter_depth == (2 if fmt == "fqgan-dual" else 0)


def test_configuration_is_read_off_the_tensors():
    shapes = source_shapes("fqgan-dual", channels=(8, 8, 16, 16), blocks=2, z=12, codes=24, dim=6, size=32)
    model, _ = to_glotok(random_state(shapes), "fqgan-dual", **KWARGS)
    c = model.config
    assert (c.block_out_channels, c.layers_per_block, c.latent_channels) == ((8, 8, 16, 16), 2, 12)
    assert (c.semantic_codebook_size, c.visual_codebook_size, c.codebook_dim) == (24, 24, 6)
    assert (c.downsample_factor, c.sample_size, c.fixed_sample_size) == (8, 32, True)
    model, _ = to_glotok(random_state(source_shapes("llamagen-vq", channels=(8, 16, 16))), "llamagen-vq",
                         norm_num_groups=GROUPS, sample_size=64)  # fmt: skip
    c = model.config
    assert (c.semantic_codebook_size, c.visual_codebook_size, c.adapter_depth, c.sample_size) == (0, CODES, 0, 64)
    assert not c.fixed_sample_size and c.downsample_factor == 4


def test_fqgan_conversion_rejects_other_image_sizes(tmp_path):
    model, _ = to_glotok(random_state(source_shapes("fqgan-dual")), "fqgan-dual", **KWARGS)
    with pytest.raises(ValueError, match=r"must be 16x16 images.*fixed_sample_size.*got 32x32"):
        model.encode(_images(size=32))
    llamagen, _ = to_glotok(random_state(source_shapes("llamagen-vq")), "llamagen-vq", **KWARGS)
    assert llamagen.encode(_images(size=32)).visual_indices.shape == (2, 16, 16)  # no positional table: any size


@pytest.mark.parametrize("fmt", ["llamagen-vq", "fqgan-dual"])
def test_convert_export_convert_is_the_identity(fmt, tmp_path):
    state = random_state(source_shapes(fmt))
    torch.save(state, tmp_path / "bare.pt")
    first = convert_checkpoint(fmt, tmp_path / "bare.pt", tmp_path / "a", **KWARGS)
    export_checkpoint(GloTokModel.from_pretrained(tmp_path / "a"), fmt, tmp_path / "exported.pt")
    exported = torch.load(tmp_path / "exported.pt", weights_only=True)["model"]
    assert set(exported) == set(state)  # the source layout, codebook_used buffers included
    assert all(torch.equal(exported[k], state[k]) for k in state)
    second = convert_checkpoint(fmt, tmp_path / "exported.pt", tmp_path / "b", **KWARGS)
    assert first.config.to_dict() == second.config.to_dict()
    a, b = first.state_dict(), second.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_checkpoint(first, fmt, tmp_path / "exported.pt")


def test_export_refuses_models_the_source_layout_cannot_hold(tiny_model):
    with pytest.raises(ValueError, match="residual modules"):
        from_glotok(tiny_model, "fqgan-dual")
    tiny_model.config.use_residual = False
    with pytest.raises(ValueError, match="must have one codebook"):
        from_glotok(tiny_model, "llamagen-vq")


def test_checkpoint_layouts(tmp_path):
    state = random_state(source_shapes("llamagen-vq"))
    other = {k: v + 1 for k, v in state.items()}
    layouts = {
        "bare": state, "model": {"model": state, "args": argparse.Namespace(ema=True)}, "module": {"module": state},
        "state_dict": {"state_dict": state}, "ddp": {"model": {f"module.{k}": v for k, v in state.items()}},
    }  # fmt: skip
    for name, obj in layouts.items():
        torch.save(obj, tmp_path / f"{name}.pt")
        loaded = load_source_checkpoint(tmp_path / f"{name}.pt")
        assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state), name
    save_training_checkpoint(tmp_path / "ema.pt", state, ema=other)
    assert torch.equal(load_source_checkpoint(tmp_path / "ema.pt", ema=True)["post_quant_conv.bias"],
                       other["post_quant_conv.bias"])  # fmt: skip
    assert torch.equal(
        load_source_checkpoint(tmp_path / "ema.pt")["post_quant_conv.bias"], state["post_quant_conv.bias"]
    )
    with pytest.raises(ValueError, match="--ema asks for the 'ema' weights"):
        load_source_checkpoint(tmp_path / "bare.pt", ema=True)


class Payload:  # not a type torch.load(weights_only=True) accepts
    pass


def test_bad_files_are_refused_with_the_reason(tmp_path):
    (tmp_path / "text.pt").write_text("not a checkpoint")
    torch.save([1, 2], tmp_path / "list.pt")
    torch.save({"model": {"a": 1}}, tmp_path / "nostate.pt")
    torch.save({"model": {}, "obj": Payload()}, tmp_path / "unsafe.pt")
    cases = {"text.pt": "not a checkpoint that torch.load", "list.pt": "expected a dict", "nostate.pt": "no state dict",
             "unsafe.pt": "weights_only"}  # fmt: skip
    for name, match in cases.items():
        with pytest.raises(ValueError, match=match):
            load_source_checkpoint(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="No such checkpoint"):
        load_source_checkpoint(tmp_path / "missing.pt")


def test_missing_unexpected_and_misshaped_tensors_are_named():
    state = random_state(source_shapes("fqgan-dual"))
    missing = {k: v for k, v in state.items() if k != "encoder.visual_head.0.ln_post.bias"}
    with pytest.raises(ValueError, match=r"Missing tensor 'encoder.visual_head.0.ln_post.bias'"):
        to_glotok(missing, "fqgan-dual", **KWARGS)
    with pytest.raises(ValueError, match=r"Unexpected tensor\(s\).*'encoder.extra.weight'"):
        to_glotok({**state, "encoder.extra.weight": torch.zeros(1)}, "fqgan-dual", **KWARGS)
    bad = {**state, "decoder.conv_in.weight": torch.zeros(16, 7, 3, 3)}
    with pytest.raises(ValueError, match=r"'decoder.conv_in.weight' has shape \(16, 7, 3, 3\).*needs \(16, 8, 3, 3\)"):
        to_glotok(bad, "fqgan-dual", **KWARGS)
    with pytest.raises(ValueError, match="Missing tensor 'quantize_sem.embedding.weight'.*not a FQGAN-Dual"):
        to_glotok(random_state(source_shapes("llamagen-vq")), "fqgan-dual", **KWARGS)
    with pytest.raises(ValueError, match="Unknown checkpoint format"):
        to_glotok(state, "taming", **KWARGS)


def test_output_dir_is_atomic_and_never_overwritten_silently(tmp_path):
    ckpt = save_training_checkpoint(tmp_path / "src.pt", random_state(source_shapes("llamagen-vq")))
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="--overwrite"):
        convert_checkpoint("llamagen-vq", ckpt, out, **KWARGS)
    assert (out / "keep.txt").read_text() == "mine"
    broken = save_training_checkpoint(tmp_path / "broken.pt", {"encoder.conv_in.weight": torch.zeros(1)})
    with pytest.raises(ValueError):
        convert_checkpoint("llamagen-vq", broken, tmp_path / "new", **KWARGS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.pt", "out", "src.pt"]  # nothing half-written
    convert_checkpoint("llamagen-vq", ckpt, out, overwrite=True, **KWARGS)
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md", "config.json", "configuration_glotok.py", "model.safetensors", "modeling_glotok.py", "utils.py",
    ]  # fmt: skip
    assert json.loads((out / "config.json").read_text())["auto_map"]["AutoModel"] == "modeling_glotok.GloTokModel"


def test_model_card_names_source_license_and_published_rfid(tmp_path):
    shapes = source_shapes("fqgan-dual", channels=(16, 16, 16, 16, 16), size=64)
    torch.save(random_state(shapes), tmp_path / "fqgan_dual_ds16.pt")
    convert_checkpoint("fqgan-dual", tmp_path / "fqgan_dual_ds16.pt", tmp_path / "out", **KWARGS)
    card = (tmp_path / "out" / "README.md").read_text()
    assert "license: cc-by-nc-4.0" in card and "https://github.com/showlab/FQGAN" in card
    assert "`fqgan_dual_ds16.pt`" in card and "| rFID (ImageNet val 256x256, published) | 0.94 |" in card


def test_cli_convert_export_and_errors(tmp_path, capsys):
    torch.save(random_state(source_shapes("fqgan-dual")), tmp_path / "src.pt")
    argv = ["convert", "fqgan-dual", str(tmp_path / "src.pt"), str(tmp_path / "out"), "--norm-num-groups", "4",
            "--adapter-num-heads", "2"]  # fmt: skip
    assert main(argv) == 0
    assert "glotok reconstruct photo.png --tokenizer" in capsys.readouterr().out
    assert main(argv) == 2 and "--overwrite" in capsys.readouterr().err
    assert main(["convert", "--to", "fqgan-dual", str(tmp_path / "out"), str(tmp_path / "back.pt")]) == 0
    assert "quantize_sem.embedding.weight" in torch.load(tmp_path / "back.pt", weights_only=True)["model"]
    for layout in ("llamagen-vq", "llamagen"):  # the spelling is an alias
        assert main(["convert", "--to", layout, str(tmp_path / "out"), str(tmp_path / "x.pt")]) == 2
        assert "must have one codebook" in capsys.readouterr().err
    assert main(["convert", "taming", str(tmp_path / "src.pt"), str(tmp_path / "o2")]) == 2
    assert "Unknown FORMAT 'taming'" in capsys.readouterr().err
    assert main(["convert", "--to", "fqgan-dual", "fqgan-dual", "a", "b"]) == 2
    assert "exactly one" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "src.pt"), str(tmp_path / "o3")]) == 2
    assert "Give either a source FORMAT" in capsys.readouterr().err


def test_reconstruct_with_a_converted_tokenizer(tmp_path, capsys):
    from PIL import Image

    torch.save(random_state(source_shapes("fqgan-dual")), tmp_path / "src.pt")
    convert_checkpoint("fqgan-dual", tmp_path / "src.pt", tmp_path / "tok", **KWARGS)
    pixels = (torch.rand(40, 48, 3, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8).numpy()
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    argv = ["reconstruct", str(tmp_path / "photo.png"), "--tokenizer", str(tmp_path / "tok"), "--output",
            str(tmp_path / "recon.png")]  # fmt: skip
    assert main(argv) == 0
    assert "PSNR" in capsys.readouterr().out
    assert Image.open(tmp_path / "recon.png").size == (2 * SIZE, SIZE)  # original | reconstruction


REMOTE_CODE_SCRIPT = BLOCK_GLOTOK_HF + textwrap.dedent(
    """
    import torch
    from transformers import AutoModel
    model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
    assert "glotok_hf" not in type(model).__module__
    ref = torch.load(sys.argv[2], weights_only=True)
    with torch.no_grad():
        enc = model.encode(ref["images"])
    assert torch.equal(enc.semantic_indices, ref["semantic"]) and torch.equal(enc.visual_indices, ref["visual"])
    try:
        model.encode(torch.zeros(1, 3, 32, 32))
    except ValueError as err:
        assert "fixed_sample_size" in str(err)
    else:
        raise SystemExit("other sizes were accepted")
    print("REMOTE_OK")
    """
)


def test_converted_folder_loads_as_remote_code_without_the_package(tmp_path, subprocess_env):
    state = random_state(source_shapes("fqgan-dual"))
    torch.save(state, tmp_path / "src.pt")
    convert_checkpoint("fqgan-dual", tmp_path / "src.pt", tmp_path / "tok", **KWARGS)
    images = _images()
    torch.save({"images": images, **reference_encode(state, images, "fqgan-dual")}, tmp_path / "ref.pt")
    subprocess_env.pop("PYTHONPATH", None)
    proc = subprocess.run([PYTHON, "-c", REMOTE_CODE_SCRIPT, str(tmp_path / "tok"), str(tmp_path / "ref.pt")],
                          capture_output=True, text=True, env=subprocess_env, cwd=tmp_path, timeout=300)  # fmt: skip
    assert proc.returncode == 0 and "REMOTE_OK" in proc.stdout, proc.stdout + proc.stderr


# ---------------------------------------------------------------------------------------------------- warm start
def test_warm_start_glotok_from_a_converted_fqgan_dual(tmp_path, caplog):
    from train_utils import make_imagefolder, read_metrics, run_in_process, tiny_tokenizer_args

    from glotok_hf.teacher import random_codebook_teacher

    torch.save(random_state(source_shapes("fqgan-dual")), tmp_path / "fqgan.pt")
    converted = convert_checkpoint("fqgan-dual", tmp_path / "fqgan.pt", tmp_path / "tok", **KWARGS).state_dict()
    images = make_imagefolder(tmp_path / "images", per_class=4, size=20)
    teacher = random_codebook_teacher(size=CODES, dim=DIM, seed=1).save(tmp_path / "teacher.safetensors")
    residual = {"use_residual": True, "residual_hidden_size": 8, "residual_num_heads": 2}
    argv = tiny_tokenizer_args(images, tmp_path / "run", model_config=json.dumps(residual), max_train_steps=5,
                               pretrained_model_name_or_path=str(tmp_path / "tok"), checkpointing_steps=5,
                               validation_steps=5, histogram_weight=0.01, teacher_histogram=str(teacher))  # fmt: skip
    with caplog.at_level("INFO"):
        run = run_in_process(argv)
    assert run.state.global_step == 5
    assert all(
        m["generator/histogram_loss"] > 0 and m["generator/residual_loss"] > 0 for m in read_metrics(tmp_path / "run")
    )
    final = GloTokModel.from_pretrained(tmp_path / "run")
    assert final.config.use_residual and final.config.fixed_sample_size
    trained = final.state_dict()
    added = sorted(trained.keys() - converted.keys())
    assert added and all(k.startswith(("semantic.residual.", "visual.residual.")) for k in added)
    assert f"freshly initialised ({len(added)} tensors): ['semantic.residual', 'visual.residual']" in caplog.text
    moved = [k for k in converted if not torch.equal(trained[k], converted[k])]
    assert len(moved) == len(converted), sorted(converted.keys() - set(moved))
    # 5 Adam updates at lr 1e-3 move a weight by about 5e-3 at most: every converted tensor was loaded, none redrawn
    assert max(float((trained[k] - converted[k]).abs().max()) for k in converted) < 0.03


def test_warm_start_refuses_overrides_that_drop_or_reshape_saved_tensors(tmp_path):
    from glotok_hf.training.stage_tokenizer import load_pretrained_tokenizer

    torch.save(random_state(source_shapes("fqgan-dual")), tmp_path / "fqgan.pt")
    convert_checkpoint("fqgan-dual", tmp_path / "fqgan.pt", tmp_path / "tok", **KWARGS)
    with pytest.raises(ValueError, match=r"do not all load: \d+ do not fit the model \(shapes differ\).*quant_conv"):
        load_pretrained_tokenizer(str(tmp_path / "tok"), {"codebook_dim": 8})
    with pytest.raises(ValueError, match="have no place in the model.*semantic"):
        load_pretrained_tokenizer(str(tmp_path / "tok"), {"semantic_codebook_size": 0})
    with pytest.raises(ValueError, match=r"names no GloTokConfig field: \['use_residul'\]"):
        load_pretrained_tokenizer(str(tmp_path / "tok"), {"use_residul": True})
    model = load_pretrained_tokenizer(str(tmp_path / "tok"), {})
    assert not model.config.use_residual
