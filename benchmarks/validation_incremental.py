"""Benchmark: validation on a night with one new day, over a year of history.

Lands `--days` days of flights (scaled by `--factor`), then runs nights, each in its own
subprocess (a nightly run is a fresh process: it pays the imports, GX's included) with
the resident memory of its process tree (Dask workers too) sampled every 0.2 s:

1. `full`: ingest (Dask, 2 workers x 1 thread) and validate (weather + flights) the first
   `--days - 1` days: every partition is cleaned, checked and its result cached.
2. `new-day`: the last day lands; ingest (the other days are unchanged and skipped) and
   validate all `--days` days: only the new day is re-checked, by the native checks and
   by Great Expectations (Data Docs).
3. `new-day, GX in background`: the same night again (the new day's manifest and cached
   results removed, so it is cleaned and checked anew) with
   `NIGHTSHIFT_VALIDATION_GX_BACKGROUND=true`: the stage waits for the native checks only;
   the worker then waits for GX's results and reports how long after they landed.
4. `new-day, GX off`: again, with `NIGHTSHIFT_VALIDATION_GX_MAX_ROWS=0`: native checks only.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/validation_incremental.py --factor 1 --days 365

Prints a Markdown table: per night, the ingest ("clean") seconds (without the cluster's
start-up), the validation seconds (what the night waits for), validation/clean,
partitions re-checked, rows GX checked and, in the background variant, how long after the
stage GX's results landed; peak RSS of the process tree (the GX child included only while
the worker waits for it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from ingest_engines import _days, run_measured  # the same days and measuring

TABLES = ("weather", "flights")


def worker(lake_root: str, n_days: int) -> dict:
    """One night: ingest `n_days` days from FIRST on Dask, then validate every table."""
    from distributed import Client, LocalCluster

    from tasks.core.context import RunContext
    from tasks.core.lake import Lake
    from tasks.core.settings import get_settings
    from tasks.ingest.stage import ingest_days
    from tasks.quality.validate import validate_table

    days = _days(n_days)
    dims = Lake(lake_root).latest_dimension_snapshot("flights", days[-1])
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        started = time.perf_counter()
        reports = ingest_days(lake_root, "flights", days, dims, client)
        clean = time.perf_counter() - started
    ctx = RunContext.from_settings(get_settings(), days[-1], "flights").with_(lake_root=lake_root)
    started = time.perf_counter()
    validated = [validate_table(ctx, table, days) for table in TABLES]
    validate = time.perf_counter() - started
    # background GX: how long after the stage returned its results landed in the reports
    while any(
        Lake(lake_root).read_json(r.report_path)["gx_status"] == "pending" for r in validated
    ):
        time.sleep(0.2)
    gx_after = time.perf_counter() - started - validate
    return {
        "gx_background_s": gx_after if any(r.gx_status == "pending" for r in validated) else None,
        "clean_s": clean,
        "validate_s": validate,
        "cleaned_days": sum(not r.skipped for r in reports),
        "rows": sum(r.rows for r in validated if r.dataset == "flights"),
        "rechecked": sum(len(r.rechecked) for r in validated),
        "partitions": sum(r.partitions for r in validated),
        "gx_rows": sum(r.gx_rows for r in validated),
        "success": all(r.success for r in validated),
    }


def night(lake_root: str, n_days: int, env: dict[str, str] | None = None) -> dict:
    """Run one night in a subprocess; its result plus the peak RSS of its process tree."""
    command = [sys.executable, __file__, "--worker", "--lake", lake_root, "--days", str(n_days)]
    result, peak = run_measured(command, f"night of {n_days} day(s) failed", env)
    return {**result, "peak_rss_mib": peak / 2**20}


def _forget_day(lake_root: str, day: date) -> None:
    """Make `day` new again: no manifest (re-cleaned), no cached validation results."""
    from tasks.core.lake import Lake
    from tasks.quality.validation_cache import entry_path

    lake = Lake(lake_root)
    lake.fs.rm(lake.manifest("flights", day))
    for table in TABLES:
        lake.fs.rm(entry_path(lake, "flights", table, day))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--factor", type=int, default=1)
    parser.add_argument("--days", type=int, default=365, help="days from 2013-01-01")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--lake", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    if args.worker:
        print(json.dumps(worker(args.lake, args.days)))
        return

    from tasks.core.lake import Lake
    from tasks.datasets import get_dataset
    from tasks.landing.scale import write_scaled_landing

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="nightshift-bench-valid-"))
    lake_root = str(workdir / f"lake-x{args.factor}")
    started = time.perf_counter()
    days = _days(args.days)
    scaled = write_scaled_landing(
        Lake(lake_root), get_dataset("flights"), args.factor, days[0], days[-1]
    )
    print(
        f"x{args.factor}: {scaled.fact_rows:,} flight rows landed in "
        f"{time.perf_counter() - started:.0f} s",
        file=sys.stderr,
    )
    nights = [("full", night(lake_root, args.days - 1))]
    print(json.dumps(nights[-1]), file=sys.stderr)
    nights.append(("new-day", night(lake_root, args.days)))
    print(json.dumps(nights[-1]), file=sys.stderr)
    variants = {
        "new-day, GX in background": {"NIGHTSHIFT_VALIDATION_GX_BACKGROUND": "true"},
        "new-day, GX off": {"NIGHTSHIFT_VALIDATION_GX_MAX_ROWS": "0"},
    }
    for name, env in variants.items():
        _forget_day(lake_root, days[-1])
        nights.append((name, night(lake_root, args.days, env)))
        print(json.dumps(nights[-1]), file=sys.stderr)
    print(
        "| night | days cleaned | clean s | validate s | validate/clean | partitions re-checked "
        "(of) | GX rows | GX done after s | flight rows validated | peak RSS MiB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in nights:
        background = "-" if r["gx_background_s"] is None else f"{r['gx_background_s']:.1f}"
        print(
            f"| {name} | {r['cleaned_days']} | {r['clean_s']:.1f} | {r['validate_s']:.1f} | "
            f"{r['validate_s'] / r['clean_s']:.2f} | {r['rechecked']} ({r['partitions']}) | "
            f"{r['gx_rows']:,} | {background} | {r['rows']:,} | {r['peak_rss_mib']:,.0f} |"
        )
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
