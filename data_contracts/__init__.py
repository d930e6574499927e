"""Data contracts as data: one YAML file per dataset and layer, loaded into typed models.

The YAML is the single source of truth. `tasks.quality.rules` turns it into one rule
catalogue that is compiled into row-level masks (which rows are quarantined and why, on
pandas and Spark) and into a Great Expectations suite
(whether the clean batch honours it), so the two can never disagree about a rule.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources
from typing import Literal

import yaml
from pydantic import BaseModel, Field, model_validator


class ColumnRule(BaseModel):
    """Type and row-level rules of one column."""

    name: str
    type: Literal["string", "int", "float", "date"]
    nullable: bool = True
    derived: bool = Field(default=False, description="Computed by ingestion, not in raw files.")
    min: float | None = None
    max: float | None = None
    allowed_values: list[str] | None = None
    allowed_values_from: str | None = Field(
        default=None, description="'<dimension>.<column>': the allowed set is that dimension's."
    )
    regex: str | None = None

    @model_validator(mode="after")
    def _one_source_of_allowed_values(self) -> ColumnRule:
        if self.allowed_values is not None and self.allowed_values_from is not None:
            raise ValueError(f"column {self.name}: give allowed_values or allowed_values_from")
        return self


DayOutcome = Literal["fail", "hold", "warn"]


class Thresholds(BaseModel):
    """Per-day limits, checked on a day's staged generation before it may replace the last
    good one (a breach never touches published data).

    `on_empty_day` / `on_missing_day` say what a header-only delivery, or no delivery at
    all for a day up to `as_of`, does: `fail` the run naming the day and file, `hold` the
    day (the night goes on with its last good generation, or without it, and the day is
    listed as held in the run's results and the model's tags) or `warn` (empty only: the
    day is published empty, e.g. a side source with no readings that day).
    """

    max_quarantine_fraction: float = Field(default=0.02, ge=0, le=1)
    min_rows_per_partition: int = Field(default=1, ge=0)
    on_empty_day: DayOutcome = "fail"
    on_missing_day: Literal["fail", "hold"] = "fail"


class Contract(BaseModel):
    """A dataset's contract in one layer."""

    dataset: str
    layer: str
    version: str
    description: str = ""
    key: list[str]
    thresholds: Thresholds = Thresholds()
    columns: list[ColumnRule]
    fingerprint: str = ""

    @property
    def name(self) -> str:
        return f"{self.dataset}_{self.layer}"

    @property
    def tag(self) -> str:
        """`dataset/layer@version+fingerprint`: what a model version records as its contract."""
        return f"{self.dataset}/{self.layer}@{self.version}+{self.fingerprint[:8]}"

    def column(self, name: str) -> ColumnRule:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(f"contract {self.name} has no column {name!r}")

    @property
    def source_columns(self) -> list[ColumnRule]:
        return [c for c in self.columns if not c.derived]


@cache
def load_contract(dataset: str, layer: str = "clean") -> Contract:
    """Load a dataset's contract in a layer; the fingerprint is the file's sha256.

    The clean layer's contract is `data_contracts/<dataset>.yaml` (what models depend on);
    other layers are `data_contracts/<dataset>.<layer>.yaml` (e.g. `flights.landing.yaml`).
    """
    name = f"{dataset}.yaml" if layer == "clean" else f"{dataset}.{layer}.yaml"
    try:
        text = resources.files(__name__).joinpath(name).read_text()
    except FileNotFoundError as error:
        raise FileNotFoundError(
            f"no data contract for dataset {dataset!r} in layer {layer!r} "
            f"(expected data_contracts/{name})"
        ) from error
    payload = yaml.safe_load(text)
    payload["fingerprint"] = hashlib.sha256(text.encode()).hexdigest()
    contract = Contract.model_validate(payload)
    if (contract.dataset, contract.layer) != (dataset, layer):
        raise ValueError(f"data_contracts/{name} declares {contract.dataset}/{contract.layer}")
    return contract
