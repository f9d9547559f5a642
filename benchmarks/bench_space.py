# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""The Gradio demo (`glotok demo`, embedded default pipeline) as a person meets it, driven in headless Chromium by the
helpers of tests/test_space.py: seconds from starting `glotok demo` to the first served page (a fresh process), from
the Generate click to the 10 images of 10 digits (first click and the next ones), the server's peak resident memory,
and the versions used.

Usage: `PYTHONPATH=src:tests python benchmarks/bench_space.py [--threads 2] [--repeats 3]`; prints JSON.
"""

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

from space_utils import (  # tests/ on PYTHONPATH
    chromium,
    click,
    gallery_images,
    open_app,
    serve,
    set_classes,
    set_number,
)


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/<pid>/status")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the server (OMP_NUM_THREADS)")
    parser.add_argument("--repeats", type=int, default=3, help="Generate clicks after the first")
    args = parser.parse_args()
    import gradio
    import torch

    log = Path(tempfile.mkdtemp()) / "server.log"
    start = time.perf_counter()
    with serve(log, env={"OMP_NUM_THREADS": str(args.threads)}) as (url, server):
        first_page = time.perf_counter() - start
        with chromium() as driver:
            open_app(driver, url)
            set_classes(driver, [str(i) for i in range(10)])
            set_number(driver, "count", 1)
            clicks = []
            for repeat in range(args.repeats + 1):
                set_number(driver, "seed", repeat * 10)
                start = time.perf_counter()
                click(driver, "#generate")
                gallery_images(driver, 10)  # fetched only once all ten are there
                clicks.append(time.perf_counter() - start)
                driver.get(url)  # an empty gallery for the next click
                open_app(driver, url)
                set_classes(driver, [str(i) for i in range(10)])
                set_number(driver, "count", 1)
            browser = driver.capabilities["browserVersion"]
            chromedriver = driver.capabilities["chrome"]["chromedriverVersion"].split()[0]
        rss = peak_rss_mib(server.pid)
    result = {
        "seconds_to_first_page": round(first_page, 2),
        "seconds_click_to_10_images_first": round(clicks[0], 2),
        "seconds_click_to_10_images_median_next": round(statistics.median(clicks[1:]), 2) if args.repeats else None,
        "server_peak_rss_mib": round(rss, 1),
        "server_torch_threads": args.threads,
        "chromium": browser,
        "chromedriver": chromedriver,
        "gradio": gradio.__version__,
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores",
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
