# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""`glotok check-pipeline`: check, offline, that a pipeline folder will work once pushed to the Hub.

The folder is loaded the way the Hub serves it, `DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)`,
in a fresh process where glotok-hf cannot be imported; that process generates one image, which must equal the image
the installed glotok-hf generates from the same weights and seed. The model card is linted (license, training data,
metrics, sample image), and no JSON file may carry a local absolute path. A folder saved with plain `save_pretrained`
(its model_index.json names glotok_hf modules) is checked in the layout push_to_hub uploads, written to a temporary
folder.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from collections import namedtuple
from pathlib import Path

# Prepended to the child script: glotok_hf cannot be imported there, as on a machine without glotok-hf.
BLOCK_GLOTOK_HF = """
import importlib.abc, sys

class BlockGloTok(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "glotok_hf" or name.startswith("glotok_hf."):
            raise ImportError("glotok_hf is blocked: this process stands for a machine without glotok-hf")

sys.meta_path.insert(0, BlockGloTok())
"""

_CHILD = f"""{BLOCK_GLOTOK_HF}
import numpy as np
import torch
from diffusers import DiffusionPipeline

folder, label, seed, output = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
torch.set_num_threads(1)
pipe = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
pipe.set_progress_bar_config(disable=True)
generator = [torch.Generator().manual_seed(seed)]
np.save(output, pipe([label], generator=generator, output_type="np").images)
print(type(pipe).__module__)
"""

DESCRIPTION = __doc__.split("\n", 1)[1].strip()
EPILOG = """examples:
  glotok check-pipeline runs/prior/pipeline
  glotok check-pipeline exported/ --seed 3 --tolerance 1e-5

Exit status 0 when every check passes, 1 when one fails, 2 for bad arguments."""


Check = namedtuple("Check", ["name", "ok", "detail"])  # one line of the report: PASS/FAIL, what, why


