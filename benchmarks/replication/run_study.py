#!/usr/bin/env python
"""Small-scale replication of GloTok's ablations (paper Tables 3-5) on 5,000 real handwritten digits, with the
random-codebook and uniform teacher controls the paper lacks. One command reruns everything:

    python benchmarks/replication/run_study.py --jobs 2        # the whole study: ~2 h on 2 CPU cores
    python benchmarks/replication/run_study.py --quick         # smoke test of every stage with tiny budgets
    python benchmarks/replication/run_study.py --only glotok:0 # one run (row:seed)
    python benchmarks/replication/run_study.py --report-only   # aggregate the cached runs into docs/ again

It prepares what is missing (the digits dataset, a ViT teacher backbone and its k-means teacher histogram, the
random and uniform control teachers, an independent CNN judge whose pooled features are the FID feature space), then
for every row x seed: trains the tokenizer with `training/train.py` (same steps and batch for every row), evaluates
reconstruction on the held-out test split (PSNR, SSIM, rFID, usage/perplexity per codebook, uniformity of the
semantic latents, the learned codebook's similarity histogram), extracts the training codes, trains a small prior
(same budget for every row), samples class-balanced images with fixed per-image seeds, and scores them (class
consistency under the CNN judge, FID in its feature space against the test split). Each finished run is cached as
`<work-dir>/runs/<row>/seed<k>/result.json` and skipped next time; interrupted training resumes from its checkpoint.
`report.py` then writes mean +- std over seeds, Welch t-tests, the tables (into docs/replication.md) and the plots.
"""

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # glotok_hf must be importable (`pip install -e .`); children get src/


@dataclasses.dataclass(frozen=True)
class Row:
    """One configuration of the study: model overrides on the tiny recipe, a teacher, and the histogram weight."""

    title: str
    model: dict
    teacher: str | None = None  # "vit" (the paper's kind), "random", "uniform"
    histogram_weight: float = 0.0


SEMANTIC, VISUAL = 64, 128  # the tiny recipe's codebooks; the single-codebook row has their total, 192
ROWS = {
    "single_vq": Row(
        "single VQ (192 codes)",
        {"semantic_codebook_size": SEMANTIC + VISUAL, "visual_codebook_size": 0, "use_residual": False},
    ),  # fmt: skip
    "dual_vq": Row("dual VQ (64 + 128)", {"use_residual": False}),
    "dual_hist": Row("dual + hist (0.01)", {"use_residual": False}, "vit", 0.01),
    "dual_hist_0.1": Row("dual + hist (0.1)", {"use_residual": False}, "vit", 0.1),
    "glotok": Row("dual + hist + residual (GloTok)", {}, "vit", 0.01),
    "glotok_random_teacher": Row("GloTok, random-codebook teacher", {}, "random", 0.01),
    "glotok_uniform_teacher": Row("GloTok, uniform teacher", {}, "uniform", 0.01),
}


@dataclasses.dataclass(frozen=True)
class Budget:
    """Compute per run, identical for every row. `quick` shrinks everything for the smoke test."""

    tokenizer_steps: int = 400  # the tiny recipe's: 400 x 32 = 2.8 epochs of the 4,500 training digits
    tokenizer_batch: int = 32
    disc_start: int = 250  # the recipe's
    prior_steps: int = 400
    prior_batch: int = 32  # half the recipe's: 400 x 32 = 2.8 epochs of codes
    validation_images: int = 10  # the prior's final validation grid
    images_per_class: int = 20  # 200 class-balanced samples per tokenizer
    guidance_scale: float = 2.0
    uniformity_repeats: int = 3  # t-SNE + KDE repeats on the 500 test images
    uniformity_perplexity: float = 30.0
    eval_images: int | None = None  # test images for reconstruction (None: the whole split, 500)
    code_images: int | None = None  # training images encoded for the prior (None: all 4,500)
    vit_epochs: int = 30
    cnn_epochs: int = 15
    teacher_images: int | None = None  # images whose ViT features are clustered (None: all 4,500)
    data_source: str = "opencv"


