"""The prior stage with `--prior_type factorized` (GloTokPriorForCausalLM): it trains, checkpoints, publishes a
prior and a pipeline that load with the Auto classes, and (launched on 2 processes) resumes exactly and agrees with
one process, as the interleaved prior does."""

import pytest
import torch
import transformers
from train_utils import (
    prior_assets,
    read_metrics,
    run_in_process,
    tiny_prior_args,
)

from glotok_hf import GloTokPipeline, GloTokPriorForCausalLM


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return prior_assets(tmp_path_factory.mktemp("factorized_assets"), per_class=6)


def test_factorized_prior_trains_and_publishes_a_pipeline(assets, tmp_path):
    out = tmp_path / "prior"
    run = run_in_process(tiny_prior_args(out, assets["tokenizer"], assets["codes"], prior_type="factorized"))
    assert run.state.global_step == 4 and isinstance(run.stage.bare, GloTokPriorForCausalLM)
    final = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert type(final) is GloTokPriorForCausalLM and final.config.codebook_sizes == [16, 12]
    assert final.config.head_layers == 3 and final.config.id2label == {0: "cat", 1: "dog"}
    pipeline = GloTokPipeline.from_pretrained(out / "pipeline")
    assert type(pipeline.prior) is GloTokPriorForCausalLM
    assert (out / "samples.png").is_file() and "GloTokPriorForCausalLM" in (out / "README.md").read_text()
    logs = read_metrics(out)
    assert [m["step"] for m in logs] == [1, 2, 3, 4] and all(0 <= m["prior/token_accuracy"] <= 1 for m in logs)
    first = logs[0]["prior/loss"]
    assert abs(first - torch.tensor([16.0, 12.0]).log().mean().item()) < 0.5  # about uniform over each codebook


@pytest.mark.slow  # two `accelerate launch` runs of 2 processes and one in-process run
def test_factorized_two_processes_resume_exactly_and_agree(assets, tmp_path, subprocess_env):
    from test_train_distributed import (
        K_STEPS,
        N_STEPS,
        assert_same_tensors,
        assert_single_process_agrees,
        launch_full_and_resumed,
    )

    def make_args(out, **overrides):
        values = dict(max_train_steps=N_STEPS, checkpointing_steps=K_STEPS, validation_steps=K_STEPS,
                      gradient_accumulation_steps=2, use_ema=True, ema_decay=0.9, prior_type="factorized")  # fmt: skip
        return tiny_prior_args(out, assets["tokenizer"], assets["codes"], **{**values, **overrides})

    full, _ = launch_full_and_resumed(tmp_path, subprocess_env, make_args)
    ranks = [torch.load(full / f"rank{r}.pt", weights_only=False) for r in range(2)]
    assert_same_tensors(ranks[0]["prior"], ranks[1]["prior"])
    single = run_in_process(make_args(tmp_path / "single", train_batch_size=4))
    one = {k: v.detach() for k, v in single.stage.bare.state_dict().items()}
    keys = ("prior/loss", "prior/token_accuracy", "prior/dropped_classes")
    assert_single_process_agrees(full, tmp_path / "single", ranks[0]["prior"], one, keys)
