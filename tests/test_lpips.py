"""LPIPS: conversion of (fake, random) torchvision VGG16 + LPIPS-head checkpoints round-trips through safetensors,
LPIPS(x, x) = 0, symmetry, a known-answer check against a naive re-implementation of the formula, loading rules, and
the `glotok convert-lpips` command. Nothing is downloaded: the checkpoints are made here with random weights."""

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from conftest import dummy_images, tiny_glotok_model
from safetensors import safe_open
from safetensors.torch import save_file

from glotok_hf.cli import main as glotok_main
from glotok_hf.losses import LPIPS, GloTokLossConfig, GloTokObjective, convert_lpips_checkpoint
from glotok_hf.losses.lpips import FORMAT_KEY, LPIPS_CHANNELS, default_lpips_heads_path

VGG_STAGES = ((0, 2), (5, 7), (10, 12, 14), (17, 19, 21), (24, 26, 28))  # torchvision indices of VGG16's convolutions
VGG_WIDTHS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


def fake_vgg16_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """torchvision's VGG16 key layout with He-normal random weights (features stay O(1) through 13 layers), plus a
    small stand-in classifier that the converter must drop."""
    g = torch.Generator().manual_seed(seed)
    state_dict, in_channels = {}, 3
    for indices, widths in zip(VGG_STAGES, VGG_WIDTHS):
        for index, out_channels in zip(indices, widths):
            std = math.sqrt(2.0 / (in_channels * 9))
            state_dict[f"features.{index}.weight"] = torch.randn(out_channels, in_channels, 3, 3, generator=g) * std
            state_dict[f"features.{index}.bias"] = torch.randn(out_channels, generator=g) * 0.01
            in_channels = out_channels
    state_dict["classifier.0.weight"] = torch.randn(4, 8, generator=g)
    return state_dict


def fake_heads_state_dict(seed: int = 1) -> dict[str, torch.Tensor]:
    """The `lpips` package's key layout (`lin{k}.model.1.weight`, after a Dropout) with random non-negative weights."""
    g = torch.Generator().manual_seed(seed)
    return {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) for k, c in enumerate(LPIPS_CHANNELS)}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("lpips")
    vgg, heads = fake_vgg16_state_dict(), fake_heads_state_dict()
    torch.save(vgg, root / "vgg16-397923af.pth")
    torch.save(heads, root / "vgg.pth", _use_new_zipfile_serialization=False)  # the lpips file is a legacy pickle
    converted = convert_lpips_checkpoint(root / "vgg16-397923af.pth", root / "vgg.pth", root / "lpips.safetensors")
    return {"root": root, "vgg": vgg, "heads": heads, "converted": converted}


@pytest.fixture(scope="module")
def lpips(checkpoints):
    return LPIPS.from_pretrained(checkpoints["converted"])


def naive_lpips(vgg: dict, heads: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """LPIPS written out from the paper in fp64: scale, VGG16 stages, unit-normalise channels, squared difference,
    weighted channel sum by the heads, spatial mean, sum over the 5 layers."""
    shift = torch.tensor([-0.030, -0.088, -0.188], dtype=torch.float64).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450], dtype=torch.float64).view(1, 3, 1, 1)

    def stage_outputs(image):
        h, outputs = (image.double() - shift) / scale, []
        for stage, indices in enumerate(VGG_STAGES):
            if stage > 0:
                h = F.max_pool2d(h, 2)
            for i in indices:
                h = F.relu(
                    F.conv2d(h, vgg[f"features.{i}.weight"].double(), vgg[f"features.{i}.bias"].double(), padding=1)
                )
            outputs.append(h)
        return outputs

    total = torch.zeros(x.shape[0], dtype=torch.float64)
    for k, (a, b) in enumerate(zip(stage_outputs(x), stage_outputs(y))):
        a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        w = heads[f"lin{k}.model.1.weight"].double().view(1, -1, 1, 1)
        total = total + ((a - b).pow(2) * w).sum(1).mean(dim=(1, 2))
    return total


