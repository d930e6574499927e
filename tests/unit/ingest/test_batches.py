"""Batched ingest: days grouped by input bytes into Dask tasks, each still its own generation.

`plan_batches` is checked on its own (the size bound, every day exactly once and in order,
enough batches for every worker); `clean_batch` and the Dask path on real landed days,
with one bad day among good ones: the bad day alone is rejected or fails, the others are
published, as when every day was a task of its own.
"""

from __future__ import annotations

import random
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest

from tasks.core.lake import Lake
from tasks.datasets import get_dataset
from tasks.ingest.generation import DayRejected, StagingFailed
from tasks.ingest.pandas_engine import clean_batch, clean_day
from tasks.ingest.plan import changed_days, delivered_bytes, plan_batches
from tasks.ingest.stage import DaysRejected, ingest_days
from tasks.landing.simulator import land_days

FLIGHTS = get_dataset("flights")
FIRST = date(2013, 3, 4)
DAYS = [FIRST + timedelta(days=i) for i in range(4)]
BAD = DAYS[1]


# --- planning -------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(20))
def test_every_day_is_in_exactly_one_batch_in_order_and_within_the_bound(seed):
    rng = random.Random(seed)
    sized = [(i, rng.choice([0, 1, 50, 400, 900, 3000])) for i in range(rng.randint(1, 60))]
    max_bytes, min_batches = rng.choice([500, 1000, 4000]), rng.randint(1, 4)

    batches = plan_batches(sized, max_bytes, min_batches)

    assert [item for batch in batches for item in batch] == [item for item, _ in sized]
    assert all(batch for batch in batches)
    size = dict(sized)
    for batch in batches:  # over the bound only as a single day bigger than the bound
        assert sum(size[i] for i in batch) <= max_bytes or len(batch) == 1
    assert len(batches) >= min(min_batches, len(sized))


def test_batches_are_sized_alike_and_a_large_day_stands_alone():
    even = plan_batches([(i, 100) for i in range(31)], max_bytes=10_000, min_batches=2)
    assert [len(b) for b in even] == [15, 16]  # one per worker, not one per day
    by_bytes = plan_batches([(i, 100) for i in range(30)], max_bytes=1_000, min_batches=2)
    assert [len(b) for b in by_bytes] == [10, 10, 10]  # bounded by bytes: 30 x 100 / 1000
    large = plan_batches([("a", 10), ("b", 5_000), ("c", 10)], max_bytes=1_000)
    assert large == [["a"], ["b"], ["c"]]
    assert plan_batches([], max_bytes=1_000) == []


def test_every_worker_thread_gets_as_many_batches():
    """Three batches' worth of bytes on two threads: four batches, two per thread, instead
    of one thread cleaning two while the other waits."""
    balanced = plan_batches([(i, 100) for i in range(30)], max_bytes=1_000, min_batches=2, slots=2)
    assert [len(b) for b in balanced] == [7, 8, 7, 8]
    assert len(plan_batches([(i, 100) for i in range(3)], 1_000, 2, slots=2)) == 2
    assert len(plan_batches([(i, 100) for i in range(3)], 10, 2, slots=4)) == 3  # days, at most
    with pytest.raises(ValueError, match="max_bytes"):
        plan_batches([("a", 1)], max_bytes=0)


# --- a bad day inside a batch ------------------------------------------------------------------
@pytest.fixture(scope="module")
def landed(tmp_path_factory) -> Lake:
    lake = Lake(str(tmp_path_factory.mktemp("batches") / "lake"))
    land_days(lake, FLIGHTS, DAYS[0], DAYS[-1])
    return lake


@pytest.fixture
def lake(landed, tmp_lake) -> Lake:
    landed.fs.cp(landed.path("landing"), tmp_lake.path("landing"), recursive=True)
    return tmp_lake


def _dims(lake: Lake) -> str:
    return lake.latest_dimension_snapshot("flights", DAYS[-1])


def _todo(lake: Lake) -> list[tuple[date, str]]:
    unchanged, todo = changed_days(lake, "flights", DAYS, _dims(lake))
    assert not unchanged
    return todo


