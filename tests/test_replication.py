"""The replication study (`benchmarks/replication`): its aggregation against known answers, the tables written into
a hand-edited document, and the whole `--quick` study end to end, including skipping finished work on a rerun."""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import PYTHON, REPO_ROOT
from PIL import Image
from train_utils import load_script

report = load_script(REPO_ROOT / "benchmarks" / "replication" / "report.py")
run_study = load_script(REPO_ROOT / "benchmarks" / "replication" / "run_study.py")


def fake_result(row: str, seed: int, psnr: float, gfid: float) -> dict:
    return {
        "row": row,
        "seed": seed,
        "budget": {"uniformity_repeats": 5},
        "reconstruction": {"psnr": psnr, "codebooks": {"semantic": {"usage": 0.5}}},
        "generation": {"gfid": gfid, "class_consistency": {"accuracy": float("nan")}},
    }


def test_aggregate_gives_mean_sample_std_and_welch_p_values():
    from scipy.stats import ttest_ind

    results = [fake_result("dual_vq", s, p, g) for s, p, g in ((0, 20.0, 5.0), (1, 21.0, 6.0), (2, 22.0, 7.0))]
    results += [fake_result("dual_hist", s, p, g) for s, p, g in ((0, 22.0, 4.0), (1, 23.0, 4.5), (2, 24.5, 4.0))]
    results.append(fake_result("glotok", 0, 23.0, 3.0))
    table = report.aggregate(results, run_study.ROWS)
    assert table["dual_vq"]["psnr"] == {"mean": 21.0, "std": 1.0, "n": 3, "values": [20.0, 21.0, 22.0]}
    assert table["glotok"]["psnr"]["std"] is None  # one seed: no spread to report
    assert "consistency" not in table["dual_vq"]  # NaN values are dropped, not averaged
    assert set(table) == {"dual_vq", "dual_hist", "glotok"}

    tests = {(t["comparison"], t["metric"]): t for t in report.welch(table)}
    hist_psnr = tests[("+ histogram (0.01) [Tables 4, 5]", "psnr")]
    expected = ttest_ind([22.0, 23.0, 24.5], [20.0, 21.0, 22.0], equal_var=False).pvalue
    assert hist_psnr["difference"] == pytest.approx(23.1666667 - 21.0) and hist_psnr["p_value"] == pytest.approx(
        expected
    )
    assert tests[("+ histogram (0.01) [Tables 4, 5]", "gfid")]["difference"] == pytest.approx(4.1666667 - 6.0)
    assert tests[("+ residual [Table 5]", "psnr")]["p_value"] is None  # a single seed cannot be tested
    assert report._cell(table["dual_vq"]["psnr"], ".2f") == "21.00 ± 1.00" and report._cell(None, ".2f") == "–"


def test_tables_replace_only_the_marked_block(tmp_path):
    doc = tmp_path / "replication.md"
    report.update_markdown(doc, "first tables")
    assert report.START in doc.read_text() and "first tables" in doc.read_text()
    text = doc.read_text().replace("## Results", "## Reading\n\nHand-written prose.\n\n## Results") + "\nMore prose.\n"
    doc.write_text(text)
    report.update_markdown(doc, "second tables")
    text = doc.read_text()
    assert "second tables" in text and "first tables" not in text
    assert "Hand-written prose." in text and text.endswith("More prose.\n")
    other = tmp_path / "other.md"
    other.write_text("# Notes without markers\n")
    report.update_markdown(other, "tables", ("<!-- a -->", "<!-- b -->"))
    assert other.read_text() == "# Notes without markers\n\n<!-- a -->\ntables\n<!-- b -->\n"  # appended, kept


