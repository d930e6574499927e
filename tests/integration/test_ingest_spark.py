"""Engine parity: the Spark engine writes the same clean data, quarantine and accounting as
the Dask engine (`clean_day`, its per-partition function) for the same landed input.

Both clean with the same function (Spark schedules `clean_batch` on its Python workers),
so what these tests guard is the Spark side of it: that the tasks run in workers that can
import the project, that every day's outcome (report, rejection with its message, error)
comes back to the driver through Spark, that the manifests name Spark and the watermark
is shared, and that the validation results the workers leave are the ones GX agrees with.
"""

from __future__ import annotations

from datetime import date

import pandas as pd
import pyarrow.parquet as pq
import pytest

from tasks.datasets import get_dataset
from tasks.ingest.generation import DayRejected
from tasks.ingest.pandas_engine import clean_day
from tasks.ingest.stage import DaysRejected, ingest_days
from tasks.landing.simulator import land_days
from tests.unit.ingest.dirty_dialect import DELIVERIES, deliver, dirty_flights, read_rows

pytestmark = pytest.mark.integration

DAYS = [date(2013, 2, 12), date(2013, 2, 13)]  # 02-12 holds the 1048 mph wind reading


@pytest.fixture(scope="module")
def spark():
    from tasks.ingest.spark_engine import spark_session

    session = spark_session("local[2]", shuffle_partitions=2)
    yield session


def _append(lake, day, dataset, rows):
    path = f"{lake.landing_day('flights', day)}/{dataset}.csv"
    raw = pd.read_csv(lake.fs.open(path), dtype=str, keep_default_na=False)
    raw = pd.concat([raw, pd.DataFrame(rows)], ignore_index=True).fillna("")
    lake.write_bytes_atomic(path, raw.to_csv(index=False).encode())


def _dirty(lake):
    """Real rows, plus every kind of row-level breach both engines must agree on."""
    day = DAYS[0]
    raw = pd.read_csv(
        lake.fs.open(f"{lake.landing_day('flights', day)}/flights.csv"),
        dtype=str,
        keep_default_na=False,
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
        lake.fs.open(f"{lake.landing_day('flights', day)}/weather.csv"),
        dtype=str,
        keep_default_na=False,
    )
    first = weather.iloc[0].to_dict()
    _append(
        lake,
        day,
        "weather",
        [first, {**first, "hour": "24"}, {**first, "hour": "7", "temp": "hot"}],
    )


def _rejected_or_published(lake, name, layer, table, day):
    """The day's published file, or the file of its rejected generation (kept to inspect)."""
    kept = lake.fs.glob(lake.path("rejected", name, f"date={day}", "*"))
    return f"{kept[0]}/{layer}/{table}.parquet" if kept else lake.partition_file(layer, table, day)


def _outputs(lake, tables=("flights", "weather"), days=DAYS, name="flights"):
    out = {}
    for layer in ("clean", "quarantine"):
        for dataset in tables:
            for day in days:
                path = _rejected_or_published(lake, name, layer, dataset, day)
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
    land_days(tmp_lake, get_dataset("flights"), DAYS[0], DAYS[-1])
    _dirty(tmp_lake)
    dims = tmp_lake.latest_dimension_snapshot("flights", DAYS[-1])

    dask_reports = [clean_day(tmp_lake.root, "flights", day, dims) for day in DAYS]
    dask_out = _outputs(tmp_lake)
    tmp_lake.fs.rm(tmp_lake.path("manifests"), recursive=True)  # forget the watermark
    spark_reports = ingest_days(tmp_lake.root, "flights", DAYS, dims, engine="spark", spark=spark)
    spark_out = _outputs(tmp_lake)

    for d, s in zip(dask_reports, spark_reports, strict=True):
        assert not s.skipped
        assert d.sources == s.sources, d.day  # every source's accounting, field by field
    assert spark_reports[0].duplicates_dropped == 2
    # the manifests name the engine that ran: Spark's Python workers, not a Dask cluster
    assert {tmp_lake.read_manifest("flights", d)["engine"] for d in DAYS} == {"spark"}
    assert spark_reports[0].sources["weather"].duplicates_dropped == 1

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
    again = ingest_days(tmp_lake.root, "flights", DAYS, dims, engine="spark", spark=spark)
    assert all(r.skipped for r in again)


