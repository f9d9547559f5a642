# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""Command-line arguments of `training/train.py` and recipe files.

Argument names follow diffusers' training examples. A recipe (`--config recipe.json|yaml`) is a flat mapping from
argument names to values; flags given on the command line override it; unknown keys and values of the wrong type are
errors. The loss arguments are generated from the fields of `GloTokLossConfig`, so they never drift from it.
"""

import argparse
import dataclasses
import difflib
import json
import re
import types
import typing
from pathlib import Path
from typing import Any

from glotok_hf.losses import GloTokLossConfig
from glotok_hf.prior import PRIOR_SIZES

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

EPILOG = """examples:
  accelerate launch training/train.py --config training/recipes/tiny_cpu.json
  accelerate launch training/train.py --config training/recipes/glotok_imagenet256.json --train_data_dir /data/imagenet/train
  accelerate launch training/train.py --config training/recipes/tiny_cpu.json --resume_from_checkpoint latest
  accelerate launch training/train.py --config training/recipes/tiny_prior_cpu.json --codes_dir runs/codes
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train.py",
        description="Train the GloTok tokenizer (--stage tokenizer) or its class-conditional AR prior (--stage prior) "
        "with Accelerate. Flags override the values of a --config recipe.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", default=None, help="Recipe file (.json, .yaml or .yml) of argument values.")
    parser.add_argument("--stage", choices=STAGES, default=None, help="What to train (required).")
    _add_data_arguments(parser)
    _add_model_arguments(parser)
    _add_optimization_arguments(parser)
    _add_run_arguments(parser)
    _add_hub_arguments(parser)
    add_dataclass_arguments(parser, GloTokLossConfig, exclude=DERIVED_LOSS_FIELDS, title="tokenizer loss")
    return parser


def _add_data_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument(
        "--dataset_name", default=None, help="Hub dataset name or a folder written by `Dataset.save_to_disk`."
    )
    group.add_argument("--dataset_config_name", default=None, help="Configuration of --dataset_name.")
    group.add_argument("--dataset_split", default="train", help="Split to train on.")
    group.add_argument(
        "--train_data_dir",
        default=None,
        help="A `datasets` imagefolder: one sub-folder per class (class labels from folder names).",
    )
    group.add_argument("--image_column", default="image", help="Column holding the images.")
    group.add_argument("--label_column", default="label", help="Column holding the class labels.")
    group.add_argument("--cache_dir", default=None, help="Where `datasets` caches.")
    group.add_argument("--max_train_samples", type=int, default=None, help="Use only the first N examples.")
    group.add_argument("--resolution", type=int, default=256, help="Training resolution (square).")
    group.add_argument(
        "--center_crop",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Center crop (default) or random crop after resizing the short side.",
    )
    group.add_argument(
        "--random_flip", action=argparse.BooleanOptionalAction, default=False, help="Random horizontal flips."
    )
    group.add_argument("--dataloader_num_workers", type=int, default=0, help="DataLoader worker processes.")
    group.add_argument("--codes_dir", default=None,
                       help="Prior stage: codes extracted by `glotok extract-codes`; without it, codes are extracted "
                       "on the fly from the image dataset with the frozen --tokenizer_name_or_path.")  # fmt: skip


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("models")
    group.add_argument("--model_config", default=None,
                       help="Tokenizer: a GloTokConfig JSON file (or inline JSON / a recipe mapping). Prior: "
                       "LlamaConfig overrides on top of --prior_size.")  # fmt: skip
    group.add_argument(
        "--pretrained_model_name_or_path",
        default=None,
        help="Start from this saved tokenizer (or prior) instead of a fresh --model_config.",
    )
    group.add_argument(
        "--discriminator_config",
        default=None,
        help="A GloTokDiscriminatorConfig JSON file / inline JSON (default: the paper's PatchGAN).",
    )
    group.add_argument(
        "--teacher_histogram",
        default=None,
        help="Teacher histogram file from `glotok build-teacher` (turns the histogram loss on).",
    )
    group.add_argument("--tokenizer_name_or_path", default=None,
                       help="Prior stage: the trained tokenizer (decodes validation samples; extracts codes on the "
                       "fly without --codes_dir).")  # fmt: skip
    group.add_argument("--prior_size", default="B", choices=sorted(PRIOR_SIZES),
                       help="Prior stage: LlamaGen size preset (B: 12 layers x 768, L, XL, XXL, 3B).")  # fmt: skip
    group.add_argument(
        "--class_dropout_prob",
        type=float,
        default=0.1,
        help="Prior stage: probability of replacing the class by the null class (for CFG).",
    )
    group.add_argument("--gradient_checkpointing", action="store_true", help="Trade compute for memory.")


