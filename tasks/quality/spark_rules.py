"""The rule catalogue compiled to Spark column expressions.

The same `Rule` objects as the pandas engine (`tasks.quality.rules`), in the same order in
`_rules`, so that the Dask and the Spark engines quarantine the same rows for the same
reasons. Everything here builds `Column` expressions; nothing runs on the
driver, so the rules scale with the cluster, not with the driver's memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pyspark.sql import Column
from pyspark.sql import functions as F

from data_contracts import ColumnRule, Contract
from tasks.quality.rules import (
    DATE_PATTERN,
    INT64_MAX,
    INTEGER_PATTERN,
    NULL_TOKENS,
    NUMBER_PATTERN,
    Rule,
    compile_rules,
    row_rules,
)

_TWO_63 = float(INT64_MAX + 1)  # 2**63, exact as a double


def finite_double(text: Column) -> Column:
    """A finite double in the shared number grammar, else null (like `pandas_rules.to_float`)."""
    number = F.when(text.rlike(f"^{NUMBER_PATTERN}$"), text.try_cast("double"))
    return F.when(~F.isnan(number) & (F.abs(number) != F.lit(float("inf"))), number)


def to_date(text: Column) -> Column:
    """`YYYY-MM-DD` text as a date, else null (never the ANSI parse error that fails the
    job); like `pandas_rules.to_date`."""
    return F.when(text.rlike(f"^{DATE_PATTERN}$"), F.try_to_date(text, "yyyy-MM-dd"))


def _int64(text: Column) -> Column:
    """An int64 like `pandas_rules.to_int`: integer text cast exactly (null on overflow), an
    integral number in range through a double; never an ANSI cast error."""
    integer = text.rlike(f"^{INTEGER_PATTERN}$")
    exact = F.when(integer, text.try_cast("long"))
    real = F.when(~integer, finite_double(text))
    fits = (real == F.floor(real)) & (real >= F.lit(-_TWO_63)) & (real < F.lit(_TWO_63))
    return F.coalesce(exact, F.when(fits, real).cast("long"))


def _is_null_token(raw: Column) -> Column:
    return raw.isNull() | raw.isin(*NULL_TOKENS)


def parse_column(raw: Column, rule: ColumnRule) -> tuple[Column, Column]:
    """Type one raw text column; returns (typed values, "failed to parse" flag).

    Mirrors `tasks.quality.pandas_rules.parse_column`: null tokens are missing, not
    unparsable; a number outside the shared grammar (`inf`, `NaN` spelled otherwise, hex),
    one that overflows (`1e400`, an int beyond int64) or an int with a fractional part is
    unparsable.
    """
    missing = _is_null_token(raw)
    text = F.when(~missing, raw)
    if rule.type == "string":
        # pandas' str.strip(): leading and trailing whitespace
        return F.regexp_replace(text, r"^\s+|\s+$", ""), F.lit(False)
    if rule.type in ("int", "float"):
        number = finite_double(text) if rule.type == "float" else _int64(text)
        return number, number.isNull() & ~missing
    if rule.type == "date":
        typed = to_date(text)
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


class SparkChecks:
    """The checks as Spark column expressions over the `typed_columns` of each column."""

    @staticmethod
    def _typed(rule: Rule) -> tuple[Column, Column]:
        return F.col(f"_t_{rule.column}"), F.col(f"_b_{rule.column}")

    def _present(self, rule: Rule) -> Column:
        values, unparsable = self._typed(rule)
        return values.isNotNull() & ~unparsable

    def type(self, rule: Rule) -> Column:
        return self._typed(rule)[1]

    def not_null(self, rule: Rule) -> Column:
        values, unparsable = self._typed(rule)
        return values.isNull() & ~unparsable

    def between(self, rule: Rule) -> Column:
        low, high = rule.bounds
        number = self._typed(rule)[0].cast("double")
        return self._present(rule) & ~((number >= F.lit(low)) & (number <= F.lit(high)))

    def in_set(self, rule: Rule) -> Column:
        return self._present(rule) & ~self._typed(rule)[0].isin(*rule.values)

    def regex(self, rule: Rule) -> Column:
        # pandas uses fullmatch; rlike searches, so anchor the whole pattern
        anchored = self._typed(rule)[0].rlike(f"^(?:{rule.pattern})$")
        return self._present(rule) & ~anchored


def rule_columns(
    contract: Contract, allowed_sets: Mapping[str, Iterable[str]] | None = None
) -> list[Column]:
    """The rule-name expressions, in catalogue order, over `typed_columns`.

    Each is the rule's name where the row breaks it, else null; joined with
    `concat_ws(';', ...)` they give the same `_rules` string as the pandas engine.
    """
    compiled = compile_rules(row_rules(contract, allowed_sets), SparkChecks())
    return [F.when(broken, F.lit(rule.name)) for rule, broken in compiled]
