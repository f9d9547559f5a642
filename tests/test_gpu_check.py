"""benchmarks/gpu_check.sh --dry-run: the GPU check's code end to end on CPU with every size shrunk, so that it cannot
rot before its GPU run; and the runner's rules (a failing or overlong section is recorded, the next one runs)."""

import json
import os
import subprocess
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

import pytest
import torch
from train_utils import load_script

ROOT = Path(__file__).resolve().parents[1]
gpu_check = load_script(ROOT / "benchmarks/gpu_check.py")

SECTIONS = [
    "cuda_tests",
    "histogram",
    "decode_fp16",
    "tokenizer_update",
    "train_script",
    "factorized_prior",
    "fsdp",
    "sampling",
]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """One dry run through the shell wrapper (no install step in a dry run); its JSON and its printed table."""
    output = tmp_path_factory.mktemp("gpu_check") / "gpu_check.json"
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("GPU_CHECK_STARTED", None)
    result = subprocess.run(
        ["bash", str(ROOT / "benchmarks/gpu_check.sh"), "--dry-run", "--output", str(output)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(output.read_text()), result.stdout


@pytest.mark.slow
def test_dry_run_runs_every_section_or_says_why_not(dry_run):
    report, table = dry_run
    assert report["schema"] == "glotok-gpu-check/1" and report["dry_run"] is True
    assert report["environment"]["device"] == "cpu" and report["environment"]["torch"] == torch.__version__
    assert list(report["sections"]) == SECTIONS
    for name, record in report["sections"].items():
        assert isinstance(record["seconds"], float) and name in table
        if name == "fsdp":
            assert record["status"] == "skipped" and record["reason"], name
        else:
            assert record["status"] == "ok", (name, record.get("error"), record.get("failed_checks"))
            assert record["summary"] and all(record.get("checks", {}).values()), name


@pytest.mark.slow
def test_dry_run_figures_have_their_schema(dry_run):
    sections = dry_run[0]["sections"]
    tests = sections["cuda_tests"]
    gated = {name: outcome for name, outcome in tests["tests"].items() if "test_pipeline_glotok" in name}
    assert tests["failed"] == 0 and tests["skipped"] >= 2 and len(gated) >= 2
    assert all(outcome == "skipped: needs a CUDA device" for outcome in gated.values())

    for n in (64, 256):
        for mode in ("tf32_off", "tf32_on"):
            case = sections["histogram"][f"codes_{n}"][mode]
            assert case["forward_backward_seconds"] > 0 and case["syncs"] == sum(case["sync_sites"].values())
            assert max(case["max_error_over_max_reference"].values()) <= 1e-4
    for variant in ("plain", "gradient_checkpointing", "channels_last"):
        update = sections["tokenizer_update"][variant]
        assert update["images_per_second"] > 0 and update["counted_tflops_per_update"] > 0 and update["batch"] == 2
        assert update["mfu"] is None and update["peak_memory_mib"] is None  # CPU: no peak, no memory figure
        assert update["discriminator_norm"] == "batch"
        assert update["syncs"] == sum(update["sync_sites"].values())
        assert all(site.startswith(("src/", "training/")) for site in update["sync_sites"])

    train = sections["train_script"]
    assert train["first"]["backend"] == train["resumed"]["backend"] == "gloo"
    assert train["checkpoints"] == ["checkpoint-1", "checkpoint-2"] and all(train["checks"].values())
    cases = sections["sampling"]["cases"]
    assert {name.split("_batch")[0] for name in cases} == {
        "dynamic_bf16",
        "static_bf16",
        "generate_bf16",
        "static_compiled_bf16",
        "dynamic_fp32",
        "static_fp32",
        "generate_fp32",
    }
    assert all(case["images_per_second"] > 0 for case in cases.values()), cases
    assert "first_call_seconds_with_compile" in cases["static_compiled_bf16_batch2"]
    factorized = sections["factorized_prior"]
    assert set(factorized["cases"]) == {f"{c}_{d}_batch2" for c in ("dynamic", "static") for d in ("bf16", "fp32")}
    assert all(case["images_per_second"] > 0 for case in factorized["cases"].values()), factorized["cases"]
    assert factorized["setup"]["backbone_steps"] == 4 and all(factorized["checks"].values())
    for model in ("paper_config_random_weights", "embedded_digits_tokenizer"):
        assert isinstance(sections["decode_fp16"][model]["finite"], bool)


def context(tmp_path, seconds_left: float = 60.0) -> "gpu_check.Context":
    return gpu_check.Context(True, torch.device("cpu"), tmp_path, time.monotonic() + seconds_left, gpu_check.DRY)


def test_a_failing_section_is_recorded_and_the_next_one_runs(tmp_path, monkeypatch):
    def broken(ctx, out):
        out["partial"] = 1
        raise RuntimeError("boom")

    def checked(ctx, out):
        out["checks"] = {"good": True, "bad": False}

    monkeypatch.setitem(gpu_check.SECTIONS, "broken", broken)
    monkeypatch.setitem(gpu_check.SECTIONS, "checked", checked)
    monkeypatch.setitem(gpu_check.DRY["budgets"], "broken", 10)
    monkeypatch.setitem(gpu_check.DRY["budgets"], "checked", 10)
    ctx = context(tmp_path)
    record = gpu_check.run_section(ctx, "broken")
    assert record["status"] == "failed" and record["error"] == "RuntimeError: boom" and record["partial"] == 1
    assert "Traceback" in record["traceback"]
    record = gpu_check.run_section(ctx, "checked")
    assert record["status"] == "failed" and record["failed_checks"] == ["bad"]


def test_sections_stop_at_their_budget_and_are_skipped_once_the_check_is_out_of_time(tmp_path, monkeypatch):
    monkeypatch.setitem(gpu_check.SECTIONS, "slow", lambda ctx, out: time.sleep(30))
    monkeypatch.setitem(gpu_check.DRY["budgets"], "slow", 1.5)
    start = time.monotonic()
    record = gpu_check.run_section(context(tmp_path), "slow")
    assert record["status"] == "failed" and record["error"].startswith("SectionTimeout")
    assert time.monotonic() - start < 15
    record = gpu_check.run_section(context(tmp_path, seconds_left=0.5), "slow")  # under 1 s: not started
    assert record == {
        "status": "skipped",
        "seconds": record["seconds"],
        "reason": "time budget of the whole check used up",
    }


def test_a_command_past_the_checks_time_is_killed_with_its_children(tmp_path):
    pid_file = tmp_path / "pid"
    with pytest.raises(subprocess.TimeoutExpired):
        gpu_check.run_command(
            context(tmp_path, seconds_left=2),
            ["bash", "-c", f"sleep 60 & echo $! > {pid_file}; wait"],
            tmp_path / "log",
        )
    status = Path(f"/proc/{pid_file.read_text().strip()}/status")
    for _ in range(50):  # the grandchild gets SIGKILL with its process group; give the kernel a moment
        if not status.exists() or "zombie" in status.read_text():
            break
        time.sleep(0.1)
    assert not status.exists() or "zombie" in status.read_text()


def test_cpu_sync_count_takes_the_projects_own_calls_and_not_torchs(tmp_path):
    from glotok_hf.losses.histogram import check_histogram

    parameter = torch.nn.Parameter(torch.ones(3))
    parameter.grad = torch.ones(3)
    with gpu_check.count_syncs(context(tmp_path)) as sites:
        check_histogram(torch.full((4,), 0.25))  # validation at the edge: item() calls in src/
        torch.nn.utils.clip_grad_norm_([parameter], 1.0)  # torch's own scalar conversions on CPU: not counted
        torch.ones(2).sum().item()  # a test's own call: not project code
    assert sum(sites.values()) >= 1 and isinstance(sites, Counter)
    assert all(site.startswith("src/glotok_hf/losses/histogram.py:") for site in sites), sites


def test_cuda_sync_count_reads_the_sync_debug_warnings_and_passes_other_warnings_on(tmp_path, monkeypatch):
    """The CUDA branch of `count_syncs` with the device calls stubbed: torch's sync debug mode warns once per
    synchronising call ("called a synchronizing CUDA operation"); other warnings still reach the user."""
    modes = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *args: None)
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", modes.append)
    ctx = context(tmp_path)
    ctx.device = torch.device("cuda")
    with pytest.warns(UserWarning, match="unrelated") as caught:
        with gpu_check.count_syncs(ctx) as sites:
            for _ in range(3):
                warnings.warn("called a synchronizing CUDA operation", UserWarning, stacklevel=1)
            warnings.warn("unrelated", UserWarning, stacklevel=1)
    assert sum(sites.values()) == 3 and len(sites) == 1 and modes == ["warn", 0]
    assert [str(w.message) for w in caught] == ["unrelated"]


def test_peak_table_matches_the_card_names():
    assert gpu_check.peak_tflops("NVIDIA H100 80GB HBM3") == 989.4
    assert gpu_check.peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert gpu_check.peak_tflops("NVIDIA H200") == 989.4
    assert gpu_check.peak_tflops("NVIDIA L40S") == 362.1 and gpu_check.peak_tflops("NVIDIA L4") == 121.0
    assert gpu_check.peak_tflops("Some CPU") is None
