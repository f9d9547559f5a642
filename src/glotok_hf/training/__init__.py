# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""Training of the GloTok tokenizer (stage 1) and its class-conditional AR prior (stage 2) with Accelerate.

`training/train.py` is the command line (`accelerate launch training/train.py --config recipe.json ...`); this
package is its library, imported as `glotok_hf.training` (never by `import glotok_hf`):

    from glotok_hf.training import main, parse_args

    run = main(["--config", "training/recipes/tiny_cpu.json"])  # a TrainingRun: options, final state, stage

Modules: `arguments` (the typed `TrainingArguments`, flags and recipes), `loop` (`main`, the loop, the `Stage`
protocol), `stage_tokenizer` / `stage_prior` (the two stages), `checkpointing`, `ema`, `loaders`, `runtime`,
`tracking`, `publishing`. See training/README.md.
"""

from .arguments import TrainingArguments, parse_args
from .loop import Stage, TrainingRun, build_stage, main, run_training
from .tracking import NonFiniteStepError

__all__ = ["NonFiniteStepError", "Stage", "TrainingArguments", "TrainingRun", "build_stage", "main", "parse_args",
           "run_training"]  # fmt: skip
