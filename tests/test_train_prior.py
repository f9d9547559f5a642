"""Stage 2 (the AR prior) in one process: from extracted codes and on the fly from images (same codes, same loss),
checkpoints and an intermediate checkpoint, EMA, validation samples, the model card, per-item class dropout, and the
upload to the fake Hub."""

import os

import huggingface_hub  # noqa: F401  (imported before the fake Hub fixture patches it)
import pytest
import torch
import transformers
from train_utils import (
    prior_assets,
    read_metrics,
    run_in_process,
    tiny_prior_args,
)

from glotok_hf.training import Stage


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return prior_assets(tmp_path_factory.mktemp("prior_assets"), per_class=4)


def test_prior_from_codes_checkpoints_ema_samples_and_card(assets, tmp_path):
    out = tmp_path / "prior"
    run = run_in_process(tiny_prior_args(out, assets["tokenizer"], assets["codes"], use_ema=True, ema_decay=0.5))
    assert run.state.global_step == 4 and isinstance(run.stage, Stage)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert {"prior", "prior_ema", "optimizer.bin", "training_state.pt"} <= set(os.listdir(out / "checkpoint-2"))
    intermediate = transformers.AutoModelForCausalLM.from_pretrained(out / "checkpoint-2" / "prior")
    final = transformers.AutoModelForCausalLM.from_pretrained(out)
    ema = transformers.AutoModelForCausalLM.from_pretrained(out / "checkpoint-4" / "prior_ema")
    raw = transformers.AutoModelForCausalLM.from_pretrained(out / "checkpoint-4" / "prior")
    assert isinstance(final, transformers.LlamaForCausalLM)
    assert all(torch.equal(v, ema.state_dict()[k]) for k, v in final.state_dict().items())  # the EMA is published
    assert not torch.equal(final.lm_head.weight, raw.lm_head.weight)
    assert not torch.equal(intermediate.lm_head.weight, raw.lm_head.weight)
    assert final.config.id2label == {0: "cat", 1: "dog"} and final.config.vocab_size == 16 + 12 + 2 + 1
    assert (out / "samples.png").is_file() and (out / "validation" / "samples-00000002.png").is_file()
    from glotok_hf import GloTokPipeline

    pipeline = GloTokPipeline.from_pretrained(out / "pipeline")  # tokenizer + published prior + class names
    assert pipeline.get_label_ids(["dog", "cat"]) == [1, 0]
    assert all(torch.equal(v, final.state_dict()[k]) for k, v in pipeline.prior.state_dict().items())
    card = (out / "README.md").read_text()
    assert "AutoModelForCausalLM.from_pretrained" in card and "| steps | 4 |" in card and "prior/loss" in card
    logs = read_metrics(out)
    assert [m["step"] for m in logs] == [1, 2, 3, 4] and {"prior/loss", "prior/token_accuracy", "lr"} <= logs[0].keys()


def test_on_the_fly_extraction_trains_on_the_same_codes(assets, tmp_path):
    common = dict(max_train_steps=2, validation_steps=100, num_validation_images=0)
    run_in_process(tiny_prior_args(tmp_path / "codes", assets["tokenizer"], assets["codes"], **common))
    run_in_process(tiny_prior_args(tmp_path / "fly", assets["tokenizer"], None, train_data_dir=str(assets["images"]),
                                   resolution=16, **common))  # fmt: skip
    from_codes, on_the_fly = read_metrics(tmp_path / "codes"), read_metrics(tmp_path / "fly")
    for a, b in zip(from_codes, on_the_fly, strict=True):
        assert a["prior/loss"] == b["prior/loss"] and a["prior/dropped_classes"] == b["prior/dropped_classes"]


def test_class_dropout_is_a_per_example_draw():
    from glotok_hf.training.loaders import SeededItems

    items = SeededItems([{"codes": None}] * 4000, seed=3, draw_uniform=True)
    draws = torch.tensor([items[i]["uniform"] for i in range(4000)])
    assert abs((draws < 0.1).float().mean().item() - 0.1) < 0.015
    assert items[17]["uniform"] == draws[17]  # a function of (seed, epoch, index) only
    items.begin_epoch(1)
    assert items[17]["uniform"] != draws[17]


def test_prior_push_to_hub(assets, fake_hub, tmp_path):
    repo = "tester/glotok-prior"
    run_in_process(tiny_prior_args(tmp_path / "prior", assets["tokenizer"], assets["codes"], max_train_steps=2,
                                   push_to_hub=True, hub_model_id=repo))  # fmt: skip
    files = fake_hub.files(repo)
    assert {"README.md", "config.json", "model.safetensors", "samples.png"} <= files.keys()
    assert not [name for name in files if name.startswith("checkpoint-")]
    assert fake_hub.token_leaks() == []
    pulled = transformers.AutoModelForCausalLM.from_pretrained(repo)
    assert pulled.config.vocab_size == 31
