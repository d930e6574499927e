"""Row-level data-contract rules compiled to Spark column expressions.

The twin of `tasks.quality` (pandas): the same contract, the same rule names, the same
order of rules in `_rules`, so that the Dask and the Spark engines quarantine the same rows
for the same reasons. Everything here builds `Column` expressions; nothing runs on the
driver, so the rules scale with the cluster, not with the driver's memory.
"""

from __future__ import annotations

from collections.abc import Iterable

from pyspark.sql import Column
from pyspark.sql import functions as F

from data_contracts import ColumnRule, Contract
from tasks.quality import NULL_TOKENS, allowed_values


def _is_null_token(raw: Column) -> Column:
    return raw.isNull() | raw.isin(*NULL_TOKENS)


def parse_column(raw: Column, rule: ColumnRule) -> tuple[Column, Column]:
    """Type one raw text column; returns (typed values, "failed to parse" flag).

    Mirrors `tasks.quality.parse_column`: null tokens are missing, not unparsable; an
    int with a fractional part is unparsable; NaN parsed from text counts as unparsable
    (pandas' `to_numeric` yields NaN, which it then sees as a failed parse).
    """
    missing = _is_null_token(raw)
    text = F.when(~missing, raw)
    if rule.type == "string":
        # pandas' str.strip(): leading and trailing whitespace
        return F.regexp_replace(text, r"^\s+|\s+$", ""), F.lit(False)
    if rule.type in ("int", "float"):
        number = text.try_cast("double")
        number = F.when(~F.isnan(number), number)
        bad = number.isNull() & ~missing
        if rule.type == "float":
            return number, bad
        fractional = number.isNotNull() & (number != F.floor(number))
        return F.when(~fractional, number).cast("long"), bad | fractional
    if rule.type == "date":
        typed = F.to_date(text, "yyyy-MM-dd")
        return typed, typed.isNull() & ~missing
    raise ValueError(rule.type)  # pragma: no cover - the contract model restricts the literal


def typed_columns(contract: Contract) -> list[Column]:
    """Per contract column: `_t_<name>` (typed value) and `_b_<name>` (failed to parse).

    Selected once, before the rules: the rules then refer to these columns by name, so
    each value is parsed once and the plan stays small (inlining the parse expression into
    every rule made Spark's optimiser and code generator the bottleneck).
    """
    columns: list[Column] = []
    for rule in contract.source_columns:
        values, unparsable = parse_column(F.col(f"`{rule.name}`"), rule)
        columns += [values.alias(f"_t_{rule.name}"), unparsable.alias(f"_b_{rule.name}")]
    return columns


def rule_columns(
    contract: Contract, allowed_sets: dict[str, Iterable[str]] | None = None
) -> list[Column]:
    """The rule-name expressions, in the pandas engine's order, over `typed_columns`.

    Each is the rule's name where the row breaks it, else null; joined with
    `concat_ws(';', ...)` they give the same `_rules` string as the pandas engine.
    """
    allowed_sets = allowed_sets or {}
    reasons: list[Column] = []
    for rule in contract.source_columns:
        values, unparsable = F.col(f"_t_{rule.name}"), F.col(f"_b_{rule.name}")
        reasons.append(F.when(unparsable, F.lit(f"{rule.name}:type[{rule.type}]")))
        present = values.isNotNull() & ~unparsable
        if not rule.nullable:
            reasons.append(F.when(values.isNull() & ~unparsable, F.lit(f"{rule.name}:not_null")))
        if rule.min is not None or rule.max is not None:
            low = float("-inf") if rule.min is None else rule.min
            high = float("inf") if rule.max is None else rule.max
            number = values.cast("double")
            outside = present & ~((number >= F.lit(low)) & (number <= F.lit(high)))
            reasons.append(F.when(outside, F.lit(f"{rule.name}:between[{low:g},{high:g}]")))
        allowed = allowed_values(contract, rule, allowed_sets)
        if allowed is not None:
            reasons.append(F.when(present & ~values.isin(*allowed), F.lit(f"{rule.name}:in_set")))
        if rule.regex is not None:
            # pandas uses fullmatch; rlike searches, so anchor the whole pattern
            mismatch = present & ~values.rlike(f"^(?:{rule.regex})$")
            reasons.append(F.when(mismatch, F.lit(f"{rule.name}:regex")))
    return reasons
