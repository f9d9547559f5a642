"""The CUDA paths read against torch 2.13 / accelerate 1.16 (issue 17): fp16 loss scaling with two optimizers, host
synchronisations per training step, TF32 and autocast kept out of the fp32 math, the histogram's scatter, the uint8
input pipeline and the small device fixes. Each has a CPU test; the `cuda` tests (run by benchmarks/gpu_check.sh with
`pytest -k cuda`) repeat what needs a GPU."""

import os
import sys
from unittest import mock

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState, PartialState
from torch.utils._python_dispatch import TorchDispatchMode
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
    accelerator.scaler = torch.amp.GradScaler("cuda", init_scale=2.0**8, growth_interval=1)
    check_fp16_gradients_unscaled_once(tokenizer_stage(images, tmp_path, accelerator, mixed_precision="fp16"))


# ------------------------------------------------------------------------------------- 2. host syncs per step
class SyncCounter(TorchDispatchMode):
    """Counts the calls that make a CUDA device wait for the host to read a value: scalar reads (`.item()`,
    `float()`, `bool()`: aten `_local_scalar_dense`), `nonzero`, `bincount`, `unique`, `masked_select`, boolean-mask
    indexing, and `.tolist()` / `.cpu()` / `.numpy()`. On CPU nothing waits, but the same calls are made."""

    OPS = {"_local_scalar_dense", "nonzero", "bincount", "masked_select", "_unique2", "unique_dim", "equal"}

    def __init__(self):
        super().__init__()
        self.counts = {}

    def add(self, name):
        self.counts[name] = self.counts.get(name, 0) + 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name == "_local_scalar_dense" and _called_from("_get_value"):
            pass  # the optimizers' step counters: CPU tensors on a GPU too
        elif name in self.OPS:
            self.add(name)
        elif name in ("index", "index_put", "index_put_") and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] or ())
        ):
            self.add(f"{name}(bool mask)")
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _called_from(function: str) -> bool:
    frame = sys._getframe()
    while frame is not None and frame.f_code.co_name != function:
        frame = frame.f_back
    return frame is not None


class HostCopyCounter(torch.overrides.TorchFunctionMode):
    def __init__(self, counter):
        super().__init__()
        self.counter = counter

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", None) in ("tolist", "cpu", "numpy"):
            self.counter.add(func.__name__)
        return func(*args, **(kwargs or {}))


def count_syncs(fn):
    counter = SyncCounter()
    with counter, HostCopyCounter(counter):
        fn()
    return counter


def training_step(stage, batch, step, log=True):
    """What `loop.run_epoch` does for one update of one micro-batch (`log`: on a logging step)."""
    from glotok_hf.training.checkpointing import TrainingState
    from glotok_hf.training.loop import finish_update, gather_logs

    terms = stage.forward_backward(batch, step)
    state = TrainingState(global_step=step)
    updates = finish_update(stage, state)
    if log:
        sums = {**terms, "skipped_images": batch.get("num_skipped", 0)}
        gather_logs(stage.accelerator, stage, state, updates, sums, 1, len(batch["index"]), 0.0)


def test_host_syncs_per_training_step(images, tmp_path, fresh_accelerate):
    """Between logging steps a tokenizer update (discriminator, histogram loss, EMA active) reads two values back,
    the NaN/inf guard's gradient norms, and a prior update one (12 and 6 before issue 17); a logging step adds the
    one all-reduced read of the logged values and the codebook statistics."""
    from train_utils import extract_tiny_codes, save_tiny_tokenizer, tiny_prior_args

    from glotok_hf.teacher import uniform_teacher
    from glotok_hf.training.stage_prior import PriorStage

    teacher = uniform_teacher().save(tmp_path / "teacher.safetensors")
    with mock.patch.dict(os.environ, ACCELERATE_USE_CPU="true"):
        accelerator = Accelerator(cpu=True)
    stage = tokenizer_stage(images, tmp_path, accelerator, use_ema=True, teacher_histogram=teacher,
                            histogram_weight=0.01)  # fmt: skip
    assert stage.objective.histogram_enabled
    batch = next(iter(stage.loader))
    training_step(stage, batch, 0)
    assert count_syncs(lambda: training_step(stage, batch, 1, log=False)).counts == {"_local_scalar_dense": 2}
    assert count_syncs(lambda: training_step(stage, batch, 2)).total == 2 + 1 + 2 * 3  # usage 1, perplexity 2

    tokenizer = save_tiny_tokenizer(tmp_path / "tokenizer")
    codes = extract_tiny_codes(tokenizer, images, tmp_path / "codes")
    args = parse_args(tiny_prior_args(tmp_path / "prior", tokenizer, codes, use_ema=True, class_dropout_prob=0.5))
    prior = PriorStage(args, accelerator)
    batch = next(iter(prior.loader))
    training_step(prior, batch, 0)
    assert count_syncs(lambda: training_step(prior, batch, 1, log=False)).counts == {"_local_scalar_dense": 1}
    assert count_syncs(lambda: training_step(prior, batch, 2)).counts == {"_local_scalar_dense": 1, "tolist": 1}


