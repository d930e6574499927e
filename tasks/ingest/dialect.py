"""One reading of a delivered CSV for both engines: content-detected compression and encoding,
one CSV dialect, physical line numbers.

Why a shared pre-read instead of each engine's own CSV options: pandas and Spark disagree
on real-world files. Spark's line reader splits quoted fields that hold a line break,
keeps a UTF-8 byte-order mark in the first column name, decompresses by file extension
only, and reads `"a"b` differently from pandas. Here a delivery is read once, by the
standard library's CSV reader in strict mode (plain files by Arrow, with the same
result), into records that are then typed and checked with the rule catalogue. Both
engines clean with the same function (the Spark engine schedules `clean_batch` on its
Python workers), so they cannot split, decode or number a record differently.

The dialect, whatever the file is called:

* compression by magic bytes: gzip, bzip2, xz and zstd are decompressed; a zip archive
  or a corrupt stream is a file-level error (`file:readable`);
* encoding: UTF-8, with or without a byte-order mark; UTF-16 and UTF-32 *with* a
  byte-order mark are decoded (the mark makes them unambiguous); anything else that is
  not UTF-8 is an error naming the line and column (`file:encoding`);
* line endings `\\n`, `\\r\\n` and `\\r` are all line breaks, also inside a quoted value
  (a value's line break reads `\\n` on both engines);
* RFC 4180 quoting with `""` as the escaped quote; a stray quote inside an unquoted
  field or an unterminated quote is an error (`csv:quoting`);
* blank lines are skipped; every other record must have the header's field count
  (`csv:field_count`);
* a NUL byte anywhere is an error (`file:nul_byte`): it means a truncated or padded file,
  not a value.

Line numbers are *physical* lines of the decompressed, decoded file, header = line 1,
blank lines counted: a record reports the line it starts on. With a quoted line break a
record spans several lines, so its line is not its record index + 2.

Most deliveries have none of the subtleties above: no quote character at all, `\n` line
ends, no blank line, valid UTF-8. `read_delivery_table` reads those with Arrow's CSV
reader (every field as text, nothing trimmed or turned into a null), where each physical
line is one record, so the line numbers are implicit. Any other file, and any file Arrow
refuses (a wrong field count above all), goes through the strict reader, which then
raises the one message every engine gives.

An unreadable file fails as a whole (`ContractViolation`), like every other file-level
breach: no row of it is cleaned, quarantined or written, and the message names the file,
the line, the column and the rule.
"""

from __future__ import annotations

import bz2
import codecs
import csv
import gzip
import io
import lzma
import re
import zlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import zstandard

from tasks.core.lake import Lake
from tasks.ingest.reader import unique_header
from tasks.quality.rules import ContractViolation

# (magic bytes, name); checked in order on the file's first bytes
_COMPRESSION_MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)
_ARCHIVE_MAGIC = ((b"PK\x03\x04", "zip"), (b"7z\xbc\xaf\x27\x1c", "7z"))
# UTF-32 first: its little-endian mark starts with UTF-16's
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
# the column holding each record's physical line
LINE_COLUMN = "_source_line"
# what `surrogateescape` makes of a byte that is not UTF-8
_UNDECODABLE = re.compile("[\udc80-\udcff]")


@dataclass
class Delivery:
    """A delivered CSV read into text records: the header (made unique as pandas does),
    the data rows and the physical line each row starts on."""

    path: str
    header: list[str]
    rows: list[list[str]]
    lines: list[int]
    compression: str | None = None
    encoding: str = "utf-8"


def _unzstd(payload: bytes) -> bytes:
    """Every zstd frame of `payload`; a frame cut short is an error, not a shorter file
    (the library's one-shot and stream readers return what they have without a word)."""
    parts, rest = [], payload
    while rest:
        frame = zstandard.ZstdDecompressor().decompressobj()
        parts.append(frame.decompress(rest))
        if not frame.eof:
            raise EOFError("compressed data ended before the end-of-frame marker was reached")
        rest = frame.unused_data
    return b"".join(parts)


def _decompress(path: str, payload: bytes) -> tuple[bytes, str | None]:
    """The payload decompressed by its magic bytes (not by its file name)."""
    for magic, name in _ARCHIVE_MAGIC:
        if payload.startswith(magic):
            raise ContractViolation(
                f"{path}: a {name} archive, not a CSV file or a gzip, bzip2, xz or zstd "
                "stream (rule: file:readable)"
            )
    for magic, name in _COMPRESSION_MAGIC:
        if payload.startswith(magic):
            try:
                if name == "gzip":
                    return gzip.decompress(payload), name
                if name == "bzip2":
                    return bz2.decompress(payload), name
                if name == "xz":
                    return lzma.decompress(payload), name
                return _unzstd(payload), name
            except (
                OSError,
                EOFError,
                ValueError,
                zlib.error,
                lzma.LZMAError,
                zstandard.ZstdError,
            ) as error:
                raise ContractViolation(
                    f"{path}: corrupt or truncated compressed file (rule: file:readable): "
                    f"{name}: {error}"
                ) from error
    return payload, None  # the content decides: plain text under a `.gz` name is read as is


