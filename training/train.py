#!/usr/bin/env python
# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""Train the GloTok tokenizer (stage 1) or its class-conditional AR prior (stage 2) with Accelerate.

    accelerate launch training/train.py --config training/recipes/tiny_cpu.json
    accelerate launch training/train.py --stage tokenizer --train_data_dir images/ --model_config tokenizer.json ...
    accelerate launch training/train.py --config training/recipes/tiny_prior_cpu.json --codes_dir runs/codes

Also runs with plain `python training/train.py ...` (one process). The code is the `glotok_hf.training` package;
training/README.md covers recipes, resuming, multi-GPU launches and what is logged.
"""

import os
import sys

from glotok_hf.training import NonFiniteStepError, main

if __name__ == "__main__":
    try:
        main()
    except (ValueError, TypeError, OSError, NonFiniteStepError) as err:
        # User errors and the NaN guard carry an actionable message; GLOTOK_DEBUG=1 shows the traceback.
        if os.environ.get("GLOTOK_DEBUG"):
            raise
        print(f"train.py: error: {err}", file=sys.stderr)
        sys.exit(1 if isinstance(err, NonFiniteStepError) else 2)