def _header_only(lake: Lake, day: date) -> None:
    path = f"{lake.landing_day('flights', day)}/flights.csv"
    lake.write_bytes_atomic(path, lake.fs.cat(path).splitlines(keepends=True)[0])


def test_a_batch_publishes_each_day_as_clean_day_would(lake, tmp_path):
    reports = clean_batch(lake.root, "flights", _todo(lake), _dims(lake))

    alone = Lake(str(tmp_path / "alone"))
    lake.fs.cp(lake.path("landing"), alone.path("landing"), recursive=True)
    for day, report in zip(DAYS, reports, strict=True):
        single = clean_day(alone.root, "flights", day, _dims(alone))
        assert (report.day, report.sources, report.skipped) == (
            day.isoformat(),
            single.sources,
            False,
        )
        for layer in ("clean", "quarantine"):
            for table in ("flights", "weather"):
                batched = lake.read_partition("flights", layer, table, day)
                assert batched.equals(alone.read_partition("flights", layer, table, day))
    generations = {lake.read_manifest("flights", d)["generation"] for d in DAYS}
    assert len(generations) == len(DAYS)  # one generation per day, not per batch


def _soil(lake: Lake) -> None:
    """Faults of every per-row kind on three of the days, so each day's frame of a batch
    holds rows that the day-keyed rules (duplicates, key, date) must tell apart."""
    for i, day in enumerate(DAYS[:3]):
        folder = lake.landing_day("flights", day)
        flights = pd.read_csv(f"{folder}/flights.csv", dtype=str, keep_default_na=False)
        twin = flights.iloc[[5 + i]].assign(dep_time="1")  # same key, other values
        flights.loc[2, "dep_delay"] = "late"  # not a number
        flights.loc[3, "distance"] = "-5"  # out of range
        flights.loc[4, ["year", "month", "day"]] = ["2013", "3", str(DAYS[-1].day)]  # wrong day
        soiled = pd.concat([flights, flights.iloc[[0, 1, 1]], twin], ignore_index=True)
        if i == 2:  # a delivered column more: a frame of its own
            soiled["extra"] = "x"
        soiled.to_csv(f"{folder}/flights.csv", index=False)
        weather = pd.read_csv(f"{folder}/weather.csv", dtype=str, keep_default_na=False)
        weather.loc[0, "day"] = "1"  # a reading of another day
        weather.loc[1, "temp"] = "hot"
        weather = weather.drop(index=[10, 11])  # hours of no reading: their flights get none
        weather.to_csv(f"{folder}/weather.csv", index=False)


def _sha256(lake: Lake, day: date, file: str) -> str:
    return lake.read_manifest("flights", day)["files"][file]["sha256"]


@pytest.mark.parametrize("frame_bytes", [None, 1])
def test_days_cleaned_as_one_frame_publish_the_bytes_each_day_gives_alone(
    lake, tmp_path, frame_bytes
):
    """Several days typed, checked and joined as one frame (or one frame per day) publish
    for each day the very files, counts and quarantine reasons that day gives alone."""
    _soil(lake)
    alone = Lake(str(tmp_path / "alone"))
    lake.fs.cp(lake.path("landing"), alone.path("landing"), recursive=True)

    reports = clean_batch(lake.root, "flights", _todo(lake), _dims(lake), frame_bytes)

    for day, report in zip(DAYS, reports, strict=True):
        single = clean_day(alone.root, "flights", day, _dims(alone))
        assert report.sources == single.sources
        for table in ("flights", "weather"):  # the same bytes (clean files name no path)
            assert _sha256(lake, day, f"clean/{table}") == _sha256(alone, day, f"clean/{table}")
            batched = lake.read_partition("flights", "quarantine", table, day)
            single_day = alone.read_partition("flights", "quarantine", table, day)
            for frame, root in ((batched, lake.root), (single_day, alone.root)):
                frame["_source_file"] = frame["_source_file"].str.removeprefix(root)
            pd.testing.assert_frame_equal(batched, single_day)
    first = lake.read_partition("flights", "quarantine", "flights", DAYS[0])
    assert sorted(first["_rules"]) == [
        "date:matches_partition",
        "dep_delay:type[float]",
        "distance:between[1,6000]",
        "key:unique",
    ]
    assert reports[0].duplicates_dropped == 3 and reports[3].quarantined_rows == 0
    weather = lake.read_partition("flights", "quarantine", "weather", DAYS[1])
    assert sorted(weather["_rules"]) == ["date:matches_partition", "temp:type[float]"]
    clean = lake.read_partition("flights", "clean", "flights", DAYS[2])
    assert clean["humid"].isna().any() and clean["humid"].notna().any()


