"""The header checks both engines share once a delivery is read (`tasks.ingest.dialect`).

A missing or renamed column fails the file with the file, the column and the rule named,
before anything is written.
"""

from __future__ import annotations

from data_contracts import Contract, load_contract
from tasks.datasets.spec import Source
from tasks.quality.rules import ContractViolation, check_columns


def unique_header(columns: list[str]) -> list[str]:
    """Column names as pandas makes them unique (`a`, `a.1`), so both engines agree."""
    seen: dict[str, int] = {}
    out = []
    for name in columns:
        candidate = name
        while candidate in seen:
            seen[name] += 1
            candidate = f"{name}.{seen[name]}"
        seen.setdefault(candidate, 0)
        out.append(candidate)
    return out


def require_columns(columns: list[str], contract: Contract, source: Source, path: str) -> None:
    """Schema-level check of a delivered file's header against the source's landing contract
    (every delivered column) and its clean one (every column a rule reads), plus the columns
    a row's date is read from. A missing or renamed column fails the file: no row of it
    could be kept.
    """
    check_columns(columns, load_contract(contract.dataset, "landing"), path)
    check_columns(columns, contract, path)
    missing = [p for p in source.date_inputs if p not in columns]
    if missing:
        raise ContractViolation(
            f"{path}: missing column(s) {missing} (rule: schema:required_columns)"
        )
