# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""Model card and Hub upload of a finished run. The Hub token comes from `--hub_token` or the environment
(`HF_TOKEN`, the saved login) and is never written: the card and saved arguments are built from `public_args`, and
every text file is checked for the token before anything is uploaded."""

import json
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData, create_repo, get_token, upload_folder

# Never uploaded: checkpoints (resumable state, large), temporary folders of interrupted saves.
UPLOAD_IGNORE = ["checkpoint-*/**", ".tmp-checkpoint-*/**", ".trash-checkpoint-*/**", "validation/**"]
_BINARY_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".pkl", ".png", ".jpg", ".arrow"}


def hub_repo_id(args) -> str:
    return args.hub_model_id or Path(args.output_dir).resolve().name


def create_hub_repo(args, token: str | None) -> str:
    """Create (or reuse) the model repository early, so a credentials problem stops the run before training."""
    return create_repo(hub_repo_id(args), exist_ok=True, private=args.hub_private_repo or None, token=token).repo_id


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def render_card(info: dict[str, Any]) -> ModelCard:
    """Build the README model card from a run summary (see `summary` in the stage modules)."""
    data = ModelCardData(
        license=info.get("license", "apache-2.0"),
        library_name="transformers",
        tags=info["tags"],
        datasets=[info["dataset"]] if info.get("dataset_on_hub") else None,
        pipeline_tag=info.get("pipeline_tag"),
    )
    lines = [f"# {info['title']}", "", info["description"], "", "## Usage", "", "```python", info["usage"], "```", ""]
    if info.get("image"):
        lines += [f"![{info['image_caption']}]({info['image']})", "", f"*{info['image_caption']}*", ""]
    lines += ["## Training", "", "| | |", "|---|---|"]
    lines += [f"| {key} | {_fmt(value)} |" for key, value in info["training"].items()]
    if info.get("metrics"):
        lines += ["", f"## Final metrics (step {info['final_step']}, averaged over processes)", "", "| metric | value |",
                  "|---|---|"]  # fmt: skip
        lines += [f"| {key} | {_fmt(value)} |" for key, value in info["metrics"].items()]
    if info.get("teacher"):
        lines += ["", "## Teacher histogram", "", "The histogram relation loss (Eq. 7) matched this teacher:", "",
                  "```json", json.dumps(info["teacher"], indent=2, default=str), "```"]  # fmt: skip
    for title, payload in info.get("configs", {}).items():
        lines += ["", f"<details><summary>{title}</summary>", "", "```json",
                  json.dumps(payload, indent=2, default=str), "```", "", "</details>"]  # fmt: skip
    lines += ["", "Trained with [glotok-hf](https://github.com/glotok-hf/glotok-hf) (`training/train.py`).", ""]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines))


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