@pytest.mark.slow
def test_quick_study_runs_end_to_end_and_resumes(tmp_path, subprocess_env):
    """Every row x 1 seed at tiny budgets on scikit-learn's digits (~45 s from scratch), then a rerun that redoes
    only the stages whose output was removed."""
    work, docs = tmp_path / "work", tmp_path / "docs"
    command = [PYTHON, "benchmarks/replication/run_study.py", "--quick", "--seeds", "1", "--data-dir",
               str(tmp_path / "data"), "--work-dir", str(work), "--docs-dir", str(docs)]  # fmt: skip
    done = subprocess.run(command, cwd=REPO_ROOT, env=subprocess_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "7/7 runs done" in done.stdout

    payload = json.loads((docs / "replication_results.json").read_text())
    assert set(payload["rows"]) == set(run_study.ROWS)
    single, glotok = payload["rows"]["single_vq"], payload["rows"]["glotok"]
    assert "visual_usage" not in single and 0 < glotok["visual_usage"]["mean"] <= 1  # one codebook vs two
    for row in payload["rows"].values():
        assert row["psnr"]["n"] == 1 and np.isfinite(row["gfid"]["mean"]) and 0 <= row["consistency"]["mean"] <= 1
        assert 0 < row["normalized_entropy"]["mean"] <= 1 and row["kl_vit_all"]["mean"] >= 0
    run = work / "runs" / "glotok" / "seed0"
    result = json.loads((run / "result.json").read_text())
    assert result["histograms"]["num_codes"] == 64 and len(result["histograms"]["histogram_all"]) == 40
    assert result["generation"]["sampling"]["images_per_class"] == 1 and result["generation"]["num_images"] == 10
    text = (docs / "replication.md").read_text()
    assert all(r.title in text for r in run_study.ROWS.values()) and "Welch" in text
    for name in ("metrics", "histograms", "samples"):
        with Image.open(docs / f"replication_{name}.png") as image:
            assert image.width > 100
        assert (docs / f"replication_{name}.png").stat().st_size < 300_000

    # Rerun after losing the generation stage of one run: only that stage is redone.
    tokenizer_weights = run / "tokenizer" / "model.safetensors"
    stamp = tokenizer_weights.stat().st_mtime_ns
    other = (work / "runs" / "dual_vq" / "seed0" / "result.json").stat().st_mtime_ns
    for name in ("result.json", "generation.json", ".gen_done"):
        (run / name).unlink()
    done = subprocess.run(command + ["--rows", "glotok", "dual_vq"], cwd=REPO_ROOT, env=subprocess_env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((run / "result.json").read_text())["generation"] == result["generation"]  # same seeds
    assert tokenizer_weights.stat().st_mtime_ns == stamp
    assert (work / "runs" / "dual_vq" / "seed0" / "result.json").stat().st_mtime_ns == other


def test_prior_study_report_gives_known_means_and_welch_tests(tmp_path, monkeypatch):
    """`prior_study.py`'s tables (factorized vs interleaved prior): mean, sample std and Welch's t-test per row, written
    between the markers only."""
    from scipy.stats import ttest_ind

    monkeypatch.setitem(sys.modules, "run_study", run_study)  # prior_study imports both by these names
    monkeypatch.setitem(sys.modules, "report", report)
    prior_study = load_script(REPO_ROOT / "benchmarks" / "replication" / "prior_study.py")
    paths = run_study.Paths(data=tmp_path / "data", work=tmp_path / "work")
    run_study.write_json(
        paths.assets / "reference.json", {"fid_real_train_vs_test": 0.87, "judge_accuracy_test": 0.98}
    )
    values = {"interleaved": [(0.8, 3.0), (0.7, 3.5)], "factorized_head1": [(0.5, 4.0), (0.6, 4.5)]}
    for row, runs in values.items():
        for seed, (accuracy, gfid) in enumerate(runs):
            run_study.write_json(paths.work / "priors" / row / f"seed{seed}" / "result.json", {
                "generation": {"gfid": gfid, "class_consistency": {"accuracy": accuracy}},
                "prior_train": {"prior/loss": 2.0}, "parameters_m": 1.0, "seconds_per_update": 0.3,
                "images_per_second": 50.0, "load_average": 1.5})  # fmt: skip
    doc = tmp_path / "doc.md"
    doc.write_text(f"before\n{prior_study.MARKERS[0]}\nold\n{prior_study.MARKERS[1]}\nafter\n")
    summary = prior_study.write_report(paths, 2, doc)
    rows = summary["rows"]
    assert rows["interleaved"]["class consistency"]["mean"] == pytest.approx(0.75)
    assert rows["factorized_head1"]["gFID (CNN)"]["std"] == pytest.approx(np.std([4.0, 4.5], ddof=1))
    assert set(rows) == {"interleaved", "factorized_head1"}  # rows without runs are left out
    text = doc.read_text()
    assert text.startswith("before\n") and text.endswith("after\n") and "old" not in text
    p = ttest_ind([0.5, 0.6], [0.8, 0.7], equal_var=False).pvalue
    assert f"| FAR, 1-layer head − interleaved (stock Llama) | -0.200 (p={p:.2g}) |" in text
    assert "load average 1.5-1.5" in text and "| FAR, 1-layer head | 2 | 0.55 ± 0.071 |" in text
