#!/usr/bin/env python
# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""Train the GloTok tokenizer (stage 1) or its class-conditional AR prior (stage 2) with Accelerate.

    accelerate launch training/train.py --config training/recipes/tiny_cpu.json
    accelerate launch training/train.py --stage tokenizer --train_data_dir images/ --model_config tokenizer.json ...
    accelerate launch training/train.py --config training/recipes/tiny_prior_cpu.json --codes_dir runs/codes

Also runs with plain `python training/train.py ...` (one process). See training/README.md for the recipes, resuming,
multi-GPU launches and what is logged.
"""

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the helper modules next to this file

from arguments import parse_args  # noqa: E402
from checkpointing import TrainingState  # noqa: E402
from loop import run_training  # noqa: E402
from publishing import create_hub_repo, push_folder  # noqa: E402
from runtime import build_accelerator, check_output_dir, logger  # noqa: E402


@dataclass
class TrainingRun:
    """What `main` returns to Python callers (tests, notebooks): the parsed arguments, the final training state and
    the stage object holding the trained models."""

    args: Any
    state: TrainingState
    stage: Any
    repo_id: str | None = None


def build_stage(args, accelerator):
    if args.stage == "tokenizer":
        from stage_tokenizer import TokenizerStage

        return TokenizerStage(args, accelerator)
    from stage_prior import PriorStage

    return PriorStage(args, accelerator)


def main(argv: list[str] | None = None) -> TrainingRun:
    args = parse_args(argv)
    token = args.hub_token or os.environ.get("HF_TOKEN") or None
    check_output_dir(args)
    accelerator = build_accelerator(args)
    repo_id = None
    if args.push_to_hub and accelerator.is_main_process:
        repo_id = create_hub_repo(args, token)
    stage = build_stage(args, accelerator)
    state = run_training(accelerator, stage, args)
    if args.push_to_hub and accelerator.is_main_process:
        url = push_folder(Path(args.output_dir), repo_id, token)
        logger.info(f"Uploaded to {url}")
    accelerator.wait_for_everyone()
    accelerator.end_training()  # closes the trackers and the process group
    return TrainingRun(args=args, state=state, stage=stage, repo_id=repo_id)


if __name__ == "__main__":
    from tracking import NonFiniteStepError

    try:
        main()
    except (ValueError, TypeError, OSError, NonFiniteStepError) as err:
        # User errors and the NaN guard carry an actionable message; GLOTOK_DEBUG=1 shows the traceback.
        if os.environ.get("GLOTOK_DEBUG"):
            raise
        print(f"train.py: error: {err}", file=sys.stderr)
        sys.exit(1 if isinstance(err, NonFiniteStepError) else 2)
