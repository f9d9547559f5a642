"""The CUDA paths read against torch 2.13 / accelerate 1.16 (issue 17): fp16 loss scaling with two optimizers, host
synchronisations per training step, TF32 and autocast kept out of the fp32 math, the histogram's scatter, the uint8
input pipeline and the small device fixes. Each has a CPU test; the `cuda` tests (run by benchmarks/gpu_check.sh with
`pytest -k cuda`) repeat what needs a GPU."""

import os
from unittest import mock

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState, PartialState
from train_utils import make_imagefolder, tiny_tokenizer_args

from glotok_hf.training.arguments import parse_args

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return make_imagefolder(tmp_path_factory.mktemp("images"), per_class=2, size=16)


@pytest.fixture
def fresh_accelerate():
    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()


def tokenizer_stage(images, tmp_path, accelerator, **overrides):
    from glotok_hf.training.stage_tokenizer import TokenizerStage

    args = parse_args(tiny_tokenizer_args(images, tmp_path / "run", disc_start=0, max_grad_norm=0, **overrides))
    return TokenizerStage(args, accelerator)


# ------------------------------------------------------------------------------------------- 1. fp16 loss scaling
def record_step_gradients(optimizer) -> list:
    """Gradients the bare optimizer sees when it really steps (a step pre-hook fires inside `Optimizer.step`)."""
    seen = []
    bare = getattr(optimizer, "optimizer", optimizer)
    bare.register_step_pre_hook(lambda opt, *_: seen.append([p.grad.clone() for g in opt.param_groups
                                                             for p in g["params"] if p.grad is not None]))  # fmt: skip
    return seen


def check_fp16_gradients_unscaled_once(stage) -> None:
    """After one fp16 step with both models active, each optimizer steps on its gradients divided by the loss scale
    exactly once, and the scale is updated once per update (growth_interval 1: doubled once, not twice)."""
    scaler = stage.accelerator.scaler
    batch = next(iter(stage.loader))
    stage.forward_backward(batch, global_step=0)
    scale = scaler.get_scale()
    expected = {
        name: [p.grad.clone() / scale for p in model.parameters() if p.grad is not None]
        for name, model in (("generator", stage.model), ("discriminator", stage.discriminator))
    }
    seen = {"generator": record_step_gradients(stage.optimizer),
            "discriminator": record_step_gradients(stage.d_optimizer)}  # fmt: skip
    updates = stage.update()
    assert all(ok for _, ok in updates.values())
    for name in expected:
        assert len(seen[name]) == 1, f"the {name} optimizer did not step once"
        for got, want in zip(seen[name][0], expected[name], strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-12, msg=lambda m, n=name: f"{n}: {m}")
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in expected["discriminator"]]))
    assert updates["discriminator"][0] == pytest.approx(norm.item(), rel=1e-4)  # the logged norm is the unscaled one
    assert scaler.get_scale() == 2 * scale


def test_fp16_discriminator_gradients_unscaled_once(images, tmp_path, fresh_accelerate):
    # accelerate has no fp16 scaler on CPU: give it torch's CPU GradScaler, as it builds a CUDA one on a GPU.
    with mock.patch.dict(os.environ, ACCELERATE_USE_CPU="true"):
        accelerator = Accelerator(cpu=True, mixed_precision="fp16")
    accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8, growth_interval=1)
    accelerator.native_amp = True
    check_fp16_gradients_unscaled_once(tokenizer_stage(images, tmp_path, accelerator))


@requires_cuda
def test_fp16_discriminator_gradients_unscaled_once_cuda(images, tmp_path, fresh_accelerate):
    accelerator = Accelerator(mixed_precision="fp16")
    accelerator.scaler._init_growth_tracker, accelerator.scaler._growth_interval = 0, 1
    check_fp16_gradients_unscaled_once(tokenizer_stage(images, tmp_path, accelerator, mixed_precision="fp16"))
