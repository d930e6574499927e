"""Time `nightshift run` from a fresh process to its first task, phase by phase.

    .venv/bin/python benchmarks/startup.py [--runs 3] [--as-of 2013-12-31] [--home DIR]
                                           [--cold] [--imports]

Each run starts `nightshift run` as a new process on the home's lake (landed first when
it is empty), reads its output as it comes, stamps the moment each phase's line appears
and stops the run (its whole process group) once the first task has logged. Phases:

- `api`      the Prefect API answers (`Prefect API: ...`, printed after the health check)
- `cluster`  the Dask cluster is up (`Dask cluster ready` / prefect-dask's dashboard line)
- `flow`     the flow run exists (`Beginning flow run`)
- `task`     the first task logs (`Task run 'ingest-landed-days-...`): the target, <= 5 s

`--cold` stops a kept embedded Prefect server before each run (the first night on a
machine); without it the runs after the first reuse the server the first one left.
`--imports` also prints the slowest imports of the CLI's `run` path (`python -X
importtime`), cumulative, in a separate process so the timed runs are not slowed by it.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHASES = {
    "api": re.compile(r"^Prefect API: "),
    "cluster": re.compile(r"Dask cluster ready|The Dask dashboard is available"),
    "flow": re.compile(r"Beginning flow run"),
    "task": re.compile(r"Task run 'ingest-landed-days"),
}


def _env(home: Path) -> dict[str, str]:
    env = {**os.environ, "NIGHTSHIFT_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("PREFECT_API_URL", None)
    return env


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "flows.cli", *args]


def time_one_run(as_of: str, env: dict[str, str], limit_s: float = 180) -> dict[str, float]:
    """Seconds from the process start to each phase's first line; stops the run after."""
    started = time.perf_counter()
    process = subprocess.Popen(
        _cli("run", "--as-of", as_of, "--trials", "0", "--epochs", "1"),
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: the cluster and server go with it
    )
    seen: dict[str, float] = {}
    lines: list[str] = []
    timer = threading.Timer(limit_s, lambda: os.killpg(process.pid, signal.SIGKILL))
    timer.start()
    try:
        for line in process.stdout:  # type: ignore[union-attr]
            lines.append(line)
            now = time.perf_counter() - started
            for phase, pattern in PHASES.items():
                if phase not in seen and pattern.search(line):
                    seen[phase] = now
            if "reused" in line and line.startswith("Prefect API: "):
                seen["reused"] = 1.0
            if "task" in seen:
                break
    finally:
        timer.cancel()
        _stop(process)
    if "task" not in seen:
        sys.stderr.write("".join(lines[-40:]))
        raise SystemExit(f"no task started within {limit_s:.0f} s (output above)")
    return seen


def _stop(process: subprocess.Popen) -> None:
    """Stop the run and everything it started in its process group (not a kept server,
    which runs in a session of its own)."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def slowest_imports(env: dict[str, str], top: int = 12) -> list[tuple[float, str]]:
    """(cumulative seconds, module) of the slowest imports on the `run` path."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import flows.cli, flows.nightly"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    rows = []
    for line in done.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            rows.append((int(parts[1]) / 1e6, parts[2].rstrip()))
    return sorted(rows, reverse=True)[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--as-of", default="2013-12-31")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--home", type=Path, default=ROOT / ".nightshift")
    parser.add_argument("--cold", action="store_true", help="stop a kept server before each run")
    parser.add_argument("--imports", action="store_true", help="also print the slowest imports")
    args = parser.parse_args()
    env = _env(args.home.resolve())
    if not (args.home / "lake" / "landing").exists():
        subprocess.run(_cli("land", "--through", args.as_of), env=env, cwd=ROOT, check=True)
    load = os.getloadavg()[0]
    print(f"{os.cpu_count()} cores, load {load:.2f} before the runs; home {args.home}")
    print("| run | api s | cluster s | flow run s | first task s | server |")
    print("|---|---:|---:|---:|---:|---|")
    for run in range(1, args.runs + 1):
        if args.cold:
            subprocess.run(_cli("prefect-server", "stop"), env=env, cwd=ROOT, check=False)
        seen = time_one_run(args.as_of, env)
        print(
            f"| {run} | {seen.get('api', float('nan')):.1f} | "
            f"{seen.get('cluster', float('nan')):.1f} | {seen.get('flow', float('nan')):.1f} | "
            f"**{seen['task']:.1f}** | {'reused' if 'reused' in seen else 'started'} |",
            flush=True,
        )
    print(f"load after the runs: {os.getloadavg()[0]:.2f}")
    if args.imports:
        print("\nslowest imports of `import flows.cli, flows.nightly` (cumulative s):")
        for seconds, module in slowest_imports(env):
            print(f"  {seconds:6.2f}  {module}")


if __name__ == "__main__":
    main()