# ------------------------------------------------------------------------------------------------------ conversion
def test_conversion_round_trips_every_tensor(checkpoints, lpips):
    state_dict = lpips.state_dict()
    assert len(state_dict) == 13 * 2 + 5  # 13 convolutions (weight, bias) + 5 heads; no classifier, no buffers
    for key, value in checkpoints["vgg"].items():
        if key.startswith("features."):
            torch.testing.assert_close(state_dict[key], value, rtol=0, atol=0)
    for k in range(5):
        torch.testing.assert_close(state_dict[f"heads.{k}.weight"], checkpoints["heads"][f"lin{k}.model.1.weight"])
    with safe_open(str(checkpoints["converted"]), framework="pt") as f:
        assert FORMAT_KEY in f.metadata()
    assert not any(p.requires_grad for p in lpips.parameters())


def test_torchmetrics_heads_are_the_default(checkpoints, tmp_path):
    heads_path = default_lpips_heads_path()
    assert heads_path is not None and heads_path.name == "vgg.pth"  # torchmetrics is a dependency
    out = convert_lpips_checkpoint(checkpoints["root"] / "vgg16-397923af.pth", output_path=tmp_path / "l.safetensors")
    real_heads = torch.load(heads_path, map_location="cpu", weights_only=True)
    loaded = LPIPS.from_pretrained(out)
    for k in range(5):
        torch.testing.assert_close(loaded.heads[k].weight, real_heads[f"lin{k}.model.1.weight"])
        assert (loaded.heads[k].weight >= 0).all()  # the trained heads are non-negative, so LPIPS >= 0


# --------------------------------------------------------------------------------------------------------- formula
def test_known_answer_against_a_naive_implementation(checkpoints, lpips):
    x, y = dummy_images(batch=2, size=32, seed=0), dummy_images(batch=2, size=32, seed=1)
    expected = naive_lpips(checkpoints["vgg"], checkpoints["heads"], x, y)
    distance = lpips(x, y)
    assert distance.shape == (2,) and distance.dtype == torch.float32
    torch.testing.assert_close(distance.double(), expected, rtol=1e-4, atol=1e-6)
    assert (distance > 0).all()


def test_identity_is_zero_and_distance_is_symmetric(lpips):
    x, y = dummy_images(batch=2, size=16, seed=2), dummy_images(batch=2, size=16, seed=3)
    assert lpips(x, x).abs().max().item() == 0.0
    torch.testing.assert_close(lpips(x, y), lpips(y, x))


def test_gradients_reach_the_input_only_and_are_finite_at_zero_distance(lpips):
    x = dummy_images(batch=1, size=16, seed=4).requires_grad_(True)
    y = dummy_images(batch=1, size=16, seed=5)
    lpips(x, y).sum().backward()
    assert x.grad.abs().sum() > 0 and all(p.grad is None for p in lpips.parameters())
    same = y.clone().requires_grad_(True)
    lpips(same, y).sum().backward()
    assert torch.isfinite(same.grad).all()
    target = y.clone().requires_grad_(True)  # a target that needs a gradient gets one
    lpips(x.detach(), target).sum().backward()
    assert target.grad.abs().sum() > 0


def test_objective_loads_lpips_from_the_config_path(checkpoints, images, tmp_path):
    (tmp_path / "my_lpips.safetensors").write_bytes(checkpoints["converted"].read_bytes())
    config = GloTokLossConfig(perceptual_model_path=str(tmp_path), histogram_weight=0.0)  # a folder with one file
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "perceptual loss is off" warning
        objective = GloTokObjective(config)
    assert isinstance(objective.perceptual, LPIPS) and objective.perceptual_enabled
    model = tiny_glotok_model()
    output = model(images)
    terms = objective.generator_loss(output, images, global_step=0)
    torch.testing.assert_close(terms["perceptual_loss"], objective.perceptual(output.sample, images).mean().detach())
    assert terms["perceptual_loss"] > 0