# ------------------------------------------------------------------------------------- 3-4. TF32 and autocast
class MatmulRecorder(torch.overrides.TorchFunctionMode):
    """Records, at every matmul-like call, the CUDA fp32 matmul precision in force and the dtypes of the operands."""

    NAMES = {"mm", "matmul", "__matmul__", "addmm", "addmm_", "conv2d"}

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", None) in self.NAMES:
            dtypes = {a.dtype for a in args if isinstance(a, torch.Tensor)}
            self.calls.append((func.__name__, torch.backends.cuda.matmul.fp32_precision, dtypes))
        return func(*args, **(kwargs or {}))


def fp32_code_paths():
    """The quantizer's lookup, the histogram (forward and backward) and the entropy regulariser."""
    from glotok_hf.losses import entropy_loss, soft_cosine_histogram
    from glotok_hf.modeling_glotok import GloTokVectorQuantizer

    torch.manual_seed(0)
    quantizer = GloTokVectorQuantizer(64, 8, l2_norm=True)
    quantizer(torch.randn(2, 8, 4, 4))
    codebook = torch.randn(64, 8, requires_grad=True)
    soft_cosine_histogram(codebook, block_size=512)[3].backward()
    entropy_loss(torch.randn(2, 8, 4, 4), codebook, l2_normalize=True)


@pytest.mark.parametrize("api", ["legacy", "fp32_precision"])
def test_tf32_off_inside_fp32_code_paths(api):
    saved = torch.backends.fp32_precision, torch.backends.cuda.matmul.fp32_precision
    try:
        if api == "legacy":
            torch.backends.cuda.matmul.allow_tf32 = True  # what --allow_tf32 sets
        else:
            torch.backends.fp32_precision = "tf32"
        outside = torch.backends.cuda.matmul.fp32_precision
        recorder = MatmulRecorder()
        with recorder:
            fp32_code_paths()
        assert len(recorder.calls) >= 4 and all(precision == "ieee" for _, precision, _ in recorder.calls)
        assert outside == "tf32" and torch.backends.cuda.matmul.fp32_precision == outside  # restored
        if api == "legacy":
            assert torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.fp32_precision, torch.backends.cuda.matmul.fp32_precision = saved


def test_entropy_logits_and_lpips_heads_in_fp32_under_bf16_autocast():
    from glotok_hf.losses import LPIPS, entropy_loss

    torch.manual_seed(0)
    latents, codebook = torch.randn(2, 8, 4, 4), torch.randn(64, 8)
    reference = entropy_loss(latents, codebook, l2_normalize=True)
    recorder = MatmulRecorder()
    with torch.autocast("cpu", dtype=torch.bfloat16), recorder:
        under_autocast = entropy_loss(latents, codebook, l2_normalize=True)
        LPIPS()(torch.rand(1, 3, 16, 16) * 2 - 1, torch.rand(1, 3, 16, 16) * 2 - 1)
    for name, value in reference.items():
        torch.testing.assert_close(under_autocast[name], value, rtol=1e-5, atol=1e-6)
    heads = [dtypes for name, _, dtypes in recorder.calls if name == "conv2d" and len(dtypes) == 1][-5:]
    assert heads == [{torch.float32}] * 5  # the five LPIPS heads (the VGG trunk runs in bf16)


# ------------------------------------------------------------------------------------------- 5. the histogram
def test_histogram_reads_nothing_back():
    """Forward and backward of the blocked histogram make no call that would wait for a CUDA device."""
    from glotok_hf.losses import soft_cosine_histogram

    codebook = torch.randn(300, 8, requires_grad=True)
    counter = count_syncs(lambda: soft_cosine_histogram(codebook, block_size=4096)[5].backward())
    assert counter.counts == {}


