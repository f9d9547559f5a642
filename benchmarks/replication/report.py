"""Aggregate the cached runs of `run_study.py`: mean +- std over seeds, Welch t-tests of the paper's comparisons,
`docs/replication_results.json`, the tables (between the markers of `docs/replication.md`, so the hand-written reading
around them is kept) and the plots."""

import json
import math
from pathlib import Path

import numpy as np

# name: (label, where in result.json, higher is better, format)
METRICS = {
    "psnr": ("PSNR (dB)", ("reconstruction", "psnr"), True, ".2f"),
    "ssim": ("SSIM", ("reconstruction", "ssim"), True, ".3f"),
    "rfid": ("rFID (CNN)", ("reconstruction", "rfid"), False, ".2f"),
    "semantic_usage": ("sem. usage", ("reconstruction", "codebooks", "semantic", "usage"), True, ".2f"),
    "semantic_perplexity": ("sem. perplexity", ("reconstruction", "codebooks", "semantic", "perplexity"), True, ".1f"),
    "visual_usage": ("vis. usage", ("reconstruction", "codebooks", "visual", "usage"), True, ".2f"),
    "visual_perplexity": ("vis. perplexity", ("reconstruction", "codebooks", "visual", "perplexity"), True, ".1f"),
    "density_cv": ("density CV", ("reconstruction", "uniformity", "density_cv"), False, ".3f"),
    "normalized_entropy": ("norm. entropy", ("reconstruction", "uniformity", "normalized_entropy"), True, ".4f"),
    "gini": ("Gini", ("reconstruction", "uniformity", "gini"), False, ".3f"),
    "kl_vit_all": ("KL to ViT teacher, all codes", ("histograms", "kl_vit_all"), False, ".3f"),
    "kl_vit_used": ("KL to ViT teacher, used codes", ("histograms", "kl_vit_used"), False, ".3f"),
    "kl_random_all": ("KL to random teacher, all codes", ("histograms", "kl_random_all"), False, ".3f"),
    "kl_uniform_all": ("KL to uniform teacher, all codes", ("histograms", "kl_uniform_all"), False, ".3f"),
    "gfid": ("gFID (CNN)", ("generation", "gfid"), False, ".2f"),
    "consistency": ("class consistency", ("generation", "class_consistency", "accuracy"), True, ".3f"),
    "prior_loss": ("prior loss", ("prior_train", "prior/loss"), False, ".3f"),
}
# Paper's numbers (ImageNet 256, 4,096 + 12,288 codes; Tables 3-5), where a row has a counterpart.
PAPER = {
    "dual_vq": {"rfid": 1.43, "psnr": 22.06},
    "dual_hist": {"rfid": 0.97, "psnr": 22.30},  # Table 5
    "dual_hist_0.1": {"rfid": 1.27, "psnr": 21.97},
    "glotok": {"rfid": 0.92, "psnr": 22.44, "density_cv": 0.217, "normalized_entropy": 0.9972, "gini": 0.1168},
    "single_vq": {"density_cv": 0.221, "normalized_entropy": 0.9971, "gini": 0.1191},  # LlamaGen VQ-16 (Table 3)
}
# Table 4's own runs (40 epochs): its lambda_hist = 0.01 row differs from Table 5's.
PAPER_TABLE4 = {**PAPER, "dual_hist": {"rfid": 1.21, "psnr": 22.23}}
# (a, b, what it tests): a is the row with the component, b the one without.
COMPARISONS = [
    ("dual_vq", "single_vq", "dual vs single codebook"),
    ("dual_hist", "dual_vq", "+ histogram (0.01) [Tables 4, 5]"),
    ("dual_hist_0.1", "dual_vq", "+ histogram (0.1) [Table 4]"),
    ("dual_hist", "dual_hist_0.1", "lambda_hist 0.01 vs 0.1 [Table 4]"),
    ("glotok", "dual_hist", "+ residual [Table 5]"),
    ("glotok", "glotok_random_teacher", "ViT vs random-codebook teacher"),
    ("glotok", "glotok_uniform_teacher", "ViT vs uniform teacher"),
]
TEST_METRICS = ("psnr", "rfid", "semantic_usage", "visual_usage", "density_cv", "kl_vit_all", "gfid", "consistency")
START, END = "<!-- replication-tables:start -->", "<!-- replication-tables:end -->"


def lookup(result: dict, path: tuple):
    for key in path:
        if not isinstance(result, dict) or key not in result:
            return None
        result = result[key]
    return float(result) if isinstance(result, (int, float)) else None


