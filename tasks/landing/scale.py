"""Scale generator: a landing zone N times the real data, like a TPC-H scale factor.

Copy 0 of each day is the real delivery; copies 1..N-1 are the dataset spec's
`scale_copy` of it (for flights: new keys, the same joins, seeded jitter on the measures,
dirty values left dirty so every copy carries the real dirty-data rates). Side sources and
dimensions are delivered once per day, unscaled. Deterministic for a given seed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd

from tasks.core.lake import Lake
from tasks.datasets.spec import DatasetSpec
from tasks.landing.simulator import check_range, land_dimensions, sources_by_day

logger = logging.getLogger("nightshift.scale")

MAX_FACTOR = 60  # flights' copy k shifts the minute by k: beyond 60 copies keys would collide


@dataclass
class ScaleReport:
    """What a scale call wrote."""

    factor: int
    days: int
    fact_rows: int


def write_scaled_landing(
    lake: Lake,
    spec: DatasetSpec,
    factor: int,
    start: date,
    through: date,
    seed: int = 42,
) -> ScaleReport:
    """Write landing/ for [start, through] with `factor` copies of each day's fact rows."""
    if spec.scale_copy is None:
        raise ValueError(f"dataset {spec.name} declares no scale_copy; it cannot be scaled")
    if not 1 <= factor <= MAX_FACTOR:
        raise ValueError(f"--factor must be between 1 and {MAX_FACTOR}, got {factor}")
    check_range(spec, start, through)
    tables = sources_by_day(spec)
    land_dimensions(lake, spec, start)
    report = ScaleReport(factor=factor, days=0, fact_rows=0)
    day = start
    while day <= through:
        # one generator per day: a day's copies do not depend on which days were asked for
        rng = np.random.default_rng([seed, day.toordinal()])
        folder = lake.landing_day(spec.name, day)
        for name, (table, by_day) in tables.items():
            rows = by_day.get(day.isoformat(), table.iloc[0:0])
            if name == spec.fact.name:
                copies = [rows, *(spec.scale_copy(rows, k, rng) for k in range(1, factor))]
                rows = pd.concat(copies, ignore_index=True)
                report.fact_rows += len(rows)
            lake.write_bytes_atomic(f"{folder}/{name}.csv", rows.to_csv(index=False).encode())
        report.days += 1
        day += timedelta(days=1)
    logger.info(
        "scaled landing x%d %s..%s: %d %s rows",
        factor,
        start,
        through,
        report.fact_rows,
        spec.fact.name,
    )
    return report
