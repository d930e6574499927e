"""The dataset spec: everything the pipeline knows about one dataset, declared in one place.

A spec names the files a dataset delivers each day (its *sources*, each with a data
contract of the same name), the dimension snapshots it reads, how the sources and
dimensions join into the rows a model learns from (the *fact* table), the key, the label,
the columns that are leakage, the features and their kinds, the slices a release is judged
on and the names of the model's output. Landing, both ingestion engines, features,
evaluation, compression, registration and the summary read the spec; none of them names a
dataset's columns. A new dataset is one module in `tasks/datasets/` plus its contracts in
`data_contracts/` (see the README, "Adding a dataset").

This module and the dataset modules import only pandas and numpy: the registered model
ships them to compute its own features at serving time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Source:
    """A file delivered once a day to `landing/<dataset>/daily/<day>/<name>.csv`.

    `name` is also its table in `clean/` and `quarantine/` and the dataset of its data
    contract (`data_contracts/<name>.yaml`, and `<name>.landing.yaml` for the header).
    A row's own date comes from three text columns (`date_parts`) or from one
    `YYYY-MM-DD` column (`date_column`); a row dated on another day is quarantined.
    """

    name: str
    date_parts: tuple[str, str, str] | None = ("year", "month", "day")
    date_column: str | None = None

    def __post_init__(self) -> None:
        if (self.date_parts is None) == (self.date_column is None):
            raise ValueError(f"source {self.name}: give date_parts or date_column, not both")

    @property
    def date_inputs(self) -> list[str]:
        """The raw columns a row's date is read from."""
        return list(self.date_parts) if self.date_parts else [str(self.date_column)]


