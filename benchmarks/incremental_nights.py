"""Time a full night and the next night with one new day, stage by stage (issue 14, item 3).

    .venv/bin/python benchmarks/incremental_nights.py [--home DIR] [--first 2013-12-30]

In a fresh NIGHTSHIFT_HOME (a temporary one unless --home names an empty folder): land
through `--first` and run it (a full retrain: no champion yet), then land one more day
and run that (a fine-tune of the champion when NIGHTSHIFT_FULL_RETRAIN_EVERY_DAYS allows).
Per-stage seconds come from the Prefect task-run log lines (the stages run one after
another, so a stage lasts from the previous stage's end to its own); the flow's seconds
from its own start and end lines. Prints a BENCHMARKS.md table, then each night's served
AUC, gate decision and training mode.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path

BIN = Path(sys.executable).parent

# Prefect task names (without the run suffix) -> the table's rows
EVALUATE_ROW = "evaluate (the trees' rest), the compression variants built beside it"
# tasks that run beside the flow's stages, not between them: their end is no row's end (the
# trees are fitted from the plan on, beside tune and train; what is left of the fit when
# training ends is in the evaluate row)
BESIDE = {"fit-trees"}
STAGES = {
    "ingest-landed-days": "ingest",
    "validate-contract": "validate",
    "build-features": "features",
    "check-drift": "drift + evaluate-champion",
    "evaluate-champion": "drift + evaluate-champion",
    "plan-training": "plan (mode decision, champion staged)",
    "tune-hyperparameters": "tune",
    "train-network-ddp": "train",
    # the compression variants are built beside the evaluation (flows/nightly.py): one row
    "evaluate-on-holdout": EVALUATE_ROW,
    "build-compression-variants": EVALUATE_ROW,
    "compress-network": "compress (the variants timed, one kept)",
    "register-challenger": "register + gate + promote + summary",
    "gate-challenger": "register + gate + promote + summary",
    "promote-challenger": "register + gate + promote + summary",
    "publish-summary": "register + gate + promote + summary",
}
STAMP = r"(\d\d:\d\d:\d\d\.\d+)"
# "ingest-landed-days-372" (Prefect's 3-hex suffix) or a task_run_name ("validate-flights")
TASK_DONE = re.compile(STAMP + r" \| \w+\s*\| Task run '([a-z-]+?)(?:-[0-9a-f]{3})?' - Finished")
FLOW_START = re.compile(STAMP + r" \| \w+\s*\| Flow run '[^']+' - Beginning flow run")
FLOW_DONE = re.compile(STAMP + r" \| \w+\s*\| Flow run '[^']+' - Finished in state")
PLAN = re.compile(r"plan: (full|fine-tune) \((.*)\)")
SERVED = re.compile(r"served form \(\w+\): .*?holdout AUC ([0-9.]+)")
VERDICT = re.compile(r"^\s+(PROMOTED|KEPT): (.*)$", re.M)


def _clock(text: str) -> datetime:
    return datetime.strptime(text, "%H:%M:%S.%f")


def stage_seconds(log: str) -> tuple[dict[str, float], float]:
    """Seconds per table row, and the flow's own seconds, from one run's Prefect log."""
    start = FLOW_START.search(log)
    end = FLOW_DONE.search(log)
    if start is None or end is None:
        raise SystemExit(
            "the run's log has no flow start/end line (was PREFECT_LOGGING_LEVEL set?)"
        )
    previous = _clock(start.group(1))
    seconds: dict[str, float] = {}
    for stamp, task in TASK_DONE.findall(log):
        if task in BESIDE:
            continue
        now = _clock(stamp)
        row = "validate" if task.startswith("validate-") else STAGES.get(task, task)
        seconds[row] = seconds.get(row, 0.0) + (now - previous).total_seconds() % 86400
        previous = now
    return seconds, (_clock(end.group(1)) - _clock(start.group(1))).total_seconds() % 86400


def _run(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-5000:] + done.stderr[-5000:])
        raise SystemExit(f"{' '.join(args)} failed with exit code {done.returncode}")
    return elapsed, done.stdout + done.stderr


def night(day: date, env: dict[str, str]) -> dict:
    """Land through `day`, run the nightly flow for it; its seconds and outcome.

    The run's output is kept in the home (`run-<day>.log`) for a second look.
    """
    nightshift = str(BIN / "nightshift")
    _run([nightshift, "land", "--through", day.isoformat()], env)
    wall, log = _run([nightshift, "run", "--as-of", day.isoformat()], env)
    Path(env["NIGHTSHIFT_HOME"], f"run-{day}.log").write_text(log)
    stages, flow = stage_seconds(log)
    plan, served, verdict = PLAN.search(log), SERVED.search(log), VERDICT.search(log)
    return {
        "stages": stages,
        "flow": flow,
        "wall": wall,
        "mode": f"{plan.group(1)} ({plan.group(2)})" if plan else "?",
        "served_auc": served.group(1) if served else "?",
        "verdict": f"{verdict.group(1)}: {verdict.group(2)}" if verdict else "?",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--first", default="2013-12-30", help="The full night's as_of.")
    parser.add_argument("--home", default=None, help="An empty NIGHTSHIFT_HOME (else a temp).")
    args = parser.parse_args()
    first = date.fromisoformat(args.first)
    ram_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, {ram_gib:.0f} GiB RAM; "
        f"{datetime.now():%Y-%m-%d %H:%M}; load {os.getloadavg()[0]:.1f}"
    )
    with tempfile.TemporaryDirectory(prefix="nightshift-incr-") as scratch:
        home = args.home or scratch
        env = {**os.environ, "NIGHTSHIFT_HOME": home}
        env.pop("PREFECT_API_URL", None)
        try:
            nights = [night(first, env), night(first + timedelta(days=1), env)]
        finally:  # the runs keep the home's Prefect server for the next night: stop it
            subprocess.run(
                [str(BIN / "nightshift"), "prefect-server", "stop"],
                env=env,
                capture_output=True,
                check=False,
            )
    print(f"load after: {os.getloadavg()[0]:.1f}")
    full, incr = nights
    rows = list(dict.fromkeys([*full["stages"], *incr["stages"]]))
    print(f"\n| stage | full night ({first}) | one new day ({first + timedelta(days=1)}) | ratio |")
    print("|---|---:|---:|---:|")
    for row in rows:
        a, b = full["stages"].get(row, 0.0), incr["stages"].get(row, 0.0)
        ratio = f"{b / a:.2f}x" if a > 0.5 else ""
        print(f"| {row} | {a:.1f} s | {b:.1f} s | {ratio} |")
    print(
        f"| **flow** | **{full['flow']:.0f} s** ({full['wall']:.0f} s with start-up) | "
        f"**{incr['flow']:.0f} s** ({incr['wall']:.0f} s) | **{incr['flow'] / full['flow']:.2f}x** |"
    )
    for label, result in (("full night", full), ("one new day", incr)):
        print(
            f"\n{label}: training {result['mode']}; served AUC {result['served_auc']}; "
            f"{result['verdict']}"
        )


if __name__ == "__main__":
    main()
