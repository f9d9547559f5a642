#!/usr/bin/env bash
# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
#
# The GPU check of issue 17, one command from a clean checkout on a fresh GPU machine (at most 8 minutes, install
# included, on one H100 or H200):
#
#     bash benchmarks/gpu_check.sh              # writes outputs/gpu_check.json and prints a short table
#     bash benchmarks/gpu_check.sh --dry-run    # the same code on CPU, every size shrunk (tests/test_gpu_check.py)
#
# Other arguments go to benchmarks/gpu_check.py (see --help there). Install step, skipped with --dry-run or when the
# Python in use already has everything: a virtual environment build/venv-gpu-check that sees the machine's packages
# (--system-site-packages), so the machine's CUDA torch is used when it satisfies setup.cfg (torch >= 2.13, CUDA
# available on a machine with a GPU); otherwise `pip install torch==2.13.0` first, as the Makefile does; then
# `pip install -e ".[dev]"`. The Python is $PYTHON if set, else build/venv-gpu-check, else .venv (make's), else python3.
set -euo pipefail
export GPU_CHECK_STARTED=${GPU_CHECK_STARTED:-$(date +%s)}
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TQDM_DISABLE=1
VENV=build/venv-gpu-check  # build/ is git-ignored

dry_run=0
for arg in "$@"; do [ "$arg" = "--dry-run" ] && dry_run=1; done
has_gpu=0
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && has_gpu=1

PY=${PYTHON:-}
if [ -z "$PY" ]; then
    for candidate in "$VENV/bin/python" .venv/bin/python; do
        [ -x "$candidate" ] && { PY=$candidate; break; }
    done
    PY=${PY:-python3}
fi

torch_ok() {  # torch >= 2.13, with CUDA on a GPU machine
    "$1" -c "import sys, torch
major, minor = (int(x) for x in torch.__version__.split('+')[0].split('.')[:2])
sys.exit(0 if (major, minor) >= (2, 13) and (torch.cuda.is_available() or not $has_gpu) else 1)" 2>/dev/null
}
env_ok() {  # every requirement of setup.cfg (install_requires + dev) installed in a version it accepts
    torch_ok "$1" && "$1" -c "import configparser, importlib.metadata as md, sys
from packaging.requirements import Requirement
cfg = configparser.ConfigParser()
cfg.read('setup.cfg')
lines = cfg['options']['install_requires'].splitlines() + cfg['options.extras_require']['dev'].splitlines()
for req in map(Requirement, filter(None, map(str.strip, lines))):
    if md.version(req.name).split('+')[0] not in req.specifier:
        sys.exit(f'{req.name} {md.version(req.name)} does not satisfy {req}')
import glotok_hf.training" 2>/dev/null
}

if [ "$dry_run" = 1 ] || env_ok "$PY"; then
    export GPU_CHECK_INSTALL=${GPU_CHECK_INSTALL:-"nothing (environment ready: $PY)"}
else
    echo "gpu_check.sh: installing into $VENV (the machine's packages stay visible) ..."
    [ -x "$VENV/bin/python" ] || python3 -m venv --system-site-packages "$VENV" || echo "gpu_check.sh: no venv"
    [ -x "$VENV/bin/python" ] && PY=$VENV/bin/python
    installed="the machine's torch"
    if ! torch_ok "$PY"; then
        installed="torch==2.13.0"
        "$PY" -m pip install -q torch==2.13.0 || installed="FAILED: pip install torch==2.13.0"
    fi
    "$PY" -m pip install -q -e ".[dev]" || installed="$installed; FAILED: pip install -e .[dev]"
    # A failed install is recorded in the JSON; the sections then report what does not import.
    export GPU_CHECK_INSTALL="$installed + glotok-hf[dev], $(( $(date +%s) - GPU_CHECK_STARTED )) s"
fi
exec "$PY" benchmarks/gpu_check.py "$@"
