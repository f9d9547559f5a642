"""Stage 1 in one process (`train.main` called in-process): checkpoint folders and intermediate checkpoints
(diffusers' test_vqgan pattern), pruning, atomicity against a kill during a save, refusal to overwrite a finished run,
corrupt images skipped and counted, the NaN/inf guard, and the final model card."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from train_utils import make_imagefolder, read_metrics, run_in_process, tiny_tokenizer_args

from glotok_hf import GloTokModel
from glotok_hf.losses import GloTokObjective
from glotok_hf.teacher import random_codebook_teacher
from glotok_hf.training import Stage, TrainingArguments
from glotok_hf.training.checkpointing import list_checkpoints


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return make_imagefolder(tmp_path_factory.mktemp("images"), per_class=4, size=20)  # 8 images


def checkpoint_names(output_dir):
    return [p.name for p in list_checkpoints(output_dir, complete=False)]


def test_checkpoints_validation_and_final_model(images, tmp_path):
    out = tmp_path / "run"
    run = run_in_process(tiny_tokenizer_args(images, out, max_train_steps=4, checkpointing_steps=2, use_ema=True,
                                             report_to="tensorboard"))  # fmt: skip
    assert run.state.global_step == 4
    assert isinstance(run.stage, Stage) and isinstance(run.args, TrainingArguments)  # the loop's typed interfaces
    assert checkpoint_names(out) == ["checkpoint-2", "checkpoint-4"]
    checkpoint = out / "checkpoint-2"
    folders = {"tokenizer", "tokenizer_ema", "discriminator", "training_state.pt", "training_args.json"}
    assert folders <= set(os.listdir(checkpoint))
    assert not list(checkpoint.glob("model*.safetensors"))  # the models live in the save_pretrained folders only
    intermediate = GloTokModel.from_pretrained(checkpoint / "tokenizer")
    final = GloTokModel.from_pretrained(out)
    assert not torch.equal(intermediate.encoder.conv_in.weight, final.encoder.conv_in.weight)
    assert torch.load(checkpoint / "training_state.pt", weights_only=True)["global_step"] == 2
    assert {"modeling_glotok.py", "configuration_glotok.py"} <= {p.name for p in out.iterdir()}  # remote code
    assert (out / "discriminator" / "model.safetensors").is_file()
    assert sorted(p.name for p in (out / "validation").iterdir())[:2] == [
        "reconstructions-00000002.png",
        "reconstructions-00000004.png",
    ]
    grid = Image.open(out / "reconstructions.png")
    assert grid.size == (2 * 16, 2 * 16)  # 2 validation images, originals above reconstructions
    card = (out / "README.md").read_text()
    assert "| steps | 4 |" in card and "codebook/semantic_perplexity" in card and "library_name: transformers" in card

    events = list((out / "logs").rglob("events.out.tfevents.*"))
    assert events and all(p.stat().st_size > 0 for p in events)  # scalars and the validation grids

    logs = read_metrics(out)
    assert [m["step"] for m in logs] == [1, 2, 3, 4]
    assert "validation/psnr" in logs[1] and "validation/psnr" not in logs[0]
    expected = {"generator/loss", "generator/reconstruction_loss", "generator/grad_norm", "lr", "images_per_second",
                "codebook/semantic_usage", "codebook/visual_perplexity", "skipped_images", "nonfinite_steps"}  # fmt: skip
    assert expected <= logs[0].keys()
    assert "discriminator/loss" not in logs[1] and "discriminator/grad_norm" in logs[2]  # disc_start=2


def test_total_limit_prunes_and_latest_resumes_from_the_stored_step(images, tmp_path):
    out = tmp_path / "run"
    run_in_process(tiny_tokenizer_args(images, out, max_train_steps=6, checkpointing_steps=2, checkpoints_total_limit=2,
                                       validation_steps=100))  # fmt: skip
    assert checkpoint_names(out) == ["checkpoint-4", "checkpoint-6"]
    # A folder's name is not trusted for the step: rename checkpoint-6 and resume from it.
    os.rename(out / "checkpoint-6", out / "checkpoint-60")
    run = run_in_process(tiny_tokenizer_args(images, out, max_train_steps=7, checkpointing_steps=2,
                                             checkpoints_total_limit=2, validation_steps=100,
                                             resume_from_checkpoint="latest"))  # fmt: skip
    assert run.state.global_step == 7
    assert checkpoint_names(out) == ["checkpoint-7", "checkpoint-60"]  # pruning keeps the newest, never the new one
    assert [m["step"] for m in read_metrics(out)] == [1, 2, 3, 4, 5, 6, 7]


def test_kill_during_a_save_never_leaves_a_checkpoint_that_latest_would_pick(images, tmp_path, monkeypatch):
    out = tmp_path / "run"
    real_replace, calls = os.replace, []

    def dying_replace(src, dst):
        calls.append(dst)
        if str(dst).endswith("checkpoint-4"):
            raise KeyboardInterrupt("killed during the save of checkpoint-4")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        run_in_process(tiny_tokenizer_args(images, out, max_train_steps=6, checkpointing_steps=2))
    monkeypatch.setattr(os, "replace", real_replace)
    assert checkpoint_names(out) == ["checkpoint-2"] and (out / ".tmp-checkpoint-4").is_dir()

    run = run_in_process(tiny_tokenizer_args(images, out, max_train_steps=6, checkpointing_steps=2,
                                             resume_from_checkpoint="latest"))  # fmt: skip
    assert run.state.global_step == 6
    assert checkpoint_names(out) == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    assert not (out / ".tmp-checkpoint-4").exists()  # the leftover was removed at start-up


def test_refuses_to_overwrite_a_finished_run(images, tmp_path):
    out = tmp_path / "run"
    argv = tiny_tokenizer_args(images, out, max_train_steps=2, checkpointing_steps=2)
    run_in_process(argv)
    before = (out / "model.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="finished run"):
        run_in_process(argv)
    assert (out / "model.safetensors").read_bytes() == before
    (out / "model.safetensors").unlink()
    (out / "config.json").unlink()
    with pytest.raises(FileExistsError, match="--resume_from_checkpoint latest"):
        run_in_process(argv)  # checkpoints of an earlier run left
    run = run_in_process([*argv, "--overwrite_output_dir"])
    assert run.state.global_step == 2 and (out / "model.safetensors").is_file()


def test_any_image_mode_is_read_and_corrupt_files_are_skipped_and_counted(tmp_path):
    root = make_imagefolder(tmp_path / "images", per_class=3, classes=("a", "b"), size=20)
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
    Image.fromarray(rgb[..., 0]).save(root / "a" / "0_gray.png")
    Image.fromarray(np.dstack([rgb, rgb[..., :1]])).save(root / "a" / "0_rgba.png")
    Image.fromarray(rgb).convert("P").save(root / "b" / "1_palette.png")
    Image.fromarray(rgb).convert("CMYK").save(root / "b" / "1_cmyk.jpg")
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(root / "b" / "1_sixteen.png")
    Image.fromarray(np.dstack([rgb[..., 0], rgb[..., 1]])).convert("LA").save(root / "a" / "0_la.png")
    (root / "a" / "0_x_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (root / "b" / "1_x_truncated.jpg").write_bytes((root / "b" / "1_cmyk.jpg").read_bytes()[:200])
    # 14 files, 2 unreadable and not adjacent: one epoch of 7 batches of 2 meets each exactly once.
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="Skipping unreadable image"):
        run = run_in_process(tiny_tokenizer_args(root, out, max_train_steps=7, checkpointing_steps=100,
                                                 validation_steps=100))  # fmt: skip
    assert run.state.skipped_images == 2
    assert read_metrics(out)[-1]["skipped_images"] == 2
    assert "| skipped unreadable images | 2 |" in (out / "README.md").read_text()


def test_nonfinite_guard_skips_counts_and_stops(images, tmp_path, monkeypatch):
    real = GloTokObjective.generator_loss
    poisoned_steps = {2, 4, 5}

    def poisoned(self, *args, global_step, **kwargs):
        terms = real(self, *args, global_step=global_step, **kwargs)
        if global_step in poisoned_steps:  # 0-based: the 3rd, 5th and 6th updates
            terms["loss"] = terms["loss"] * float("nan")
        return terms

    monkeypatch.setattr(GloTokObjective, "generator_loss", poisoned)
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match=r"2 consecutive updates had NaN/inf.*3 skipped in total"):
        run_in_process(tiny_tokenizer_args(images, out, max_train_steps=8, checkpointing_steps=1,
                                           max_nonfinite_steps=2, disc_start=100))  # fmt: skip
    logs = read_metrics(out)
    assert [m["nonfinite_steps"] for m in logs] == [0, 0, 1, 1, 2, 3]  # the run stopped after logging step 6
    assert np.isnan(logs[2]["generator/grad_norm"]) and np.isnan(logs[2]["generator/loss"])
    # A skipped update leaves the weights untouched; a finite one changes them.
    weights = {s: GloTokModel.from_pretrained(out / f"checkpoint-{s}" / "tokenizer").state_dict() for s in (2, 3, 4)}
    assert all(torch.equal(weights[2][k], weights[3][k]) for k in weights[2])
    assert not all(torch.equal(weights[3][k], weights[4][k]) for k in weights[3])
    assert not (out / "model.safetensors").exists()  # no final model from a run that stopped
    state = torch.load(out / "checkpoint-5" / "training_state.pt", weights_only=True)
    assert state["nonfinite_steps"] == 2 and state["consecutive_nonfinite_steps"] == 1


def test_saved_arguments_hold_no_token(images, tmp_path):
    out = tmp_path / "run"
    run_in_process([*tiny_tokenizer_args(images, out, max_train_steps=1), "--hub_token", "hf_secret_do_not_write"])
    for path in out.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".md", ".jsonl", ".yml", ".yaml"):
            assert "hf_secret_do_not_write" not in path.read_text(), path
    assert "hub_token" not in json.loads((out / "training_args.json").read_text())


def test_teacher_histogram_turns_the_histogram_loss_on_and_is_recorded(images, tmp_path):
    teacher = random_codebook_teacher(size=12, dim=4, seed=1).save(tmp_path / "teacher.safetensors")
    out = tmp_path / "run"
    run_in_process(tiny_tokenizer_args(images, out, max_train_steps=2, histogram_weight=0.01,
                                       teacher_histogram=str(teacher)))  # fmt: skip
    assert all(m["generator/histogram_loss"] > 0 for m in read_metrics(out))
    card = (out / "README.md").read_text()
    assert (
        "Teacher histogram of the histogram relation loss" in card
        and '"source": "random"' in card
        and str(teacher) in card
    )
    with pytest.raises(ValueError, match="has 40 bins but the training configuration uses num_bins=20"):
        run_in_process(tiny_tokenizer_args(images, tmp_path / "other", histogram_weight=0.01, histogram_num_bins=20,
                                           teacher_histogram=str(teacher)))  # fmt: skip
    with pytest.raises(ValueError, match="alpha"):
        run_in_process(tiny_tokenizer_args(images, tmp_path / "other", histogram_weight=0.01, histogram_alpha=50.0,
                                           teacher_histogram=str(teacher)))  # fmt: skip


def test_bf16_autocast_runs_and_saves_fp32_weights(images, tmp_path):
    out = tmp_path / "run"
    run_in_process(tiny_tokenizer_args(images, out, max_train_steps=2, disc_start=1, mixed_precision="bf16",
                                       use_ema=True))  # fmt: skip
    logs = read_metrics(out)
    assert all(np.isfinite(m["generator/loss"]) for m in logs) and "discriminator/loss" in logs[-1]
    assert GloTokModel.from_pretrained(out).encoder.conv_in.weight.dtype == torch.float32


def test_dataloader_workers_do_not_change_the_data(images, tmp_path):
    common = dict(max_train_steps=3, checkpointing_steps=100, validation_steps=100, center_crop=False)
    run_in_process(tiny_tokenizer_args(images, tmp_path / "main", **common))
    run_in_process(tiny_tokenizer_args(images, tmp_path / "workers", dataloader_num_workers=2, **common))
    for a, b in zip(read_metrics(tmp_path / "main"), read_metrics(tmp_path / "workers"), strict=True):
        assert a["generator/loss"] == b["generator/loss"]


@pytest.mark.parametrize("engine", ["FSDP", "DEEPSPEED", "MEGATRON_LM"])
def test_sharded_engines_are_refused_with_what_to_use_instead(engine):
    from accelerate.utils import DistributedType

    from glotok_hf.training.runtime import check_distributed_type

    with pytest.raises(ValueError, match=r"does not support .*multi-GPU' \(DDP"):
        check_distributed_type(DistributedType[engine])
    for supported in ("NO", "MULTI_GPU", "MULTI_CPU"):
        check_distributed_type(DistributedType[supported])  # DDP and single process pass