def _add_optimization_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("optimization")
    group.add_argument("--train_batch_size", type=int, default=8, help="Batch size per device.")
    group.add_argument("--gradient_accumulation_steps", type=int, default=1, help="Micro-batches per update.")
    group.add_argument("--max_train_steps", type=int, default=None, help="Total updates (overrides epochs).")
    group.add_argument("--num_train_epochs", type=int, default=1, help="Epochs when --max_train_steps is unset.")
    group.add_argument(
        "--learning_rate",
        type=float,
        default=None,
        help="Peak learning rate (default: 2e-4 tokenizer, the paper's; 1e-4 prior, LlamaGen's).",
    )
    group.add_argument(
        "--discriminator_learning_rate",
        type=float,
        default=None,
        help="Discriminator learning rate (default: --learning_rate).",
    )
    group.add_argument("--lr_scheduler", choices=LR_SCHEDULERS, default="constant", help="diffusers scheduler name.")
    group.add_argument("--lr_warmup_steps", type=int, default=0, help="Warm-up updates of the scheduler.")
    group.add_argument("--adam_beta1", type=float, default=0.9, help="Adam beta1.")
    group.add_argument("--adam_beta2", type=float, default=0.95, help="Adam beta2 (paper and LlamaGen: 0.95).")
    group.add_argument(
        "--adam_weight_decay",
        type=float,
        default=None,
        help="Decoupled weight decay (default: 0 tokenizer; 0.05 prior, LlamaGen's).",
    )
    group.add_argument("--adam_epsilon", type=float, default=1e-8, help="Adam epsilon.")
    group.add_argument(
        "--max_grad_norm", type=float, default=None, help="Gradient clipping norm, 0 for none (default: 1.0)."
    )
    group.add_argument("--use_ema", action="store_true", help="Keep an exponential moving average of the weights.")
    group.add_argument("--ema_decay", type=float, default=0.9999, help="EMA decay (with diffusers' warm-up).")
    group.add_argument(
        "--max_nonfinite_steps",
        type=int,
        default=10,
        help="Stop after this many consecutive updates skipped for NaN/inf loss or gradients.",
    )
    group.add_argument("--allow_tf32", action="store_true", help="Allow TF32 matmuls on Ampere+ GPUs.")


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("run")
    group.add_argument("--output_dir", default=None, help="Where checkpoints, logs and the final model go (required).")
    group.add_argument(
        "--overwrite_output_dir",
        action="store_true",
        help="Allow starting a new run in an --output_dir that holds a finished run or checkpoints.",
    )
    group.add_argument("--seed", type=int, default=0, help="Seed of initialisation, data order and augmentation.")
    group.add_argument(
        "--mixed_precision",
        choices=("no", "fp16", "bf16"),
        default=None,
        help="Mixed precision (default: the accelerate config's).",
    )
    group.add_argument("--checkpointing_steps", type=int, default=500, help="Save a checkpoint every N updates.")
    group.add_argument("--checkpoints_total_limit", type=int, default=None, help="Keep at most N checkpoints.")
    group.add_argument(
        "--resume_from_checkpoint",
        default=None,
        help="A checkpoint folder, or `latest` for the newest complete one in --output_dir.",
    )
    group.add_argument("--report_to", default="tensorboard", help="`tensorboard`, `wandb`, `all` or `none`.")
    group.add_argument("--logging_dir", default="logs", help="Log folder, relative to --output_dir.")
    group.add_argument("--tracker_project_name", default=None, help="Tracker project (default: glotok-<stage>).")
    group.add_argument(
        "--usage_window", type=int, default=100, help="Batches over which codebook usage and perplexity are logged."
    )
    group.add_argument(
        "--validation_steps",
        type=int,
        default=500,
        help="Log and save a grid of reconstructions (tokenizer) or samples (prior) every N updates.",
    )
    group.add_argument("--num_validation_images", type=int, default=8, help="Images in the validation grid.")
    group.add_argument(
        "--validation_guidance_scale",
        type=float,
        default=2.0,
        help="Prior stage: classifier-free guidance scale of the validation samples.",
    )


def _add_hub_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("hub")
    group.add_argument("--push_to_hub", action="store_true", help="Upload the final model and its card.")
    group.add_argument("--hub_model_id", default=None, help="Repository id (default: the --output_dir name).")
    group.add_argument(
        "--hub_token", default=None, help="Hub token (default: HF_TOKEN / the saved login). Never written anywhere."
    )
    group.add_argument("--hub_private_repo", action="store_true", help="Create the repository as private.")


