"""The rule catalogue compiled to pandas: which raw rows are quarantined, and why."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from data_contracts import ColumnRule, Contract
from tasks.quality.rules import (
    DATE_PATTERN,
    INT64_MAX,
    INT64_MIN,
    INTEGER_PATTERN,
    NULL_TOKENS,
    NUMBER_PATTERN,
    Rule,
    compile_rules,
    row_rules,
)

_NUMBER = re.compile(NUMBER_PATTERN)
_INTEGER = re.compile(INTEGER_PATTERN)


def to_float(value: str) -> float | None:
    """A finite float in the shared number grammar, else None (`inf`, `1e400`, `abc`).

    Python's `float` rounds correctly, like the JVM's parser Spark uses, so both engines
    get the same double for the same text.
    """
    if not _NUMBER.fullmatch(value):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def to_date(text: pd.Series) -> pd.Series:
    """`YYYY-MM-DD` text as dates (NaT otherwise), like `spark_rules.to_date`."""
    shaped = text.where(text.str.fullmatch(DATE_PATTERN).fillna(False).astype(bool))
    return pd.to_datetime(shaped, errors="coerce", format="%Y-%m-%d").dt.date


def to_int(value: str) -> int | None:
    """An int64 from integer text (exact, no detour through a double) or from an integral
    non-integer number (`9.0`, `1e3`); None when it is neither or does not fit int64."""
    if _INTEGER.fullmatch(value):
        try:
            number = int(value)
        except ValueError:  # more digits than Python converts: far beyond int64 anyway
            return None
    else:
        real = to_float(value)
        if real is None or real != math.floor(real):
            return None
        number = int(real)
    return number if INT64_MIN <= number <= INT64_MAX else None


def _is_null_token(values: pd.Series) -> pd.Series:
    return values.isna() | values.isin(NULL_TOKENS)


def parse_column(raw: pd.Series, column: ColumnRule) -> tuple[pd.Series, pd.Series]:
    """Type one raw text column; returns (typed values, mask of values that failed to parse)."""
    missing = _is_null_token(raw)
    text = raw.where(~missing)
    if column.type == "string":
        return text.str.strip().astype("string"), pd.Series(False, index=raw.index)
    if column.type in ("int", "float"):
        present = text.dropna()
        if column.type == "float":
            values = [to_float(v) for v in present]
            typed = pd.Series(values, index=present.index, dtype="float64").reindex(raw.index)
        else:
            values = pd.array([to_int(v) for v in present], dtype="Int64")
            typed = pd.Series(values, index=present.index).reindex(raw.index)
        return typed, typed.isna() & ~missing
    if column.type == "date":
        typed = to_date(text)
        return typed, typed.isna() & ~missing
    raise ValueError(column.type)  # pragma: no cover - the contract model restricts the literal


class PandasChecks:
    """The checks as boolean masks over one frame's typed columns."""

    def __init__(self, typed: pd.DataFrame, unparsable: dict[str, pd.Series]) -> None:
        self.typed, self.unparsable = typed, unparsable

    def _present(self, rule: Rule) -> pd.Series:
        return self.typed[rule.column].notna() & ~self.unparsable[rule.column]

    def type(self, rule: Rule) -> pd.Series:
        return self.unparsable[rule.column]

    def not_null(self, rule: Rule) -> pd.Series:
        return self.typed[rule.column].isna() & ~self.unparsable[rule.column]

    def between(self, rule: Rule) -> pd.Series:
        inside = self.typed[rule.column].astype("float64").between(*rule.bounds)
        return self._present(rule) & ~inside

    def in_set(self, rule: Rule) -> pd.Series:
        return (self._present(rule) & ~self.typed[rule.column].isin(rule.values)).fillna(False)

    def regex(self, rule: Rule) -> pd.Series:
        matches = self.typed[rule.column].str.fullmatch(rule.pattern).fillna(False).astype(bool)
        return self._present(rule) & ~matches


def _append(reasons: pd.Series, mask: pd.Series, rule_name: str) -> pd.Series:
    if mask.any():
        reasons = reasons.where(~mask, reasons + np.where(reasons == "", "", ";") + rule_name)
    return reasons


def typed_frame_and_violations(
    raw: pd.DataFrame,
    contract: Contract,
    allowed_sets: Mapping[str, Iterable[str]] | None = None,
) -> tuple[pd.DataFrame, pd.Series]:
    """Parse every contract column of `raw` and name the rules each row breaks.

    Returns the typed frame (contract columns only, same index as `raw`) and a Series of
    `;`-joined rule names, empty for rows that honour the contract.
    """
    typed = pd.DataFrame(index=raw.index)
    unparsable: dict[str, pd.Series] = {}
    for column in contract.source_columns:
        typed[column.name], unparsable[column.name] = parse_column(raw[column.name], column)
    reasons = pd.Series("", index=raw.index, dtype=object)
    checks = PandasChecks(typed, unparsable)
    for rule, mask in compile_rules(row_rules(contract, allowed_sets), checks):
        reasons = _append(reasons, mask, rule.name)
    return typed, reasons
