"""Generations, manifests with sha256, per-day contract rules and holds, on real days.

The fault cases (a bad re-delivery across nights, kill -9, a full disk) are in
`tests/integration/test_ingest_faults.py`; these are the single-process rules.
"""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd
import pytest

from tasks.core.lake import Lake, PartitionCorrupt
from tasks.datasets import get_dataset
from tasks.features.build import read_clean
from tasks.ingest.generation import DayRejected
from tasks.ingest.holds import held_days, hold_day, release_hold
from tasks.ingest.pandas_engine import clean_day
from tasks.ingest.plan import IngestSummary, changed_days
from tasks.ingest.stage import DaysRejected, check_missing_days
from tasks.landing.simulator import land_days

FLIGHTS = get_dataset("flights")
DAY = date(2013, 2, 12)


@pytest.fixture(scope="module")
def landed(tmp_path_factory) -> Lake:
    lake = Lake(str(tmp_path_factory.mktemp("landed") / "lake"))
    land_days(lake, FLIGHTS, DAY, DAY + timedelta(days=1))
    return lake


@pytest.fixture
def lake(landed, tmp_lake) -> Lake:
    landed.fs.cp(landed.path("landing"), tmp_lake.path("landing"), recursive=True)
    return tmp_lake


def _clean(lake: Lake, day: date = DAY):
    return clean_day(lake.root, "flights", day, lake.latest_dimension_snapshot("flights", DAY))


def _header_only(lake: Lake, table: str, day: date = DAY) -> None:
    path = f"{lake.landing_day('flights', day)}/{table}.csv"
    header = lake.fs.cat(path).splitlines(keepends=True)[0]
    lake.write_bytes_atomic(path, header)


def test_the_manifest_names_each_file_with_its_sha256_and_readers_refuse_a_mismatch(lake):
    _clean(lake)
    manifest = lake.read_manifest("flights", DAY)
    assert set(manifest["files"]) == {
        f"{layer}/{table}" for layer in ("clean", "quarantine") for table in ("flights", "weather")
    }
    entry = manifest["files"]["clean/flights"]
    assert len(entry["sha256"]) == 64 and manifest["generation"] in entry["path"]
    assert not entry["path"].startswith("/")  # relative: the lake can move
    rows = len(read_clean(lake, "flights", "flights", [DAY]))
    assert rows == manifest["sources"]["flights"]["clean_rows"]

    path = lake.path(entry["path"])
    data = bytearray(lake.fs.cat(path))
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    lake.write_bytes_atomic(path, bytes(data))
    with pytest.raises(PartitionCorrupt, match=r"part-.*\.parquet: sha256 .*manifest:sha256"):
        read_clean(lake, "flights", "flights", [DAY])


def test_a_new_generation_replaces_the_old_one_whole_and_removes_its_files(lake):
    _clean(lake)
    first = lake.read_manifest("flights", DAY)
    path = f"{lake.landing_day('flights', DAY)}/flights.csv"
    raw = pd.read_csv(lake.fs.open(path), dtype=str, keep_default_na=False)
    lake.write_bytes_atomic(path, raw.iloc[:-3].to_csv(index=False).encode())
    _clean(lake)
    second = lake.read_manifest("flights", DAY)
    assert second["generation"] != first["generation"]
    assert second["sources"]["flights"]["raw_rows"] == first["sources"]["flights"]["raw_rows"] - 3
    for layer in ("clean", "quarantine"):
        for table in ("flights", "weather"):
            listed = lake.fs.ls(lake.partition(layer, table, DAY), detail=False)
            assert [lake.relative(p) for p in listed] == [
                second["files"][f"{layer}/{table}"]["path"]
            ]


def test_a_header_only_fact_delivery_is_rejected_naming_day_file_and_rule(lake):
    _clean(lake)
    before = lake.fs.cat(lake.manifest("flights", DAY))
    _header_only(lake, "flights")
    with pytest.raises(DayRejected) as raised:
        _clean(lake)
    assert raised.value.outcome == "fail"
    message = str(raised.value)
    assert f"daily/{DAY}/flights.csv: date={DAY}" in message
    assert "header-only delivery, no rows (rule: day:not_empty, outcome: fail)" in message
    assert lake.fs.cat(lake.manifest("flights", DAY)) == before  # the last good one stays


def test_a_side_source_without_rows_that_day_is_published_when_its_contract_says_warn(lake):
    _header_only(lake, "weather")  # weather.yaml: on_empty_day: warn
    report = _clean(lake)
    assert report.sources["weather"].raw_rows == 0 and report.clean_rows > 0
    weather = lake.read_partition("flights", "clean", "weather", DAY)
    assert weather.empty


def test_a_missing_day_fails_unless_held_and_a_hold_keeps_the_last_good_generation(lake):
    day2 = DAY + timedelta(days=1)
    lake.fs.rm(lake.landing_day("flights", day2), recursive=True)  # never delivered
    as_of = day2
    held, error = check_missing_days(lake, FLIGHTS, [DAY], date.min, as_of)
    assert held == {} and error is not None and error.outcome == "fail"
    with pytest.raises(DaysRejected, match=rf"{day2}.*rule: day:delivered, outcome: fail"):
        raise DaysRejected([error])

    hold_day(lake, "flights", day2, "upstream outage, no flights file")
    assert check_missing_days(lake, FLIGHTS, [DAY], date.min, as_of) == ({}, None)
    assert set(held_days(lake, "flights")) == {day2.isoformat()}
    assert release_hold(lake, "flights", day2) and not lake.exists(lake.manifest("flights", day2))


def test_a_held_day_is_not_ingested_and_the_summary_lists_it(lake):
    good = _clean(lake)
    hold_day(lake, "flights", DAY, "waived by the on-call")
    _header_only(lake, "flights")  # a bad re-delivery while held: not even read
    unchanged, todo = changed_days(lake, "flights", [DAY], None)
    assert (
        todo == [] and unchanged[DAY.isoformat()].held == "held by operator: waived by the on-call"
    )
    summary = IngestSummary.of(FLIGHTS, list(unchanged.values()), "dask")
    assert summary.days == [DAY.isoformat()] and summary.clean_rows == good.clean_rows
    assert summary.held_days == {DAY.isoformat(): "held by operator: waived by the on-call"}
    with pytest.raises(ValueError, match="needs a reason"):
        hold_day(lake, "flights", DAY, "  ")
