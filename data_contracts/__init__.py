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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

# Sections of a contract file that are not data rules: left out of its fingerprint, so
# tuning them never re-cleans a partition nor changes the contract tag models record.
UNFINGERPRINTED_SECTIONS = ("drift",)


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


class FeatureDriftLimits(BaseModel):
    """One feature's own drift limits, replacing the section's defaults for it."""

    model_config = ConfigDict(extra="forbid")

    psi_max: float | None = Field(default=None, gt=0)
    ks_max: float | None = Field(default=None, gt=0, le=1)
    js_max: float | None = Field(default=None, gt=0, le=1)
    ignore: bool = Field(default=False, description="Measured and reported, never a breach.")


class DriftThresholds(BaseModel):
    """How far the newest days may move from the training window before it counts.

    Numeric features are judged by PSI (bins: quantiles of the training window) and, when
    `ks_max` is set, by the two-sample KS statistic (its p-value is not used: at tens of
    thousands of rows every difference is "significant"); categorical features by the
    Jensen-Shannon distance (base 2, in [0, 1]); the label by the absolute difference of
    the positive rates. `on_breach` says what a breach does: `warn` records it (Prefect
    artifact, MLflow, version tags), `hold` also makes the promotion gate refuse the model.
    Not part of the contract's fingerprint: changing a limit never re-validates data.
    """

    model_config = ConfigDict(extra="forbid")

    psi_max: float = Field(default=0.2, gt=0)
    ks_max: float | None = Field(default=None, gt=0, le=1)
    js_max: float = Field(default=0.1, gt=0, le=1)
    label_rate_abs_max: float = Field(default=0.05, gt=0, le=1)
    bins: int = Field(default=10, ge=2, le=100)
    min_category_share: float = Field(
        default=0.01, ge=0, lt=1, description="Rarer categories are pooled into one."
    )
    min_rows: int = Field(default=100, ge=1, description="Fewer rows on a side: not judged.")
    on_breach: Literal["warn", "hold"] = "warn"
    features: dict[str, FeatureDriftLimits] = Field(default_factory=dict)


class ContractError(ValueError):
    """A contract file that does not parse into a contract (names the file and the key)."""


class Contract(BaseModel):
    """A dataset's contract in one layer."""

    dataset: str
    layer: str
    version: str
    description: str = ""
    key: list[str]
    thresholds: Thresholds = Thresholds()
    columns: list[ColumnRule]
    drift: DriftThresholds | None = None
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


def fingerprinted_text(text: str, source: str) -> str:
    """The contract text its fingerprint covers: the file without its unfingerprinted sections.

    Such a section must be one top-level block (`drift:` at column 0, its body indented),
    and the comment lines right above it go with it; the rest of the file is hashed byte for
    byte, so adding, changing or removing the section keeps the fingerprint the file has
    without it. Checked by parsing: the remainder must hold exactly the file's other keys,
    or the file is refused naming the section.
    """
    kept: list[str] = []
    pending: list[str] = []  # column-0 comments and blank lines: they belong to what follows
    skipping = False
    for line in text.splitlines(keepends=True):
        if not line.strip() or line.startswith("#"):
            pending.append(line)
            continue
        if not line[0].isspace():  # a top-level key starts a block
            skipping = line.split(":", 1)[0].strip() in UNFINGERPRINTED_SECTIONS
        if not skipping:
            kept += [*pending, line]
        pending = []
    if not skipping:
        kept += pending
    remainder = "".join(kept)
    full = yaml.safe_load(text) or {}
    expected = {k: v for k, v in full.items() if k not in UNFINGERPRINTED_SECTIONS}
    try:
        parsed = yaml.safe_load(remainder) or {}
    except yaml.YAMLError as error:  # e.g. an alias to an anchor inside the section
        parsed = error
    if parsed != expected:
        raise ContractError(
            f"{source}: the section(s) {list(UNFINGERPRINTED_SECTIONS)} must each be one "
            "top-level block (the key at column 0, its body indented below it)"
        )
    return remainder


def parse_contract(text: str, source: str) -> Contract:
    """A contract from its YAML text; errors name `source`, the key path and the rule broken."""
    payload = yaml.safe_load(text)
    if not isinstance(payload, dict):
        raise ContractError(f"{source}: a contract is a YAML mapping, got {type(payload).__name__}")
    payload["fingerprint"] = hashlib.sha256(fingerprinted_text(text, source).encode()).hexdigest()
    try:
        return Contract.model_validate(payload)
    except ValidationError as error:
        problems = "; ".join(
            f"key {'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            + (f" (got {repr(e['input'])[:80]})" if e["type"] != "missing" else "")
            for e in error.errors()
        )
        raise ContractError(f"{source}: {problems}") from None


@cache
def load_contract(dataset: str, layer: str = "clean") -> Contract:
    """Load a dataset's contract in a layer; the fingerprint is the file's sha256 (less
    the sections in `UNFINGERPRINTED_SECTIONS`, which are not data rules).

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
    contract = parse_contract(text, f"data_contracts/{name}")
    if (contract.dataset, contract.layer) != (dataset, layer):
        raise ValueError(f"data_contracts/{name} declares {contract.dataset}/{contract.layer}")
    return contract
