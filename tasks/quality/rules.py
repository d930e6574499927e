"""The rule catalogue: a data contract turned into named rules, once, for every engine.

A rule's name reads `<column>:<check>` (e.g. `distance:between[1,6000]`). The
quarantine (`pandas_rules`, which both ingest engines run) and the Great Expectations
suite (`gx_suite`) compile the same `Rule` objects, so the two can never disagree about
a rule's name, its order or its bounds; an engineer greps one name from the run log to
the offending rows and the Data Docs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

from data_contracts import ColumnRule, Contract

# Text a delivery uses for "no value": missing, not unparsable, on both engines.
NULL_TOKENS = ("", "NA", "NaN", "nan", "NULL", "null", "None")

# The one text form of a number both engines accept (no `inf`, `nan`, hex or `1_000`):
# pandas' and Spark's own number parsers disagree on those, so the grammar is ours.
# A value outside it, or one that overflows its declared type (`1e400`, an int beyond
# int64), fails the column's `type` rule: quarantined, never cast to a wrong value.
NUMBER_PATTERN = r"[ \t]*[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?[ \t]*"
INTEGER_PATTERN = r"[ \t]*[+-]?[0-9]+[ \t]*"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# A date is `YYYY-MM-DD`, zero-padded, a real calendar day: Python's strptime also takes
# `2016-7-3`, Spark's parser does not (and under ANSI fails the job instead of a null).
DATE_PATTERN = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"

Check = Literal["type", "not_null", "between", "in_set", "regex"]
T = TypeVar("T", covariant=True)


class ContractViolation(ValueError):
    """Input that cannot be cleaned row by row (a missing column, an unreadable file)."""


@dataclass(frozen=True)
class Rule:
    """One row-level rule of a contract column, with the name every engine reports."""

    name: str
    column: str
    check: Check
    type: str
    low: float | None = None
    high: float | None = None
    values: tuple[str, ...] | None = None
    pattern: str | None = None

    @property
    def bounds(self) -> tuple[float, float]:
        """(low, high) with a missing side open (-inf or inf)."""
        return (
            float("-inf") if self.low is None else self.low,
            float("inf") if self.high is None else self.high,
        )


def allowed_values(
    contract: Contract, column: ColumnRule, allowed_sets: Mapping[str, Iterable[str]]
) -> tuple[str, ...] | None:
    """The values a column may take: inline in the contract, or from a delivered dimension."""
    if column.allowed_values_from is None:
        return None if column.allowed_values is None else tuple(column.allowed_values)
    if column.allowed_values_from not in allowed_sets:
        raise ContractViolation(
            f"contract {contract.tag}: column {column.name} takes its allowed values "
            f"from {column.allowed_values_from}, which was not delivered"
        )
    return tuple(allowed_sets[column.allowed_values_from])


def column_rules(
    contract: Contract,
    column: ColumnRule,
    allowed_sets: Mapping[str, Iterable[str]] | None = None,
) -> list[Rule]:
    """The rules of one column, in the order every engine checks and reports them."""
    name, kind = column.name, column.type
    rules = [Rule(f"{name}:type[{kind}]", name, "type", kind)]
    if not column.nullable:
        rules.append(Rule(f"{name}:not_null", name, "not_null", kind))
    if column.min is not None or column.max is not None:
        low = float("-inf") if column.min is None else column.min
        high = float("inf") if column.max is None else column.max
        rules.append(
            Rule(
                f"{name}:between[{low:g},{high:g}]",
                name,
                "between",
                kind,
                low=column.min,
                high=column.max,
            )
        )
    values = allowed_values(contract, column, allowed_sets or {})
    if values is not None:
        rules.append(Rule(f"{name}:in_set", name, "in_set", kind, values=values))
    if column.regex is not None:
        rules.append(Rule(f"{name}:regex", name, "regex", kind, pattern=column.regex))
    return rules


def row_rules(
    contract: Contract,
    allowed_sets: Mapping[str, Iterable[str]] | None = None,
    *,
    include_derived: bool = False,
) -> list[Rule]:
    """Every row-level rule of the contract's delivered columns (and derived ones if asked)."""
    columns = contract.columns if include_derived else contract.source_columns
    return [rule for column in columns for rule in column_rules(contract, column, allowed_sets)]


class Checks(Protocol[T]):
    """What an engine provides to compile the catalogue: one method per kind of check."""

    def type(self, rule: Rule) -> T: ...
    def not_null(self, rule: Rule) -> T: ...
    def between(self, rule: Rule) -> T: ...
    def in_set(self, rule: Rule) -> T: ...
    def regex(self, rule: Rule) -> T: ...


def compile_rules(rules: Iterable[Rule], checks: Checks[T]) -> list[tuple[Rule, T]]:
    """Each rule with its engine form (a pandas mask, a GX expectation)."""
    return [(rule, getattr(checks, rule.check)(rule)) for rule in rules]


# Rules about a whole delivery or batch, named here so every engine and report agrees.
KEY_UNIQUE = "key:unique"
DATE_MATCHES_PARTITION = "date:matches_partition"
ROW_COUNT = "table:row_count"


def quarantine_fraction_rule(limit: float) -> str:
    return f"quarantine_fraction<={limit:g}"


def check_columns(columns: Iterable[str], contract: Contract, source: str) -> None:
    """Fail loudly when a delivered file lacks a column the contract needs (no row can be kept)."""
    present = set(columns)
    missing = [c.name for c in contract.source_columns if c.name not in present]
    if missing:
        raise ContractViolation(
            f"{source}: missing column(s) {missing} required by contract {contract.tag} "
            f"(rule: schema:required_columns); found columns {list(columns)}"
        )
