"""The rule catalogue compiled to pandas: which raw rows are quarantined, and why."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from data_contracts import ColumnRule, Contract
from tasks.quality.rules import NULL_TOKENS, Rule, compile_rules, row_rules


def _is_null_token(values: pd.Series) -> pd.Series:
    return values.isna() | values.isin(NULL_TOKENS)


def parse_column(raw: pd.Series, column: ColumnRule) -> tuple[pd.Series, pd.Series]:
    """Type one raw text column; returns (typed values, mask of values that failed to parse)."""
    missing = _is_null_token(raw)
    text = raw.where(~missing)
    if column.type == "string":
        return text.str.strip().astype("string"), pd.Series(False, index=raw.index)
    if column.type in ("int", "float"):
        typed = pd.to_numeric(text, errors="coerce")
        bad = typed.isna() & ~missing
        if column.type == "float":
            return typed.astype("float64"), bad
        fractional = typed.notna() & (typed != np.floor(typed))
        return typed.where(~fractional).astype("Int64"), bad | fractional
    if column.type == "date":
        typed = pd.to_datetime(text, errors="coerce", format="%Y-%m-%d").dt.date
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