@dataclass(frozen=True)
class Join:
    """A left join of the fact rows with a side source of the same day or a dimension.

    `on` maps fact columns to the joined table's columns; a fact column listed in
    `floordiv` is integer-divided first (an HHMM time joined with an hour). `columns`
    renames the joined table's columns that are kept (all of its non-key columns when
    empty). A dimension's kept columns are typed by `types` ("float" or "string").
    """

    table: str
    on: dict[str, str]
    columns: dict[str, str] = field(default_factory=dict)
    floordiv: dict[str, int] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset, declared once (see the module docstring)."""

    name: str
    description: str
    fact: Source
    side_sources: tuple[Source, ...]
    dimensions: tuple[str, ...]
    joins: tuple[Join, ...]
    # raw clean rows -> 1.0 / 0.0, NaN when the outcome is unknown (never a feature)
    label: Callable[[pd.DataFrame], pd.Series]
    leakage: tuple[str, ...]
    categorical: tuple[str, ...]
    numeric: tuple[str, ...]
    input_columns: tuple[str, ...]
    derive_features: Callable[[pd.DataFrame], pd.DataFrame]
    slices: dict[str, Callable[[pd.DataFrame], pd.Series]]
    model_name: str
    output: str = "probability"
    decision: str = "predicted"
    first_day: date | None = None
    last_day: date | None = None
    read_source: Callable[[str], pd.DataFrame] | None = None
    scale_copy: Callable[[pd.DataFrame, int, np.random.Generator], pd.DataFrame] | None = None
    # Columns a directional model test may push (name -> sign of the expected effect).
    directions: dict[str, int] = field(default_factory=dict)
    # `derive_features` on one numpy array per input column, without pandas: what the
    # served model runs on small requests. It must give bit-identical features (the
    # categorical ones as str or None, the numeric ones float64), which tests prove.
    derive_arrays: Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]] | None = None

    @property
    def sources(self) -> tuple[Source, ...]:
        """Every delivered source, side sources first (the fact joins them)."""
        return (*self.side_sources, self.fact)

    @property
    def tables(self) -> list[str]:
        """The clean tables this dataset writes, in ingestion order."""
        return [s.name for s in self.sources]

    def source(self, name: str) -> Source:
        for source in self.sources:
            if source.name == name:
                return source
        raise KeyError(f"dataset {self.name} has no source {name!r}")

    def feature_frame(self, clean: pd.DataFrame) -> pd.DataFrame:
        """Model inputs from raw clean rows, checked to hold exactly the declared features."""
        frame = self.derive_features(clean)
        expected = [*self.categorical, *self.numeric]
        leaked = sorted(set(frame.columns) & set(self.leakage))
        if leaked:
            raise ValueError(f"dataset {self.name}: leakage columns {leaked} reached the features")
        return frame if list(frame.columns) == expected else frame[expected]

    def feature_arrays(self, columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """`feature_frame` without pandas, for a served request (see `derive_arrays`)."""
        if self.derive_arrays is None:
            raise NotImplementedError(f"dataset {self.name} declares no derive_arrays")
        arrays = self.derive_arrays(columns)
        expected = {*self.categorical, *self.numeric}
        if set(arrays) != expected:
            raise ValueError(
                f"dataset {self.name}: derive_arrays gave {sorted(arrays)}, not {sorted(expected)}"
            )
        return arrays

    def slice_frame(self, rows: pd.DataFrame) -> pd.DataFrame:
        """The slice keys of each row (same index), one column per declared slice."""
        return pd.DataFrame(
            {name: key(rows).astype(str) for name, key in self.slices.items()}, index=rows.index
        )


def day_key(frame: pd.DataFrame, source: Source) -> pd.Series:
    """`YYYY-MM-DD` of each raw text row of `source` (how the simulator splits deliveries)."""
    if source.date_parts:
        year, month, day = (frame[c].astype(str) for c in source.date_parts)
        return year.str.zfill(4) + "-" + month.str.zfill(2) + "-" + day.str.zfill(2)
    return frame[str(source.date_column)].astype(str).str.slice(0, 10)


def hhmm_to_hours(values: pd.Series) -> pd.Series:
    """A clock time written HHMM (e.g. 1545) as fractional hours (15.75)."""
    numeric = pd.to_numeric(values, errors="coerce").astype("float64")
    return np.floor(numeric / 100) + (numeric % 100) / 60


def hour_bucket(hours: pd.Series, width: int = 4) -> pd.Series:
    """Whole hours in `width`-hour buckets ('04-07', '08-11', ...; 'unknown' when missing)."""
    hour = pd.to_numeric(hours, errors="coerce").fillna(-1).astype(int)
    start = (hour // width) * width
    return start.map(lambda h: "unknown" if h < 0 else f"{h:02d}-{h + width - 1:02d}")


# Helpers of the datasets' `derive_arrays`: each mirrors, on a numpy array, the pandas
# operation its `derive_features` applies, with the same result bit for bit.


def _missing(value: object) -> bool:
    return value is None or value is pd.NA or value is pd.NaT or value != value


def as_strings(values: np.ndarray) -> np.ndarray:
    """`Series.astype("string")` as an object array: str, or None where missing."""
    if values.dtype == object and set(map(type, values)) <= {str, type(None)}:
        return values  # already so (the service's checked requests)
    out = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        out[i] = value if isinstance(value, str) else None if _missing(value) else str(value)
    return out


def as_floats(values: np.ndarray) -> np.ndarray:
    """`Series.astype("float64")` as a float64 array (NaN where missing)."""
    if values.dtype.kind in "fiub":
        return values.astype(np.float64)
    return pd.Series(values).astype("float64").to_numpy()


def as_numbers(values: np.ndarray) -> np.ndarray:
    """`pd.to_numeric(errors="coerce").astype("float64")` as a float64 array."""
    if values.dtype.kind in "fiub":
        return values.astype(np.float64)
    return pd.to_numeric(pd.Series(values), errors="coerce").astype("float64").to_numpy()


def as_days(values: np.ndarray) -> np.ndarray:
    """`pd.to_datetime(values)` floored to whole days (datetime64[D], NaT where missing)."""
    if values.dtype.kind == "M":
        return values.astype("datetime64[D]")
    return pd.to_datetime(pd.Series(values)).to_numpy().astype("datetime64[D]")


def weekday_strings(days: np.ndarray) -> np.ndarray:
    """`.dt.day_of_week.astype("Int64").astype("string")`: '0' (Monday) .. '6', None for NaT."""
    weekday = (days.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday
    missing = np.isnat(days)
    return np.array(
        [None if gone else str(day) for day, gone in zip(weekday.tolist(), missing, strict=True)],
        dtype=object,
    )


def year_floats(days: np.ndarray) -> np.ndarray:
    """`.dt.year.astype("float64")`: the calendar year, NaN for NaT."""
    years = (days.astype("datetime64[Y]").astype(np.int64) + 1970).astype(np.float64)
    return np.where(np.isnat(days), np.nan, years)


def hhmm_array_to_hours(values: np.ndarray) -> np.ndarray:
    """`hhmm_to_hours` on an array."""
    numeric = as_numbers(values)
    return np.floor(numeric / 100) + (numeric % 100) / 60
