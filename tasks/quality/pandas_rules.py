"""The rule catalogue compiled to pandas: which raw rows are quarantined, and why."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

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
# the same grammars for Arrow's RE2 (ASCII classes only, so both engines read them alike)
_NUMBER_ANCHORED = f"^(?:{NUMBER_PATTERN})$"
_INTEGER_ANCHORED = f"^(?:{INTEGER_PATTERN})$"
_BLANKS = " \t"  # the only blanks the grammars allow around a number
_TWO_63 = float(INT64_MAX + 1)  # 2**63, exact as a double


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
    """`YYYY-MM-DD` text as dates (NaT otherwise); `2016-7-3` is no date (`DATE_PATTERN`)."""
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


_NULL_TOKEN_SET = pa.array(NULL_TOKENS, type=pa.string())


def _is_null_token(values: pd.Series) -> pd.Series:
    return values.isna() | values.isin(NULL_TOKENS)


def _arrow_text(values: pd.Series | pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """A text column as an Arrow string array (NaN/None become nulls); zero-copy for the
    Arrow-backed `str` columns the readers make (chunked when Arrow read the file in
    blocks). Arrow text is passed through: `pa.array` would rebuild it value by value."""
    if isinstance(values, pa.Array | pa.ChunkedArray):
        return values
    return pa.array(values, type=pa.string(), from_pandas=True)


def _missing_values(text: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """`_is_null_token` on Arrow text in one kernel: null, or a `NULL_TOKENS` text.

    No text of `NULL_TOKENS` is in the number grammar, so the number parsers may see
    the missing values as they are: they come out as not-a-number either way.
    """
    missing = pc.fill_null(pc.is_in(text, value_set=_NULL_TOKEN_SET), True)
    return missing.to_numpy(zero_copy_only=False)


def _matches(text: pa.Array, anchored: str) -> np.ndarray:
    return pc.match_substring_regex(text, anchored).fill_null(False).to_numpy(zero_copy_only=False)


def floats(values: pd.Series | pa.Array | pa.ChunkedArray) -> np.ndarray:
    """`to_float` over a whole text column: float64, NaN where `to_float` gives None.

    Why not a loop over `to_float`: that loop was most of a day's cleaning time. The
    grammar is checked by one regex pass in Arrow, the matching text is converted by
    Arrow's cast, which rounds correctly (the nearest double, as Python's `float` and the
    JVM do), so the doubles are bit-identical to `to_float`'s; should the cast ever refuse
    a text the grammar admits, the column falls back to `to_float` itself.
    """
    text = _arrow_text(values)
    grammar = _matches(text, _NUMBER_ANCHORED)
    candidates = pc.if_else(grammar, pc.utf8_trim(text, _BLANKS), None)
    try:
        numbers = pc.cast(candidates, pa.float64()).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid:
        scalars = [
            to_float(v) if ok else None for v, ok in zip(text.to_pylist(), grammar, strict=True)
        ]
        numbers = np.array([np.nan if v is None else v for v in scalars], dtype="float64")
    numbers = np.array(numbers, dtype="float64")  # writable: Arrow's buffer is read-only
    numbers[~np.isfinite(numbers)] = np.nan
    return numbers


def integers(values: pd.Series | pa.Array | pa.ChunkedArray) -> pd.arrays.IntegerArray:
    """`to_int` over a whole text column: Int64, NA where `to_int` gives None.

    Integer text is cast exactly to int64 (no detour through a double); any other number
    in the grammar counts when it is integral and inside int64 (`9.0`, `1e3`), as in
    `to_int`. A column with integer text beyond int64 (Arrow refuses the whole cast)
    falls back to `to_int` for its integer texts.
    """
    text = _arrow_text(values)
    integral = _matches(text, _INTEGER_ANCHORED)
    digits = pc.replace_substring_regex(pc.utf8_trim(text, _BLANKS), r"^\+", "")
    result = np.zeros(len(text), dtype="int64")
    valid = np.zeros(len(text), dtype=bool)
    try:
        exact = pc.cast(pc.if_else(integral, digits, None), pa.int64())
        result[integral] = exact.filter(pa.array(integral)).to_numpy()
        valid |= integral
    except pa.ArrowInvalid:  # beyond int64: `to_int` says None for those, exactly
        for i, value in enumerate(text.to_pylist()):
            if integral[i] and (number := to_int(value)) is not None:
                result[i], valid[i] = number, True
    if not (~integral & ~_missing_values(text)).any():
        return pd.arrays.IntegerArray(result, ~valid)  # integer text throughout: no `9.0`s
    real = floats(text)
    with np.errstate(invalid="ignore"):
        fits = ~integral & (real == np.floor(real)) & (real >= -_TWO_63) & (real < _TWO_63)
    result[fits] = real[fits].astype("int64")
    valid |= fits
    return pd.arrays.IntegerArray(result, ~valid)


def parse_column(raw: pd.Series, column: ColumnRule) -> tuple[pd.Series, pd.Series]:
    """Type one raw text column; returns (typed values, mask of values that failed to parse).

    Numbers are parsed on the Arrow text straight from the reader (no pandas copies per
    column); strings and dates keep the pandas path.
    """
    if column.type in ("float", "int"):
        text = _arrow_text(raw)
        missing = _missing_values(text)
        if column.type == "float":
            typed = pd.Series(floats(text), index=raw.index, dtype="float64")
            failed = np.isnan(typed.to_numpy()) & ~missing
        else:
            parsed = integers(text)
            typed = pd.Series(parsed, index=raw.index)
            failed = parsed.isna() & ~missing
        return typed, pd.Series(failed, index=raw.index)
    missing = _is_null_token(raw)
    text = raw.where(~missing)
    if column.type == "string":
        return text.str.strip().astype("string"), pd.Series(False, index=raw.index)
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
        values = self.typed[rule.column].to_numpy(dtype="float64", na_value=np.nan)
        low, high = rule.bounds
        with np.errstate(invalid="ignore"):  # NaN compares False: outside, as in `between`
            inside = (values >= low) & (values <= high)
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
    columns: dict[str, pd.Series] = {}
    unparsable: dict[str, pd.Series] = {}
    for column in contract.source_columns:
        columns[column.name], unparsable[column.name] = parse_column(raw[column.name], column)
    typed = pd.DataFrame(columns, index=raw.index)  # one frame, not a column at a time
    reasons = pd.Series("", index=raw.index, dtype=object)
    checks = PandasChecks(typed, unparsable)
    for rule, mask in compile_rules(row_rules(contract, allowed_sets), checks):
        reasons = _append(reasons, mask, rule.name)
    return typed, reasons