@requires_cuda
def test_histogram_cuda_matches_cpu_fp64_without_syncs_cuda():
    from glotok_hf.losses import soft_cosine_histogram

    torch.manual_seed(0)
    codebook = torch.randn(4096, 8, dtype=torch.float64)
    weights = torch.rand(40, dtype=torch.float64)
    results = {}
    for device, dtype in (("cpu", torch.float64), ("cuda", torch.float32)):
        vectors, device_weights = codebook.to(device, dtype).requires_grad_(True), weights.to(device, dtype)
        torch.cuda.set_sync_debug_mode("error" if device == "cuda" else "default")
        try:
            histogram = soft_cosine_histogram(vectors)
            (histogram * device_weights).sum().backward()
        finally:
            torch.cuda.set_sync_debug_mode("default")
        results[device] = histogram.detach().double().cpu(), vectors.grad.double().cpu()
    for actual, expected in zip(results["cuda"], results["cpu"]):
        torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-9)


# ------------------------------------------------------------------------------------------- 8. the small ones
def test_batchnorm_discriminator_under_ddp_needs_torch_2_13():
    from glotok_hf.training.stage_tokenizer import check_batchnorm_ddp

    with pytest.raises(RuntimeError, match=r"needs torch >= 2.13 \(this is 2.12.1\).*norm_type"):
        check_batchnorm_ddp("batch", 2, "2.12.1")
    check_batchnorm_ddp("batch", 2, "2.13.0+cu128")
    check_batchnorm_ddp("batch", 1, "2.12.1")  # no DDP: no buffer broadcast
    check_batchnorm_ddp("group", 2, "2.12.1")


def test_inception_score_placeholder_follows_the_module_device(monkeypatch):
    """A process without images joins the all-gather with an empty tensor on the metric's device (NCCL needs it)."""
    from glotok_hf.evaluation import fid

    score = fid.InceptionScore(
        torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 10)), splits=1
    )
    score.to("meta")
    seen = []
    monkeypatch.setattr(fid, "_distributed", lambda: True)
    monkeypatch.setattr(score.metric, "compute", lambda: seen.append(score.metric.features[0]) or (1.0, 0.0))
    score.compute()
    assert seen[0].device.type == "meta" and seen[0].shape == (0, score.logits_network.num_features)


def test_prior_stage_encodes_images_under_the_run_autocast(images, tmp_path, fresh_accelerate):
    """Without --codes_dir the frozen tokenizer's trunk runs in the run's bf16; its quantizer stays fp32."""
    from train_utils import save_tiny_tokenizer, tiny_prior_args

    from glotok_hf.training.stage_prior import PriorStage

    tokenizer = save_tiny_tokenizer(tmp_path / "tokenizer")
    args = parse_args(tiny_prior_args(tmp_path / "prior", tokenizer, train_data_dir=str(images)))
    with mock.patch.dict(os.environ, ACCELERATE_USE_CPU="true"):
        stage = PriorStage(args, Accelerator(cpu=True, mixed_precision="bf16"))
    recorder = MatmulRecorder()
    with recorder:
        stage.forward_backward(next(iter(stage.loader)), 0)
    convs = [dtypes for name, _, dtypes in recorder.calls if name == "conv2d"]
    assert sum(torch.bfloat16 in dtypes for dtypes in convs) > len(convs) // 2  # the trunk: bf16 (fp32 before)
    assert {torch.float32} in [dtypes for name, _, dtypes in recorder.calls if name in ("matmul", "__matmul__")]


# ------------------------------------------------------------------------------------------- 7. input pipeline
def test_workers_ship_uint8_converted_on_the_device(images, tmp_path, fresh_accelerate):
    from glotok_hf.data import ImageDataset, ImageTransform, load_image_dataset

    with mock.patch.dict(os.environ, ACCELERATE_USE_CPU="true"):
        stage = tokenizer_stage(images, tmp_path, Accelerator(cpu=True), center_crop=True, random_flip=False)
    batch = next(iter(stage.loader))
    assert batch["pixel_values"].dtype == torch.uint8
    raw = load_image_dataset(train_data_dir=str(images), label_column=None)
    floats = ImageDataset(raw, ImageTransform(16), label_column=None)[int(batch["index"][0])]["pixel_values"]
    torch.testing.assert_close(batch["pixel_values"][0].float() / 127.5 - 1, floats)  # the same pixels
    assert "generator/loss" in stage.forward_backward(batch, 0)


