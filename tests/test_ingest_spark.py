"""Engine parity: the Spark engine writes the same clean data, quarantine and accounting as
the Dask engine (`clean_day`, its per-partition function) for the same landed input."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pyarrow.parquet as pq
import pytest

from tasks.ingest import clean_day, ingest_days
from tasks.landing import land_days

pytestmark = pytest.mark.integration

DAYS = [date(2013, 2, 12), date(2013, 2, 13)]  # 02-12 holds the 1048 mph wind reading


@pytest.fixture(scope="module")
def spark():
    from tasks.ingest_spark import spark_session

    session = spark_session("local[2]", shuffle_partitions=2)
    yield session


def _append(lake, day, dataset, rows):
    path = f"{lake.landing_day(day)}/{dataset}.csv"
    raw = pd.read_csv(lake.fs.open(path), dtype=str, keep_default_na=False)
    raw = pd.concat([raw, pd.DataFrame(rows)], ignore_index=True).fillna("")
    lake.write_bytes_atomic(path, raw.to_csv(index=False).encode())


def _dirty(lake):
    """Real rows, plus every kind of row-level breach both engines must agree on."""
    day = DAYS[0]
    raw = pd.read_csv(
        lake.fs.open(f"{lake.landing_day(day)}/flights.csv"), dtype=str, keep_default_na=False
    )
    good, other = raw.iloc[0].to_dict(), raw.iloc[1].to_dict()
    _append(
        lake,
        day,
        "flights",
        [
            good,  # exact duplicate: dropped and counted
            good,
            {**good, "flight": "9001", "distance": "abc"},
            {**good, "flight": "9002", "carrier": "ZZ"},
            {**good, "flight": "9003", "day": "13"},
            {**good, "flight": "9004", "sched_dep_time": "2500", "dest": "xx"},
            {**good, "flight": "9.5"},
            {**good, "flight": "9006", "tailnum": "  N14228 "},  # stripped, then valid
            {**good, "flight": "9007", "origin": "NA"},  # null token in a non-null column
            {**good, "flight": "9008", "arr_delay": "NaN", "air_time": "1e9"},
            {**other, "dep_time": "1"},  # same key as `other`: key:unique
        ],
    )
    weather = pd.read_csv(
        lake.fs.open(f"{lake.landing_day(day)}/weather.csv"), dtype=str, keep_default_na=False
    )
    first = weather.iloc[0].to_dict()
    _append(
        lake,
        day,
        "weather",
        [first, {**first, "hour": "24"}, {**first, "hour": "7", "temp": "hot"}],
    )


def _outputs(lake):
    out = {}
    for layer in ("clean", "quarantine"):
        for dataset in ("flights", "weather"):
            for day in DAYS:
                path = lake.partition_file(layer, dataset, day)
                table = pq.read_table(path)
                assert table.schema.metadata[b"nightshift.contract"].startswith(
                    f"{dataset}/clean@".encode()
                ), path
                table = table.replace_schema_metadata(None)
                out[(layer, dataset, day)] = (table, table.to_pandas(types_mapper=pd.ArrowDtype))
    return out


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(list(frame.columns), ignore_index=True, na_position="first")


def test_spark_and_dask_engines_agree_row_for_row_and_in_types(tmp_lake, spark):
    land_days(tmp_lake, DAYS[0], DAYS[-1])
    _dirty(tmp_lake)
    dims = tmp_lake.latest_dimension_snapshot(DAYS[-1])

    dask_reports = [clean_day(tmp_lake.root, day, dims) for day in DAYS]
    dask_out = _outputs(tmp_lake)
    tmp_lake.fs.rm(tmp_lake.path("manifests"), recursive=True)  # forget the watermark
    spark_reports = ingest_days(tmp_lake.root, DAYS, dims, engine="spark", spark=spark)
    spark_out = _outputs(tmp_lake)

    accounting = ("raw_rows", "clean_rows", "quarantined_rows", "duplicates_dropped")
    for d, s in zip(dask_reports, spark_reports, strict=True):
        assert not s.skipped
        for field in (*accounting, *(f"weather_{f}" for f in accounting)):
            assert getattr(d, field) == getattr(s, field), (d.day, field)
    assert spark_reports[0].duplicates_dropped == 2
    assert spark_reports[0].weather_duplicates_dropped == 1

    for key, (dask_table, dask_frame) in dask_out.items():
        spark_table, spark_frame = spark_out[key]
        assert spark_table.schema.equals(dask_table.schema), key  # names, types, nullability
        # row for row: every value, nulls in the same places
        pd.testing.assert_frame_equal(_sorted(spark_frame), _sorted(dask_frame), obj=str(key))

    quarantine = spark_out[("quarantine", "flights", DAYS[0])][1]
    rules = dict(zip(quarantine["flight"], quarantine["_rules"], strict=True))
    assert rules["9001"] == "distance:type[float]"
    assert rules["9004"] == "dest:regex;sched_dep_time:between[0,2359]"
    assert rules["9.5"] == "flight:type[int]"
    assert rules["9007"] == "origin:not_null"
    assert rules["9008"] == "air_time:between[1,1000]"
    assert "key:unique" in set(quarantine["_rules"])
    weather_q = spark_out[("quarantine", "weather", DAYS[0])][1]
    assert set(weather_q["_rules"]) == {
        "wind_speed:between[0,150]",
        "hour:between[0,23]",
        "temp:type[float]",
    }

    # the watermark is shared: unchanged days are skipped by either engine
    again = ingest_days(tmp_lake.root, DAYS, dims, engine="spark", spark=spark)
    assert all(r.skipped for r in again)
