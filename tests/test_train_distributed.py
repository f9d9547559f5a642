"""Both stages through the real launcher: 2 CPU processes (gloo) via `accelerate launch` with a generated config.

- exact resume: N updates in one go == k updates, then `--resume_from_checkpoint latest` (checkpoint-k), then N-k,
  in parameters, optimizer state, EMA, discriminator, training state and logged values (mid-epoch, with gradient
  accumulation, an epoch end that closes an accumulation early, random crops/flips, the GAN active, class dropout);
- both ranks hold identical weights and codebooks, and the logged codebook usage/perplexity are those of the global
  counts (the sum of what each rank saw), not one rank's;
- one process with the same global batch follows the same trajectory, for both stages: logged values to 2e-6
  relative, weights to 2e-5 absolute (attention key biases, whose true gradient is 0, to one learning-rate step).
"""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from train_utils import (
    accelerate_config,
    extract_tiny_codes,
    launch,
    make_imagefolder,
    read_metrics,
    run_in_process,
    save_tiny_tokenizer,
    tiny_prior_args,
    tiny_tokenizer_args,
)

from glotok_hf import GloTokModel
from glotok_hf.evaluation import codebook_perplexity, codebook_usage

ENTRY = Path(__file__).resolve().parent / "train_launch_entry.py"
N_STEPS, K_STEPS = 6, 3


def run_args(data: Path, out: Path, **overrides) -> list[str]:
    values = dict(
        max_train_steps=N_STEPS, checkpointing_steps=K_STEPS, gradient_accumulation_steps=2, use_ema=True,
        ema_decay=0.9, center_crop=False, usage_window=64, validation_steps=K_STEPS,
    )  # fmt: skip
    return tiny_tokenizer_args(data, out, **{**values, **overrides})


