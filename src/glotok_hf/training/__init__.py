# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""Training of the GloTok tokenizer (stage 1) and its class-conditional AR prior (stage 2) with Accelerate: the
library of `training/train.py` (not imported by `import glotok_hf`); see training/README.md.

    from glotok_hf.training import main

    run = main(["--config", "training/recipes/tiny_cpu.json"])  # a TrainingRun: options, final state, stage
"""

from .arguments import TrainingArguments, parse_args
from .loop import Stage, TrainingRun, build_stage, main, run_training
from .tracking import NonFiniteStepError

__all__ = ["NonFiniteStepError", "Stage", "TrainingArguments", "TrainingRun", "build_stage", "main", "parse_args",
           "run_training"]  # fmt: skip