QUICK = Budget(tokenizer_steps=2, tokenizer_batch=8, disc_start=1, prior_steps=2, prior_batch=8,
               validation_images=0, images_per_class=1, uniformity_repeats=1,
               uniformity_perplexity=10.0, eval_images=40, code_images=200, vit_epochs=1, cnn_epochs=1, teacher_images=200,
               data_source="sklearn")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Paths:
    data: Path
    work: Path

    @property
    def assets(self) -> Path:
        return self.work / "assets"

    @property
    def vit(self) -> Path:
        return self.assets / "digits_vit"

    @property
    def cnn(self) -> Path:
        return self.assets / "digits_cnn"

    def teacher(self, kind: str) -> Path:
        """`vit` (k-means of the ViT's layer-3 patch features), `random` or `uniform`."""
        return self.assets / "teachers" / f"{kind}.safetensors"

    def run_dir(self, row: str, seed: int) -> Path:
        return self.work / "runs" / row / f"seed{seed}"


# ------------------------------------------------------------------------------------------------------ helpers
def child_env(threads: int) -> dict:
    env = dict(os.environ, TQDM_DISABLE="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))  # fmt: skip
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])])
    return env


def run_step(module: str, argv: list) -> None:
    """Run a step through its command's `main(argv)` in this process (what a user would type, without paying the
    imports of a new process each time), failing loudly. `module` is `glotok_hf.cli` or a script of training/."""
    import importlib
    import runpy

    argv = [str(a) for a in argv]
    script = {"glotok_hf.cli": "glotok"}.get(module, f"python training/{module}.py")
    print("$", script, " ".join(argv), flush=True)
    if module == "glotok_hf.cli":
        code = importlib.import_module(module).main(argv)
    else:  # a script, not a package: run from its file
        code = runpy.run_path(str(ROOT / "training" / f"{module}.py"), run_name=module)["main"](argv)
    if code:
        raise RuntimeError(f"`{script} {' '.join(argv)}` failed with exit code {code}.")


def write_json(path: Path, payload: dict) -> None:
    """Atomic: a crash leaves the old file or none, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)


def cached(path: Path, compute) -> dict:
    if path.is_file():
        return json.loads(path.read_text())
    result = compute()
    write_json(path, result)
    return result


def train_in_process(argv: list) -> None:
    """`training/train.py` in this process (a fresh process per stage would cost ~6 s of imports), then reset
    accelerate's singletons so the next stage starts clean."""
    from accelerate.state import AcceleratorState, GradientState, PartialState

    from glotok_hf.training import main

    try:
        main([str(a) for a in argv])
    finally:
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
        PartialState._reset_state()


# -------------------------------------------------------------------------------------------------- preparation
def prepare(paths: Paths, budget: Budget, judge_only: bool = False) -> None:
    """Build whatever is missing: data, ViT backbone, teachers, CNN judge, and the real-data reference figures
    (`judge_only`: no backbone and teachers, for studies that do not train tokenizers)."""
    if not (paths.data / "dataset_dict.json").is_file():
        run_step("prepare_offline_data", ["digits", "--output", paths.data, "--source", budget.data_source])
    if not judge_only and not (paths.vit / "metrics.json").is_file():
        run_step("train_image_classifier", ["--arch", "vit", "--dataset_name", paths.data, "--output_dir", paths.vit,
                                            "--epochs", budget.vit_epochs, "--learning_rate", "1e-3",
                                            "--overwrite_output_dir"])  # fmt: skip
    if not (paths.cnn / "metrics.json").is_file():
        run_step("train_image_classifier", ["--arch", "cnn", "--dataset_name", paths.data, "--output_dir", paths.cnn,
                                            "--epochs", budget.cnn_epochs, "--overwrite_output_dir"])  # fmt: skip
    teachers = {
        "vit": ["--source", "backbone", "--model", paths.vit, "--dataset-name", paths.data, "--layer", "3",
                "--num-clusters", SEMANTIC, "--no-progress", "--device", "cpu",
                *(["--max-images", budget.teacher_images] if budget.teacher_images else [])],
        "random": ["--source", "random", "--size", SEMANTIC, "--dim", 8, "--seed", 0],
        "uniform": ["--source", "uniform"],
    }  # fmt: skip
    for kind, args in teachers.items():
        if not judge_only and not paths.teacher(kind).is_file():
            run_step("glotok_hf.cli", ["build-teacher", *args, "--output", paths.teacher(kind)])
    cached(paths.assets / "reference.json", lambda: real_data_reference(paths, budget))