def load_results(work: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(work.glob("runs/*/seed*/result.json"))]


def aggregate(results: list[dict], rows: dict) -> dict:
    """`{row: {metric: {"mean", "std", "n", "values"}}}`; std is the sample std (ddof 1), None for one seed."""
    table = {}
    for row in rows:
        runs = sorted((r for r in results if r["row"] == row), key=lambda r: r["seed"])
        if not runs:
            continue
        table[row] = {"seeds": [r["seed"] for r in runs]}
        for name, (_, path, _, _) in METRICS.items():
            values = [v for v in (lookup(r, path) for r in runs) if v is not None and math.isfinite(v)]
            if values:
                table[row][name] = {
                    "mean": float(np.mean(values)),
                    "std": float(np.std(values, ddof=1)) if len(values) > 1 else None,
                    "n": len(values),
                    "values": values,
                }
    return table


def welch(table: dict) -> list[dict]:
    """Welch's t-test (unequal variances) of every comparison and test metric present in both rows."""
    from scipy.stats import ttest_ind

    out = []
    for a, b, what in COMPARISONS:
        if a not in table or b not in table:
            continue
        for name in TEST_METRICS:
            x, y = table[a].get(name), table[b].get(name)
            if x is None or y is None:
                continue
            p = None
            if x["n"] > 1 and y["n"] > 1 and (np.std(x["values"]) > 0 or np.std(y["values"]) > 0):
                p = float(ttest_ind(x["values"], y["values"], equal_var=False).pvalue)
            out.append({"a": a, "b": b, "comparison": what, "metric": name, "difference": x["mean"] - y["mean"],
                        "p_value": p})  # fmt: skip
    return out


# ----------------------------------------------------------------------------------------------------- markdown
def _cell(entry: dict | None, fmt: str) -> str:
    if entry is None:
        return "–"
    if entry["std"] is None:
        return format(entry["mean"], fmt)
    return f"{entry['mean']:{fmt}} ± {entry['std']:{fmt}}"


