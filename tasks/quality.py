"""Row-level data-contract rules compiled to pandas: which raw rows are quarantined, and why.

A rule name reads `<column>:<rule>` (e.g. `distance:between[1,6000]`), the same words the
Great Expectations suite and the quarantine files use, so an engineer can grep one name
from the run log to the offending rows.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from data_contracts import ColumnRule, Contract

NULL_TOKENS = ("", "NA", "NaN", "nan", "NULL", "null", "None")


class ContractViolation(ValueError):
    """Input that cannot be cleaned row by row (a missing column, a broken threshold)."""


def check_schema(raw: pd.DataFrame, contract: Contract, source: str) -> None:
    """Fail loudly when a raw file lacks a column the contract needs (no row can be kept)."""
    missing = [c.name for c in contract.source_columns if c.name not in raw.columns]
    if missing:
        raise ContractViolation(
            f"{source}: missing column(s) {missing} required by contract {contract.tag} "
            f"(rule: schema:required_columns); found columns {list(raw.columns)}"
        )


def _is_null_token(values: pd.Series) -> pd.Series:
    return values.isna() | values.isin(NULL_TOKENS)


def parse_column(raw: pd.Series, rule: ColumnRule) -> tuple[pd.Series, pd.Series]:
    """Type one raw text column; returns (typed values, mask of values that failed to parse)."""
    missing = _is_null_token(raw)
    text = raw.where(~missing)
    if rule.type == "string":
        typed = text.str.strip().astype("string")
        bad = pd.Series(False, index=raw.index)
    elif rule.type in ("int", "float"):
        typed = pd.to_numeric(text, errors="coerce")
        bad = typed.isna() & ~missing
        if rule.type == "int":
            fractional = typed.notna() & (typed != np.floor(typed))
            bad |= fractional
            typed = typed.where(~fractional).astype("Int64")
        else:
            typed = typed.astype("float64")
    elif rule.type == "date":
        typed = pd.to_datetime(text, errors="coerce", format="%Y-%m-%d").dt.date
        bad = typed.isna() & ~missing
    else:  # pragma: no cover - the contract model restricts the literal
        raise ValueError(rule.type)
    return typed, bad


def allowed_values(contract: Contract, rule: ColumnRule, allowed_sets) -> list | None:
    """The values a column may take: inline in the contract, or from a delivered dimension.

    Shared by the pandas and the Spark rules so both engines refuse the same values.
    """
    if rule.allowed_values_from is None:
        return rule.allowed_values
    if rule.allowed_values_from not in allowed_sets:
        raise ContractViolation(
            f"contract {contract.tag}: column {rule.name} takes its allowed values "
            f"from {rule.allowed_values_from}, which was not delivered"
        )
    return list(allowed_sets[rule.allowed_values_from])


def _append(reasons: pd.Series, mask: pd.Series, rule_name: str) -> pd.Series:
    if mask.any():
        reasons = reasons.where(~mask, reasons + np.where(reasons == "", "", ";") + rule_name)
    return reasons


def typed_frame_and_violations(
    raw: pd.DataFrame,
    contract: Contract,
    allowed_sets: dict[str, Iterable[str]] | None = None,
) -> tuple[pd.DataFrame, pd.Series]:
    """Parse every contract column of `raw` and name the rules each row breaks.

    Returns the typed frame (contract columns only, same index as `raw`) and a Series of
    `;`-joined rule names, empty for rows that honour the contract.
    """
    allowed_sets = allowed_sets or {}
    typed = pd.DataFrame(index=raw.index)
    reasons = pd.Series("", index=raw.index, dtype=object)
    for rule in contract.source_columns:
        values, unparsable = parse_column(raw[rule.name], rule)
        typed[rule.name] = values
        reasons = _append(reasons, unparsable, f"{rule.name}:type[{rule.type}]")
        present = values.notna() & ~unparsable
        if not rule.nullable:
            reasons = _append(reasons, values.isna() & ~unparsable, f"{rule.name}:not_null")
        if rule.min is not None or rule.max is not None:
            numeric = values.astype("float64")
            low = -np.inf if rule.min is None else rule.min
            high = np.inf if rule.max is None else rule.max
            outside = present & ~numeric.between(low, high)
            reasons = _append(reasons, outside, f"{rule.name}:between[{low:g},{high:g}]")
        allowed = allowed_values(contract, rule, allowed_sets)
        if allowed is not None:
            outside = present & ~values.isin(allowed)
            reasons = _append(reasons, outside.fillna(False), f"{rule.name}:in_set")
        if rule.regex is not None:
            mismatch = present & ~values.str.fullmatch(rule.regex).fillna(False).astype(bool)
            reasons = _append(reasons, mismatch, f"{rule.name}:regex")
    return typed, reasons