def register(subparsers) -> None:
    summary = "check offline that a pipeline folder loads from the Hub without glotok-hf, and lint its card"
    parser = subparsers.add_parser("check-pipeline", help=summary, description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("folder", type=Path, metavar="DIR", help="model_index.json, vqmodel/ and prior/ folder")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated image (default: 0)")
    parser.add_argument("--tolerance", type=float, default=1e-5, help="max pixel difference in [0, 1] (default: 1e-5)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds the child process may take (default: 600)")
    parser.set_defaults(func=run)


def lint_card(folder: Path) -> list[Check]:
    """The model card names its license, training data and metrics, and the image it shows exists."""
    readme = folder / "README.md"
    if not readme.is_file():
        return [Check("model card", False, "no README.md: push_to_hub writes one; see glotok_hf.hub.model_card")]
    from huggingface_hub import ModelCard

    card = ModelCard.load(readme)
    chunks = (chunk.partition("\n") for chunk in re.split(r"^## ", card.text, flags=re.MULTILINE)[1:])
    sections = {heading.strip().lower(): text.strip() for heading, _, text in chunks}  # `## Heading` -> its text
    data, table = sections.get("training data", ""), "|" in sections.get("metrics", "")
    documented = bool(data) and not data.startswith("Not documented")
    images = [line.split("](", 1)[1].split(")", 1)[0] for line in card.text.splitlines() if line.startswith("![")]
    missing = [name for name in images if "://" not in name and not (folder / name).is_file()]
    return [
        Check("card: license", bool(card.data.license), f"license: {card.data.license or 'missing in the metadata'}"),
        Check("card: training data", documented, "documented" if documented else "missing or 'Not documented'"),
        Check("card: metrics", table, "a metrics table" if table else "no metrics table in a Metrics section"),
        Check("card: images", not missing, f"missing {missing}" if missing else f"{len(images)} shown, all present"),
    ]


def local_paths_in_json(folder: Path) -> list[str]:
    """`file: key` of every JSON string value that is an absolute path on this machine (e.g. `_name_or_path`)."""
    found = []
    for path in sorted(folder.rglob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for key, value in data.items() if isinstance(data, dict) else ():
            if isinstance(value, str) and os.path.isabs(value) and Path(value).exists():
                found.append(f"{path.relative_to(folder)}: {key}")
    return found


def remote_code_checks(folder: Path, seed: int, tolerance: float, timeout: float) -> list[Check]:
    """The folder loads where glotok-hf cannot be imported, and generates the image (label 0) that the installed
    glotok-hf generates from its weights with the same seed."""
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    from ..modeling_glotok import GloTokModel
    from ..pipeline_glotok import GloTokPipeline

    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": os.path.join(tmp, "hf_home"), "OMP_NUM_THREADS": "1"}
        output = os.path.join(tmp, "image.npy")
        try:
            proc = subprocess.run(
                [sys.executable, "-c", _CHILD, str(folder), "0", str(seed), output],
                env=env, capture_output=True, text=True, timeout=timeout,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return [Check("loads without glotok-hf", False, f"the child process took more than {timeout:.0f} s")]
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            return [Check("loads without glotok-hf", False, last)]
        remote = np.load(output)
    torch.set_num_threads(1)  # the same thread count as the child: the same float results
    id2label = json.loads((folder / "model_index.json").read_text(encoding="utf-8")).get("id2label")
    prior = AutoModelForCausalLM.from_pretrained(folder / "prior")
    pipe = GloTokPipeline(GloTokModel.from_pretrained(folder / "vqmodel"), prior, id2label=id2label)
    pipe.set_progress_bar_config(disable=True)
    installed = pipe([0], generator=[torch.Generator().manual_seed(seed)], output_type="np").images
    difference = float(np.abs(remote - installed).max())
    return [
        Check("loads without glotok-hf", True, f"DiffusionPipeline -> {proc.stdout.strip().splitlines()[-1]}"),
        Check("same image as glotok-hf", difference <= tolerance, f"max pixel difference {difference:.2e}"),
    ]


def check_pipeline(
    folder: str | os.PathLike, seed: int = 0, tolerance: float = 1e-5, timeout: float = 600
) -> list[Check]:
    """Every check of `glotok check-pipeline` on `folder`, in order."""
    from ..hub import save_remote_code_pipeline
    from ..loading import load_pipeline

    folder = Path(folder)
    if not (folder / "model_index.json").is_file():
        raise FileNotFoundError(f"{folder} is not a pipeline folder: it has no model_index.json.")
    with tempfile.TemporaryDirectory() as tmp:
        checks, hub = [], folder
        if isinstance(json.loads((folder / "model_index.json").read_text(encoding="utf-8")).get("_class_name"), str):
            # a plain save_pretrained names the installed class: write the layout push_to_hub uploads (its card is
            # the folder's own README.md, linted there)
            hub = Path(tmp) / "hub"
            save_remote_code_pipeline(load_pipeline(folder, device="cpu"), hub, model_card=False)
            note = "a plain save_pretrained: checked in the layout push_to_hub uploads (a temporary copy)"
            checks.append(Check("remote-code layout", True, note))
        paths = local_paths_in_json(hub)
        detail = f"absolute paths in {paths}" if paths else "none in the JSON files"
        checks.append(Check("no local paths", not paths, detail))
        return checks + lint_card(folder) + remote_code_checks(hub, seed, tolerance, timeout)


def run(args: argparse.Namespace) -> int:
    checks = check_pipeline(args.folder, seed=args.seed, tolerance=args.tolerance, timeout=args.timeout)
    width = max(len(check.name) for check in checks)
    for check in checks:
        print(f"{'PASS' if check.ok else 'FAIL'}  {check.name:<{width}}  {check.detail}")
    failed = sum(not check.ok for check in checks)
    print(f"{len(checks) - failed} passed, {failed} failed")
    return 1 if failed else 0
