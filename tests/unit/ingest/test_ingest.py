"""Code + data tests for ingestion: joins, dedupe, quarantine, accounting, idempotence."""

from datetime import date

import pandas as pd
import pytest

from tasks.datasets import get_dataset
from tasks.ingest.pandas_engine import clean_day
from tasks.ingest.stage import ingest_days
from tasks.landing.simulator import land_days
from tasks.quality.rules import ContractViolation

FLIGHTS = get_dataset("flights")

DAY = date(2013, 2, 12)  # has the famous 1048 mph wind-speed reading at EWR


@pytest.fixture
def day_lake(tmp_lake):
    land_days(tmp_lake, FLIGHTS, DAY, DAY)
    return tmp_lake


def _flights_path(lake):
    return f"{lake.landing_day('flights', DAY)}/flights.csv"


def _append_rows(lake, rows: list[dict]):
    path = _flights_path(lake)
    raw = pd.read_csv(lake.fs.open(path), dtype=str, keep_default_na=False)
    raw = pd.concat([raw, pd.DataFrame(rows)], ignore_index=True).fillna("")
    lake.write_bytes_atomic(path, raw.to_csv(index=False).encode())
    return raw


def _dims(lake):
    return lake.latest_dimension_snapshot("flights", DAY)


def test_real_day_is_clean_joined_and_accounted(day_lake):
    report = clean_day(day_lake.root, "flights", DAY, _dims(day_lake))

    clean = day_lake.read_parquet(day_lake.partition_file("clean", "flights", DAY))
    assert (
        report.raw_rows == report.clean_rows + report.quarantined_rows + report.duplicates_dropped
    )
    assert report.clean_rows == len(clean) > 800
    assert set(clean["date"].astype(str)) == {DAY.isoformat()}
    # weather at the origin's scheduled hour, plane attributes by tail number
    assert clean["temp"].notna().mean() > 0.95
    assert clean["seats"].notna().mean() > 0.7
    # the impossible wind reading is quarantined, never joined into clean rows
    assert report.sources["weather"].quarantined_rows == 1 and clean["wind_speed"].max() < 150
    weather_q = day_lake.read_parquet(day_lake.partition_file("quarantine", "weather", DAY))
    assert weather_q["_rules"].tolist() == ["wind_speed:between[0,150]"]


def test_bad_rows_are_quarantined_with_rule_file_and_line_and_duplicates_counted(day_lake):
    raw = pd.read_csv(day_lake.fs.open(_flights_path(day_lake)), dtype=str, keep_default_na=False)
    good = raw.iloc[0].to_dict()
    raw_before = len(raw)
    _append_rows(
        day_lake,
        [
            good,  # exact duplicate: dropped and counted
            {**good, "flight": "9001", "distance": "abc"},
            {**good, "flight": "9002", "carrier": "ZZ"},
            {**good, "flight": "9003", "day": "13"},  # belongs to another partition
            {**good, "flight": "9004", "sched_dep_time": "2500"},
        ],
    )

    report = clean_day(day_lake.root, "flights", DAY, _dims(day_lake))

    assert report.raw_rows == raw_before + 5
    assert report.duplicates_dropped == 1
    assert report.quarantined_rows == 4
    assert report.clean_rows == raw_before
    quarantine = day_lake.read_parquet(day_lake.partition_file("quarantine", "flights", DAY))
    rules = dict(zip(quarantine["flight"], quarantine["_rules"], strict=True))
    assert rules == {
        "9001": "distance:type[float]",
        "9002": "carrier:in_set",
        "9003": "date:matches_partition",
        "9004": "sched_dep_time:between[0,2359]",
    }
    assert set(quarantine["_source_file"]) == {_flights_path(day_lake)}
    assert sorted(quarantine["_source_line"].astype(int)) == [raw_before + 3 + i for i in range(4)]
    assert quarantine["distance"].tolist()[0] == "abc"  # raw values kept as delivered


def test_missing_column_fails_with_file_column_and_rule(day_lake):
    path = _flights_path(day_lake)
    raw = pd.read_csv(day_lake.fs.open(path), dtype=str, keep_default_na=False)
    day_lake.write_bytes_atomic(path, raw.drop(columns=["dest"]).to_csv(index=False).encode())
    with pytest.raises(ContractViolation, match=r"flights\.csv.*'dest'.*schema:required_columns"):
        clean_day(day_lake.root, "flights", DAY, _dims(day_lake))


def test_empty_file_fails_with_file_and_rule(day_lake):
    day_lake.write_bytes_atomic(_flights_path(day_lake), b"")
    with pytest.raises(
        ContractViolation, match=r"flights\.csv: empty file \(rule: file:not_empty\)"
    ):
        clean_day(day_lake.root, "flights", DAY, _dims(day_lake))


def test_unchanged_partitions_are_skipped_and_changed_ones_rebuilt(day_lake, dask_client):
    first = ingest_days(day_lake.root, "flights", [DAY], _dims(day_lake), dask_client)
    again = ingest_days(day_lake.root, "flights", [DAY], _dims(day_lake), dask_client)
    assert not first[0].skipped and again[0].skipped
    assert again[0].clean_rows == first[0].clean_rows

    raw = pd.read_csv(day_lake.fs.open(_flights_path(day_lake)), dtype=str, keep_default_na=False)
    _append_rows(day_lake, [{**raw.iloc[0].to_dict(), "flight": "9100"}])
    changed = ingest_days(day_lake.root, "flights", [DAY], _dims(day_lake), dask_client)
    assert not changed[0].skipped and changed[0].clean_rows == first[0].clean_rows + 1
