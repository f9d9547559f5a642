"""Arguments and recipes of training/train.py (`glotok_hf.training.arguments`): typed `TrainingArguments`, the loss
arguments follow GloTokLossConfig, recipes (JSON/YAML) are checked key by key, flags override them, stage defaults,
both flag spellings, and every shipped recipe parses."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
from train_utils import TRAINING_DIR

from glotok_hf.losses import GloTokLossConfig
from glotok_hf.training import TrainingArguments
from glotok_hf.training.arguments import DERIVED_LOSS_FIELDS, build_parser, parse_args

RECIPES = sorted((TRAINING_DIR / "recipes").glob("*.json"))
BASE = ["--output_dir", "out", "--train_data_dir", "images", "--model_config", "{}"]


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_every_loss_config_field_is_an_argument_with_its_default():
    parser = build_parser()
    defaults = {a.dest: a.default for a in parser._actions}
    for field in dataclasses.fields(GloTokLossConfig):
        if field.name in DERIVED_LOSS_FIELDS:
            assert field.name not in defaults
            continue
        assert defaults[field.name] == field.default, field.name
    args = parse_args(["--stage", "tokenizer", *BASE, "--disc_start", "7", "--no-disc_adaptive_weight",
                       "--histogram_alpha", "150", "--disc_loss", "non_saturating"])  # fmt: skip
    assert isinstance(args, TrainingArguments) and isinstance(args.loss, GloTokLossConfig)
    config = dataclasses.replace(args.loss, codebook_l2_norm=False)
    assert (config.disc_start, config.histogram_alpha, config.disc_loss) == (7, 150.0, "non_saturating")
    assert config.codebook_l2_norm is False and config.disc_adaptive_weight is False


def test_stage_defaults_are_the_paper_and_llamagen():
    tokenizer = parse_args(["--stage", "tokenizer", *BASE])
    assert (tokenizer.learning_rate, tokenizer.adam_weight_decay, tokenizer.adam_beta2) == (2e-4, 0.0, 0.95)
    prior = parse_args(["--stage", "prior", "--output_dir", "out", "--codes_dir", "codes"])
    assert (prior.learning_rate, prior.adam_weight_decay, prior.max_grad_norm) == (1e-4, 0.05, 1.0)
    assert prior.class_dropout_prob == 0.1


def test_recipe_values_and_command_line_overrides(tmp_path):
    recipe = write(tmp_path / "r.yaml", "stage: tokenizer\noutput_dir: out\ntrain_data_dir: images\nlearning_rate: 3e-4\n"
                   "model_config: {block_out_channels: [8, 16]}\nrandom_flip: true\ndisc_start: 5\n")  # fmt: skip
    args = parse_args(["--config", str(recipe)])
    assert args.learning_rate == 3e-4 and args.random_flip is True and args.loss.disc_start == 5
    assert args.model_config == {"block_out_channels": [8, 16]}
    args = parse_args(["--config", str(recipe), "--learning_rate", "1e-3", "--no-random_flip"])
    assert args.learning_rate == 1e-3 and args.random_flip is False and args.loss.disc_start == 5
    as_json = write(tmp_path / "r.json", json.dumps({"stage": "prior", "output_dir": "o", "codes_dir": "c"}))
    assert parse_args(["--config", str(as_json)]).stage == "prior"


@pytest.mark.parametrize(
    "text, suffix, error, match",
    [
        ('{"lerning_rate": 1e-4}', ".json", ValueError, r"'lerning_rate' \(did you mean 'learning_rate'\?\)"),
        ('{"train_batch_size": "8"}', ".json", ValueError, "'train_batch_size' must be of type int, got str"),
        ('{"train_batch_size": 8.5}', ".json", ValueError, "must be of type int"),
        ('{"use_ema": "yes"}', ".json", ValueError, "'use_ema' must be true or false"),
        ('{"disc_start": true}', ".json", ValueError, "must be of type int, got bool"),
        ('{"lr_scheduler": "step"}', ".json", ValueError, "must be one of"),
        ('{"stage": "vae"}', ".json", ValueError, "must be one of"),
        ("[1, 2]", ".json", ValueError, "must be a mapping"),
        ("{not json", ".json", ValueError, "Could not parse recipe"),
        ("a: [1, 2\n", ".yaml", ValueError, "Could not parse recipe"),
        ("{}", ".toml", ValueError, ".json, .yaml or .yml"),
    ],
)
def test_bad_recipes(tmp_path, text, suffix, error, match):
    recipe = write(tmp_path / f"recipe{suffix}", text)
    with pytest.raises(error, match=match):
        parse_args(["--config", str(recipe), "--stage", "tokenizer", *BASE])


def test_missing_recipe_and_bad_combinations(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        parse_args(["--config", str(tmp_path / "nope.json")])
    cases = [
        (["--output_dir", "o"], "--stage is required"),
        (["--stage", "tokenizer", "--train_data_dir", "i", "--model_config", "{}"], "--output_dir is required"),
        (["--stage", "tokenizer", "--output_dir", "o", "--model_config", "{}"], "needs images"),
        (["--stage", "tokenizer", "--output_dir", "o", "--train_data_dir", "i"], "Give --model_config"),
        (["--stage", "prior", "--output_dir", "o"], "needs --codes_dir"),
        (["--stage", "prior", "--output_dir", "o", "--codes_dir", "c", "--train_data_dir", "i"], "not both"),
        (["--stage", "tokenizer", *BASE, "--dataset_name", "d"], "not both"),
        (["--stage", "tokenizer", *BASE, "--train_batch_size", "0"], "--train_batch_size must be a positive"),
        (["--stage", "tokenizer", *BASE, "--class_dropout_prob", "1.0"], r"\[0, 1\)"),
    ]
    for argv, match in cases:
        with pytest.raises(ValueError, match=match):
            parse_args(argv)
    with pytest.raises(SystemExit):  # argparse's choices
        parse_args(["--stage", "tokenizer", *BASE, "--report_to", "mlflow"])


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_shipped_recipes_parse(recipe):
    args = parse_args(["--config", str(recipe)])
    assert args.stage in ("tokenizer", "prior") and args.output_dir.startswith("runs/")
    if recipe.stem == "glotok_imagenet256":  # the paper's recipe (paper.md section 4)
        assert args.train_batch_size * 8 == 240 and args.num_train_epochs == 150 and args.learning_rate == 2e-4
        assert (args.adam_beta1, args.adam_beta2, args.lr_scheduler) == (0.9, 0.95, "constant")
        assert (args.loss.histogram_weight, args.loss.residual_weight, args.loss.disc_start) == (0.01, 0.5, 20000)
        assert args.mixed_precision == "bf16" and args.use_ema and args.model_config == {}
    if recipe.stem == "prior_gpt_b_imagenet256":  # LlamaGen's optimiser defaults
        assert (args.learning_rate, args.adam_weight_decay, args.max_grad_norm) == (1e-4, 0.05, 1.0)
        assert args.class_dropout_prob == 0.1 and args.prior_size == "B"
    if recipe.stem == "far_b_imagenet256":  # the paper's generator: FAR-B = GPT-L's backbone + the 3-layer head
        from glotok_hf import prior_preset

        assert (args.prior_type, args.num_train_epochs, args.learning_rate) == ("factorized", 200, 1e-4)
        built = prior_preset(f"GPT-{args.prior_size}", [12288, 4096], 1000, head_layers=3)  # what the stage builds
        assert built.to_dict() == prior_preset("FAR-B", [12288, 4096], 1000).to_dict()


def test_public_args_never_hold_the_token_and_are_a_flat_recipe(tmp_path):
    args = parse_args(["--stage", "tokenizer", *BASE, "--hub_token", "hf_secret", "--disc_start", "3"])
    public = args.public_dict()
    assert "hub_token" not in public and "hf_secret" not in json.dumps(public)
    assert public["disc_start"] == 3 and "loss" not in public and "codebook_l2_norm" not in public
    recipe = write(tmp_path / "again.json", json.dumps({k: v for k, v in public.items() if k != "config"}))
    again = parse_args(["--config", str(recipe)])
    assert again.public_dict() == {**public, "config": str(recipe)}


def test_every_flag_is_also_accepted_with_dashes(tmp_path):
    underscores = parse_args(["--stage", "tokenizer", "--output_dir", "o", "--train_data_dir", "i", "--model_config",
                              "{}", "--no-random_flip", "--disc_start", "5", "--use_ema", "--lr_warmup_steps=3"])  # fmt: skip
    dashes = parse_args(["--stage", "tokenizer", "--output-dir", "o", "--train-data-dir", "i", "--model-config", "{}",
                         "--no-random-flip", "--disc-start", "5", "--use-ema", "--lr-warmup-steps=3"])  # fmt: skip
    assert dashes == underscores and dashes.train_data_dir == "i" and dashes.loss.disc_start == 5
    recipe = write(tmp_path / "r.json", json.dumps({"stage": "prior", "output-dir": "o", "codes-dir": "c"}))
    assert parse_args(["--config", str(recipe)]).codes_dir == "c"
    assert "--train-data-dir" in build_parser().format_help()  # the rule is documented in --help
    with pytest.raises(SystemExit):
        parse_args(["--stage", "tokenizer", *BASE, "--no-such-flag", "1"])


def test_options_are_checked_when_built_not_deep_inside_training():
    with pytest.raises(ValueError, match="--ema_decay must be in"):
        TrainingArguments(stage="prior", output_dir="o", codes_dir="c", ema_decay=2.0)
    with pytest.raises(FileNotFoundError, match="--model_config 'nope.json' is neither"):
        TrainingArguments(stage="tokenizer", output_dir="o", train_data_dir="i", model_config="nope.json")
    args = TrainingArguments(stage="tokenizer", output_dir="o", train_data_dir="i", model_config='{"sample_size": 32}')
    assert args.model_config == {"sample_size": 32} and args.learning_rate == 2e-4


def test_a_command_line_data_or_model_source_replaces_the_recipes(tmp_path):
    recipe = write(tmp_path / "r.json", json.dumps({"stage": "tokenizer", "output_dir": "o", "dataset_name": "data/x",
                                                    "model_config": {"sample_size": 32}}))  # fmt: skip
    args = parse_args(["--config", str(recipe), "--train_data_dir", "images", "--pretrained_model_name_or_path", "m"])
    assert (args.train_data_dir, args.dataset_name) == ("images", None)
    assert (args.pretrained_model_name_or_path, args.model_config) == ("m", None)
    args = parse_args(["--config", str(recipe), "--no-random_flip", "--use_ema"])
    assert args.dataset_name == "data/x" and args.model_config == {"sample_size": 32}


def test_a_command_line_model_config_is_merged_into_the_recipes():
    tiny = TRAINING_DIR / "recipes" / "tiny_cpu.json"
    recipe = json.loads(tiny.read_text())
    args = parse_args(["--config", str(tiny), "--model_config", '{"sample_size": 32}',
                       "--discriminator-config", '{"num_layers": 1}'])  # fmt: skip
    assert args.model_config == {**recipe["model_config"], "sample_size": 32}
    assert args.discriminator_config == {**recipe["discriminator_config"], "num_layers": 1}
    from glotok_hf import GloTokConfig, GloTokModel

    model = GloTokModel(GloTokConfig(**args.model_config))
    assert sum(p.numel() for p in model.parameters()) < 2e6  # the tiny model (1.1M), not the paper's 112.9M
    assert "merged into the recipe's mapping" in " ".join(build_parser().format_help().split())
    assert args.resolution == 24 and parse_args(["--stage", "tokenizer", *BASE]).resolution is None


def test_train_script_is_a_thin_entry_point_with_clear_errors(tmp_path, subprocess_env):
    # The script runs as a file (no sys.path edits): a user error exits 2 with the message, either flag spelling.
    argv = [sys.executable, str(TRAINING_DIR / "train.py"), "--stage", "tokenizer", "--output-dir", str(tmp_path)]
    done = subprocess.run(argv, env=subprocess_env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "train.py: error: The tokenizer stage needs images: --dataset_name or --train_data_dir." in done.stderr
    assert "sys.path" not in (TRAINING_DIR / "train.py").read_text()