# --------------------------------------------------------------------------------------------- dataclass arguments
def _field_help(cls: type) -> dict[str, str]:
    """Per-field descriptions from an HF-style `Args:` docstring (``name (`type`, ...): text``)."""
    doc = cls.__doc__ or ""
    entries = re.split(r"\n\s{8}(?=\w+ \(`)", doc)
    helps = {}
    for entry in entries:
        match = re.match(r"(\w+) \(`[^)]*\):\s*(.*)", entry.strip(), re.S)
        if match:
            helps[match.group(1)] = " ".join(match.group(2).split())
    return helps


def _unwrap_optional(annotation) -> tuple[type, bool]:
    """`float | None` -> (float, True); `int` -> (int, False)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"Unsupported annotation {annotation!r} for a command-line argument.")
        return args[0], True
    return annotation, False


def add_dataclass_arguments(parser, cls, exclude=(), title=None) -> argparse._ArgumentGroup:
    """Add one `--<field>` argument per field of the dataclass `cls` (bool fields as `--x/--no-x`)."""
    group = parser.add_argument_group(title or cls.__name__, f"Fields of {cls.__name__}.")
    helps = _field_help(cls)
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.name in exclude:
            continue
        kind, _ = _unwrap_optional(hints[field.name])
        help_text = helps.get(field.name, f"{cls.__name__}.{field.name}") + f" (default: {field.default})"
        if kind is bool:
            group.add_argument(f"--{field.name}", action=argparse.BooleanOptionalAction, default=field.default,
                               help=help_text)  # fmt: skip
        else:
            group.add_argument(f"--{field.name}", type=kind, default=field.default, help=help_text,
                               metavar=kind.__name__.upper())  # fmt: skip
    return group


def dataclass_from_args(cls, args: argparse.Namespace, **derived):
    """Build the dataclass `cls` from the matching attributes of `args` plus `derived` values."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    values.update(derived)
    return cls(**values)


