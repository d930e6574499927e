"""One lock per (dataset, as_of): two runs of the same night never overlap.

Two runs of one `as_of` (`nightshift run` beside the deployment, a backfill beside the
nightly schedule, a stage run alone from the CLI) would write the same
`runs/<dataset>/<as_of>/` files and race each other's registry moves. A Prefect
concurrency limit only covers deployments, so the lock lives with the data: an OS file
lock (`filelock`, `flock(2)`) under `<lake>/locks/<dataset>/<as_of>.lock`. The kernel
releases it when its holder dies, so a `kill -9` never leaves a stale lock; the holder
writes who it is beside the lock so the second run's error names it.

A lake on object storage has no file locks: its lock files go to a local directory
instead (`<tmp>/nightshift-locks/<hash of the lake URL>`), which excludes runs on this
host; across hosts, the deployments' concurrency limit is what serialises nights.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path

from filelock import FileLock, Timeout

from tasks.core.lake import Lake


class RunLocked(RuntimeError):
    """Another run of the same dataset and `as_of` holds the lock; the message names it."""


def lock_dir(lake: Lake) -> Path:
    """Where the lake's lock files live: in the lake when it is local, else on this host."""
    if lake.is_local:
        return Path(lake.path("locks"))
    digest = hashlib.sha256(lake.root.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir(), "nightshift-locks", digest)


def lock_path(lake: Lake, dataset: str, as_of: date) -> Path:
    """`<locks>/<dataset>/<as_of>.lock`: the lock of one night of one dataset."""
    return lock_dir(lake) / dataset / f"{as_of.isoformat()}.lock"


def _holder_path(path: Path) -> Path:
    return path.with_suffix(".holder.json")


def lock_holder(lake: Lake, dataset: str, as_of: date) -> dict | None:
    """Who last took the lock (pid, host, flow run, since); None if nobody ever did."""
    try:
        return json.loads(_holder_path(lock_path(lake, dataset, as_of)).read_text())
    except (OSError, ValueError):
        return None


def is_locked(lake: Lake, dataset: str, as_of: date) -> bool:
    """True while some live run holds the night's lock (probed without waiting).

    A raw `flock` on a descriptor of its own: a second `FileLock` object on the same path
    in this process would share (and, when collected, release) the holder's lock.
    """
    path = lock_path(lake, dataset, as_of)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a probe's own flock, never the holder's
    return False


@contextmanager
def run_lock(
    lake: Lake, dataset: str, as_of: date, owner: str | None = None, wait_s: float = 0
) -> Iterator[Path]:
    """Hold the (dataset, as_of) lock for the body; fail fast if another run holds it.

    `owner` (a flow run id, a CLI stage) is recorded for the error another run gets.
    """
    path = lock_path(lake, dataset, as_of)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), timeout=wait_s)
    try:
        lock.acquire()
    except Timeout:
        holder = lock_holder(lake, dataset, as_of) or {}
        raise RunLocked(
            f"another run of {dataset} {as_of} is in progress and holds {path}: "
            f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, "
            f"{holder.get('owner') or 'no flow run'}, since {holder.get('since', '?')}. "
            "Wait for it to finish (or stop it) and run again."
        ) from None
    try:
        _holder_path(path).write_text(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "owner": owner,
                    "since": datetime.now(UTC).isoformat(timespec="seconds"),
                }
            )
        )
        yield path
    finally:
        lock.release()