def _table(
    table: dict, rows: dict, names: list[str], metrics: list[str], paper: tuple = (), paper_values: dict = PAPER
) -> str:
    header = ["row", *[METRICS[m][0] for m in metrics], *[f"paper {METRICS[m][0].split(' (CNN)')[0]}" for m in paper]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in names:
        if name not in table:
            continue
        cells = [_cell(table[name].get(m), METRICS[m][3]) for m in metrics]
        cells += [str(paper_values.get(name, {}).get(m, "–")) for m in paper]
        lines.append(f"| {rows[name].title} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _tests_table(tests: list[dict]) -> str:
    metrics = [m for m in TEST_METRICS if any(t["metric"] == m for t in tests)]
    lines = ["| comparison (a − b) | " + " | ".join(METRICS[m][0] for m in metrics) + " |",
             "|" + "---|" * (len(metrics) + 1)]  # fmt: skip
    for comparison in dict.fromkeys(t["comparison"] for t in tests):
        cells = []
        for m in metrics:
            t = next((t for t in tests if t["comparison"] == comparison and t["metric"] == m), None)
            if t is None:
                cells.append("–")
                continue
            p = "" if t["p_value"] is None else f" (p={t['p_value']:.2g})"
            bold = t["p_value"] is not None and t["p_value"] < 0.05
            text = f"{t['difference']:+{METRICS[m][3]}}{p}"
            cells.append(f"**{text}**" if bold else text)
        lines.append(f"| {comparison} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tables_markdown(table: dict, tests: list[dict], rows: dict, reference: dict, budget: dict) -> str:
    seeds = sorted({n for row in table.values() for n in [len(row["seeds"])]})
    parts = [
        f"Mean ± sample std over {'/'.join(map(str, seeds))} training seeds; generated by "
        "`benchmarks/replication/run_study.py` (do not edit by hand).",
        "",
        "**Components (paper Table 5) and the single-codebook baseline.** Reconstruction of the held-out test digits; "
        "generation: class-balanced samples from a small prior trained on each tokenizer's codes. The paper's rFID "
        "is Inception-based on ImageNet, ours uses the digits CNN's features: compare directions, not values.",
        "",
        _table(
            table,
            rows,
            ["single_vq", "dual_vq", "dual_hist", "glotok"],
            [
                "psnr",
                "ssim",
                "rfid",
                "semantic_usage",
                "visual_usage",
                "semantic_perplexity",
                "visual_perplexity",
                "gfid",
                "consistency",
            ],
            paper=("rfid", "psnr"),
        ),  # fmt: skip
        "",
        "**Weight of the histogram term (paper Table 4: 40-epoch runs; no residual module).**",
        "",
        _table(
            table,
            rows,
            ["dual_vq", "dual_hist_0.1", "dual_hist"],
            ["psnr", "ssim", "rfid", "semantic_usage", "kl_vit_all", "gfid", "consistency"],
            paper=("rfid", "psnr"),
            paper_values=PAPER_TABLE4,
        ),  # fmt: skip
        "",
        "**Teacher controls.** The full model with the ViT k-means teacher, a random isotropic 64 x 8 codebook's "
        "histogram, and the uniform histogram. KL columns: `KL(P_t || P_s)` of the trained semantic codebook.",
        "",
        _table(
            table,
            rows,
            ["glotok", "glotok_random_teacher", "glotok_uniform_teacher", "dual_vq"],
            [
                "psnr",
                "rfid",
                "semantic_usage",
                "kl_vit_all",
                "kl_vit_used",
                "kl_random_all",
                "kl_uniform_all",
                "gfid",
                "consistency",
            ],
        ),  # fmt: skip
        "",
        "**Uniformity of the semantic latents (paper Table 3 protocol: t-SNE + KDE of one latent per test image; "
        f"repeats per run: {budget.get('uniformity_repeats')}).** The paper's values are ImageNet ones (VQ-VAE† "
        "for the single codebook).",
        "",
        _table(
            table,
            rows,
            list(rows),
            ["density_cv", "normalized_entropy", "gini"],
            paper=("density_cv", "normalized_entropy", "gini"),
        ),  # fmt: skip
        "",
        "**Differences and Welch t-tests** (mean of a minus mean of b; p-values from Welch's unequal-variance t-test "
        "over seeds; bold: p < 0.05, uncorrected for the number of tests).",
        "",
        _tests_table(tests),
        "",
        f"Real-data references under the same protocol: FID of {reference.get('num_real_images')} class-balanced real "
        f"training digits against the test split {reference.get('fid_real_train_vs_test', float('nan')):.2f} (the "
        "floor a perfect generator would reach at this sample size); the CNN judge's accuracy on the test split "
        f"{reference.get('judge_accuracy_test', float('nan')):.3f}; the ViT teacher backbone's test accuracy "
        f"{reference.get('vit', {}).get('test_accuracy', float('nan')):.3f}.",
    ]
    return "\n".join(parts)


def update_markdown(path: Path, tables: str, markers: tuple[str, str] = (START, END)) -> None:
    """Replace what is between the `markers`; a file without them gets the block appended (nothing written by hand
    is lost), a new file a skeleton around it."""
    start, end = markers
    block = f"{start}\n{tables}\n{end}"
    text = path.read_text() if path.is_file() else None
    if text is not None and start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    elif text is not None:
        text = f"{text.rstrip()}\n\n{block}\n"
    else:
        text = f"# Small-scale replication of GloTok's ablations\n\n## Results\n\n{block}\n"
    path.write_text(text)


# -------------------------------------------------------------------------------------------------------- plots
PLOTTED = ("psnr", "rfid", "semantic_usage", "density_cv", "gfid", "consistency")


def plot_metrics(table: dict, rows: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    names = [r for r in rows if r in table]
    colors = plt.get_cmap("tab10")(np.arange(len(names)))
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.4))
    for ax, metric in zip(axes.flat, PLOTTED):
        label, _, higher, _ = METRICS[metric]
        for i, name in enumerate(names):
            entry = table[name].get(metric)
            if entry is None:
                continue
            ax.bar(i, entry["mean"], yerr=entry["std"] or 0, color=colors[i], capsize=3, alpha=0.8)
            ax.plot([i] * entry["n"], entry["values"], "k.", markersize=4)
        ax.set_title(f"{label} ({'higher' if higher else 'lower'} is better)", fontsize=10)
        ax.set_xticks(range(len(names)), [rows[n].title.replace(" (", "\n(") for n in names], rotation=60,
                      ha="right", fontsize=7)  # fmt: skip
        values = [v for n in names if metric in table[n] for v in table[n][metric]["values"]]
        if values:
            low, high = min(values), max(values)
            pad = max((high - low) * 0.5, 0.05 * abs(high), 1e-3)
            ax.set_ylim(max(0, low - pad) if low >= 0 else low - pad, high + pad)
    fig.suptitle("Replication on 24x24 digits: mean ± std over seeds (dots: seeds)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)


def plot_histograms(work: Path, results: list[dict], rows: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    from glotok_hf.losses.histogram import histogram_bin_centers
    from glotok_hf.teacher import load_teacher

    centers = histogram_bin_centers(40).numpy()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), sharey=True)
    for kind, style in (("vit", "k-"), ("random", "k--"), ("uniform", "k:")):
        file = work / "assets" / "teachers" / f"{kind}.safetensors"
        if file.is_file():
            axes[0].plot(centers, load_teacher(file).histogram.numpy(), style, label=f"{kind} teacher")
    axes[0].set_title("teacher histograms", fontsize=10)
    shown = ["dual_vq", "dual_hist", "glotok", "glotok_random_teacher", "glotok_uniform_teacher"]
    for ax, which in zip(axes[1:], ("all", "used")):
        ax.plot(centers, load_teacher(work / "assets/teachers/vit.safetensors").histogram.numpy(), "k-", lw=2.5,
                alpha=0.3, label="ViT teacher")  # fmt: skip
        for name in shown:
            curves = [r["histograms"][f"histogram_{which}"] for r in results if r["row"] == name]
            if curves:
                ax.plot(centers, np.mean(curves, axis=0), label=rows[name].title)
        ax.set_title(f"trained semantic codebooks: {'all codes' if which == 'all' else 'codes in use'}", fontsize=10)
    for ax in axes:
        ax.set_xlabel("cosine similarity")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("probability (mean over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)


def plot_samples(work: Path, rows: dict, path: Path, per_class: int = 2) -> None:
    """Seed 0 of every row: `per_class` samples of each class side by side."""
    import matplotlib.pyplot as plt

    strips, names = [], []
    for name in rows:
        file = work / "runs" / name / "seed0" / "samples.npz"
        if not file.is_file():
            continue
        with np.load(file) as data:
            images, labels = data["arr_0"], data["arr_1"]
        picked = [np.flatnonzero(labels == c)[:per_class] for c in np.unique(labels)]
        strips.append(np.concatenate([images[i] for i in np.concatenate(picked)], axis=1))
        names.append(rows[name].title)
    if not strips:
        return
    width = max(s.shape[1] for s in strips)
    grid = np.concatenate([np.pad(s, ((1, 1), (0, width - s.shape[1]), (0, 0))) for s in strips], axis=0)
    fig, ax = plt.subplots(figsize=(width / 40 + 2.5, grid.shape[0] / 40 + 0.5))
    ax.imshow(grid, interpolation="nearest")
    ax.set_yticks([(i + 0.5) * grid.shape[0] / len(strips) for i in range(len(strips))], names, fontsize=8)
    ax.set_xticks([])
    ax.set_title(f"samples (prior of seed 0, guidance 2): {per_class} per class, classes 0-9", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)


# --------------------------------------------------------------------------------------------------------- main
def write_report(work: Path, docs: Path, rows: dict) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    results = load_results(work)
    if not results:
        raise FileNotFoundError(f"No finished runs under {work}/runs; run the study first.")
    reference_file = work / "assets" / "reference.json"
    reference = json.loads(reference_file.read_text()) if reference_file.is_file() else {}
    table = aggregate(results, rows)
    tests = welch(table)
    budget = results[0]["budget"]
    docs.mkdir(parents=True, exist_ok=True)
    payload = {
        "budget": budget,
        "reference": reference,
        "rows": {
            name: {
                "title": rows[name].title,
                "model": rows[name].model,
                "teacher": rows[name].teacher,
                "histogram_weight": rows[name].histogram_weight,
                **table[name],
            }
            for name in table
        },  # fmt: skip
        "paper": PAPER,
        "paper_table4": PAPER_TABLE4,
        "welch_tests": tests,
        "seconds_per_run": {
            name: float(np.mean([sum(r["seconds"].values()) for r in results if r["row"] == name])) for name in table
        },  # fmt: skip
    }
    (docs / "replication_results.json").write_text(json.dumps(payload, indent=2) + "\n")
    update_markdown(docs / "replication.md", tables_markdown(table, tests, rows, reference, budget))
    plot_metrics(table, rows, docs / "replication_metrics.png")
    plot_histograms(work, results, rows, docs / "replication_histograms.png")
    plot_samples(work, rows, docs / "replication_samples.png")
    print(f"Report of {len(results)} runs written to {docs}")
    return payload