def test_engines_agree_on_a_dataset_dated_by_a_column_without_joins(tmp_lake, spark):
    """The second dataset (hotel bookings) goes through the same generic plan: one source,
    rows dated by an `arrival_date` column, no dimensions."""
    hotels = get_dataset("hotels")
    days = [date(2016, 7, 2), date(2016, 7, 3)]
    land_days(tmp_lake, hotels, days[0], days[-1])
    path = f"{tmp_lake.landing_day('hotels', days[0])}/hotel_bookings.csv"
    raw = pd.read_csv(tmp_lake.fs.open(path), dtype=str, keep_default_na=False)
    first = raw.iloc[0].to_dict()
    bad = [
        {**first, "booking_id": "900001", "arrival_date": "2016-07-03"},  # another day's row
        {**first, "booking_id": "900002", "lead_time": "-4"},
        {**first, "booking_id": "900003", "adults": "two"},
        # not zero-padded: strptime would take it, Spark's ANSI parser would fail the job
        {**first, "booking_id": "900004", "arrival_date": "2016-7-2"},
    ]
    raw = pd.concat([raw, pd.DataFrame(bad)], ignore_index=True)
    tmp_lake.write_bytes_atomic(path, raw.to_csv(index=False).encode())

    # 4 of 38 rows quarantined break the day's 2% threshold: both engines reject the day
    # the same way, keep the same rejected generation, and publish the other day
    rejected = {}
    with pytest.raises(DayRejected) as raised:
        clean_day(tmp_lake.root, "hotels", days[0], None)
    rejected["dask"] = raised.value.message
    dask_reports = [clean_day(tmp_lake.root, "hotels", days[1], None)]
    dask_out = _outputs(tmp_lake, ("hotel_bookings",), days, "hotels")
    for folder in ("manifests", "rejected"):
        tmp_lake.fs.rm(tmp_lake.path(folder), recursive=True)
    with pytest.raises(DaysRejected) as raised:
        ingest_days(tmp_lake.root, "hotels", days, None, engine="spark", spark=spark)
    rejected["spark"] = str(raised.value)
    spark_reports = ingest_days(
        tmp_lake.root, "hotels", days[1:], None, engine="spark", spark=spark
    )
    spark_out = _outputs(tmp_lake, ("hotel_bookings",), days, "hotels")

    assert [d.sources for d in dask_reports] == [s.sources for s in spark_reports]
    for message in rejected.values():
        assert f"date={days[0]}: hotel_bookings: 4 of 38 rows quarantined" in message
        assert "rule: quarantine_fraction<=0.02" in message
    assert rejected["dask"].split("; rejected generation")[0] in rejected["spark"]
    for key, (dask_table, dask_frame) in dask_out.items():
        spark_table, spark_frame = spark_out[key]
        assert spark_table.schema.equals(dask_table.schema), key
        pd.testing.assert_frame_equal(_sorted(spark_frame), _sorted(dask_frame), obj=str(key))
    rules = dict(
        zip(
            *[
                spark_out[("quarantine", "hotel_bookings", days[0])][1][c]
                for c in ("booking_id", "_rules")
            ],
            strict=True,
        )
    )
    assert rules["900001"] == "date:matches_partition"
    assert rules["900002"].startswith("lead_time:between")
    assert rules["900003"] == "adults:type[int]"
    assert rules["900004"] == "date:matches_partition"


def _run_both(lake, days, spark):
    """Dask (`clean_day` per day) then Spark on the same landed files: reports and outputs."""
    dims = lake.latest_dimension_snapshot("flights", days[-1])
    dask_reports = [clean_day(lake.root, "flights", day, dims) for day in days]
    dask_out = _outputs(lake, days=days)
    lake.fs.rm(lake.path("manifests"), recursive=True)  # forget the watermark
    spark_reports = ingest_days(lake.root, "flights", days, dims, engine="spark", spark=spark)
    return dask_reports, dask_out, spark_reports, _outputs(lake, days=days)


def test_engines_agree_on_real_world_csv_dialects_row_for_row(tmp_lake, spark):
    """The dirty-dialect fixture: real rows re-delivered with BOMs, UTF-16, CRLF, a blank
    line, quoted line breaks, gzip/xz/zstd/bzip2 under a `.csv` name, non-finite and
    overflowing numbers. Same clean rows, same quarantine rows with the same rules and the
    same physical lines, on both engines."""
    land_days(tmp_lake, get_dataset("flights"), DAYS[0], DAYS[-1])
    expected = {}
    for (source, index), how in DELIVERIES.items():
        day = DAYS[index]
        header, rows = read_rows(tmp_lake, day, source)
        if source == "flights":
            dirty = dirty_flights(header, rows)
            expected[day], rows = dirty.quarantined, dirty.rows
        else:
            overflow = list(rows[0])
            overflow[header.index("temp")] = "1e400"  # overflows a double: a type failure
            rows = [*rows, overflow]
        deliver(tmp_lake, day, source, header, rows, how)

    dask_reports, dask_out, spark_reports, spark_out = _run_both(tmp_lake, DAYS, spark)
    assert [d.sources for d in dask_reports] == [s.sources for s in spark_reports]
    for key, (dask_table, dask_frame) in dask_out.items():
        spark_table, spark_frame = spark_out[key]
        assert spark_table.schema.equals(dask_table.schema), key
        pd.testing.assert_frame_equal(_sorted(spark_frame), _sorted(dask_frame), obj=str(key))
    for day in DAYS:
        quarantine = spark_out[("quarantine", "flights", day)][1]
        lines = dict(zip(quarantine["_source_line"], quarantine["_rules"], strict=True))
        assert lines == expected[day], day
        weather = spark_out[("quarantine", "weather", day)][1]
        assert "temp:type[float]" in set(weather["_rules"])
        clean = spark_out[("clean", "flights", day)][1]
        assert clean.loc[clean["flight"] == 8011, "sched_arr_time"].tolist() == [1000]


