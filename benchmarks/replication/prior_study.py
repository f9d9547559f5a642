#!/usr/bin/env python
"""Factorized (FAR) vs interleaved prior on the digits, with the replication's protocol (issue 14).

    python benchmarks/replication/prior_study.py               # 6 priors x 3 seeds (~2.6 min per run, 1 thread)
    python benchmarks/replication/prior_study.py --seeds 5 --rows interleaved factorized_head1   # more seeds
    python benchmarks/replication/prior_study.py --report-only # rewrite the tables in docs/replication.md

One tokenizer for every run: the embedded default's (`pipelines/glotok-digits/vqmodel`, 64 + 128 codes, 6x6 grid);
its codes of the 4,500 training digits are extracted once. Every prior then gets the replication's prior budget
(`training/recipes/tiny_prior_cpu.json`: a 4-layer, width-128 backbone; 400 updates of batch 32; see
`run_study.Budget`) and differs only in `--prior_type`, the factorized head's depth and, in the last row, the class
token's rotary row (`zero_class_rotary=False`). Each is sampled and scored exactly as a replication run: 200
class-balanced samples (image i seeded i), guidance 2.0; class consistency under the CNN judge and FID in its feature
space against the 500 test digits, with the real-vs-real FID floor beside. Runs are cached in
`<work-dir>/priors/<row>/seed<k>/result.json`; the report reads seeds 0 .. `--seeds` - 1 of every row.
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import report
import run_study as study

ROOT = study.ROOT
TOKENIZER = ROOT / "pipelines" / "glotok-digits" / "vqmodel"
ROWS = {  # row: (title, extra train.py arguments)
    "interleaved": ("interleaved (stock Llama)", []),
    "factorized": ("FAR, 3-layer head (the CLI default)", ["--prior_type", "factorized"]),
    "factorized_head1": ("FAR, 1-layer head",
                         ["--prior_type", "factorized", "--model_config", json.dumps({"head_layers": 1})]),
    "factorized_head1_class_key": ("FAR, 1-layer head, `zero_class_rotary=False`",
                                   ["--prior_type", "factorized", "--model_config",
                                    json.dumps({"head_layers": 1, "zero_class_rotary": False})]),
    "factorized_6l_head1": ("FAR, 6-layer backbone + 1-layer head (the interleaved prior's layer FLOPs)",
                            ["--prior_type", "factorized", "--model_config",
                             json.dumps({"head_layers": 1, "num_hidden_layers": 6})]),
    "factorized_6l_head1_class_key": ("FAR, 6 + 1 layers, `zero_class_rotary=False`",
                                      ["--prior_type", "factorized", "--model_config",
                                       json.dumps({"head_layers": 1, "num_hidden_layers": 6,
                                                   "zero_class_rotary": False})]),
}  # fmt: skip
METRICS = {"class consistency": ("generation", "class_consistency", "accuracy"), "gFID (CNN)": ("generation", "gfid"),
           "final training loss": ("prior_train", "prior/loss"), "parameters (M)": ("parameters_m",),
           "seconds / update": ("seconds_per_update",), "sampling images / s": ("images_per_second",)}  # fmt: skip
MARKERS = ("<!-- prior-study:start -->", "<!-- prior-study:end -->")


def run_one(row: str, seed: int, paths: study.Paths, budget: study.Budget, codes: Path) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    run = paths.work / "priors" / row / f"seed{seed}"
    if (run / "result.json").is_file():
        return json.loads((run / "result.json").read_text())
    prior = run / "prior"
    start = time.perf_counter()
    torch.manual_seed(seed)
    study.train_prior(seed, budget, TOKENIZER, codes, prior, extra=ROWS[row][1])
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    generation = study.evaluate_samples(paths, budget, TOKENIZER, prior, run / "samples.npz")
    sample_seconds = time.perf_counter() - start
    model = AutoModelForCausalLM.from_pretrained(prior)
    result = {
        "row": row,
        "seed": seed,
        "generation": {k: generation[k] for k in ("gfid", "class_consistency", "num_images")},
        "prior_train": study.last_logged(prior, ("prior/loss", "prior/token_accuracy", "step")),
        "parameters_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "seconds_per_update": train_seconds / budget.prior_steps,  # includes start-up and the final validation
        "images_per_second": generation["num_images"] / sample_seconds,  # includes the judge and FID features
        "load_average": os.getloadavg()[0],
    }
    study.write_json(run / "result.json", result)
    return result


def write_report(paths: study.Paths, seeds: int, doc: Path) -> dict:
    from scipy.stats import ttest_ind

    results = {row: [] for row in ROWS}
    for row in ROWS:
        for seed in range(seeds):
            file = paths.work / "priors" / row / f"seed{seed}" / "result.json"
            if file.is_file():
                results[row].append(json.loads(file.read_text()))
    loads = [r["load_average"] for runs in results.values() for r in runs]
    reference = json.loads((paths.assets / "reference.json").read_text())
    lines = [f"Mean ± sample std over training seeds (n per row in the first column); generated by "
             f"`benchmarks/replication/prior_study.py` (do not edit by hand). Real-vs-real FID floor (200 "
             f"class-balanced real training digits vs the 500 test digits): {reference['fid_real_train_vs_test']:.2f}; "
             f"the judge's accuracy on the real test digits: {reference['judge_accuracy_test']:.3f}. The timing columns were "
             f"taken on the shared 2-core machine (1-minute load average {min(loads):.1f}-{max(loads):.1f} over the runs): "
             "`bench_far.py` measures speed.",
             "",
             "| prior | n | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 2) + "|"]  # fmt: skip
    summary = {"reference": {k: reference[k] for k in ("fid_real_train_vs_test", "judge_accuracy_test")}, "rows": {}}
    for row, runs in results.items():
        if not runs:
            continue
        cells, summary["rows"][row] = [], {}
        for name, path in METRICS.items():
            values = [report.lookup(r, path) for r in runs]
            std = statistics.stdev(values) if len(values) > 1 else float("nan")
            summary["rows"][row][name] = {"mean": statistics.fmean(values), "std": std, "values": values}
            cells.append(f"{statistics.fmean(values):.3g} ± {std:.2g}")
        lines.append(f"| {ROWS[row][0]} | {len(runs)} | " + " | ".join(cells) + " |")
    lines += ["", "Differences (Welch's t-test over seeds):", "", "| comparison (a − b) | class consistency | gFID (CNN) |",
              "|---|---|---|"]  # fmt: skip
    rows = summary["rows"]
    pairs = [(row, "interleaved") for row in rows if row != "interleaved"]
    pairs += [
        ("factorized_head1_class_key", "factorized_head1"),
        ("factorized_6l_head1_class_key", "factorized_6l_head1"),
    ]
    for a, b in pairs:
        if a not in rows or b not in rows or min(len(rows[r]["gFID (CNN)"]["values"]) for r in (a, b)) < 2:
            continue
        cells = []
        for name in ("class consistency", "gFID (CNN)"):
            x, y = rows[a][name]["values"], rows[b][name]["values"]
            p = ttest_ind(x, y, equal_var=False).pvalue
            cells.append(f"{statistics.fmean(x) - statistics.fmean(y):+.3f} (p={p:.2g})")
        lines.append(f"| {ROWS[a][0]} − {ROWS[b][0]} | " + " | ".join(cells) + " |")
    report.update_markdown(doc, "\n".join(lines), MARKERS)
    study.write_json(doc.parent / "prior_study_results.json", summary)
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="data/digits", help="The digits dataset (built when missing).")
    parser.add_argument("--work-dir", default="runs/replication", help="Assets (shared with run_study.py) and runs.")
    parser.add_argument("--seeds", type=int, default=3, help="Training seeds per prior (default 3).")
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS), help="Priors to run (all).")
    parser.add_argument("--threads", type=int, default=1, help="Torch threads (default 1).")
    parser.add_argument("--report-only", action="store_true", help="Only rewrite the tables from cached runs.")
    args = parser.parse_args(argv)
    os.environ.update(TQDM_DISABLE="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    paths = study.Paths(data=(ROOT / args.data_dir).resolve(), work=(ROOT / args.work_dir).resolve())
    budget = study.Budget()
    if not args.report_only:
        import torch

        from glotok_hf import GloTokModel
        from glotok_hf.codes import extract_codes
        from glotok_hf.data import load_image_dataset

        torch.set_num_threads(args.threads)
        study.prepare(paths, budget, judge_only=True)
        codes = paths.work / "priors" / "codes"
        if not (codes / "glotok_codes.json").is_file():
            dataset = load_image_dataset(dataset_name=str(paths.data), split="train")
            extract_codes(GloTokModel.from_pretrained(TOKENIZER), dataset, codes, resolution=24, progress=False)
        for seed in range(args.seeds):
            for row in args.rows:
                print(f"=== {row} seed {seed}", flush=True)
                run_one(row, seed, paths, budget, codes)
    print(json.dumps(write_report(paths, args.seeds, ROOT / "docs" / "replication.md")["rows"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