def test_a_rejected_day_in_a_batch_is_returned_and_the_others_are_published(lake):
    _header_only(lake, BAD)

    results = clean_batch(lake.root, "flights", _todo(lake), _dims(lake))

    assert [type(r).__name__ for r in results] == [
        "PartitionReport",
        "DayRejected",
        "PartitionReport",
        "PartitionReport",
    ]
    rejected = results[1]
    assert rejected.day == BAD.isoformat() and "rule: day:not_empty" in rejected.message
    assert lake.read_manifest("flights", BAD) is None  # nothing published for the bad day
    for day in DAYS:
        if day != BAD:
            assert lake.read_manifest("flights", day)["files"], day


def test_an_unreadable_delivery_in_a_batch_is_a_failed_day_not_a_failed_batch(lake):
    path = f"{lake.landing_day('flights', BAD)}/flights.csv"
    lake.write_bytes_atomic(path, lake.fs.cat(path) + b'2013,3,5,"unterminated\n')

    results = clean_batch(lake.root, "flights", _todo(lake), _dims(lake))

    rejected = results[1]
    assert isinstance(rejected, DayRejected) and rejected.outcome == "fail"
    assert path in rejected.message and "(rule: csv:quoting)" in rejected.message
    assert all(lake.read_manifest("flights", d)["files"] for d in DAYS if d != BAD)


def test_an_error_in_a_batch_is_raised_after_the_other_days_and_a_retry_redoes_only_it(lake):
    todo = _todo(lake)
    # a real fault for one day: its clean partition folder cannot be made (a file is there)
    blocker = Path(lake.partition("clean", "flights", BAD))
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("not a folder")

    with pytest.raises(StagingFailed, match=f"date={BAD.isoformat()}"):
        clean_batch(lake.root, "flights", todo, _dims(lake))
    published = {d: lake.read_manifest("flights", d) for d in DAYS if d != BAD}
    assert all(m and m["files"] for m in published.values())
    assert lake.read_manifest("flights", BAD) is None

    blocker.unlink()  # the retry of the same batch (as Dask's `retries=1` does it)
    results = clean_batch(lake.root, "flights", todo, _dims(lake))
    assert [r.day for r in results] == [d.isoformat() for d in DAYS]
    assert not any(r.skipped for r in results)
    for day, manifest in published.items():  # taken from their manifests, not cleaned again
        assert lake.read_manifest("flights", day)["generation"] == manifest["generation"]
    assert lake.read_manifest("flights", BAD)["files"]


def test_on_dask_a_bad_day_fails_alone_and_the_good_days_are_published(lake, dask_client):
    path = f"{lake.landing_day('flights', BAD)}/flights.csv"
    delivered = lake.fs.cat(path)
    _header_only(lake, BAD)
    assert delivered_bytes(lake, FLIGHTS, BAD) < delivered_bytes(lake, FLIGHTS, DAYS[0])

    with pytest.raises(DaysRejected) as raised:
        ingest_days(lake.root, "flights", DAYS, _dims(lake), dask_client)

    assert raised.value.days == [BAD.isoformat()]
    assert "rule: day:not_empty" in str(raised.value)
    assert all(lake.read_manifest("flights", d)["files"] for d in DAYS if d != BAD)
    # the next run redoes only the bad day, once it is re-delivered whole
    lake.write_bytes_atomic(path, delivered)
    reports = ingest_days(lake.root, "flights", DAYS, _dims(lake), dask_client)
    assert [r.skipped for r in reports] == [d != BAD for d in DAYS]
