"""Entry script for `accelerate launch` in the training tests: runs `training/train.py`'s `main`, then writes what
each rank holds (model weights, and the codebook counts it saw locally, before any all-reduce) to
`<output_dir>/rank<r>.pt`, so a test can compare ranks and check that the logged codebook figures are global."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))

import glotok_hf.evaluation.codebook as codebook  # noqa: E402

LOCAL_COUNTS: dict[int, list[torch.Tensor]] = {}
_code_counts = codebook.code_counts


def _recording_code_counts(indices, num_codes):
    counts = _code_counts(indices, num_codes)
    LOCAL_COUNTS.setdefault(num_codes, []).append(counts.detach().clone().cpu())  # before the in-place all-reduce
    return counts


codebook.code_counts = _recording_code_counts

import train  # noqa: E402

if __name__ == "__main__":
    run = train.main(sys.argv[1:])
    accelerator = run.stage.accelerator
    models = run.stage.checkpoint_roles()
    dump = {
        role: {k: v.detach().cpu().clone() for k, v in model.state_dict().items()} for role, model in models.items()
    }
    dump["local_counts"] = {n: torch.stack(c).sum(0) for n, c in LOCAL_COUNTS.items()}
    torch.save(dump, Path(run.args.output_dir) / f"rank{accelerator.process_index}.pt")
