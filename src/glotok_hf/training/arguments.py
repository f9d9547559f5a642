# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""The options of `training/train.py`: the typed `TrainingArguments`, its command line and recipe files.

Every option is declared once, as a field of `TrainingArguments` (the loss weights as the fields of
`GloTokLossConfig`); the argparse flags, their `--help` and the recipe checks are generated from those fields. Names
follow diffusers' training examples; every flag is also accepted with dashes (`--train-data-dir` for
`--train_data_dir`). A recipe (`--config recipe.json|yaml`) is a flat mapping from option names to values; flags given
on the command line override it (a `--model_config` / `--discriminator_config` mapping is merged into the recipe's);
unknown keys and values of the wrong type are errors. Everything is checked here, once, so the training code trusts
the parsed `TrainingArguments`.
"""

import argparse
import contextlib
import dataclasses
import difflib
import json
import os
import re
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from ..losses import GloTokLossConfig
from ..prior import PRIOR_SIZES
from ..utils import is_int

STAGES = ("tokenizer", "prior")
# Loss-config fields that follow from the tokenizer instead of being chosen.
DERIVED_LOSS_FIELDS = {"codebook_l2_norm"}
# Arguments never written to logs, trackers, model cards or saved argument files.
SECRET_ARGUMENTS = {"hub_token"}
# Stage-dependent defaults: the paper's tokenizer recipe and LlamaGen's prior recipe.
STAGE_DEFAULTS = {
    "tokenizer": {"learning_rate": 2e-4, "adam_weight_decay": 0.0, "max_grad_norm": 1.0},
    "prior": {"learning_rate": 1e-4, "adam_weight_decay": 0.05, "max_grad_norm": 1.0},
}
LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")
# Alternatives: a flag on the command line replaces the recipe's value of any other member of its group.
EXCLUSIVE_GROUPS = (("dataset_name", "train_data_dir", "codes_dir"), ("model_config", "pretrained_model_name_or_path"))
POSITIVE_OPTIONS = ("train_batch_size", "gradient_accumulation_steps", "checkpointing_steps", "validation_steps",
                    "logging_steps", "usage_window", "max_nonfinite_steps", "num_train_epochs")  # fmt: skip
OPTIONAL_POSITIVE_OPTIONS = ("max_train_steps", "checkpoints_total_limit", "max_train_samples", "resolution")
_INLINE_JSON = {"model_config", "discriminator_config"}  # a JSON file, inline JSON, or a mapping inside a recipe

EPILOG = """Every flag is also accepted with dashes instead of underscores (--train-data-dir = --train_data_dir).

examples:
  accelerate launch training/train.py --config training/recipes/tiny_cpu.json
  accelerate launch training/train.py --config training/recipes/glotok_imagenet256.json --train_data_dir /data/imagenet/train
  accelerate launch training/train.py --config training/recipes/tiny_cpu.json --resume_from_checkpoint latest
  accelerate launch training/train.py --config training/recipes/tiny_prior_cpu.json --codes_dir runs/codes
"""


def option(default=None, help: str = "", *, choices=None, switch: bool = False, group: str | None = None):
    """A `TrainingArguments` field: its `--help` text, allowed values, `switch=True` for a bool given as a bare `--x`
    (instead of `--x/--no-x`), and `group` on the first field of a `--help` section."""
    return field(default=default, metadata={"help": help, "choices": choices, "switch": switch, "group": group})


@dataclass
class TrainingArguments:
    """The parsed options of `training/train.py` (see `--help` for each). Building one fills the stage-dependent
    defaults, reads the JSON options and checks every value and combination, with errors naming the flag."""

    config: str | None = option(None, "Recipe file (.json, .yaml or .yml) of argument values.")
    stage: str | None = option(None, "What to train (required).", choices=STAGES)
    # data
    dataset_name: str | None = option(None, "Hub dataset name or a `Dataset.save_to_disk` folder.", group="data")
    dataset_config_name: str | None = option(None, "Configuration of --dataset_name.")
    dataset_split: str = option("train", "Split to train on.")
    train_data_dir: str | None = option(None, "An imagefolder: one sub-folder per class, named after the class.")
    image_column: str = option("image", "Column holding the images.")
    label_column: str = option("label", "Column holding the class labels.")
    cache_dir: str | None = option(None, "Where `datasets` caches.")
    max_train_samples: int | None = option(None, "Use only the first N examples.")
    resolution: int | None = option(None, "Square training side (default: the tokenizer's sample_size; another "
                                    "one becomes a new tokenizer's; pretrained ones and the prior refuse it).")  # fmt: skip
    center_crop: bool = option(True, "Center crop (default) or random crop after resizing the short side.")
    random_flip: bool = option(False, "Random horizontal flips.")
    dataloader_num_workers: int | None = option(None, "Loader workers (default: CPU cores per GPU, <= 8; CPU: 0).")
    codes_dir: str | None = option(None, "Prior stage: `glotok extract-codes` output (default: encode the images on "
                                   "the fly with the frozen --tokenizer_name_or_path).")  # fmt: skip
    # models
    model_config: str | dict | None = option(None, "GloTokConfig (tokenizer) or LlamaConfig overrides of --prior_size "
                                             "(prior): JSON file, inline JSON or recipe mapping; merged into a "
                                             "recipe's (its keys win).", group="models")  # fmt: skip
    pretrained_model_name_or_path: str | None = option(None, "Start from this saved tokenizer (or prior); with "
                                                       "--model_config, change fields of its config "
                                                       '({"use_residual": true} adds residual modules).')  # fmt: skip
    discriminator_config: str | dict | None = option(None, "GloTokDiscriminatorConfig JSON, like --model_config "
                                                     "(default: the paper's PatchGAN).")  # fmt: skip
    teacher_histogram: str | None = option(None, "`glotok build-teacher` file (turns the histogram loss on).")
    tokenizer_name_or_path: str | None = option(None, "Prior stage: the trained tokenizer (decodes validation "
                                                "samples; encodes the images without --codes_dir).")  # fmt: skip
    allow_tokenizer_mismatch: bool = option(False, "Prior stage: accept --codes_dir extracted with other weights "
                                            "than --tokenizer_name_or_path's.", switch=True)  # fmt: skip
    prior_size: str = option("B", "Prior stage: LlamaGen size (B: 12 layers x 768).", choices=sorted(PRIOR_SIZES))
    prior_type: str = option("interleaved", "Prior stage: `interleaved` (a stock LlamaForCausalLM over [class, v0, s0, "
                             "v1, s1, ...], 1-D RoPE; the better samples at equal compute on the digits, "
                             "docs/replication.md) or `factorized` (GloTokPriorForCausalLM: one step per grid "
                             "position, FAR's 3-layer head over its codes, 2-D RoPE, faster sampling; --model_config "
                             "sets GloTokPriorConfig fields).", choices=["factorized", "interleaved"])  # fmt: skip
    class_dropout_prob: float = option(0.1, "Prior stage: probability of the null class instead (for CFG).")
    gradient_checkpointing: bool = option(False, "Trade compute for memory.", switch=True)
    # optimization
    train_batch_size: int = option(8, "Batch size per device.", group="optimization")
    gradient_accumulation_steps: int = option(1, "Micro-batches per update.")
    max_train_steps: int | None = option(None, "Total updates (overrides epochs).")
    num_train_epochs: int = option(1, "Epochs when --max_train_steps is unset.")
    learning_rate: float | None = option(None, "Peak learning rate (default: 2e-4 tokenizer, 1e-4 prior).")
    discriminator_learning_rate: float | None = option(None, "Discriminator learning rate (default: --learning_rate).")
    lr_scheduler: str = option("constant", "diffusers scheduler name.", choices=LR_SCHEDULERS)
    lr_warmup_steps: int = option(0, "Warm-up updates of the scheduler.")
    adam_beta1: float = option(0.9, "Adam beta1.")
    adam_beta2: float = option(0.95, "Adam beta2 (paper and LlamaGen: 0.95).")
    adam_weight_decay: float | None = option(None, "Weight decay (default: 0 tokenizer; 0.05 prior, LlamaGen's).")
    adam_epsilon: float = option(1e-8, "Adam epsilon.")
    max_grad_norm: float | None = option(None, "Gradient clipping norm, 0 for none (default: 1.0).")
    use_ema: bool = option(False, "Keep an exponential moving average of the weights.", switch=True)
    ema_decay: float = option(0.9999, "EMA decay (with diffusers' warm-up).")
    max_nonfinite_steps: int = option(10, "Stop after N consecutive updates skipped for NaN/inf losses or gradients.")
    allow_tf32: bool = option(False, "Allow TF32 matmuls on Ampere+ GPUs.", switch=True)
    # run
    output_dir: str | None = option(None, "Where checkpoints, logs and the final model go (required).", group="run")
    overwrite_output_dir: bool = option(False, "Start anew in an --output_dir with a run or checkpoints.", switch=True)
    seed: int = option(0, "Seed of initialisation, data order and augmentation.")
    mixed_precision: str | None = option(None, "Default: the accelerate config's.", choices=("no", "fp16", "bf16"))
    sharding: str = option("ddp", "`fsdp`: parameters, gradients and Adam states sharded per decoder layer with torch's "
                           "FSDP2 under the plain multi-process launch (training/README.md).",
                           choices=("ddp", "fsdp"))  # fmt: skip
    checkpointing_steps: int = option(500, "Save a checkpoint every N updates.")
    checkpoints_total_limit: int | None = option(None, "Keep at most N checkpoints.")
    resume_from_checkpoint: str | None = option(None, "A checkpoint folder, or `latest` (newest in --output_dir).")
    report_to: str = option("tensorboard", "Trackers to log to.", choices=("tensorboard", "wandb", "all", "none"))
    logging_dir: str = option("logs", "Log folder, relative to --output_dir.")
    tracker_project_name: str | None = option(None, "Tracker project (default: glotok-<stage>).")
    logging_steps: int = option(1, "Log averages every N updates (and at checkpoints, validations, epoch ends); only "
                                "then are values read from the GPU (try 10-50).")  # fmt: skip
    usage_window: int = option(100, "Batches over which codebook usage and perplexity are logged.")
    validation_steps: int = option(500, "Save and log a grid of reconstructions or samples every N updates.")
    num_validation_images: int = option(8, "Images in the validation grid.")
    validation_guidance_scale: float = option(2.0, "Prior stage: CFG scale of the validation samples.")
    # hub
    push_to_hub: bool = option(False, "Upload the final model and its card.", switch=True, group="hub")
    hub_model_id: str | None = option(None, "Repository id (default: the --output_dir name).")
    hub_token: str | None = option(None, "Hub token (default: HF_TOKEN / the saved login). Never written anywhere.")
    hub_private_repo: bool = option(False, "Create the repository as private.", switch=True)
    # the objective (flags generated from GloTokLossConfig's fields; codebook_l2_norm follows the tokenizer)
    loss: GloTokLossConfig = field(default_factory=GloTokLossConfig)

    def __post_init__(self):
        for name, value in STAGE_DEFAULTS.get(self.stage, {}).items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.dataloader_num_workers is None:
            gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
            self.dataloader_num_workers = min(8, len(os.sched_getaffinity(0)) // gpus) if gpus else 0
        self._validate()
        for name in _INLINE_JSON:
            setattr(self, name, read_json_argument(getattr(self, name), name))

    def _validate(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"--stage is required ({' or '.join(STAGES)}), on the command line or in the recipe.")
        if self.output_dir is None:
            raise ValueError("--output_dir is required, on the command line or in the recipe.")
        for name in POSITIVE_OPTIONS + OPTIONAL_POSITIVE_OPTIONS:
            value, optional = getattr(self, name), name in OPTIONAL_POSITIVE_OPTIONS
            if (value is None and not optional) or (value is not None and value <= 0):
                raise ValueError(f"--{name} must be a positive integer{' when given' * optional}, got {value!r}.")
        if self.num_validation_images < 0 or self.dataloader_num_workers < 0 or self.lr_warmup_steps < 0:
            raise ValueError("--num_validation_images, --dataloader_num_workers and --lr_warmup_steps must be >= 0.")
        if not 0 <= self.class_dropout_prob < 1:
            raise ValueError(f"--class_dropout_prob must be in [0, 1), got {self.class_dropout_prob}.")
        if not 0 <= self.ema_decay <= 1:
            raise ValueError(f"--ema_decay must be in [0, 1], got {self.ema_decay}.")
        if self.sharding == "fsdp" and self.use_ema:
            raise ValueError("--sharding fsdp does not keep an EMA yet (it keeps a full copy on every process): "
                             "leave out --use_ema, or use --sharding ddp.")  # fmt: skip
        if self.learning_rate <= 0 or (self.discriminator_learning_rate or 1) <= 0:
            raise ValueError("--learning_rate and --discriminator_learning_rate must be positive.")
        has_images = self.dataset_name is not None or self.train_data_dir is not None
        if self.dataset_name is not None and self.train_data_dir is not None:
            raise ValueError("Give either --dataset_name or --train_data_dir, not both.")
        if self.stage == "tokenizer" and not has_images:
            raise ValueError("The tokenizer stage needs images: --dataset_name or --train_data_dir.")
        if self.stage == "tokenizer" and self.model_config is None and self.pretrained_model_name_or_path is None:
            raise ValueError("Give --model_config (a new tokenizer) or --pretrained_model_name_or_path (a saved one; "
                             "with --model_config, fields of its config to change, e.g. to add modules).")  # fmt: skip
        if self.stage == "prior":
            if self.codes_dir is None and not (has_images and self.tokenizer_name_or_path):
                raise ValueError("The prior stage needs --codes_dir (extracted codes), or an image dataset "
                                 "(--dataset_name/--train_data_dir) together with --tokenizer_name_or_path.")  # fmt: skip
            if self.codes_dir is not None and has_images:
                raise ValueError("Give either --codes_dir or an image dataset for the prior stage, not both.")

    def public_dict(self) -> dict[str, Any]:
        """The options as one flat JSON-able dict without secrets (for trackers, saved files and model cards); the
        keys are the flag names, so the dict is also a valid recipe."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "loss"}
        values.update((k, v) for k, v in self.loss.to_dict().items() if k not in DERIVED_LOSS_FIELDS)
        return {k: v for k, v in sorted(values.items()) if k not in SECRET_ARGUMENTS}


# --------------------------------------------------------------------------------------------------- command line
def _field_help(cls: type) -> dict[str, str]:
    """Per-field descriptions from an HF-style `Args:` docstring (``name (`type`, ...): text``)."""
    helps = {}
    for entry in re.split(r"\n\s{8}(?=\w+ \(`)", cls.__doc__ or ""):
        match = re.match(r"(\w+) \(`[^)]*\):\s*(.*)", entry.strip(), re.S)
        if match:
            helps[match.group(1)] = " ".join(match.group(2).split())
    return helps


def add_dataclass_arguments(parser, cls, exclude=(), title=None, suppress_defaults=False) -> None:
    """Add one `--<field>` flag per field of the dataclass `cls`: its type (the first of an `X | None`), default,
    choices and help from the field's `option` metadata or else from `cls`'s docstring; bool fields as `--x/--no-x`
    (or a bare `--x` for `switch` options). Fields holding dataclasses are skipped. `suppress_defaults` leaves
    unspecified flags out of the parsed namespace."""
    group = parser.add_argument_group(title, f"Fields of {cls.__name__}.") if title else parser
    docs, hints = _field_help(cls), typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = next(a for a in (*typing.get_args(hints[f.name]), hints[f.name]) if a is not type(None))
        if f.name in exclude or dataclasses.is_dataclass(kind):
            continue
        meta = f.metadata
        if meta.get("group"):
            group = parser.add_argument_group(meta["group"])
        help_text = meta.get("help") or f"{docs.get(f.name, f'{cls.__name__}.{f.name}')} (default: {f.default})"
        kwargs = {"default": argparse.SUPPRESS if suppress_defaults else f.default, "help": help_text}
        if kind is bool:
            kwargs["action"] = "store_true" if meta.get("switch") else argparse.BooleanOptionalAction
        else:
            kwargs.update(type=kind, choices=meta.get("choices"), metavar=None if meta else kind.__name__.upper())
        group.add_argument(f"--{f.name}", **kwargs)


def build_parser(suppress_defaults: bool = False) -> argparse.ArgumentParser:
    """The parser of `train.py`, generated from `TrainingArguments` and `GloTokLossConfig`."""
    parser = argparse.ArgumentParser(
        prog="train.py",
        description="Train the GloTok tokenizer (--stage tokenizer) or its class-conditional AR prior (--stage prior) "
        "with Accelerate. Flags override the values of a --config recipe; --model_config and --discriminator_config are "
        "merged into the recipe's mapping.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_dataclass_arguments(parser, TrainingArguments, suppress_defaults=suppress_defaults)
    add_dataclass_arguments(parser, GloTokLossConfig, DERIVED_LOSS_FIELDS, "tokenizer loss", suppress_defaults)
    return parser


def underscored(argv: list[str]) -> list[str]:
    """The one alias rule: `--train-data-dir` -> `--train_data_dir`, `--no-random-flip` -> `--no-random_flip`."""
    return [re.sub(r"^(--(?:no-)?)([^=]+)", lambda m: m[1] + m[2].replace("-", "_"), arg) for arg in argv]


def parse_args(argv: list[str] | None = None) -> TrainingArguments:
    """Parse `argv` (default `sys.argv[1:]`) on top of the optional `--config` recipe into `TrainingArguments`."""
    argv = underscored(sys.argv[1:] if argv is None else list(argv))
    parser = build_parser()
    known, _ = parser.parse_known_args(argv)
    recipe, explicit = {}, set()
    if known.config is not None:
        recipe = load_recipe(known.config, parser)
        explicit = set(vars(build_parser(suppress_defaults=True).parse_known_args(argv)[0]))
        for group in EXCLUSIVE_GROUPS:
            if explicit & set(group):
                recipe = {k: v for k, v in recipe.items() if k not in group or k in explicit}
        parser.set_defaults(**recipe)
    values = vars(parser.parse_args(argv))
    for name in _INLINE_JSON & explicit:  # a command-line mapping updates the recipe's, never replaces it
        if isinstance(recipe.get(name), dict):
            values[name] = {**recipe[name], **read_json_argument(values[name], name)}
    loss_fields = {f.name for f in dataclasses.fields(GloTokLossConfig)}
    loss = GloTokLossConfig(**{k: values.pop(k) for k in list(values) if k in loss_fields})
    return TrainingArguments(**values, loss=loss)


# --------------------------------------------------------------------------------------------------------- recipes
def load_recipe(path: str | Path, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """Read a JSON/YAML recipe and check every key and value against `parser`'s arguments."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Recipe file {str(path)!r} does not exist.")
    text = path.read_text()
    if path.suffix.lower() not in (".json", ".yaml", ".yml"):
        raise ValueError(f"Recipe {str(path)!r} must be a .json, .yaml or .yml file.")
    try:
        recipe = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise ValueError(f"Could not parse recipe {str(path)!r}: {err}") from err
    if recipe is None:
        recipe = {}
    if not isinstance(recipe, dict):
        raise ValueError(f"Recipe {str(path)!r} must be a mapping of argument names to values, got "
                         f"{type(recipe).__name__}.")  # fmt: skip
    recipe = {str(key).replace("-", "_"): value for key, value in recipe.items()}
    actions = {a.dest: a for a in parser._actions if a.dest not in ("help", "config")}
    if unknown := [key for key in recipe if key not in actions]:
        close = {key: difflib.get_close_matches(key, actions, n=1) for key in unknown}
        hints = [f"{key!r}" + (f" (did you mean {c[0]!r}?)" if c else "") for key, c in close.items()]
        raise ValueError(f"Unknown key(s) in recipe {str(path)!r}: {', '.join(hints)}. Keys must be argument "
                         "names of train.py (see --help).")  # fmt: skip
    return {key: _check_value(actions[key], value, path) for key, value in recipe.items()}


def _check_value(action: argparse.Action, value: Any, path: Path) -> Any:
    where = f"recipe {str(path)!r}: {action.dest!r}"
    if action.dest in _INLINE_JSON and isinstance(value, dict):
        return value
    if isinstance(action, (argparse._StoreTrueAction, argparse.BooleanOptionalAction)):
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false, got {value!r}.")
        return value
    if value is None:
        return None
    kind = action.type or str
    if kind is float and (is_int(value) or isinstance(value, str)):  # YAML 1.1 reads `2e-4` as a string
        with contextlib.suppress(ValueError):
            value = float(value)
    if not (is_int(value) if kind is int else isinstance(value, kind) and not isinstance(value, bool)):
        raise ValueError(f"{where} must be of type {kind.__name__}, got {type(value).__name__} {value!r}.")
    if action.choices is not None and value not in action.choices:
        raise ValueError(f"{where} must be one of {list(action.choices)}, got {value!r}.")
    return value


def read_json_argument(value: str | dict | None, name: str) -> dict | None:
    """A JSON argument given as a mapping (from a recipe), an inline JSON string or a path to a JSON file."""
    if value is None or isinstance(value, dict):
        return value
    text = value.strip()
    if not text.startswith("{"):
        path = Path(value)
        if not path.is_file():
            raise FileNotFoundError(f"--{name} {value!r} is neither a JSON file nor inline JSON.")
        text = path.read_text()
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"--{name} is not valid JSON: {err}") from err
    if not isinstance(parsed, dict):
        raise ValueError(f"--{name} must be a JSON object, got {type(parsed).__name__}.")
    return parsed
