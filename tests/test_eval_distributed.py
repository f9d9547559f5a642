"""Two real `torch.distributed` processes (gloo, CPU) give the same evaluation as one: the same samples (per-image
seeds), the same merged .npz, and the same metrics after synchronisation."""

import json
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import PYTHON
from eval_distributed_worker import run
from eval_utils import one_torch_thread  # noqa: F401  (autouse fixture)

WORKER = Path(__file__).resolve().parent / "eval_distributed_worker.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_close(a, b, path="result"):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            assert_close(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_close(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-4, abs=1e-6), path
    else:
        assert a == b, path


@pytest.mark.slow
def test_two_processes_match_one(tmp_path, subprocess_env):
    single_dir, multi_dir = tmp_path / "single", tmp_path / "multi"
    single_dir.mkdir()
    multi_dir.mkdir()
    single = json.loads(json.dumps(run(single_dir)))

    for _attempt in range(2):  # a free port can be taken by another process before the workers bind it: retry once
        port = free_port()
        procs = []
        for rank in range(2):
            env = dict(subprocess_env, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
                       MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1",
                       ACCELERATE_USE_CPU="true")  # fmt: skip
            command = [PYTHON, str(WORKER), str(multi_dir)]
            procs.append(subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True))
        errors = [p.communicate(timeout=300)[1] for p in procs]
        if not any("address already in use" in e.lower() for e in errors):
            break
    for rank, (proc, err) in enumerate(zip(procs, errors)):
        assert proc.returncode == 0, f"rank {rank} failed:\n{err[-4000:]}"

    multi = json.loads((multi_dir / "result.json").read_text())
    assert_close(multi, single)
    with np.load(single_dir / "samples.npz") as a, np.load(multi_dir / "samples.npz") as b:
        np.testing.assert_array_equal(a["arr_0"], b["arr_0"])
        np.testing.assert_array_equal(a["arr_1"], b["arr_1"])
    assert sorted(p.name for p in multi_dir.iterdir()) == ["result.json", "samples.npz"]  # shards removed
