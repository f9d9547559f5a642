#!/usr/bin/env python
"""Rebuild the embedded default pipeline `pipelines/glotok-digits` from scratch, offline, on a CPU.

    python training/build_default_pipeline.py            # every step that has not run yet, then package
    python training/build_default_pipeline.py --overwrite  # also replace an existing pipelines/glotok-digits

Steps (each skipped when its output exists, so an interrupted build resumes):

1. `data`      OpenCV's 5,000 handwritten digits -> `data/digits` (train 4,500 / test 500).
2. `backbone`  a small ViT trained on the digits: the teacher backbone (a stand-in for DINOv2; none can be downloaded).
3. `judge`     a small CNN trained on the training digits (the generator's 4,500): the classifier of class
               consistency (a different architecture from the teacher) and the feature network of a digits FID.
4. `teacher`   the teacher histogram: k-means (k = the semantic codebook size) of the ViT's layer-3 patch features.
5. `tokenizer` `training/recipes/digits_tokenizer.json` (the full GloTok objective minus LPIPS: no VGG weights).
6. `codes`     `glotok extract-codes` of the training split.
7. `prior`     `training/recipes/digits_prior.json`; it also writes the assembled `GloTokPipeline`.
8. `evaluate`  reconstruction metrics on the test split; 100 samples per class: class consistency, feature FID, and
               `benchmarks/default_pipeline_checks.py`: the memorisation check (nearest training digit of every
               sample vs of every test digit) and the real-vs-real FID floor at the same sample counts.
9. `package`   copies the pipeline to `pipelines/glotok-digits` with its model card, sample grid and training log.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import timeit
from pathlib import Path

import torch

from glotok_hf import GloTokPipeline
from glotok_hf.data import image_grid
from glotok_hf.hub import SAMPLE_GRID_FILE, _update_json, pipeline_model_card, save_model_card
from glotok_hf.training.tracking import METRICS_FILE, read_metrics

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs"
TOKENIZER, CODES, PRIOR = RUNS / "glotok-digits-tokenizer", RUNS / "glotok-digits-codes", RUNS / "glotok-digits-prior"
TEACHER = RUNS / "teachers" / "digits_vit_l3_k64.safetensors"
EVAL = RUNS / "glotok-digits-eval"
TARGET = ROOT / "pipelines" / "glotok-digits"
SAMPLES_IMAGE = ROOT / "docs" / "images" / "glotok-digits-samples.png"
DATA_SOURCE = (
    "OpenCV's `digits.png` (5,000 real handwritten digits, 20x20, 500 per class; from Debian's `opencv-doc` package, "
    "BSD-3-Clause), padded to 24x24 RGB; 4,500 for training, 500 held out (`training/prepare_offline_data.py digits`)."
)


def python(*args: str) -> None:
    """Run `python args` in the checkout on one thread; `glotok(...)` is `python -m glotok_hf.cli ...`."""
    print("+ python", *args, flush=True)
    subprocess.run([sys.executable, *args], cwd=ROOT, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def glotok(*args: str) -> None:
    python("-m", "glotok_hf.cli", *args)


STEPS = {
    "data": (ROOT / "data" / "digits", lambda: python("training/prepare_offline_data.py", "digits", "--output",
                                                      "data/digits")),
    "backbone": (RUNS / "digits_vit" / "config.json", lambda: python(
        "training/train_image_classifier.py", "--arch", "vit", "--dataset_name", "data/digits", "--output_dir",
        "runs/digits_vit", "--epochs", "30", "--learning_rate", "1e-3")),
    "judge": (RUNS / "digits_cnn" / "classifier.pt", lambda: python(
        "training/train_image_classifier.py", "--arch", "cnn", "--dataset_name", "data/digits", "--output_dir",
        "runs/digits_cnn", "--epochs", "15")),
    "teacher": (TEACHER, lambda: glotok(
        "build-teacher", "--source", "backbone", "--model", "runs/digits_vit", "--dataset-name", "data/digits",
        "--layer", "3", "--num-clusters", "64", "--output", str(TEACHER.relative_to(ROOT)), "--no-progress")),
    "tokenizer": (TOKENIZER / "model.safetensors", lambda: python(
        "training/train.py", "--config", "training/recipes/digits_tokenizer.json",
        *(["--resume_from_checkpoint", "latest"] if TOKENIZER.exists() else []))),
    "codes": (CODES / "glotok_codes.json", lambda: glotok(
        "extract-codes", "--tokenizer", str(TOKENIZER.relative_to(ROOT)), "--dataset-name", "data/digits",
        "--resolution", "24", "--output-dir", str(CODES.relative_to(ROOT)))),
    "prior": (PRIOR / "pipeline" / "model_index.json", lambda: python(
        "training/train.py", "--config", "training/recipes/digits_prior.json",
        *(["--resume_from_checkpoint", "latest"] if PRIOR.exists() else []))),
    "evaluate": (EVAL / "checks.json", lambda: evaluate()),
}  # fmt: skip


def evaluate() -> None:
    EVAL.mkdir(parents=True, exist_ok=True)
    glotok("eval", "reconstruction", "--model", str(TOKENIZER), "--dataset-name", "data/digits", "--split", "test",
           "--resolution", "24", "--uniformity-images", "500", "--output", str(EVAL / "reconstruction.json"),
           "--overwrite")  # fmt: skip
    glotok("eval", "generation", "--pipeline", str(PRIOR / "pipeline"), "--num-classes", "10",
           "--images-per-class", "100", "--classifier", "runs/digits_cnn/classifier.pt",
           "--feature-net", "runs/digits_cnn/features.pt", "--reference", "data/digits", "--reference-split", "test",
           "--output", str(EVAL / "generation.json"), "--overwrite")  # fmt: skip
    python("benchmarks/default_pipeline_checks.py", "--pipeline", str(PRIOR / "pipeline"), "--data", "data/digits",
           "--judge", "runs/digits_cnn", "--output", str(EVAL / "checks.json"))  # fmt: skip


def seconds_per_image(pipeline, batch: int = 10, repeats: int = 3) -> float:
    """Median wall-clock time of one batched call after a warm-up call, per image (CPU, this process's threads)."""

    def call():
        pipeline(
            list(range(batch)), generator=[torch.Generator().manual_seed(i) for i in range(batch)], output_type="np"
        )

    return statistics.median(timeit.repeat(call, number=1, repeat=repeats + 1)[1:]) / batch


def training_summary(folder: Path, keys: list[str], every: int) -> list[dict]:
    """Rows of the training log at every `every` steps (and the last step)."""
    rows = read_metrics(folder / "logs" / METRICS_FILE)
    picked = [r for r in rows if r["step"] % every == 0 or r["step"] in (1, rows[-1]["step"])]
    return [{"step": r["step"], **{k: r[k] for k in keys if k in r}} for r in picked]


def markdown_table(rows: list[dict]) -> str:
    cells = [[f"{row[k]:.4g}" if isinstance(row[k], float) else str(row[k]) for k in rows[0]] for row in rows]
    return "\n".join("| " + " | ".join(line) + " |" for line in [list(rows[0]), ["---"] * len(rows[0]), *cells])


def package(overwrite: bool) -> None:
    if TARGET.exists() and not overwrite:
        raise SystemExit(f"{TARGET} exists; pass --overwrite to replace it.")
    torch.set_num_threads(1)
    pipeline = GloTokPipeline.from_pretrained(PRIOR / "pipeline")
    pipeline.set_progress_bar_config(disable=True)
    rec = json.loads((EVAL / "reconstruction.json").read_text())
    gen = json.loads((EVAL / "generation.json").read_text())
    judge = json.loads((RUNS / "digits_cnn" / "metrics.json").read_text())
    checks = json.loads((EVAL / "checks.json").read_text())
    memo, floor = checks["memorization"], checks["fid_real_vs_real"]
    per_image = seconds_per_image(pipeline)
    generators = [torch.Generator().manual_seed(i) for i in range(80)]
    images = pipeline([i // 8 for i in range(80)], generator=generators, output_type="pil").images
    grid = image_grid([im.resize((48, 48), resample=0) for im in images], cols=8)
    metrics = {
        "class consistency (CNN judge, 1,000 samples, guidance 2.0)": (
            f"{gen['class_consistency']['accuracy']:.3f} (binomial s.e. {checks['class_consistency_binomial_se']:.3f})"
        ),
        "judge accuracy on real test / training digits": (
            f"{judge['test_accuracy']:.3f} / {checks['judge_accuracy_train']:.3f}"
        ),
        "nearest training digit, L2 on [0, 1] pixels: median / 5th percentile, samples vs real test digits": (
            f"{memo['samples']['median']:.2f} / {memo['samples']['p5']:.2f} vs "
            f"{memo['held_out']['median']:.2f} / {memo['held_out']['p5']:.2f}"
        ),
        "samples that copy a training digit: exact / closer than any real test digit": (
            f"{memo['samples']['exact_copy_fraction']:.1%} / {memo['samples']['near_copy_fraction']:.1%}"
        ),
        "feature FID vs real test digits (CNN features)": f"{gen['gfid']:.2f}",
        "FID floor: 1,000 real training vs the 500 test digits (median, range of 10 draws)": (
            f"{floor['median']:.2f} ({floor['min']:.2f}-{floor['max']:.2f})"
        ),
        "reconstruction PSNR (test split, dB)": f"{rec['psnr']:.2f}",
        "reconstruction SSIM (test split)": f"{rec['ssim']:.3f}",
        "semantic / visual codebook usage (test split)": (
            f"{rec['codebooks']['semantic']['usage']:.2f} / {rec['codebooks']['visual']['usage']:.2f}"
        ),
        "wall-clock seconds per image (CPU, batch 10, 1 thread)": f"{per_image:.3f}",
    }
    tok_log = training_summary(TOKENIZER, ["generator/reconstruction_loss", "generator/histogram_loss",
                                           "codebook/semantic_usage", "codebook/visual_usage"], every=500)  # fmt: skip
    prior_log = training_summary(PRIOR, ["prior/loss", "prior/token_accuracy"], every=500)
    description = (
        "The embedded default of glotok-hf: a small GloTok tokenizer (dual codebook, histogram relation learning "
        "against a teacher histogram, residual module) and a class-conditional `LlamaForCausalLM` prior, trained on "
        "a 2-core CPU with the project's own recipes (`training/recipes/digits_tokenizer.json`, "
        "`training/recipes/digits_prior.json`; rebuild with `python training/build_default_pipeline.py`). It "
        "generates 24x24 handwritten digits of the requested class."
    )
    card = pipeline_model_card(
        pipeline,
        description=description,
        training_data=DATA_SOURCE,
        training_data_license="BSD-3-Clause (OpenCV)",
        metrics=metrics,
        metrics_description=(
            "Class consistency: accuracy of a CNN judge (a different architecture from the ViT teacher backbone, "
            "trained only on real digits: the same 4,500 training digits as this pipeline, so it would also accept "
            "copies of them) on 100 samples per class, image i seeded i; the s.e. is binomial. Memorisation: L2 "
            "distance over all pixel values (scaled to [0, 1], 3x24x24 values) from each of the 1,000 samples, and "
            "from each of the 500 held-out test digits, to its nearest training digit; an exact copy has distance 0, "
            "and 'closer than any real test digit' means below the smallest test-digit distance. Pixels rather "
            "than the judge's features, because the judge is trained to put all digits of a class close together. "
            "FID in the judge's 128-d feature space against the 500 real test digits (not comparable to Inception "
            "FIDs); its floor is the FID of 1,000 real training digits (100 per class) against the same 500 test "
            "digits, so an FID near the floor is as close to the test digits as real digits get at these counts. "
            "Time: median wall-clock time of a batch of 10 on the 2-core CPU build machine. Recompute offline "
            "(`training/prepare_offline_data.py` fetches OpenCV's `digits.png` through `apt-get download`):\n\n"
            "```bash\npython training/prepare_offline_data.py digits --output data/digits\n"
            "python training/train_image_classifier.py --arch cnn --dataset_name data/digits --output_dir "
            "runs/digits_cnn --epochs 15\n"
            "python benchmarks/default_pipeline_checks.py   # class consistency, judge accuracy, memorisation, FID\n"
            "glotok eval reconstruction --model pipelines/glotok-digits/vqmodel --dataset-name data/digits "
            "--split test --resolution 24 --uniformity-images 500 --output recon.json   # PSNR, SSIM, usage\n```"
        ),
        sample_grid_file=SAMPLE_GRID_FILE,
    )
    card.text += (
        "\n## Training log (summary)\n\nTokenizer (`logs/metrics.jsonl`, values at the logged step):\n\n"
        f"{markdown_table(tok_log)}\n\nPrior:\n\n{markdown_table(prior_log)}\n"
    )
    staging = TARGET.with_name(TARGET.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    pipeline.save_pretrained(staging)
    _update_json(staging / "model_index.json", _name_or_path=None)  # the build machine's path, meaningless elsewhere
    # The checkout always has `glotok_hf`: the embedded tokenizer needs no copy of its modeling code (it would drift
    # from `src/`); `push_to_hub` writes the remote-code layout fresh.
    for module in (staging / "vqmodel").glob("*.py"):
        module.unlink()
    _update_json(staging / "vqmodel" / "config.json", auto_map=None)
    save_model_card(card, staging, sample_grid=grid, overwrite=True)
    (staging / "training_summary.json").write_text(
        json.dumps({"metrics": metrics, "tokenizer_log": tok_log, "prior_log": prior_log}, indent=2) + "\n"
    )
    if TARGET.exists():
        shutil.rmtree(TARGET)
    staging.rename(TARGET)
    SAMPLES_IMAGE.parent.mkdir(parents=True, exist_ok=True)
    grid.save(SAMPLES_IMAGE)
    print(json.dumps(metrics, indent=2))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--overwrite", action="store_true", help="Replace an existing pipelines/glotok-digits.")
    parser.add_argument("--steps", nargs="+", choices=[*STEPS, "package"], default=[*STEPS, "package"])
    args = parser.parse_args(argv)
    for name in args.steps:
        output, action = STEPS.get(name, (None, lambda: package(args.overwrite)))
        if output and output.exists():
            print(f"[{name}] done ({output.relative_to(ROOT)} exists)")
        else:
            print(f"[{name}] running", flush=True)
            action()
    return 0


if __name__ == "__main__":
    sys.exit(main())