def load_checkpoint_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint folder, keyed by file and name (safetensors weights, optimizer/scheduler/EMA)."""
    tensors = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        if path.suffix == ".safetensors":
            tensors.update({f"{rel}:{k}": v for k, v in load_file(path).items()})
        elif path.name.startswith(("optimizer", "scheduler", "training_state")):
            tensors.update(flatten(rel, torch.load(path, weights_only=False)))
        elif path.name == "ema_state.json":
            tensors[rel] = torch.tensor(json.loads(path.read_text())["num_updates"])
    return tensors


def flatten(prefix: str, value) -> dict[str, torch.Tensor]:
    """The tensors and numbers of a nested dict/list, keyed by their path."""
    if isinstance(value, (dict, list, tuple)):
        items = value.items() if isinstance(value, dict) else enumerate(value)
        return {name: t for key, item in items for name, t in flatten(f"{prefix}.{key}", item).items()}
    return {prefix: torch.as_tensor(value)} if isinstance(value, (torch.Tensor, int, float, bool)) else {}


def assert_same_tensors(a: dict, b: dict, atol: float = 0.0):
    assert a.keys() == b.keys()
    for name in a:  # atol=0: bit-identical
        torch.testing.assert_close(a[name], b[name], atol=atol, rtol=0, msg=name)


def launch_full_and_resumed(tmp_path, env, make_args) -> tuple[Path, Path]:
    """Launch N updates in one go on 2 processes, then k + resume + N-k (the resumed run starts from the first
    run's checkpoint-k), and check both end in exactly the same state and logged the same values."""
    config = accelerate_config(tmp_path / "accelerate.json", num_processes=2)
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    launch(config, make_args(full), env, tmp_path / "full.log", ENTRY)
    assert sorted(p.name for p in full.glob("checkpoint-*")) == [f"checkpoint-{K_STEPS}", f"checkpoint-{N_STEPS}"]
    resumed.mkdir()
    (resumed / f"checkpoint-{K_STEPS}").symlink_to(full / f"checkpoint-{K_STEPS}", target_is_directory=True)
    launch(config, [*make_args(resumed), "--resume_from_checkpoint", "latest"], env, tmp_path / "resumed.log", ENTRY)
    state = torch.load(resumed / f"checkpoint-{N_STEPS}" / "training_state.pt", weights_only=True)
    assert state["global_step"] == N_STEPS and state["epoch"] == 3 and state["batch_in_epoch"] == 0

    # Exact resume: every tensor of the final checkpoint (weights, Adam moments, EMA, counters).
    assert_same_tensors(load_checkpoint_tensors(full / f"checkpoint-{N_STEPS}"),
                        load_checkpoint_tensors(resumed / f"checkpoint-{N_STEPS}"))  # fmt: skip
    full_logs = {m["step"]: m for m in read_metrics(full)}
    assert sorted(full_logs) == list(range(1, N_STEPS + 1))
    for m in read_metrics(resumed):
        expected_log = {k: v for k, v in full_logs[m["step"]].items() if k != "images_per_second"}
        assert {k: v for k, v in m.items() if k != "images_per_second"} == expected_log
    return full, resumed


# Tolerances of "2 processes == 1 process with the same global batch", from measurements on a 2-core CPU with margin:
# the logged values agree to 3e-7 (tokenizer) and 8e-8 (prior) relative, the weights to 2.4e-6 (tokenizer) and 6e-8
# (prior) absolute. The exception is the tokenizer's attention key biases (`to_k.bias`, and the middle third of the
# fused `qkv.bias`): softmax ignores them, so their true gradient is 0 and the two runs' gradients are float noise of
# different sums, which Adam (dividing by the root of the squared gradient) turns into steps of up to the learning rate
# (1e-3); they differed by up to 8e-5. They are held to one learning-rate step.
LOG_RTOL, WEIGHT_ATOL, KEY_BIAS_ATOL = 2e-6, 2e-5, 1e-3


def split_key_biases(weights: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """(key biases, everything else), with fused q/k/v biases split into their three parts."""
    keys, rest = {}, {}
    for name, value in weights.items():
        if name.endswith("to_k.bias"):
            keys[name] = value
        elif name.endswith("qkv.bias"):
            q, k, v = value.chunk(3)
            keys[f"{name}[k]"], rest[f"{name}[q]"], rest[f"{name}[v]"] = k, q, v
        else:
            rest[name] = value
    return keys, rest


def assert_single_process_agrees(two_dir: Path, one_dir: Path, two_weights: dict, one_weights: dict, keys) -> None:
    """One process with the same global batch follows the same trajectory: the same logged losses and statistics at
    every step and the same weights, to float precision (see the tolerances above)."""
    for two, one in zip(read_metrics(two_dir), read_metrics(one_dir), strict=True):
        assert two.keys() == one.keys()
        for key in keys:
            if key in two:
                assert two[key] == pytest.approx(one[key], rel=LOG_RTOL, abs=1e-12), (two["step"], key)
    two_keys, two_rest = split_key_biases(two_weights)
    one_keys, one_rest = split_key_biases(one_weights)
    assert_same_tensors(two_rest, one_rest, atol=WEIGHT_ATOL)
    assert_same_tensors(two_keys, one_keys, atol=KEY_BIAS_ATOL)


@pytest.mark.slow
def test_tokenizer_two_processes_resume_exactly_and_agree(tmp_path, subprocess_env):
    data = make_imagefolder(tmp_path / "images", per_class=6, size=20)  # 12 images: 3 batches of 2x2 per epoch
    full, _ = launch_full_and_resumed(tmp_path, subprocess_env, lambda out: run_args(data, out))
    full_logs = {m["step"]: m for m in read_metrics(full)}
    assert "discriminator/loss" in full_logs[N_STEPS] and "discriminator/loss" not in full_logs[2]  # GAN from step 2
    checkpoint = full / f"checkpoint-{N_STEPS}"
    assert {"tokenizer", "tokenizer_ema", "discriminator", "optimizer_1.bin"} <= {p.name for p in checkpoint.iterdir()}

    # Both ranks hold identical weights and codebooks.
    ranks = [torch.load(full / f"rank{r}.pt", weights_only=False) for r in range(2)]
    for role in ("tokenizer", "discriminator"):
        assert_same_tensors(ranks[0][role], ranks[1][role])

    # The logged usage/perplexity are those of the counts of both ranks together.
    final = full_logs[N_STEPS]
    for name, size in (("semantic", 12), ("visual", 16)):
        local = [r["local_counts"][size] for r in ranks]
        global_counts = local[0] + local[1]
        assert final[f"codebook/{name}_usage"] == pytest.approx(codebook_usage(global_counts))
        assert final[f"codebook/{name}_perplexity"] == pytest.approx(codebook_perplexity(global_counts), rel=1e-6)
        assert not torch.equal(local[0], local[1])  # the ranks saw different images

    single = run_in_process(run_args(data, tmp_path / "single", train_batch_size=4))
    one = {k: v.detach() for k, v in single.stage.bare.state_dict().items()}
    keys = ("generator/loss", "discriminator/loss", "codebook/semantic_perplexity", "codebook/visual_usage")
    assert_single_process_agrees(full, tmp_path / "single", ranks[0]["tokenizer"], one, keys)

    # The saved final model is the EMA tokenizer in the remote-code layout and loads back.
    assert {"config.json", "model.safetensors", "modeling_glotok.py", "README.md"} <= {p.name for p in full.iterdir()}
    final_model = GloTokModel.from_pretrained(full)
    ema = load_file(checkpoint / "tokenizer_ema" / "model.safetensors")
    assert all(torch.equal(v, ema[k]) for k, v in final_model.state_dict().items())


@pytest.mark.slow
def test_prior_two_processes_resume_exactly_and_agree(tmp_path, subprocess_env):
    images = make_imagefolder(tmp_path / "images", per_class=6, size=20)
    tokenizer = save_tiny_tokenizer(tmp_path / "tokenizer")
    codes = extract_tiny_codes(tokenizer, images, tmp_path / "codes")

    def make_args(out, **overrides):
        values = dict(max_train_steps=N_STEPS, checkpointing_steps=K_STEPS, validation_steps=K_STEPS,
                      gradient_accumulation_steps=2, use_ema=True, ema_decay=0.9)  # fmt: skip
        return tiny_prior_args(out, tokenizer, codes, **{**values, **overrides})

    full, _ = launch_full_and_resumed(tmp_path, subprocess_env, make_args)
    assert {"prior", "prior_ema", "optimizer.bin"} <= {p.name for p in (full / f"checkpoint-{N_STEPS}").iterdir()}
    ranks = [torch.load(full / f"rank{r}.pt", weights_only=False) for r in range(2)]
    assert_same_tensors(ranks[0]["prior"], ranks[1]["prior"])
    dropped = [m["prior/dropped_classes"] for m in read_metrics(full)]
    assert 0 < sum(dropped) and sum(dropped) < len(dropped)  # class dropout happened, per example

    single = run_in_process(make_args(tmp_path / "single", train_batch_size=4))
    one = {k: v.detach() for k, v in single.stage.bare.state_dict().items()}
    keys = ("prior/loss", "prior/token_accuracy", "prior/dropped_classes")
    assert_single_process_agrees(full, tmp_path / "single", ranks[0]["prior"], one, keys)