def test_loader(paths: Paths, budget: Budget, batch_size: int = 100):
    import torch

    from glotok_hf.data import ImageDataset, ImageTransform, collate_images, load_image_dataset

    test = load_image_dataset(dataset_name=str(paths.data), split="test")
    if budget.eval_images:
        test = test.select(range(min(budget.eval_images, len(test))))
    dataset = ImageDataset(test, ImageTransform(24))
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=collate_images)


def real_data_reference(paths: Paths, budget: Budget) -> dict:
    """What real images score under the same protocol: the FID floor of as many real training images as there are
    samples (class-balanced) against the test split, and the judge's accuracy on them and on the test split."""
    import torch

    from glotok_hf.data import ImageTransform, decode_image, load_image_dataset
    from glotok_hf.evaluation import FrechetDistance, class_consistency, load_feature_network, load_image_classifier

    train = load_image_dataset(dataset_name=str(paths.data), split="train")
    labels = train["label"]
    picked = [i for c in range(10) for i in [j for j, y in enumerate(labels) if y == c][: budget.images_per_class]]
    transform = ImageTransform(24)
    images = torch.stack([transform(decode_image(train[i]["image"])) for i in picked])
    fid = FrechetDistance(load_feature_network(paths.cnn / "features.pt", probe_size=24))
    judge = load_image_classifier(paths.cnn / "classifier.pt")
    test_correct, test_total = 0, 0
    for batch in test_loader(paths, budget):
        fid.update(batch["pixel_values"], real=True)
        test_correct += int((judge(batch["pixel_values"]).argmax(-1) == batch["labels"]).sum())
        test_total += len(batch["labels"])
    fid.update(images, real=False)
    consistency = class_consistency(judge, images, torch.tensor([labels[i] for i in picked]), num_classes=10)
    return {
        "fid_real_train_vs_test": fid.compute(),
        "num_real_images": len(picked),
        "judge_accuracy_real_train_subset": consistency["accuracy"],
        "judge_accuracy_test": test_correct / test_total,
        **{
            net: json.loads((path / "metrics.json").read_text())
            for net, path in (("vit", paths.vit), ("cnn", paths.cnn))
            if (path / "metrics.json").is_file()
        },
    }


# ------------------------------------------------------------------------------------------------------ one run
def tokenizer_config(row: Row) -> dict:
    recipe = json.loads((ROOT / "training/recipes/tiny_cpu.json").read_text())
    return {**recipe["model_config"], **row.model}


def train_tokenizer(row: Row, seed: int, paths: Paths, budget: Budget, out: Path) -> None:
    argv = ["--config", ROOT / "training/recipes/tiny_cpu.json", "--output_dir", out, "--seed", seed,
            "--dataset_name", paths.data, "--model_config", json.dumps(tokenizer_config(row)),
            "--max_train_steps", budget.tokenizer_steps, "--train_batch_size", budget.tokenizer_batch,
            "--disc_start", budget.disc_start,
            "--histogram_weight", row.histogram_weight, "--checkpointing_steps", min(200, budget.tokenizer_steps),
            "--checkpoints_total_limit", 1, "--validation_steps", budget.tokenizer_steps, "--report_to", "none",
            "--resume_from_checkpoint", "latest"]  # fmt: skip
    if row.teacher is not None:
        argv += ["--teacher_histogram", paths.teacher(row.teacher)]
    train_in_process(argv)


def train_prior(seed: int, budget: Budget, tokenizer: Path, codes: Path, out: Path, extra: list = ()) -> None:
    train_in_process(["--config", ROOT / "training/recipes/tiny_prior_cpu.json", "--output_dir", out, "--seed", seed,
                      "--codes_dir", codes, "--tokenizer_name_or_path", tokenizer,
                      "--max_train_steps", budget.prior_steps, "--lr_warmup_steps", budget.prior_steps // 10,
                      "--checkpointing_steps", min(200, budget.prior_steps), "--checkpoints_total_limit", 1,
                      "--validation_steps", budget.prior_steps, "--num_validation_images", budget.validation_images,
                      "--train_batch_size", budget.prior_batch,
                      "--report_to", "none", "--resume_from_checkpoint", "latest", *extra])  # fmt: skip


