# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""Model card (`glotok_hf.hub.model_card`) and Hub upload of a finished run. The Hub token comes from `--hub_token`
or the environment (`HF_TOKEN`, the saved login) and is never written: the card and saved options are built from
`TrainingArguments.public_dict`, and every text file is checked for the token before anything is uploaded."""

from pathlib import Path

from huggingface_hub import ModelCard, create_repo, get_token, upload_folder

from ..hub import model_card, pipeline_model_card
from .arguments import TrainingArguments

# Never uploaded: checkpoints (resumable state, large), temporary folders of interrupted saves.
UPLOAD_IGNORE = ["checkpoint-*/**", ".tmp-checkpoint-*/**", ".trash-checkpoint-*/**", "validation/**"]
_BINARY_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".pkl", ".png", ".jpg", ".arrow"}


def hub_repo_id(args: TrainingArguments) -> str:
    """`--hub_model_id`, or the name of `--output_dir`."""
    return args.hub_model_id or Path(args.output_dir).resolve().name


def create_hub_repo(args: TrainingArguments, token: str | None) -> str:
    """Create (or reuse) the model repository early, so a credentials problem stops the run before training."""
    return create_repo(hub_repo_id(args), exist_ok=True, private=args.hub_private_repo or None, token=token).repo_id


def data_summary(args: TrainingArguments, num_images: int, class_names, codes: dict | None = None) -> str:
    """The card's 'Training data': the dataset (Hub name or folder name, never a local path), its number of images and
    classes; `codes` is the metadata of the `--codes_dir` the run read instead of images."""
    if codes is not None:
        source = (
            f"the codes in `{Path(args.codes_dir).name}` (extracted at {codes['resolution']} px, flip={codes['flip']})"
        )
    elif args.dataset_name is not None and not Path(args.dataset_name).exists():
        source = f"the Hub dataset `{args.dataset_name}` (split {args.dataset_split})"
    else:
        source = f"the image folder `{Path(args.dataset_name or args.train_data_dir).name}`"
    names = list(class_names or [])
    classes = f", {len(names)} classes: {', '.join(map(str, names[:20]))}{', ...' if len(names) > 20 else ''}"
    return f"{source}: {num_images} images{classes if names else ''}."


def training_card(kind: str, stage, state, *, details: dict, metrics: dict, pipeline=None, **kwargs) -> ModelCard:
    """The model card of a finished run of `stage` (`kind` `"tokenizer"` / `"prior"`, or `"pipeline"` for the
    `pipeline` it wrote): `glotok_hf.hub.model_card` with the stage's `details`, the run's facts (steps, batch,
    optimizer, ...) and its final logged `metrics`."""
    args, accelerator = stage.args, stage.accelerator
    common = {
        "steps": state.global_step,
        "epochs": f"{state.images_seen / len(stage.items):.2f}",
        "global batch": args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps,
        "processes": accelerator.num_processes,
        "mixed precision": accelerator.mixed_precision,
        "optimizer": f"AdamW betas ({args.adam_beta1}, {args.adam_beta2}), weight decay {args.adam_weight_decay}",
        "learning rate": f"{args.learning_rate} ({args.lr_scheduler})",
        "EMA": f"decay {args.ema_decay} (the published weights)" if args.use_ema else "no",
        "skipped non-finite updates": state.nonfinite_steps,
    }
    on_hub = args.dataset_name is not None and not Path(args.dataset_name).exists()
    kwargs.update(
        details={**details, **common}, metrics={**metrics, "steps": state.global_step},
        datasets=[args.dataset_name] if on_hub else None, tags=["glotok-hf"],
        metrics_description=f"Logged at the final step ({state.global_step}), averaged over processes. Trained with "
        "glotok-hf's `training/train.py`; the full options are in `training_args.json`.",
    )  # fmt: skip
    if pipeline is not None:
        return pipeline_model_card(pipeline, **kwargs)
    return model_card(kind, repo_id=hub_repo_id(args), **kwargs)


def check_no_secret(folder: Path, secret: str | None) -> None:
    """Raise if any text file under `folder` contains `secret` (the Hub token)."""
    if not secret:
        return
    needle = secret.encode()
    for path in Path(folder).rglob("*"):
        if path.is_file() and path.suffix not in _BINARY_SUFFIXES and needle in path.read_bytes():
            raise RuntimeError(f"Refusing to upload: {path} contains the Hub token. Remove it and upload again.")


def push_folder(folder: Path, repo_id: str, token: str | None, commit_message: str = "End of training") -> str:
    """Upload the finished run (final model, card, discriminator, logs), never its checkpoints."""
    check_no_secret(folder, token or get_token())
    info = upload_folder(
        repo_id=repo_id, folder_path=str(folder), commit_message=commit_message, ignore_patterns=UPLOAD_IGNORE,
        token=token,
    )  # fmt: skip
    return getattr(info, "commit_url", str(info))
