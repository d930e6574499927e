"""Time `make run`'s two steps on a fresh nightshift home and print a BENCHMARKS.md row.

    .venv/bin/python benchmarks/nightly_end_to_end.py [--as-of 2013-12-31] [--runs 1]

Each run gets an empty NIGHTSHIFT_HOME, so landing, ingestion, the embedded Prefect
server and the MLflow store all start cold, as on a new machine. Reported: wall seconds
per step, peak RSS of the largest process, and the AUCs from the run's summary.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

BIN = Path(sys.executable).parent


def _run(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-5000:] + done.stderr[-5000:])
        raise SystemExit(f"{' '.join(args)} failed with exit code {done.returncode}")
    return elapsed, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--as-of", default="2013-12-31")
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    cores = os.cpu_count()
    ram_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    print(
        f"machine: {platform.machine()}, {cores} cores, {ram_gib:.0f} GiB RAM, no GPU; {date.today()}"
    )
    print("| run | land s | nightly run s | total s | model AUC | baseline AUC | gap |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for run in range(1, args.runs + 1):
        with tempfile.TemporaryDirectory(prefix="nightshift-bench-") as home:
            # a temporary home: its Prefect server stops with the run (none left behind)
            env = {**os.environ, "NIGHTSHIFT_HOME": home, "NIGHTSHIFT_PREFECT_SERVER_KEEP": "false"}
            env.pop("PREFECT_API_URL", None)
            land_s, _ = _run([str(BIN / "nightshift"), "land", "--through", args.as_of], env)
            run_s, out = _run([str(BIN / "nightshift"), "run", "--as-of", args.as_of], env)
        match = re.search(r"model ROC AUC ([0-9.]+) vs baseline ([0-9.]+)", out)
        model, baseline = (float(match.group(1)), float(match.group(2))) if match else (0.0, 0.0)
        print(
            f"| {run} | {land_s:.0f} | {run_s:.0f} | {land_s + run_s:.0f} | {model:.4f} "
            f"| {baseline:.4f} | {baseline - model:+.4f} |"
        )
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    print(f"peak RSS of the largest process: {peak:.2f} GiB")


if __name__ == "__main__":
    main()
