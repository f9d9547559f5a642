"""`--sharding fsdp` (torch FSDP2 applied by the script) on 2 CPU processes through `accelerate launch`, both prior
types and the tokenizer (GAN, adaptive weight and histogram on): the same trajectory as 1 process with the same global
batch, exact resume from a sharded checkpoint, a consolidated final folder that loads with from_pretrained, and the
refusals (accelerate's FSDP launch, an EMA, a checkpoint of the other sharding)."""

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_train_distributed import K_STEPS, N_STEPS, assert_same_tensors, assert_single_process_agrees
from train_utils import (
    accelerate_config,
    extract_tiny_codes,
    launch,
    make_imagefolder,
    read_metrics,
    run_in_process,
    save_tiny_tokenizer,
    tiny_prior_args,
)
from transformers import AutoModelForCausalLM

from glotok_hf.teacher import random_codebook_teacher
from glotok_hf.training import parse_args
from glotok_hf.training.sharding import check_launch

ENTRY = Path(__file__).resolve().parent / "train_launch_entry.py"
KEYS = ("prior/loss", "prior/token_accuracy", "prior/dropped_classes")


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("fsdp_assets")
    images = make_imagefolder(root / "images", per_class=6, size=20)
    tokenizer = save_tiny_tokenizer(root / "tokenizer")
    return {"tokenizer": tokenizer, "codes": extract_tiny_codes(tokenizer, images, root / "codes")}


def make_args(assets, out, **overrides):
    values = dict(max_train_steps=N_STEPS, checkpointing_steps=K_STEPS, validation_steps=K_STEPS,
                  gradient_accumulation_steps=2)  # fmt: skip
    return tiny_prior_args(out, assets["tokenizer"], assets["codes"], **{**values, **overrides})


@pytest.mark.slow
@pytest.mark.parametrize("prior_type", ["interleaved", "factorized"])  # factorized: with activation checkpointing
def test_fsdp_prior_matches_one_process_and_resumes_exactly(assets, tmp_path, subprocess_env, prior_type):
    config = accelerate_config(tmp_path / "accelerate.json", num_processes=2)
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    sharded = dict(sharding="fsdp", prior_type=prior_type, gradient_checkpointing=prior_type == "factorized")
    launch(config, make_args(assets, full, **sharded), subprocess_env, tmp_path / "full.log", ENTRY)
    checkpoint = full / f"checkpoint-{N_STEPS}"
    assert {"prior_sharded", "training_state.pt", "scheduler.bin"} <= {p.name for p in checkpoint.iterdir()}
    assert not (checkpoint / "prior").exists() and not list(checkpoint.glob("optimizer*"))  # shards only
    shards = [p.stat().st_size for p in checkpoint.glob("prior_sharded/*.distcp")]
    assert (checkpoint / "prior_sharded" / ".metadata").is_file() and len(shards) == 2
    assert max(shards) < 0.6 * sum(shards)  # each process holds about half of the weights and Adam states

    # The final folder is a consolidated save_pretrained folder (and the pipeline holds the same prior).
    final = load_file(full / "model.safetensors")
    loaded = AutoModelForCausalLM.from_pretrained(full)
    assert all(torch.equal(v, final[k]) for k, v in loaded.state_dict().items() if k in final)
    assert (full / "pipeline" / "prior" / "model.safetensors").is_file()

    # 2 sharded processes == 1 process with the same global batch, to the DDP test's tolerances.
    single = run_in_process(make_args(assets, tmp_path / "single", train_batch_size=4, prior_type=prior_type))
    one = {k: v.detach() for k, v in single.stage.bare.state_dict().items()}
    assert_single_process_agrees(full, tmp_path / "single", final, {k: one[k] for k in final}, KEYS)

    # Exact resume from the sharded checkpoint-k: the same final weights and logged values, bit for bit.
    resumed.mkdir()
    (resumed / f"checkpoint-{K_STEPS}").symlink_to(full / f"checkpoint-{K_STEPS}", target_is_directory=True)
    argv = [*make_args(assets, resumed, **sharded), "--resume_from_checkpoint", "latest"]
    launch(config, argv, subprocess_env, tmp_path / "resumed.log", ENTRY)
    assert_same_tensors(final, load_file(resumed / "model.safetensors"))
    drop = ("images_per_second",)
    assert [{k: v for k, v in m.items() if k not in drop} for m in read_metrics(resumed)] == [
        {k: v for k, v in m.items() if k not in drop} for m in read_metrics(full) if m["step"] > K_STEPS
    ]

    # A DDP run refuses the sharded checkpoint with the flag to use.
    with pytest.raises(ValueError, match="--sharding fsdp"):
        run_in_process([*make_args(assets, resumed), "--resume_from_checkpoint", str(checkpoint)])