def evaluate_tokenizer(paths: Paths, budget: Budget, tokenizer: Path) -> dict:
    from glotok_hf import GloTokModel
    from glotok_hf.evaluation import evaluate_reconstruction, load_feature_network

    model = GloTokModel.from_pretrained(tokenizer).eval()
    loader = test_loader(paths, budget)
    return evaluate_reconstruction(
        model,
        loader,
        feature_network=load_feature_network(paths.cnn / "features.pt", probe_size=24),
        uniformity_images=len(loader.dataset),
        uniformity_branch="semantic",
        uniformity_flip=False,  # a mirrored digit is not a digit; the tokenizers never saw one
        uniformity_kwargs={
            "num_points": None,
            "num_repeats": budget.uniformity_repeats,
            "seed": 42,
            "perplexity": budget.uniformity_perplexity,
            "num_threads": 1,
        },  # fmt: skip
    )


def codebook_histograms(paths: Paths, tokenizer: Path, codes: Path) -> dict:
    """The learned semantic codebook's similarity histogram (all codes, and only the codes the training images use)
    and its KL divergence `KL(P_t || P_s)` (the loss of Eq. 7) to every teacher."""
    import numpy as np
    import torch

    from glotok_hf import GloTokModel
    from glotok_hf.codes import load_code_dataset
    from glotok_hf.losses.histogram import soft_cosine_histogram
    from glotok_hf.sampling import TokenLayout
    from glotok_hf.teacher import load_teacher

    model = GloTokModel.from_pretrained(tokenizer)
    codebook = model.semantic.quantizer.codebook().detach().double()
    dataset, meta = load_code_dataset(codes)
    layout = TokenLayout(model.config.visual_codebook_size, model.config.semantic_codebook_size, 10)
    _, semantic = layout.to_indices(torch.as_tensor(np.asarray(dataset["codes"])))
    used = torch.bincount(semantic.flatten(), minlength=len(codebook)) > 0
    teachers = {kind: load_teacher(paths.teacher(kind)).histogram for kind in ("vit", "random", "uniform")}
    out = {"num_codes": len(codebook), "num_used_train": int(used.sum())}
    for name, vectors in (("all", codebook), ("used", codebook[used])):
        student = soft_cosine_histogram(vectors)
        out[f"histogram_{name}"] = student.tolist()
        for kind, teacher in teachers.items():
            kl = (teacher * (teacher.clamp_min(1e-12).log() - (student + 1e-8).log())).sum()
            out[f"kl_{kind}_{name}"] = float(kl)
    return out


def evaluate_samples(paths: Paths, budget: Budget, tokenizer: Path, prior: Path, npz: Path) -> dict:
    from transformers import AutoModelForCausalLM

    from glotok_hf import GloTokModel
    from glotok_hf.evaluation import (
        balanced_class_labels,
        evaluate_generation,
        load_feature_network,
        load_image_classifier,
    )
    from glotok_hf.pipeline_glotok import GloTokPipeline

    vq = GloTokModel.from_pretrained(tokenizer).eval()
    pipe = GloTokPipeline(vqmodel=vq, prior=AutoModelForCausalLM.from_pretrained(prior).eval())
    pipe.set_progress_bar_config(disable=True)
    return evaluate_generation(
        pipe,
        balanced_class_labels(10, budget.images_per_class),
        seed=0,  # the same per-image seeds for every row and run
        batch_size=50,
        feature_network=load_feature_network(paths.cnn / "features.pt", probe_size=24),
        reference_batches=test_loader(paths, budget),
        classifier=load_image_classifier(paths.cnn / "classifier.pt"),
        num_classes=10,
        npz_path=npz,
        overwrite=True,
        guidance_scale=budget.guidance_scale,
    )