def _decode(path: str, payload: bytes) -> tuple[str, str]:
    """Text and encoding name; bytes that are not UTF-8 stay as lone surrogates, so the
    record they are in can be named after parsing."""
    for bom, encoding in _BOMS:
        if payload.startswith(bom):
            if encoding == "utf-8":
                return payload[len(bom) :].decode("utf-8", "surrogateescape"), "utf-8-sig"
            try:
                return payload[len(bom) :].decode(encoding), encoding
            except UnicodeDecodeError as error:
                line = (
                    payload[len(bom) : len(bom) + error.start]
                    .decode(encoding, "replace")
                    .count("\n")
                )
                raise ContractViolation(
                    f"{path}: line {line + 1}: bytes that are not {encoding.upper()} after "
                    f"its byte-order mark (rule: file:encoding)"
                ) from error
    if len(payload) > 3 and (payload[0] == 0) != (payload[1] == 0):  # one of 2 bytes NUL
        raise ContractViolation(
            f"{path}: line 1: looks like UTF-16 without a byte-order mark; deliver UTF-8, or "
            "UTF-16 with its byte-order mark (rule: file:encoding)"
        )
    return payload.decode("utf-8", "surrogateescape"), "utf-8"


def _records(path: str, text: str):
    """(start line, fields) of every non-blank record; quoting errors name the line."""
    lines = io.StringIO(text.replace("\r\n", "\n").replace("\r", "\n"))
    reader = csv.reader(lines, strict=True)
    start = 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            raise ContractViolation(
                f"{path}: line {start}: malformed quoting ({error}) (rule: csv:quoting)"
            ) from error
        if fields:
            yield start, fields
        start = reader.line_num + 1


def _check_characters(path: str, header: list[str], line: int, fields: list[str]) -> None:
    """Fail on a NUL byte or an undecodable byte, naming the line and the column."""
    for index, value in enumerate(fields):
        column = header[index] if index < len(header) else f"#{index + 1}"
        if "\x00" in value:
            raise ContractViolation(
                f"{path}: line {line}: NUL byte in column '{column}' (rule: file:nul_byte)"
            )
        if _UNDECODABLE.search(value):
            raise ContractViolation(
                f"{path}: line {line}: bytes that are not UTF-8 in column '{column}' "
                "(rule: file:encoding)"
            )


def _load(lake: Lake, path: str) -> tuple[bytes, str | None, str, str]:
    """The delivery decompressed and decoded: (payload, compression, text, encoding);
    the file-level errors (not delivered, unreadable, bad encoding, empty) are raised here."""
    if not lake.exists(path):
        raise ContractViolation(f"{path}: file not delivered (rule: file:exists)")
    payload, compression = _decompress(path, lake.fs.cat_file(path))
    text, encoding = _decode(path, payload)
    if not text.strip():
        raise ContractViolation(f"{path}: empty file (rule: file:not_empty)")
    return payload, compression, text, encoding


def _parse(path: str, text: str, compression: str | None, encoding: str) -> Delivery:
    """The strict reader: every record checked, its physical start line kept."""
    suspicious = "\x00" in text or _UNDECODABLE.search(text) is not None
    records = _records(path, text)
    header_line, header = next(records, (1, []))
    if suspicious:
        _check_characters(path, header, header_line, header)
    header = unique_header(header)
    rows, lines = [], []
    for line, fields in records:
        if suspicious:  # first: NUL padding or bad bytes also break the field count
            _check_characters(path, header, line, fields)
        if len(fields) != len(header):
            raise ContractViolation(
                f"{path}: line {line}: expected {len(header)} fields, found {len(fields)} "
                "(rule: csv:field_count)"
            )
        rows.append(fields)
        lines.append(line)
    return Delivery(path, header, rows, lines, compression, encoding)


def read_delivery(lake: Lake, path: str) -> Delivery:
    """Read a delivered CSV the one way both engines use (see the module docstring)."""
    payload, compression, text, encoding = _load(lake, path)
    return _parse(path, text, compression, encoding)


def _plain(text: str, encoding: str) -> bool:
    """Whether every physical line of `text` is one record that Arrow splits as the strict
    reader does: UTF-8, no quote character, `\n` line ends only, no blank line before the
    last record, no NUL and no undecodable byte."""
    return (
        encoding in ("utf-8", "utf-8-sig")
        and '"' not in text
        and "\r" not in text
        and "\x00" not in text
        and not text.startswith("\n")
        and "\n\n" not in text.rstrip("\n")
        and _UNDECODABLE.search(text) is None
    )


def _arrow_records(payload: bytes, header: list[str]) -> pa.Table | None:
    """The data records of a plain delivery as text columns, or None when Arrow refuses
    the file (the strict reader then names the line and the rule)."""
    try:
        return pacsv.read_csv(
            io.BytesIO(payload),
            read_options=pacsv.ReadOptions(column_names=header, skip_rows=1, use_threads=False),
            parse_options=pacsv.ParseOptions(
                quote_char=False, escape_char=False, double_quote=False, ignore_empty_lines=True
            ),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(header, pa.string()),
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
                null_values=[],
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowKeyError):
        return None


def read_delivery_table(lake: Lake, path: str) -> pa.Table:
    """The delivery as an Arrow table of text columns (the header made unique) and its
    physical line numbers in `LINE_COLUMN`: the same records, values, lines and errors as
    `read_delivery`, read by Arrow when the file is plain (see the module docstring).
    """
    payload, compression, text, encoding = _load(lake, path)
    if _plain(text, encoding):
        first_line = text.split("\n", 1)[0]
        header = unique_header(first_line.split(","))
        body = payload[len(codecs.BOM_UTF8) :] if encoding == "utf-8-sig" else payload
        table = _arrow_records(body, header)
        if table is not None and table.num_columns == len(header):
            lines = pa.array(np.arange(2, table.num_rows + 2, dtype="int64"))
            return table.append_column(LINE_COLUMN, lines)
    delivery = _parse(path, text, compression, encoding)
    columns = list(zip(*delivery.rows, strict=True)) or [() for _ in delivery.header]
    arrays = [pa.array(column, type=pa.string()) for column in columns]
    arrays.append(pa.array(delivery.lines, type=pa.int64()))
    return pa.Table.from_arrays(arrays, names=[*delivery.header, LINE_COLUMN])
