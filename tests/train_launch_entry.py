"""Entry script for `accelerate launch` in the training tests: runs `glotok_hf.training.main` (what train.py runs),
then writes what each rank holds (model weights, and the codebook counts it saw locally, before any all-reduce) to
`<output_dir>/rank<r>.pt`, so a test can compare ranks and check that the logged codebook figures are global."""

import sys
from pathlib import Path

import torch

import glotok_hf.evaluation.codebook as codebook

LOCAL_COUNTS: dict[int, list[torch.Tensor]] = {}
_code_counts = codebook.code_counts


def _recording_code_counts(indices, num_codes):
    counts = _code_counts(indices, num_codes)
    LOCAL_COUNTS.setdefault(num_codes, []).append(counts.detach().clone().cpu())  # before the in-place all-reduce
    return counts


codebook.code_counts = _recording_code_counts

from glotok_hf.training import main  # noqa: E402  (after the patch above)

if __name__ == "__main__":
    run = main(sys.argv[1:])
    accelerator = run.stage.accelerator
    models = run.stage.checkpoint_roles()
    dump = {
        role: {k: v.detach().cpu().clone() for k, v in model.state_dict().items()} for role, model in models.items()
    }
    dump["local_counts"] = {n: torch.stack(c).sum(0) for n, c in LOCAL_COUNTS.items()}
    torch.save(dump, Path(run.args.output_dir) / f"rank{accelerator.process_index}.pt")
