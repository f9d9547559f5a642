"""Checkpoint bookkeeping without training: `latest` only ever names a complete checkpoint, pruning never touches the
checkpoint just written or anything incomplete, leftovers of interrupted saves are removed, the data position survives
a change of global batch, and the EMA's warm-up and save/load round trip."""

import logging

import pytest
import torch

from glotok_hf.training.checkpointing import (
    STATE_FILE,
    TrainingState,
    list_checkpoints,
    prune_checkpoints,
    remove_partial_checkpoints,
    resolve_resume_checkpoint,
)
from glotok_hf.training.ema import EMA


def make_checkpoint(root, name, complete=True):
    folder = root / name
    folder.mkdir(parents=True)
    torch.save({"state": {}}, folder / "optimizer.bin")
    if complete:
        torch.save({"global_step": 1}, folder / STATE_FILE)
    return folder


def test_latest_is_the_newest_complete_checkpoint(tmp_path):
    assert resolve_resume_checkpoint(tmp_path, "latest") is None
    make_checkpoint(tmp_path, "checkpoint-2")
    make_checkpoint(tmp_path, "checkpoint-10")
    make_checkpoint(tmp_path, "checkpoint-12", complete=False)  # e.g. written by hand, state missing
    make_checkpoint(tmp_path, ".tmp-checkpoint-14")  # a save that was killed before its rename
    make_checkpoint(tmp_path, "checkpoint-final")
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-10"]
    assert resolve_resume_checkpoint(tmp_path, "latest").name == "checkpoint-10"
    assert resolve_resume_checkpoint(tmp_path, "checkpoint-2") == tmp_path / "checkpoint-2"
    assert resolve_resume_checkpoint(tmp_path, None) is None
    with pytest.raises(FileNotFoundError, match="not a checkpoint folder"):
        resolve_resume_checkpoint(tmp_path, "checkpoint-99")
    with pytest.raises(ValueError, match="not a complete checkpoint"):
        resolve_resume_checkpoint(tmp_path, str(tmp_path / "checkpoint-12"))


def test_latest_skips_a_damaged_newest_checkpoint_loudly_and_a_named_one_points_to_the_intact(tmp_path, caplog):
    make_checkpoint(tmp_path, "checkpoint-2")
    (make_checkpoint(tmp_path, "checkpoint-4") / "optimizer.bin").write_bytes(b"torn")
    with caplog.at_level(logging.WARNING, logger="glotok_train"):
        assert resolve_resume_checkpoint(tmp_path, "latest") == tmp_path / "checkpoint-2"
    assert "skips the damaged checkpoint-4 (Checkpoint file" in caplog.text and "optimizer.bin" in caplog.text
    with pytest.raises(ValueError, match=r"optimizer.bin' is truncated or corrupted .* Resume from the intact "
                       r"checkpoint-2 instead: --resume_from_checkpoint \S*checkpoint-2\."):  # fmt: skip
        resolve_resume_checkpoint(tmp_path, "checkpoint-4")
    (tmp_path / "checkpoint-2" / STATE_FILE).write_bytes(b"torn")
    with pytest.raises(ValueError, match=r"is damaged: checkpoint-4 .*; checkpoint-2 .*Pass --overwrite_output_dir"):
        resolve_resume_checkpoint(tmp_path, "latest")
    with pytest.raises(ValueError, match="No intact checkpoint is left: restore one, or pass --overwrite_output_dir"):
        resolve_resume_checkpoint(tmp_path, "checkpoint-4")


def test_latest_refuses_to_restart_next_to_checkpoints_without_state(tmp_path):
    make_checkpoint(tmp_path, "checkpoint-2500", complete=False)  # e.g. from another version of the script
    with pytest.raises(
        ValueError, match=r"is damaged: checkpoint-2500 \(.*not a complete checkpoint .*training_state"
    ):
        resolve_resume_checkpoint(tmp_path, "latest")


def test_pruning_keeps_the_new_checkpoint_and_ignores_incomplete_ones(tmp_path):
    for step in (2, 4, 6):
        make_checkpoint(tmp_path, f"checkpoint-{step}")
    partial = make_checkpoint(tmp_path, ".tmp-checkpoint-8")
    incomplete = make_checkpoint(tmp_path, "checkpoint-1", complete=False)
    new = make_checkpoint(tmp_path, "checkpoint-3")  # just written by a run resumed from checkpoint-2
    removed = prune_checkpoints(tmp_path, total_limit=2, keep=new)
    assert [p.name for p in removed] == ["checkpoint-2", "checkpoint-4"]
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-3", "checkpoint-6"]
    assert partial.exists() and incomplete.exists()
    assert not list(tmp_path.glob(".trash-*"))
    assert prune_checkpoints(tmp_path, total_limit=None, keep=new) == []
    assert prune_checkpoints(tmp_path, total_limit=1, keep=new) == [tmp_path / "checkpoint-6"]


def test_leftovers_of_interrupted_saves_are_removed(tmp_path):
    make_checkpoint(tmp_path, ".tmp-checkpoint-8")
    make_checkpoint(tmp_path, ".trash-checkpoint-2")
    make_checkpoint(tmp_path, "checkpoint-4")
    assert sorted(p.name for p in remove_partial_checkpoints(tmp_path)) == [".tmp-checkpoint-8", ".trash-checkpoint-2"]
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-4"]


def test_training_state_round_trip_and_batch_size_changes():
    state = TrainingState(global_step=7, epoch=2, batch_in_epoch=3, examples_per_batch=8, extra={"a": 1})
    restored = TrainingState()
    restored.load_state_dict(state.state_dict())
    assert restored == state
    with pytest.raises(ValueError, match="Unknown TrainingState field"):
        restored.load_state_dict({"nope": 1})
    restored.reconcile_batch_size(8)
    assert restored.batch_in_epoch == 3
    restored.reconcile_batch_size(4)  # 24 examples consumed = 6 batches of 4 (e.g. 2 processes -> 1)
    assert restored.batch_in_epoch == 6 and restored.examples_per_batch == 4
    with pytest.raises(ValueError, match="after 24 examples of epoch 2"):
        restored.reconcile_batch_size(16)


def test_ema_warm_up_and_save_load(tmp_path):
    from train_utils import save_tiny_tokenizer

    from glotok_hf import GloTokModel

    model = GloTokModel.from_pretrained(save_tiny_tokenizer(tmp_path / "tokenizer"))
    ema = EMA(model, decay=0.9)
    assert ema.decay_at(0) == pytest.approx(0.1) and ema.decay_at(1000) == 0.9
    weight = model.encoder.conv_in.weight
    with torch.no_grad():
        weight.add_(1.0)
    ema.step(model)  # the first update copies
    assert torch.equal(ema.module.encoder.conv_in.weight, weight)
    before = weight.detach().clone()
    with torch.no_grad():
        weight.add_(1.0)
    ema.step(model)  # then decay_at(1) = 2/11
    expected = before + (weight - before) * (1 - 2 / 11)
    torch.testing.assert_close(ema.module.encoder.conv_in.weight, expected)
    ema.save_pretrained(tmp_path / "ema")
    other = EMA(GloTokModel.from_pretrained(tmp_path / "tokenizer"), decay=0.9)

    def load(target, folder):
        target.load_state_dict(GloTokModel.from_pretrained(folder).state_dict())

    other.load_pretrained(tmp_path / "ema", load)
    assert other.num_updates == 2
    assert torch.equal(other.module.encoder.conv_in.weight, ema.module.encoder.conv_in.weight)
    with pytest.raises(FileNotFoundError, match="without --use_ema"):
        other.load_pretrained(tmp_path / "tokenizer", load)