def test_engines_fail_an_unreadable_file_with_the_same_message(tmp_path, spark):
    """Every unreadable-file case of the pandas dialect tests, on both engines: the same
    error, word for word (file, line, column, rule), and nothing written. Through
    `ingest_days` the day is rejected with that error (as a Dask run's would be): its
    message names the day and quotes the error."""
    from tasks.core.lake import Lake
    from tasks.quality.rules import ContractViolation
    from tests.unit.ingest.test_dialect import ERRORS

    landed = Lake(str(tmp_path / "landed"))
    land_days(landed, get_dataset("flights"), DAYS[0], DAYS[0])
    for index, (breach, pattern) in enumerate(ERRORS):
        lake = Lake(str(tmp_path / f"lake{index}"))
        landed.fs.cp(landed.path("landing"), lake.path("landing"), recursive=True)
        breach(lake)
        dims = lake.latest_dimension_snapshot("flights", DAYS[0])
        with pytest.raises(ContractViolation, match=pattern) as dask_error:
            clean_day(lake.root, "flights", DAYS[0], dims)
        with pytest.raises(DaysRejected) as spark_error:
            ingest_days(lake.root, "flights", [DAYS[0]], dims, engine="spark", spark=spark)
        assert spark_error.value.days == [DAYS[0].isoformat()], breach.__name__
        assert f"  - {dask_error.value}\n" in str(spark_error.value), breach.__name__
        assert not lake.exists(lake.partition_file("clean", "flights", DAYS[0]))
        assert not [p for p in lake.fs.find(lake.root) if "_staging" in p], breach.__name__


def test_a_faulty_task_is_raised_after_the_other_tasks_days_are_published(tmp_lake, spark):
    """A real fault that is no contract breach, in one Spark task (a file where a day's
    clean partition folder must go: the publish cannot write there): the other task's day
    is published, then the driver raises that day's own error, saying the previous
    generation is intact; once the fault is gone, the next run cleans that day alone."""
    from tasks.ingest.generation import StagingFailed

    land_days(tmp_lake, get_dataset("flights"), DAYS[0], DAYS[-1])
    dims = tmp_lake.latest_dimension_snapshot("flights", DAYS[-1])
    blocker = tmp_lake.partition("clean", "flights", DAYS[1])
    tmp_lake.write_bytes_atomic(blocker, b"not a folder")

    with pytest.raises(StagingFailed) as raised:  # the worker's own exception, not Spark's
        ingest_days(tmp_lake.root, "flights", DAYS, dims, engine="spark", spark=spark)
    message = str(raised.value)
    assert f"date={DAYS[1].isoformat()}" in message and "previous generation is intact" in message
    assert tmp_lake.read_manifest("flights", DAYS[0])["engine"] == "spark"  # published
    assert not tmp_lake.read_manifest("flights", DAYS[1])
    assert not [p for p in tmp_lake.fs.find(tmp_lake.root) if "_staging" in p]

    tmp_lake.fs.rm(blocker)
    again = ingest_days(tmp_lake.root, "flights", DAYS, dims, engine="spark", spark=spark)
    assert [r.skipped for r in again] == [True, False]
    assert tmp_lake.exists(tmp_lake.partition_file("clean", "flights", DAYS[1]))


def test_spark_cleaned_partitions_are_validated_natively_and_gx_agrees(tmp_lake, spark):
    """Spark-cleaned partitions go through the same native checks (on the written Parquet,
    the same schema as Dask's) and the same GX suite, and the two agree."""
    from tasks.quality.validate import validate_table
    from tests.conftest import context_for

    land_days(tmp_lake, get_dataset("flights"), DAYS[0], DAYS[-1])
    dims = tmp_lake.latest_dimension_snapshot("flights", DAYS[-1])
    ingest_days(tmp_lake.root, "flights", DAYS, dims, engine="spark", spark=spark)

    ctx = context_for(tmp_lake, as_of=DAYS[-1])
    for table in ("weather", "flights"):
        report = validate_table(ctx, table, DAYS)
        assert report.success, [f.describe() for f in report.failures]
        assert report.rechecked == [d.isoformat() for d in DAYS] and report.gx_disagrees == []
        assert report.gx_results and all(r["success"] for r in report.gx_results)
        again = validate_table(ctx, table, DAYS)
        assert again.success and again.rechecked == []


def test_a_local_session_runs_the_jvm_options_of_the_setting(spark):
    """`NIGHTSHIFT_SPARK_LOCAL_JAVA_OPTIONS` reaches the JVM the session started: the
    default keeps HotSpot at its first JIT tier (a night's short jobs, BENCHMARKS §30)."""
    from tasks.core.settings import get_settings

    jvm = spark.sparkContext._jvm
    arguments = list(
        jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments()
    )
    assert get_settings().spark_local_java_options == "-XX:TieredStopAtLevel=1"
    assert "-XX:TieredStopAtLevel=1" in arguments, arguments
