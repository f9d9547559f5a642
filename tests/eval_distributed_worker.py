"""Runs the reconstruction and generation evaluations on the tiny models; `test_eval_distributed.py` runs it once in
the test process and once as two `torch.distributed` (gloo) processes and compares.

    ACCELERATE_USE_CPU=true RANK=r WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=p python tests/eval_distributed_worker.py OUT_DIR
"""

import json
import sys
from pathlib import Path

import torch
from conftest import tiny_glotok_model  # tests/ is on the path: it is this script's folder
from eval_utils import ColourClassifier, ConstantLogits, coloured_images, tiny_feature_net, tiny_pipeline

from glotok_hf.evaluation.generation import evaluate_generation
from glotok_hf.evaluation.reconstruction import evaluate_reconstruction
from glotok_hf.evaluation.sampling import balanced_class_labels, process_state, shard_indices


def run(out_dir: Path) -> dict:
    state = process_state()
    torch.set_num_threads(1)
    images = coloured_images([0, 1, 2, 0, 1, 2, 0], size=16)  # 7 images: the shards are uneven
    mine = shard_indices(len(images), state.num_processes, state.process_index)
    batches = [images[i : min(i + 2, mine.stop)] for i in range(mine.start, mine.stop, 2)]
    uniformity = {"num_points": 7, "num_repeats": 1, "perplexity": 2.0, "max_iter": 250, "num_threads": 1}
    reconstruction = evaluate_reconstruction(
        tiny_glotok_model(), batches, feature_network=tiny_feature_net(), uniformity_images=7,
        uniformity_kwargs=uniformity,
    )  # fmt: skip
    reference = coloured_images([0, 1, 2, 2, 1], size=8, seed=1)
    ref_shard = shard_indices(len(reference), state.num_processes, state.process_index)
    generation = evaluate_generation(
        tiny_pipeline(num_classes=3), balanced_class_labels(3, 3), seed=11, batch_size=2,
        feature_network=tiny_feature_net(), reference_batches=[reference[ref_shard.start : ref_shard.stop]],
        logits_network=ConstantLogits(4), inception_score_splits=1, classifier=ColourClassifier(),
        npz_path=out_dir / "samples.npz", guidance_scale=1.5,
    )  # fmt: skip
    generation.pop("num_images_this_process")
    generation["sampling"].pop("num_processes")
    return {"reconstruction": reconstruction, "generation": generation}


if __name__ == "__main__":
    out_dir = Path(sys.argv[1])
    result = run(out_dir)
    if process_state().is_main_process:
        (out_dir / "result.json").write_text(json.dumps(result))
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()  # shut gloo down before exit (else an occasional abort at exit)