# --------------------------------------------------------------------------------------------------------- loading
def test_folder_with_the_canonical_name_wins(checkpoints, tmp_path):
    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    (tmp_path / "lpips_vgg16.safetensors").write_bytes(checkpoints["converted"].read_bytes())
    assert isinstance(LPIPS.from_pretrained(tmp_path), LPIPS)


def test_loading_errors(checkpoints, tmp_path):
    with pytest.raises(FileNotFoundError, match="convert-lpips"):
        LPIPS.from_pretrained(tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match=r"\.safetensors"):
        LPIPS.from_pretrained(checkpoints["root"] / "vgg.pth")
    save_file({"features.0.weight": torch.zeros(1)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(RuntimeError, match="Missing key"):  # torch's strict load_state_dict names the keys
        LPIPS.from_pretrained(tmp_path / "bad.safetensors")
    (tmp_path / "two").mkdir()
    for name in ("a.safetensors", "b.safetensors"):
        save_file({"x": torch.zeros(1)}, str(tmp_path / "two" / name))
    with pytest.raises(FileNotFoundError, match="exactly one"):
        LPIPS.from_pretrained(tmp_path / "two")
    with pytest.raises(TypeError, match="os.PathLike"):
        LPIPS.from_pretrained(3)


def test_forward_errors(lpips):
    x = torch.zeros(1, 3, 16, 16)
    with pytest.raises(ValueError, match="same shape"):
        lpips(x, torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="RGB"):
        lpips(torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 16, 16))
    with pytest.raises(ValueError, match="16x16"):
        lpips(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))


def test_conversion_errors(checkpoints, tmp_path):
    root = checkpoints["root"]
    vgg, heads = root / "vgg16-397923af.pth", root / "vgg.pth"
    with pytest.raises(FileExistsError, match="overwrite"):
        convert_lpips_checkpoint(vgg, heads, checkpoints["converted"])
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        convert_lpips_checkpoint(tmp_path / "nope.pth", heads, tmp_path / "out.safetensors")
    with pytest.raises(ValueError, match="must end in .safetensors"):
        convert_lpips_checkpoint(vgg, heads, tmp_path / "out.pth")
    bn_like = {k.replace("features.2.", "features.3."): v for k, v in checkpoints["vgg"].items()}  # vgg16_bn shifts
    torch.save(bn_like, tmp_path / "vgg16_bn.pth")
    with pytest.raises(ValueError, match="not torchvision's VGG16"):
        convert_lpips_checkpoint(tmp_path / "vgg16_bn.pth", heads, tmp_path / "out.safetensors")
    alex_heads = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate((64, 192, 384, 256, 256))}
    torch.save(alex_heads, tmp_path / "alex.pth")
    with pytest.raises(ValueError, match="expected shape"):
        convert_lpips_checkpoint(vgg, tmp_path / "alex.pth", tmp_path / "out.safetensors")
    (tmp_path / "pickle.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="weights_only=True"):
        convert_lpips_checkpoint(tmp_path / "pickle.pth", heads, tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()  # failed conversions leave nothing behind


def test_convert_lpips_command(checkpoints, tmp_path, capsys):
    root = checkpoints["root"]
    out = tmp_path / "cli" / "lpips_vgg16.safetensors"
    argv = ["convert-lpips", "--vgg16", str(root / "vgg16-397923af.pth"), "--heads", str(root / "vgg.pth")]
    assert glotok_main([*argv, "--output", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    before = out.read_bytes()
    assert glotok_main([*argv, "--output", str(out)]) == 2  # never overwrites silently
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == before
    assert glotok_main([*argv, "--output", str(out), "--overwrite"]) == 0
    torch.testing.assert_close(
        LPIPS.from_pretrained(out.parent).heads[0].weight, LPIPS.from_pretrained(out).heads[0].weight
    )