def test_default_dataloader_workers_from_the_cpu_count(images, tmp_path):
    argv = tiny_tokenizer_args(images, tmp_path / "run")
    with mock.patch("torch.cuda.is_available", return_value=False):
        assert parse_args(argv).dataloader_num_workers == 0
    with mock.patch("torch.cuda.is_available", return_value=True), mock.patch("torch.cuda.device_count",
                                                                               return_value=2):  # fmt: skip
        with mock.patch("os.sched_getaffinity", return_value=set(range(12))):
            assert parse_args(argv).dataloader_num_workers == 6
        with mock.patch("os.sched_getaffinity", return_value=set(range(64))):
            assert parse_args(argv).dataloader_num_workers == 8
    assert parse_args([*argv, "--dataloader_num_workers", "0"]).dataloader_num_workers == 0


def test_device_copies_are_non_blocking_exactly_where_loaders_pin_memory(images, tmp_path, fresh_accelerate):
    from glotok_hf.training.runtime import build_accelerator

    with mock.patch.dict(os.environ, ACCELERATE_USE_CPU="true"):
        accelerator = build_accelerator(parse_args(tiny_tokenizer_args(images, tmp_path / "run")))
        stage = tokenizer_stage(images, tmp_path, accelerator, center_crop=True, random_flip=False)
    assert accelerator.non_blocking is stage.loader.pin_memory is torch.cuda.is_available()


# ------------------------------------------------------------------------------------------- 6. evaluation
def test_inception_runs_once_per_batch_for_fid_and_inception_score():
    from eval_utils import FakeTorchScriptInception

    from glotok_hf.evaluation.fid import FrechetDistance, InceptionScore, TorchScriptInceptionFeatures

    network = FakeTorchScriptInception().eval()
    pool = TorchScriptInceptionFeatures(network, "pool")
    fid, score = FrechetDistance(pool), InceptionScore(TorchScriptInceptionFeatures(network, "logits", pool=pool))
    calls = []
    network.register_forward_hook(lambda *_: calls.append(1))
    images = torch.rand(4, 3, 8, 8) * 2 - 1
    fid.update(images, real=False)
    score.update(images)
    assert len(calls) == 1  # the IS reused the pool features of the same images
    two_passes = InceptionScore(TorchScriptInceptionFeatures(network, "logits"))
    two_passes.update(images)
    assert len(calls) == 2
    torch.testing.assert_close(score.metric.features[0], two_passes.metric.features[0], rtol=1e-5, atol=1e-6)


def test_eval_generation_dtype_and_cache_implementation(tmp_path, capsys):
    import json

    from eval_utils import FakeTorchScriptInception, tiny_pipeline

    from glotok_hf.cli import main

    tiny_pipeline(num_classes=3).save_pretrained(tmp_path / "pipeline")
    torch.jit.save(torch.jit.script(FakeTorchScriptInception().eval()), tmp_path / "inception-2015-12-05.pt")
    argv = ["eval", "generation", "--pipeline", str(tmp_path / "pipeline"), "--class-labels", "0", "2",
            "--images-per-class", "2", "--inception", str(tmp_path / "inception-2015-12-05.pt"), "--is-splits", "1",
            "--dtype", "bfloat16", "--cache-implementation", "static"]  # fmt: skip
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dtype"] == "bfloat16" and report["sampling"]["cache_implementation"] == "static"
    assert report["sampling"]["batch_size"] == (256 if torch.cuda.is_available() else 32)
    assert 1.0 <= report["inception_score"] <= 4


def test_logging_steps_average_between_logs(tmp_path):
    """With --logging_steps 3 the values are logged at step 3 (averaged over steps 1-3) and at the last step 4 (a
    checkpoint, the end of the epoch), and the counters still count every update."""
    from train_utils import read_metrics, run_in_process

    images, out = make_imagefolder(tmp_path / "images", per_class=8, size=16), tmp_path / "run"  # 4 updates
    run = run_in_process(tiny_tokenizer_args(images, out, logging_steps=3, max_train_steps=4, checkpointing_steps=4,
                                             validation_steps=4, gradient_accumulation_steps=2))  # fmt: skip
    rows = read_metrics(out)
    assert [row["step"] for row in rows] == [3, 4] and run.state.global_step == 4
    assert (
        run.state.images_seen == 4 * 2 * 2
        and run.state.epoch == 1
        and all(row["images_per_second"] > 0 for row in rows)
    )
    assert {"generator/loss", "generator/grad_norm", "codebook/semantic_usage", "epoch"} <= set(rows[0])
