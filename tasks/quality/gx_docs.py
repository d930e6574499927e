"""Great Expectations on the night's changed partitions: inline, or in a process of its own.

The gate is the native checks (`native_checks`): they decide whether the run goes on.
GX re-checks the night's changed partitions to produce the suite results and the Data
Docs people read. Inline (`validation_gx_background=false`, or a lake on object
storage), the validate stage waits for it (importing GX alone takes seconds, more than
checking a new day natively). By default (`validation_gx_background`), the stage starts this module as a detached process and returns: it reads the same partitions
back (sha256-checked), runs the suite, and adds its results to the table's report and the
night's page. A disagreement with the native verdicts cannot stop a run that has moved
on, so it is written into the report (`gx_disagrees`) and logged as an error.

    python -m tasks.quality.gx_docs --lake L --dataset flights --as-of 2013-12-31 \
        --table flights --run-id ID --days 2013-12-31
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import subprocess
import sys
from contextlib import AbstractContextManager, nullcontext
from datetime import date
from pathlib import Path

import pandas as pd
from filelock import FileLock

from data_contracts import Contract, load_contract
from tasks.core.lake import Lake
from tasks.datasets import get_dataset
from tasks.quality.dimensions import allowed_sets, dimensions_dir
from tasks.quality.docs_index import render_index
from tasks.quality.gx_suite import SuiteRun, run_suite
from tasks.quality.native_checks import as_validated
from tasks.quality.rules import ROW_COUNT

logger = logging.getLogger("nightshift.validate")


def docs_lock(lake: Lake, out_dir: str) -> AbstractContextManager:
    """Serialises rewrites of a night's reports and page (the stage and GX processes).

    A local lake only: on object storage there is no background GX (`start_background`
    is local-only), so the stage alone writes them, one table after the other.
    """
    if not lake.is_local:
        return nullcontext()
    lake.fs.makedirs(out_dir, exist_ok=True)
    return FileLock(f"{out_dir}/.docs.lock")


def write_docs_index(lake: Lake, dataset: str, as_of: date, tables: list[str]) -> str:
    """Rewrite the night's validation page from every table's report written so far."""
    out_dir = lake.validation_dir(dataset, as_of)
    reports = [
        lake.read_json(f"{out_dir}/{table}.json")
        for table in tables
        if lake.exists(f"{out_dir}/{table}.json")
    ]
    index = f"{out_dir}/docs/index.html"
    page = render_index(dataset, str(as_of), reports)
    lake.write_bytes_atomic(index, page.encode())
    return index


def gx_run(
    lake: Lake,
    dataset: str,
    as_of: date,
    table: str,
    contract: Contract,
    allowed: dict,
    frames: list[pd.DataFrame],
) -> SuiteRun:
    """The suite on the changed partitions' rows, with this table's Data Docs site
    (`docs/gx/<table>/`, local lakes only)."""
    out_dir = lake.validation_dir(dataset, as_of)
    gx_dir = f"{out_dir}/docs/gx/{table}" if lake.is_local else None
    frame = pd.concat(frames, ignore_index=True)
    return run_suite(frame, contract, allowed, gx_dir, run_name=f"{as_of} {contract.tag}")


def disagreements(run: SuiteRun, native_broken: set[str]) -> list[str]:
    """Rules GX breaks that the native checks passed (an engine bug: never expected).

    The row count is left out: GX counts tonight's changed partitions only (one empty
    weather day, say), the native rule the whole window, as the suite on main did.
    """
    return [
        f.describe() for f in run.failures if f.rule not in native_broken and f.rule != ROW_COUNT
    ]


def start_background(
    lake: Lake, dataset: str, as_of: date, table: str, run_id: str, days: list[str]
) -> subprocess.Popen:
    """Start the GX run of `days` of `table` as a detached process; its log sits next to
    the table's Data Docs (`docs/gx/<table>.log`)."""
    out_dir = lake.validation_dir(dataset, as_of)
    lake.fs.makedirs(f"{out_dir}/docs/gx", exist_ok=True)
    command = [sys.executable, "-m", "tasks.quality.gx_docs", "--lake", lake.root]
    command += ["--dataset", dataset, "--as-of", as_of.isoformat(), "--table", table]
    command += ["--run-id", run_id, "--days", *days]
    with open(f"{out_dir}/docs/gx/{table}.log", "ab") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # outlives the stage; a signal to the flow spares it
            env={**os.environ, "GX_ANALYTICS_ENABLED": "false"},
        )
    lowest_priority(process.pid)
    return process


