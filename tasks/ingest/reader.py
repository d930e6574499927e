"""Reading a delivered CSV file: the file-level checks both engines share.

A file that cannot be read row by row (missing, empty, corrupt gzip, not UTF-8, a missing
column) fails with the file, the line and the rule named, before anything is written.
"""

from __future__ import annotations

from data_contracts import Contract, load_contract
from tasks.core.lake import Lake
from tasks.datasets.spec import Source
from tasks.quality.rules import ContractViolation, check_columns


def open_delivery(lake: Lake, path: str):
    """Open a delivered file as bytes, gunzipping a `.gz` delivery."""
    if not lake.exists(path):
        raise ContractViolation(f"{path}: file not delivered (rule: file:exists)")
    return lake.fs.open(path, "rb", compression="gzip" if path.endswith(".gz") else None)


def read_head(lake: Lake, path: str, size: int = 1 << 16) -> str:
    """The header line of a delivered CSV (reads at most `size` bytes); fails on an empty file."""
    try:
        with open_delivery(lake, path) as handle:
            head = handle.read(size)
    except (OSError, EOFError) as error:  # gzip.BadGzipFile is an OSError
        raise ContractViolation(
            f"{path}: corrupt or truncated compressed file (rule: file:readable): {error}"
        ) from error
    lines = [line for line in head.split(b"\n") if line.strip()]
    if not lines:
        raise ContractViolation(f"{path}: empty file (rule: file:not_empty)")
    try:
        return lines[0].decode("utf-8").rstrip("\r")
    except UnicodeDecodeError as error:
        raise ContractViolation(
            f"{path}: line 1: bytes that are not UTF-8 (rule: file:encoding)"
        ) from error


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
