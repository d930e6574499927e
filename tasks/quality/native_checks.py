"""The contract suite checked natively on one clean partition: unexpected counts per rule.

Why not Great Expectations for every partition every night: importing GX alone takes
seconds, and its metric graph over all of history cost 1.8-2.2x the cleaning
(BENCHMARKS.md §11). The checks here are the GX suite's (`gx_suite.build_suite`), rule
for rule, with the same names and the same semantics (GX's pandas engine: nulls are
skipped by the map rules, `regex` searches, `key:unique` counts every row of a duplicated
key, `type` compares the column's dtype and, for an object column, each value's type),
computed with vectorised pandas/pyarrow operations on one partition at a time. A
partition's result is a few hundred bytes, cached by content (`validation_cache`), so a
partition is checked once per content and contract, and memory stays one partition.
`tests/unit/quality/test_native_checks.py` shows native and GX agree on seeded violations
of every rule kind.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from data_contracts import Contract
from tasks.quality.gx_suite import GX_TYPES
from tasks.quality.rules import KEY_UNIQUE, ROW_COUNT, ContractViolation, Rule, column_rules

# Bump when the checks below change, so every cached result is recomputed.
NATIVE_CHECKS_VERSION = "1"

# The GX expectation each kind of check stands for (the report names both).
EXPECTATIONS = {
    "exists": "expect_column_to_exist",
    "type": "expect_column_values_to_be_in_type_list",
    "not_null": "expect_column_values_to_not_be_null",
    "between": "expect_column_values_to_be_between",
    "in_set": "expect_column_values_to_be_in_set",
    "regex": "expect_column_values_to_match_regex",
    "key_unique": "expect_compound_columns_to_be_unique",
    "row_count": "expect_table_row_count_to_be_between",
}


@dataclass(frozen=True)
class SuiteRule:
    """One rule of the suite as checked natively: a row rule, a column's existence, or a
    batch rule (key uniqueness, row count)."""

    name: str
    kind: str
    column: str | None = None
    rule: Rule | None = None


@dataclass
class RuleResult:
    """One rule on one partition: how many values broke it, and what was observed."""

    rule: str
    expectation: str
    column: str | None
    success: bool
    unexpected_count: int
    observed: str | None = None


def suite_rules(contract: Contract, allowed_sets: Mapping[str, Iterable[str]]) -> list[SuiteRule]:
    """The suite's rules in `build_suite`'s order: per column its existence then its row
    rules (derived columns included, as in the GX suite), then key uniqueness and row count."""
    if contract.key and "date" not in contract.key:
        raise ContractViolation(
            f"contract {contract.tag}: key {list(contract.key)} lacks `date`: key uniqueness "
            "is checked per partition (one day), which covers the batch only when the key "
            "holds the day"
        )
    rules: list[SuiteRule] = []
    for column in contract.columns:
        rules.append(SuiteRule(f"{column.name}:exists", "exists", column.name))
        for rule in column_rules(contract, column, allowed_sets):
            rules.append(SuiteRule(rule.name, rule.check, rule.column, rule))
    rules.append(SuiteRule(KEY_UNIQUE, "key_unique"))
    rules.append(SuiteRule(ROW_COUNT, "row_count"))
    return rules


def suite_fingerprint(contract: Contract, allowed_sets: Mapping[str, Iterable[str]]) -> str:
    """Hash of everything a partition's result depends on besides its content: the compiled
    rules (bounds, sets incl. dimension sets, patterns), the key, the row-count floor, the
    contract's fingerprint and this module's version. Any change re-checks every partition."""
    payload = {
        "version": NATIVE_CHECKS_VERSION,
        "contract": contract.fingerprint,
        "key": list(contract.key),
        "min_rows": contract.thresholds.min_rows_per_partition,
        "rules": [
            [r.name, r.kind, r.column, None if r.rule is None else asdict(r.rule)]
            for r in suite_rules(contract, allowed_sets)
        ],
    }
    return hashlib.sha256(json.dumps(payload, default=str).encode()).hexdigest()


def _gx_types(type_list: list[str], *, aggregate: bool) -> list:
    """What GX compares a pandas column against for `type_list`, built the way GX 1.x
    builds it (`ExpectColumnValuesToBeInTypeList._validate_pandas` for a typed column,
    `ColumnValuesInTypeList._pandas` value by value for an object column), so both give
    the same verdict: numpy dtypes and their scalar types, pandas classes (and, for a typed
    column, their default dtype instance), and the Python types GX maps names to."""
    types: list = []
    for name in type_list:
        try:
            types.append(np.dtype(name).type)
            if aggregate:
                types.append(np.dtype(name))
        except TypeError:
            for module in (pd, pd.core.dtypes.dtypes):
                found = getattr(module, name, None)
                if isinstance(found, type):
                    types.append(found)
                    if aggregate and module is pd:
                        try:
                            if isinstance(found(), pd.api.extensions.ExtensionDtype):
                                types.append(found())
                        except TypeError:
                            pass
        types.extend(_PYTHON_TYPES.get(name.lower(), ()))
    return types


# GX's `native_type_type_map`, for the names a contract's GX_TYPES use
_PYTHON_TYPES = {"int": (int,), "long": (int,), "float": (float,), "str": (str,), "bool": (bool,)}


def _type_unexpected(values: pd.Series, accepted: list[str]) -> tuple[np.ndarray, str]:
    """GX's `in_type_list` on pandas: a typed column passes or fails as a whole (its dtype
    must be one GX accepts); an object column is checked value by value (nulls skipped).
    Returns the mask of unexpected values and the observed type."""
    dtype = values.dtype
    observed = dtype.type.__name__
    if observed != "object_":
        accepted_dtype = dtype in _gx_types(accepted, aggregate=True)
        return np.full(len(values), not accepted_dtype), observed
    present = values.notna().to_numpy(dtype=bool)
    if not present.any():
        return present, observed
    kinds = tuple(_gx_types(accepted, aggregate=False))
    values = values[present]
    unexpected = np.zeros(len(present), dtype=bool)
    if pd.api.types.infer_dtype(values, skipna=False) in ("string", "date"):
        # one Python type throughout (a C-level pass says so): one value answers for all
        unexpected[present] = not isinstance(values.iloc[0], kinds)
    else:
        unexpected[present] = ~values.map(lambda v: isinstance(v, kinds)).to_numpy(dtype=bool)
    return unexpected, observed


def _present_numbers(values: pd.Series) -> tuple[pd.Series, np.ndarray]:
    present = values.notna().to_numpy(dtype=bool)
    return pd.to_numeric(values[present], errors="coerce"), present


def _unexpected(
    frame: pd.DataFrame, rule: SuiteRule, contract: Contract
) -> tuple[np.ndarray | None, str | None, bool | None]:
    """One suite rule (not the row count) on a frame's rows: the mask of the rows it
    counts as unexpected, what was observed, and the verdict when the rule's outcome is
    the frame's as a whole (a missing column: no mask). Every mask is per row, so the
    unexpected counts of a frame of several days are each day's own (`check_partitions`);
    `key_unique` too, as the key holds the day (`suite_rules`)."""
    if rule.kind == "key_unique":
        missing = [c for c in contract.key if c not in frame.columns]
        if missing:
            return None, f"missing key column(s) {missing}", False
        keys = frame[list(contract.key)]
        counted = (~keys.isna().all(axis=1)).to_numpy()  # GX ignores all-missing keys
        unexpected = np.zeros(len(frame), dtype=bool)
        unexpected[counted] = keys[counted].duplicated(keep=False).to_numpy()
        return unexpected, None, None
    assert rule.column is not None
    if rule.column not in frame.columns:
        return None, f"column {rule.column} missing", False
    if rule.kind == "exists":
        return np.zeros(len(frame), dtype=bool), None, None
    values = frame[rule.column]
    assert rule.rule is not None
    if rule.kind == "type":
        unexpected, observed = _type_unexpected(values, GX_TYPES[rule.rule.type])
        return unexpected, observed, None
    if rule.kind == "not_null":
        return values.isna().to_numpy(dtype=bool), None, None
    if rule.kind == "between":
        low, high = rule.rule.bounds
        if values.dtype.kind in "iuf":  # plain numpy numbers: what `to_numeric` would give
            array = values.to_numpy()
            with np.errstate(invalid="ignore"):  # NaN is missing: skipped, as GX does
                outside = ~((array >= low) & (array <= high)) & ~np.isnan(array)
            return outside, None, None
        numbers, present = _present_numbers(values)
        unexpected = np.zeros(len(values), dtype=bool)
        unexpected[present] = (~((numbers >= low) & (numbers <= high))).to_numpy(dtype=bool)
        return unexpected, None, None
    present = values.notna()
    if rule.kind == "in_set":
        allowed = list(rule.rule.values or ())
        return (present & ~values.isin(allowed)).to_numpy(dtype=bool), None, None
    if rule.kind == "regex":
        text = values[present].astype(str)
        matched = text.str.contains(rule.rule.pattern, regex=True)
        unexpected = np.zeros(len(values), dtype=bool)
        unexpected[present.to_numpy(dtype=bool)] = ~matched.fillna(False).astype(bool).to_numpy()
        return unexpected, None, None
    raise ValueError(f"unknown rule kind {rule.kind}")  # pragma: no cover


def _verdict(
    rule: SuiteRule, unexpected: int, observed: str | None = None, success: bool | None = None
) -> RuleResult:
    count = int(unexpected)  # plain Python values: the cache stores them as JSON
    ok = count == 0 if success is None else bool(success)
    return RuleResult(rule.name, EXPECTATIONS[rule.kind], rule.column, ok, count, observed)


def as_validated(frame: pd.DataFrame) -> pd.DataFrame:
    """A clean partition as both checkers see it: text columns in pandas' nullable string
    dtype whoever wrote the file.

    Why: a Parquet file without pandas' metadata (the Spark engine's) reads as pandas 3's
    default `str` dtype (NaN for missing), which GX's type list cannot name, so GX failed
    every text column's type rule on Spark-cleaned data; the values are the same strings.
    """
    text = {
        name: pd.StringDtype()
        for name, dtype in frame.dtypes.items()
        if isinstance(dtype, pd.StringDtype) and dtype != pd.StringDtype()
    }
    return frame.astype(text) if text else frame


def check_partition(
    frame: pd.DataFrame, contract: Contract, allowed_sets: Mapping[str, Iterable[str]]
) -> list[RuleResult]:
    """Every rule of the suite on one partition's clean rows, in the suite's order."""
    one_day = np.zeros(len(frame), dtype=np.intp)
    return check_partitions(frame, one_day, 1, contract, allowed_sets)[0]


def check_partitions(
    frame: pd.DataFrame,
    day_of_row: np.ndarray,
    days: int,
    contract: Contract,
    allowed_sets: Mapping[str, Iterable[str]],
) -> list[list[RuleResult]]:
    """`check_partition` of several partitions at once: `frame` is their rows one after
    another (the same columns and dtypes), `day_of_row` each row's partition (0 to
    `days` - 1). Each rule runs once over all the rows and its unexpected rows are counted
    per partition, so the results are each partition's own, in its order.

    Why: a day's check was some hundred pandas operations on a few thousand rows, mostly
    their fixed cost; the ingest checks a frame of days at once (BENCHMARKS "Dask: a
    batch's days as one frame").
    """
    rows = np.bincount(day_of_row, minlength=days)
    results: list[list[RuleResult]] = [[] for _ in range(days)]
    floor = contract.thresholds.min_rows_per_partition
    for rule in suite_rules(contract, allowed_sets):
        if rule.kind == "row_count":
            for day in range(days):
                results[day].append(_verdict(rule, 0, str(rows[day]), bool(rows[day] >= floor)))
            continue
        unexpected, observed, success = _unexpected(frame, rule, contract)
        counts = (
            np.zeros(days, dtype=int)
            if unexpected is None
            else np.bincount(day_of_row[unexpected], minlength=days)
        )
        for day in range(days):
            results[day].append(_verdict(rule, counts[day], observed, success))
    return results
