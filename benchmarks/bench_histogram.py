"""Speed and memory of the soft cosine histogram (forward + backward), blocked implementation vs the naive formula.

Every case runs in a fresh subprocess so that its peak memory (the `ru_maxrss` increase over the same process just
before the call) is its own. Wall and CPU time are both reported with the load average, since the development machine
is shared. Prints one JSON document.

    python benchmarks/bench_histogram.py                       # 1024, 4096, 16384 codes of dim 8
    python benchmarks/bench_histogram.py --sizes 4096 --threads 1 --repeats 5
"""

import argparse
import functools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time


def worker(implementation: str, n: int, dim: int, repeats: int, threads: int | None, block_size: int | None) -> dict:
    import torch

    from glotok_hf.losses.histogram import naive_soft_cosine_histogram, soft_cosine_histogram

    if threads:
        torch.set_num_threads(threads)
    if implementation == "blocked":
        function = functools.partial(soft_cosine_histogram, block_size=block_size)
    else:
        function = naive_soft_cosine_histogram
    generator = torch.Generator().manual_seed(0)
    vectors = torch.randn(n, dim, generator=generator)
    weights = torch.randn(40, generator=generator)

    def step() -> tuple[float, float]:
        leaf = vectors.clone().requires_grad_(True)
        start, start_cpu = time.perf_counter(), time.process_time()
        (function(leaf) * weights).sum().backward()
        return time.perf_counter() - start, time.process_time() - start_cpu

    function(vectors[:64])  # load kernels and thread pools before the baseline
    baseline_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    seconds = [step()]
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    seconds += [step() for _ in range(repeats - 1)]
    return {
        "implementation": implementation,
        "n": n,
        "dim": dim,
        "pairs": n * (n + 1) // 2,
        "threads": torch.get_num_threads(),
        **({"block_size": block_size} if implementation == "blocked" and block_size else {}),
        "forward_backward_seconds_min": round(min(wall for wall, _ in seconds), 3),
        "forward_backward_seconds_median": round(statistics.median(wall for wall, _ in seconds), 3),
        # CPU time of this process (all its threads): on a shared machine, closer to what an idle one would take
        "forward_backward_cpu_seconds_min": round(min(cpu for _, cpu in seconds), 3),
        "peak_extra_memory_mb": round((peak_kb - baseline_kb) / 1024, 1),
    }


def run_case(implementation: str, n: int, args) -> dict:
    command = [sys.executable, __file__, "--worker", implementation, str(n), "--dim", str(args.dim)]
    command += ["--repeats", str(args.repeats)] + (["--threads", str(args.threads)] if args.threads else [])
    command += ["--block-size", str(args.block_size)] if args.block_size else []
    result = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
    if result.returncode != 0:
        return {"implementation": implementation, "n": n, "error": result.stderr.strip().splitlines()[-1:]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--dim", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--block-size", type=int, default=None, help="pairs per block (default: the library's)")
    parser.add_argument("--naive-max", type=int, default=4096, help="largest n run with the naive formula")
    parser.add_argument("--timeout", type=int, default=900)
    parser.add_argument("--worker", nargs=2, metavar=("IMPLEMENTATION", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        implementation, n = args.worker[0], int(args.worker[1])
        print(json.dumps(worker(implementation, n, args.dim, args.repeats, args.threads, args.block_size)))
        return

    load_before = os.getloadavg()
    results = []
    for n in args.sizes:
        results.append(run_case("blocked", n, args))
        if n <= args.naive_max:
            results.append(run_case("naive", n, args))
    measured_naive = [r for r in results if r["implementation"] == "naive" and "peak_extra_memory_mb" in r]
    for n in args.sizes:
        if n > args.naive_max and measured_naive:
            largest = max(measured_naive, key=lambda r: r["n"])
            # The naive formula holds O(pairs x bins) tensors: memory scales with the number of pairs.
            estimate = largest["peak_extra_memory_mb"] * (n * (n + 1)) / (largest["n"] * (largest["n"] + 1))
            results.append(
                {"implementation": "naive", "n": n, "not_run": True, "estimated_peak_extra_memory_mb": round(estimate)}
            )
    import torch

    print(
        json.dumps(
            {
                "machine": {
                    "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(),
                    "torch": torch.__version__,
                    "load_average_before": [round(x, 2) for x in load_before],
                    "load_average_after": [round(x, 2) for x in os.getloadavg()],
                },
                "num_bins": 40,
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