# --------------------------------------------------------------------------------------------------------- recipes
def load_recipe(path: str | Path, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """Read a JSON/YAML recipe and check every key and value against `parser`'s arguments."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Recipe file {str(path)!r} does not exist.")
    text = path.read_text()
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            recipe = yaml.safe_load(text)
        elif path.suffix.lower() == ".json":
            recipe = json.loads(text)
        else:
            raise ValueError(f"Recipe {str(path)!r} must be a .json, .yaml or .yml file.")
    except (json.JSONDecodeError, ImportError) as err:
        raise ValueError(f"Could not parse recipe {str(path)!r}: {err}") from err
    except Exception as err:  # yaml.YAMLError without importing yaml at module level
        if type(err).__module__.startswith("yaml"):
            raise ValueError(f"Could not parse recipe {str(path)!r}: {err}") from err
        raise
    if recipe is None:
        recipe = {}
    if not isinstance(recipe, dict):
        raise ValueError(f"Recipe {str(path)!r} must be a mapping of argument names to values, got "
                         f"{type(recipe).__name__}.")  # fmt: skip
    actions = {a.dest: a for a in parser._actions if a.dest not in ("help", "config")}
    unknown = [key for key in recipe if key not in actions]
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(str(key), actions, n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ValueError(f"Unknown key(s) in recipe {str(path)!r}: {', '.join(hints)}. Keys must be argument "
                         "names of train.py (see --help).")  # fmt: skip
    return {key: _check_value(actions[key], value, path) for key, value in recipe.items()}


_INLINE_JSON = {"model_config", "discriminator_config"}  # may be a mapping inside a recipe


def _check_value(action: argparse.Action, value: Any, path: Path) -> Any:
    where = f"recipe {str(path)!r}: {action.dest!r}"
    if action.dest in _INLINE_JSON and isinstance(value, dict):
        return value
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse.BooleanOptionalAction)):
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false, got {value!r}.")
        return value
    if value is None:
        return None
    kind = action.type or str
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is float and isinstance(value, str):  # YAML 1.1 reads `2e-4` as a string
        try:
            value = float(value)
        except ValueError:
            pass
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"{where} must be of type {kind.__name__}, got {type(value).__name__} {value!r}.")
    if action.choices is not None and value not in action.choices:
        raise ValueError(f"{where} must be one of {list(action.choices)}, got {value!r}.")
    return value


# ----------------------------------------------------------------------------------------------------- entry point
# Alternatives: a flag on the command line replaces the recipe's value of any other member of its group.
EXCLUSIVE_GROUPS = (
    ("dataset_name", "train_data_dir", "codes_dir"),
    ("model_config", "pretrained_model_name_or_path"),
)


def explicit_arguments(parser: argparse.ArgumentParser, argv: list[str] | None) -> set[str]:
    """The destinations of the flags actually given in `argv`."""
    probe = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            kwargs = {"dest": action.dest, "nargs": action.nargs} if action.nargs != 0 else {"dest": action.dest}
            if isinstance(action, argparse.BooleanOptionalAction):
                probe.add_argument(*action.option_strings, dest=action.dest, action=argparse.BooleanOptionalAction)
            elif action.nargs == 0:
                probe.add_argument(*action.option_strings, action="store_const", const=True, **kwargs)
            else:
                probe.add_argument(*action.option_strings, **kwargs)
    given, _ = probe.parse_known_args(argv)
    return set(vars(given))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse `argv` on top of the optional `--config` recipe, fill stage defaults and validate."""
    parser = build_parser()
    known, _ = parser.parse_known_args(argv)
    if known.config is not None:
        recipe = load_recipe(known.config, parser)
        explicit = explicit_arguments(parser, argv)
        for group in EXCLUSIVE_GROUPS:
            if explicit & set(group):
                recipe = {k: v for k, v in recipe.items() if k not in group or k in explicit}
        parser.set_defaults(**recipe)
    args = parser.parse_args(argv)
    for name, value in STAGE_DEFAULTS.get(args.stage, {}).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    validate_args(args)
    return args


def validate_args(args: argparse.Namespace) -> None:
    if args.stage is None:
        raise ValueError(f"--stage is required ({' or '.join(STAGES)}), on the command line or in the recipe.")
    if args.output_dir is None:
        raise ValueError("--output_dir is required, on the command line or in the recipe.")
    positive = ("train_batch_size", "gradient_accumulation_steps", "checkpointing_steps", "validation_steps",
                "resolution", "usage_window", "max_nonfinite_steps", "num_train_epochs")  # fmt: skip
    for name in positive:
        if getattr(args, name) is None or getattr(args, name) <= 0:
            raise ValueError(f"--{name} must be a positive integer, got {getattr(args, name)!r}.")
    for name in ("max_train_steps", "checkpoints_total_limit", "max_train_samples"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise ValueError(f"--{name} must be a positive integer when given, got {value!r}.")
    if args.num_validation_images < 0 or args.dataloader_num_workers < 0 or args.lr_warmup_steps < 0:
        raise ValueError("--num_validation_images, --dataloader_num_workers and --lr_warmup_steps must be >= 0.")
    if not 0 <= args.class_dropout_prob < 1:
        raise ValueError(f"--class_dropout_prob must be in [0, 1), got {args.class_dropout_prob}.")
    if not 0 <= args.ema_decay <= 1:
        raise ValueError(f"--ema_decay must be in [0, 1], got {args.ema_decay}.")
    if args.learning_rate <= 0 or (args.discriminator_learning_rate or 1) <= 0:
        raise ValueError("--learning_rate and --discriminator_learning_rate must be positive.")
    has_images = args.dataset_name is not None or args.train_data_dir is not None
    if args.dataset_name is not None and args.train_data_dir is not None:
        raise ValueError("Give either --dataset_name or --train_data_dir, not both.")
    if args.stage == "tokenizer" and not has_images:
        raise ValueError("The tokenizer stage needs images: --dataset_name or --train_data_dir.")
    if args.stage == "tokenizer" and (args.model_config is None) == (args.pretrained_model_name_or_path is None):
        raise ValueError("Give exactly one of --model_config (a new tokenizer) or --pretrained_model_name_or_path.")
    if args.stage == "prior":
        if args.codes_dir is None and not (has_images and args.tokenizer_name_or_path):
            raise ValueError("The prior stage needs --codes_dir (extracted codes), or an image dataset "
                             "(--dataset_name/--train_data_dir) together with --tokenizer_name_or_path.")  # fmt: skip
        if args.codes_dir is not None and has_images:
            raise ValueError("Give either --codes_dir or an image dataset for the prior stage, not both.")
    if args.report_to not in ("tensorboard", "wandb", "all", "none"):
        raise ValueError(f"--report_to must be tensorboard, wandb, all or none, got {args.report_to!r}.")


def public_args(args: argparse.Namespace) -> dict[str, Any]:
    """The arguments as a JSON-able dict without secrets (for trackers, saved files and model cards)."""
    return {k: v for k, v in sorted(vars(args).items()) if k not in SECRET_ARGUMENTS}


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
