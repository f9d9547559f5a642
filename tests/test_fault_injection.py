"""`training/fault_injection.py`, scaled down: two `kill -9`s through `accelerate launch` (the tokenizer inside a
checkpoint save, the prior between updates), each followed by `--resume_from_checkpoint latest`. The full run (12
trials, both stages, 1 and 2 processes, compared with uninterrupted runs) is the script itself."""

import json
import time

import pytest
from train_utils import TRAINING_DIR, load_script

from glotok_hf.training import checkpointing

fault_injection = load_script(TRAINING_DIR / "fault_injection.py")


@pytest.mark.slow
def test_killed_runs_resume_from_the_newest_complete_checkpoint_and_lose_nothing(tmp_path):
    setup = fault_injection.prepare(tmp_path, max_train_steps=8, processes=(1,))
    plan = [("tokenizer", "save", 1), ("prior", "step", 1)]
    summary = fault_injection.run_trials(setup, plan=plan, seed=3, compare=False)
    assert (summary["trials"], summary["passed"]) == (2, 2), json.dumps(summary, indent=2)

    save_kill, step_kill = summary["results"]
    for result in summary["results"]:
        assert result["resumed_from"] == (max(result["complete_at_kill"]) if result["complete_at_kill"] else None)
        assert result["complete_after_resume"][-1] == 8
        assert all(result["checks"].values()) and "final_weights_equal_uninterrupted_run" not in result["checks"]
    # The save kill landed inside the save it aimed at: that checkpoint was left as a .tmp folder, never listed.
    step = save_kill["killed"]["during_save_of_step"]
    partial = f".tmp-checkpoint-{step}"
    assert partial in save_kill["killed"]["leftovers"] and step not in save_kill["complete_at_kill"]
    assert step_kill["killed"]["last_logged_step"] >= step_kill["killed"]["after_logged_step"]


def test_the_save_pause_is_installed_by_the_script_only(monkeypatch, tmp_path):
    # Production code has no pause: no sleep, no environment switch in the checkpointing module.
    source = open(checkpointing.__file__).read()
    assert "sleep" not in source and "environ" not in source
    monkeypatch.setattr(checkpointing.CheckpointHooks, "save_hook", checkpointing.CheckpointHooks.save_hook)
    monkeypatch.setattr(checkpointing, "_fsync_tree", checkpointing._fsync_tree)
    monkeypatch.setattr(checkpointing, "save_sharded", checkpointing.save_sharded)
    slept = []
    monkeypatch.setattr(time, "sleep", slept.append)
    fault_injection.install_save_pause(0.25)

    class Main:
        is_main_process = True

    hooks = checkpointing.CheckpointHooks.__new__(checkpointing.CheckpointHooks)
    hooks.accelerator, hooks.roles, hooks.emas, hooks.unwrap = Main(), {}, {}, lambda m: m
    hooks.state = checkpointing.TrainingState()
    hooks.save_hook([], [], str(tmp_path))  # the model folders are written: pause
    checkpointing._fsync_tree(tmp_path)  # everything is written, not yet renamed: pause
    assert slept == [0.25, 0.25]


def test_trial_plan_covers_both_stages_and_phases():
    plan = fault_injection.trial_plan(12, two_process_trials=2)
    pairs = {(stage, phase) for stage, phase, _ in plan}
    assert pairs == {(s, p) for s in ("tokenizer", "prior") for p in ("step", "save")}
    assert [n for *_, n in plan].count(2) == 2 and plan[-1][2] == 2


@pytest.mark.slow
def test_a_kill_during_a_sharded_save_leaves_the_previous_checkpoint_usable(tmp_path):
    setup = fault_injection.prepare(tmp_path, max_train_steps=6, processes=(2,))
    summary = fault_injection.run_trials(setup, plan=[("prior", "save", 2, "fsdp")], seed=1)
    assert summary["passed"] == 1, json.dumps(summary, indent=2)
    (result,) = summary["results"]
    assert result["sharding"] == "fsdp" and all(result["checks"].values())
    assert result["checks"]["final_weights_equal_uninterrupted_run"]  # the consolidated final model, bit for bit
