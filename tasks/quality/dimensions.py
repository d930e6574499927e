"""Dimension snapshots the rules read: which snapshot a run uses, and the allowed-value sets.

A contract column may take its allowed values from a delivered dimension
(`allowed_values_from: airlines.carrier`); both engines and the GX suite read the set here.
"""

from __future__ import annotations

from datetime import date

import pandas as pd

from data_contracts import load_contract
from tasks.core.lake import Lake
from tasks.datasets.spec import DatasetSpec


def dimensions_dir(lake: Lake, spec: DatasetSpec, as_of: date) -> str | None:
    """The dimension snapshot a run reads (None for a dataset without dimensions)."""
    return lake.latest_dimension_snapshot(spec.name, as_of) if spec.dimensions else None


def allowed_sets(lake: Lake, spec: DatasetSpec, dims_dir: str | None) -> dict[str, list[str]]:
    """The allowed-value sets the contracts take from dimensions (`airlines.carrier`)."""
    sets: dict[str, list[str]] = {}
    for source in spec.sources:
        for column in load_contract(source.name).columns:
            ref = column.allowed_values_from
            if ref is None or ref in sets:
                continue
            table, field_name = ref.split(".", 1)
            with lake.fs.open(f"{dims_dir}/{table}.csv") as handle:
                frame = pd.read_csv(handle, dtype=str)
            sets[ref] = frame[field_name].dropna().tolist()
    return sets