def last_logged(folder: Path, keys: tuple) -> dict:
    lines = (folder / "logs" / "metrics.jsonl").read_text().splitlines()
    last = json.loads(lines[-1])
    return {k: last[k] for k in keys if k in last}


def run_one(row_name: str, seed: int, paths: Paths, budget: Budget) -> dict:
    """Train, evaluate and sample one (row, seed); every stage is skipped when its output is complete."""
    import torch

    from glotok_hf.codes import extract_codes
    from glotok_hf.data import load_image_dataset

    row, run = ROWS[row_name], paths.run_dir(row_name, seed)
    if (run / "result.json").is_file():
        return json.loads((run / "result.json").read_text())
    budget_file = run / "budget.json"
    if budget_file.is_file() and json.loads(budget_file.read_text()) != dataclasses.asdict(budget):
        raise ValueError(
            f"{run} was started with another budget ({budget_file}); use another --work-dir or delete it."
        )
    write_json(budget_file, dataclasses.asdict(budget))
    torch.manual_seed(seed)
    tokenizer, codes, prior = run / "tokenizer", run / "codes", run / "prior"
    timings = json.loads((run / "timings.json").read_text()) if (run / "timings.json").is_file() else {}

    def stage(name: str, done: Path, work) -> None:
        if done.exists():
            return
        start = time.perf_counter()
        work()
        timings[name] = round(time.perf_counter() - start, 1)
        write_json(run / "timings.json", timings)
        done.touch()

    stage("tokenizer", run / ".tokenizer_done", lambda: train_tokenizer(row, seed, paths, budget, tokenizer))
    stage("reconstruction", run / ".recon_done",
          lambda: write_json(run / "reconstruction.json", evaluate_tokenizer(paths, budget, tokenizer)))  # fmt: skip

    def extract() -> None:
        from glotok_hf import GloTokModel

        dataset = load_image_dataset(dataset_name=str(paths.data), split="train")
        if budget.code_images:
            dataset = dataset.select(range(min(budget.code_images, len(dataset))))
        extract_codes(GloTokModel.from_pretrained(tokenizer), dataset, codes, resolution=24, progress=False)

    stage("codes", codes / "glotok_codes.json", extract)
    stage("histograms", run / ".hist_done",
          lambda: write_json(run / "histograms.json", codebook_histograms(paths, tokenizer, codes)))  # fmt: skip
    stage("prior", run / ".prior_done", lambda: train_prior(seed, budget, tokenizer, codes, prior))
    stage("generation", run / ".gen_done",
          lambda: write_json(run / "generation.json", evaluate_samples(paths, budget, tokenizer, prior,
                                                                       run / "samples.npz")))  # fmt: skip
    recon = json.loads((run / "reconstruction.json").read_text())
    for branch in recon["codebooks"].values():
        branch.pop("normalized_perplexity", None)
    recon["uniformity"].pop("repeats", None)
    result = {
        "row": row_name,
        "seed": seed,
        "budget": dataclasses.asdict(budget),
        "reconstruction": recon,
        "histograms": json.loads((run / "histograms.json").read_text()),
        "generation": {
            k: v
            for k, v in json.loads((run / "generation.json").read_text()).items()
            if k in ("gfid", "class_consistency", "sampling", "num_images")
        },  # fmt: skip
        "tokenizer_train": last_logged(
            tokenizer,
            (
                "generator/reconstruction_loss",
                "generator/histogram_loss",
                "generator/residual_loss",
                "codebook/semantic_usage",
                "codebook/visual_usage",
                "step",
            ),
        ),  # fmt: skip
        "prior_train": last_logged(prior, ("prior/loss", "prior/token_accuracy", "step")),
        "seconds": timings,
    }
    write_json(run / "result.json", result)
    return result


