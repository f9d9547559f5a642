"""GloTokDiscriminator: the taming/LlamaGen PatchGAN layout, output shapes, norm options, safetensors save/load, bad
input."""

import doctest

import pytest
import torch
from losses_utils import tiny_discriminator, tiny_discriminator_config
from transformers import AutoConfig, AutoModel

import glotok_hf.discriminator
from glotok_hf.discriminator import GloTokDiscriminator, GloTokDiscriminatorConfig


def test_default_is_the_taming_patchgan():
    config = GloTokDiscriminatorConfig()
    assert (config.in_channels, config.base_channels, config.num_layers, config.norm_type) == (3, 64, 3, "batch")
    torch.manual_seed(0)
    discriminator = GloTokDiscriminator(config)
    assert sum(p.numel() for p in discriminator.parameters()) == 2_765_633  # taming's NLayerDiscriminator(3, 64, 3)
    convs = [m for m in discriminator.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.stride[0]) for c in convs] == [
        (3, 64, 2), (64, 128, 2), (128, 256, 2), (256, 512, 1), (512, 1, 1)
    ]  # fmt: skip
    assert all(c.kernel_size == (4, 4) and c.padding == (1, 1) for c in convs)
    assert config.channels == [64, 128, 256, 512] and config.min_image_size == 24
    with torch.no_grad():
        assert discriminator.eval()(torch.zeros(1, 3, 256, 256)).shape == (1, 1, 30, 30)  # 30x30 patches at 256


@pytest.mark.parametrize("norm_type", ["batch", "group", "none"])
@pytest.mark.parametrize("num_layers, size", [(1, 6), (2, 16), (2, 21), (3, 24)])
def test_output_shape_matches_the_documented_logit_size(norm_type, num_layers, size):
    discriminator = tiny_discriminator(num_layers=num_layers, norm_type=norm_type).eval()
    out = discriminator(torch.zeros(2, 3, size, size + 8))
    config = discriminator.config
    side = size // 2**config.num_layers - 2  # the documented logit side
    assert out.shape == (2, 1, side, (size + 8) // 2**config.num_layers - 2)
    norms = [
        type(m).__name__ for m in discriminator.modules() if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.GroupNorm))
    ]
    assert norms == ({"batch": ["BatchNorm2d"], "group": ["GroupNorm"], "none": []}[norm_type] * num_layers)


def test_init_is_normal_002():
    torch.manual_seed(0)
    discriminator = GloTokDiscriminator(GloTokDiscriminatorConfig(base_channels=32))
    weight = discriminator.layers[2].weight  # 32 -> 64 channels, 32 * 16 * 64 values
    assert abs(weight.std().item() - 0.02) < 0.002 and abs(weight.mean().item()) < 0.002
    norm = discriminator.layers[3]
    assert abs(norm.weight.mean().item() - 1.0) < 0.01 and norm.bias.abs().sum() == 0


def test_group_norm_makes_logits_independent_of_the_batch(images):
    """What the distributed-equivalence test needs: with group norm a sample's logits do not depend on the other
    samples in its batch (so 1 or 2 processes agree); training-mode batch norm does."""
    group, batch = tiny_discriminator(norm_type="group"), tiny_discriminator(norm_type="batch")
    torch.testing.assert_close(group(images[:1]), group(images)[:1])
    assert not torch.allclose(batch(images[:1]), batch(images)[:1])


@pytest.mark.parametrize("norm_type", ["batch", "group"])
def test_save_pretrained_round_trip_is_safetensors(tmp_path, images, norm_type):
    discriminator = tiny_discriminator(norm_type=norm_type)
    discriminator.train()(images)  # moves batch-norm running statistics away from their init
    discriminator.eval()
    discriminator.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and not list(tmp_path.glob("*.bin"))
    reloaded = GloTokDiscriminator.from_pretrained(tmp_path).eval()
    fields = ("in_channels", "base_channels", "num_layers", "norm_type", "norm_num_groups", "leaky_relu_slope")
    assert all(getattr(reloaded.config, f) == getattr(discriminator.config, f) for f in fields)
    for key, value in discriminator.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[key], value, rtol=0, atol=0, msg=key)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(images), discriminator(images), rtol=0, atol=0)


def test_auto_classes_load_the_discriminator(tmp_path, images):
    AutoConfig.register(GloTokDiscriminatorConfig.model_type, GloTokDiscriminatorConfig, exist_ok=True)
    AutoModel.register(GloTokDiscriminatorConfig, GloTokDiscriminator, exist_ok=True)
    discriminator = tiny_discriminator().eval()
    discriminator.save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), GloTokDiscriminatorConfig)
    reloaded = AutoModel.from_pretrained(tmp_path)
    assert isinstance(reloaded, GloTokDiscriminator)
    with torch.no_grad():
        torch.testing.assert_close(reloaded.eval()(images), discriminator(images))


def test_bf16_weights_accept_fp32_images(images):
    discriminator = tiny_discriminator().to(torch.bfloat16)
    assert discriminator(images).dtype == torch.bfloat16


@pytest.mark.parametrize(
    "overrides, error, match",
    [
        ({"norm_type": "layer"}, ValueError, "norm_type"),
        ({"num_layers": 0}, ValueError, "num_layers"),
        ({"base_channels": 8.0}, TypeError, "base_channels"),
        ({"norm_num_groups": 3}, ValueError, "must divide"),
        ({"leaky_relu_slope": 1.5}, ValueError, "leaky_relu_slope"),
    ],
)
def test_bad_config(overrides, error, match):
    with pytest.raises(error, match=match):
        tiny_discriminator_config(**overrides)


def test_docstring_example_runs():
    result = doctest.testmod(glotok_hf.discriminator, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