def test_accelerate_fsdp_launch_and_unsupported_options_are_refused(monkeypatch, tmp_path):
    monkeypatch.setitem(os.environ, "ACCELERATE_USE_FSDP", "true")
    with pytest.raises(ValueError, match=r"accelerate launch --multi_gpu --num_processes N .*--sharding fsdp"):
        check_launch("fsdp", 2)
    monkeypatch.delitem(os.environ, "ACCELERATE_USE_FSDP")
    with pytest.raises(ValueError, match="launch N >= 2 of them"):
        check_launch("fsdp", 1)
    with pytest.raises(ValueError, match="--use_ema"):
        parse_args(["--stage", "prior", "--codes_dir", "x", "--output_dir", str(tmp_path), "--sharding", "fsdp",
                    "--use_ema"])  # fmt: skip


@pytest.mark.slow
def test_fsdp_tokenizer_matches_one_process_and_resumes_exactly(tmp_path, subprocess_env):
    from test_train_distributed import run_args

    data = make_imagefolder(tmp_path / "images", per_class=6, size=20)
    config = accelerate_config(tmp_path / "accelerate.json", num_processes=2)
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    teacher = random_codebook_teacher(size=12, dim=4, seed=1).save(tmp_path / "teacher.safetensors")
    common = dict(use_ema=False, validation_steps=100, histogram_weight=0.01, teacher_histogram=str(teacher))
    two = dict(common, sharding="fsdp")  # no validation grids mid-run when sharded: none in either run
    launch(config, run_args(data, full, **two), subprocess_env, tmp_path / "full.log", ENTRY)
    checkpoint = full / f"checkpoint-{N_STEPS}"
    assert {"tokenizer_sharded", "discriminator", "optimizer.bin"} <= {p.name for p in checkpoint.iterdir()}
    final = load_file(full / "model.safetensors")

    single = run_in_process(run_args(data, tmp_path / "single", train_batch_size=4, **common))
    one = {k: v.detach() for k, v in single.stage.bare.state_dict().items()}
    keys = ("generator/loss", "generator/histogram_loss", "discriminator/loss", "codebook/semantic_usage")
    assert_single_process_agrees(full, tmp_path / "single", final, {k: one[k] for k in final}, keys)

    resumed.mkdir()
    (resumed / f"checkpoint-{K_STEPS}").symlink_to(full / f"checkpoint-{K_STEPS}", target_is_directory=True)
    argv = [*run_args(data, resumed, **two), "--resume_from_checkpoint", "latest"]
    launch(config, argv, subprocess_env, tmp_path / "resumed.log", ENTRY)
    assert_same_tensors(final, load_file(resumed / "model.safetensors"))


@pytest.mark.slow
def test_an_accelerate_fsdp_config_is_refused_with_the_launch_to_use(assets, tmp_path, subprocess_env):
    # On CPU accelerate would bring this config up as MULTI_CPU with unsharded DDP parameters, silently.
    config = accelerate_config(tmp_path / "accelerate.json", num_processes=2)
    fsdp = {**json.loads(config.read_text()), "distributed_type": "FSDP",
            "fsdp_config": {"fsdp_version": 2, "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP"}}  # fmt: skip
    config.write_text(json.dumps(fsdp))
    with pytest.raises(RuntimeError, match=r"without --use_fsdp or an FSDP accelerate config"):
        launch(config, make_args(assets, tmp_path / "out", sharding="fsdp"), subprocess_env, tmp_path / "log", ENTRY)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo tampered",))


def test_sharded_metadata_is_unpickled_with_an_allow_list(tmp_path):
    import pickle

    import torch.distributed.checkpoint as dcp

    from glotok_hf.training.checkpointing import STATE_FILE, checkpoint_damage
    from glotok_hf.training.sharding import SafeReader

    checkpoint = tmp_path / "checkpoint-1"
    dcp.save({"w": torch.arange(4.0)}, checkpoint_id=checkpoint / "prior_sharded")  # one process: no process group
    torch.save({"global_step": 1}, checkpoint / STATE_FILE)
    state = {"w": torch.zeros(4)}
    dcp.load(state, storage_reader=SafeReader(checkpoint / "prior_sharded"))
    assert torch.equal(state["w"], torch.arange(4.0)) and checkpoint_damage(checkpoint) is None
    (checkpoint / "prior_sharded" / ".metadata").write_bytes(pickle.dumps(_RunsCode()))
    assert "unsafe to unpickle (posix.system is not part" in checkpoint_damage(checkpoint)
    with pytest.raises(BaseException) as raised:  # DCP wraps the error of each rank in a BaseException
        dcp.load(state, storage_reader=SafeReader(checkpoint / "prior_sharded"))
    assert "posix.system is not part of a distributed checkpoint's metadata" in str(raised.getrepr())