def lowest_priority(pid: int) -> None:
    """Give a background GX process the CPU only when the night leaves it idle.

    Nothing waits for the Data Docs, while the stages after validation do wait for a core:
    on a 2-core box the GX processes (one per table; importing GX, which imports pyspark,
    is seconds of CPU) ran beside the features stage and the ranks' warm-up: 1.4 s of the
    stage's own work took 9-21 s in the flow (BENCHMARKS.md §35). Set from here, right
    after the start, so it holds before GX's imports and for every thread it starts.

    Two levers, because one is not enough on Linux: the process's own nice value, and its
    autogroup's. The process starts its own session, and with the kernel's autogroup
    scheduling (`/proc/sys/kernel/sched_autogroup_enabled`, on by default on most
    distributions) every session is a scheduling group that competes with the flow's
    session as an equal, whatever its processes' nice values: measured on a 2-core box,
    the two "nice 19" GX processes still took 10.5 CPU s of the features stage's 10.2 s
    (BENCHMARKS.md §37). The autogroup's nice (`/proc/<pid>/autogroup`, which an
    unprivileged owner may raise) lowers the whole session's weight; where the kernel has
    no autogroups the file is absent and the process's nice value alone decides.
    """
    with contextlib.suppress(ProcessLookupError):  # it already ended: nothing to slow down
        os.setpriority(os.PRIO_PROCESS, pid, 19)
    # absent (no autogroup scheduling, not Linux), refused, or the process already ended
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/autogroup").write_text("19")


def _record(lake: Lake, dataset: str, as_of: date, table: str, run_id: str, **fields) -> bool:
    """Write a GX run's outcome into the table's report and the page, under the lock;
    False (nothing written) when the table was validated again since (that run owns it)."""
    out_dir = lake.validation_dir(dataset, as_of)
    path = f"{out_dir}/{table}.json"
    with docs_lock(lake, out_dir):
        report = lake.read_json(path)
        if report.get("run_id") != run_id:
            logger.warning("gx: %s was validated again; dropping run %s", path, run_id)
            return False
        report.update(fields)
        lake.write_json_atomic(path, report)
        write_docs_index(lake, dataset, as_of, get_dataset(dataset).tables)
    return True


def run_background(
    lake: Lake, dataset: str, as_of: date, table: str, run_id: str, days: list[str]
) -> None:
    """The detached process: GX on `days`, then its results into the report and the page.

    A GX run that fails says so in the report (`gx_status: failed: ...`, shown on the page)
    instead of leaving it pending forever, and the error still ends the process (logged).
    """
    try:
        spec = get_dataset(dataset)
        contract = load_contract(table)
        allowed = allowed_sets(lake, spec, dimensions_dir(lake, spec, as_of))
        frames = [
            as_validated(lake.read_partition(dataset, "clean", table, date.fromisoformat(d)))
            for d in days
        ]
        run = gx_run(lake, dataset, as_of, table, contract, allowed, frames)
    except Exception as error:
        _record(lake, dataset, as_of, table, run_id, gx_status=f"failed: {error}"[:500])
        raise
    report = lake.read_json(f"{lake.validation_dir(dataset, as_of)}/{table}.json")
    disagrees = disagreements(run, {f["rule"] for f in report["failures"]})
    fields = {"gx_docs": run.docs_index, "gx_results": run.outcomes, "gx_disagrees": disagrees}
    if _record(lake, dataset, as_of, table, run_id, gx_status="done", **fields):
        for line in disagrees:
            logger.error("gx: %s: GX breaks a rule the native checks passed: %s", table, line)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lake", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--as-of", required=True, type=date.fromisoformat)
    parser.add_argument("--table", required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--days", nargs="+", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    run_background(Lake(args.lake), args.dataset, args.as_of, args.table, args.run_id, args.days)


if __name__ == "__main__":
    main()