# ------------------------------------------------------------------------------------------------------- driver
def run_all(runs: list[tuple[str, int]], paths: Paths, budget: Budget, args) -> list[str]:
    """Every pending run; in this process with `--jobs 1`, else one child process per run (logs in the run folder).
    Returns the failed runs."""
    failed = []
    if args.jobs == 1:
        for row, seed in runs:
            print(f"=== {row} seed {seed}", flush=True)
            try:
                run_one(row, seed, paths, budget)
            except Exception as err:  # one failed run must not lose the others
                print(f"!!! {row} seed {seed} failed: {type(err).__name__}: {err}", flush=True)
                failed.append(f"{row}:{seed}")
        return failed

    active = []  # runs in progress
    lock = threading.Lock()

    def wait_for_room() -> None:
        """Start a further parallel run only while the machine's load, with it, stays under --max-load (a busy
        shared machine gets one run at a time)."""
        while True:
            with lock:
                if not active or os.getloadavg()[0] + 1 <= args.max_load:
                    active.append(1)
                    return
            time.sleep(30)

    def child(run: tuple[str, int]) -> None:
        row, seed = run
        wait_for_room()
        try:
            launch(row, seed)
        finally:
            with lock:
                active.pop()

    def launch(row: str, seed: int) -> None:
        folder = paths.run_dir(row, seed)
        folder.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, __file__, "--only", f"{row}:{seed}", "--no-report", "--jobs", "1",
                   "--threads", str(args.threads), "--data-dir", str(paths.data), "--work-dir", str(paths.work),
                   *(["--quick"] if args.quick else [])]  # fmt: skip
        start = time.perf_counter()
        with open(folder / "log.txt", "a") as log:
            code = subprocess.run(command, cwd=ROOT, env=child_env(args.threads), stdout=log, stderr=log).returncode
        ok = code == 0 and (folder / "result.json").is_file()
        print(f"{'done' if ok else 'FAILED'}: {row} seed {seed} ({time.perf_counter() - start:.0f} s)", flush=True)
        if not ok:
            failed.append(f"{row}:{seed}")

    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(child, runs))
    return failed


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="data/digits", help="The digits dataset (built when missing).")
    parser.add_argument("--work-dir", default="runs/replication", help="Assets, runs and cached results.")
    parser.add_argument("--docs-dir", default="docs", help="Where replication.md, the JSON and the plots go.")
    parser.add_argument("--seeds", type=int, default=3, help="Training seeds per row (default 3).")
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS), help="Rows to run (all).")
    parser.add_argument("--only", help="Run just this `row:seed` (no preparation of missing assets' reports).")
    parser.add_argument("--jobs", type=int, default=1, help="Runs in parallel, each in its own process (default 1).")
    parser.add_argument("--threads", type=int, default=1, help="Torch threads per run (default 1).")
    parser.add_argument("--max-load", type=float, default=3.0,
                        help="With --jobs > 1, start a further parallel run only while the 1-minute load average "
                        "plus one stays at most this (default 3, for a shared 2-core machine).")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="Tiny budgets and sklearn's digits: a smoke test.")
    parser.add_argument("--report-only", action="store_true", help="Only aggregate the cached results.")
    parser.add_argument("--no-report", action="store_true", help="Do not write the docs.")
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.threads < 1 or args.seeds < 1:
        parser.error("--jobs, --threads and --seeds must be positive.")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.update(TQDM_DISABLE="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    budget = QUICK if args.quick else Budget()
    paths = Paths(data=(ROOT / args.data_dir).resolve(), work=(ROOT / args.work_dir).resolve())
    failed = []
    if not args.report_only:
        if args.only:
            row, _, seed = args.only.partition(":")
            if row not in ROWS or not seed.isdigit():
                raise SystemExit(f"--only must be row:seed with a row among {list(ROWS)}, got {args.only!r}.")
            runs = [(row, int(seed))]
        else:
            runs = [(row, seed) for seed in range(args.seeds) for row in args.rows]  # seed-major: early full rows
        import torch

        torch.set_num_threads(args.threads)
        prepare(paths, budget)
        start = time.perf_counter()
        failed = run_all(runs, paths, budget, args)
        print(f"{len(runs) - len(failed)}/{len(runs)} runs done in {time.perf_counter() - start:.0f} s", flush=True)
    if not args.no_report:
        import report

        report.write_report(paths.work, (ROOT / args.docs_dir).resolve(), ROWS)
    if failed:
        print(f"failed runs: {', '.join(failed)} (see their log.txt; rerun to retry)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
