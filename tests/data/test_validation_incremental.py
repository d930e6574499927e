"""Validation proportional to the new data: unchanged partitions are read back, not re-checked.

Real lakes (landed, cleaned by the pandas engine), validated twice: what the second
validation re-checks is what changed (a partition's content, the contract, the dimension
sets), and a changed partition with a violation fails naming its partition.
"""

import hashlib
import os
import time
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest

from data_contracts import load_contract
from tasks.core.settings import get_settings
from tasks.datasets import get_dataset
from tasks.ingest.generation import DayRejected
from tasks.ingest.pandas_engine import clean_day
from tasks.landing.simulator import land_days
from tasks.quality import validate as validate_module
from tasks.quality.gx_docs import run_background, start_background
from tasks.quality.validate import ContractBroken, validate, validate_table
from tasks.quality.validation_cache import entry_path
from tests.conftest import context_for

DAYS = [date(2013, 7, 1) + timedelta(days=i) for i in range(3)]
ISO = [d.isoformat() for d in DAYS]


@pytest.fixture
def clean_lake(tmp_lake):
    land_days(tmp_lake, get_dataset("flights"), DAYS[0], DAYS[-1])
    dims = tmp_lake.latest_dimension_snapshot("flights", DAYS[-1])
    for day in DAYS:
        clean_day(tmp_lake.root, "flights", day, dims)
    return tmp_lake


@pytest.fixture
def gx_max_rows(monkeypatch):
    """Set `validation_gx_max_rows` for one test (the settings are cached per process)."""

    def setter(rows: int) -> None:
        monkeypatch.setenv("NIGHTSHIFT_VALIDATION_GX_MAX_ROWS", str(rows))
        get_settings.cache_clear()

    yield setter
    monkeypatch.delenv("NIGHTSHIFT_VALIDATION_GX_MAX_ROWS", raising=False)
    get_settings.cache_clear()


def _publish_as_buggy_ingest(lake, day: date, rows: pd.DataFrame) -> None:
    """A new generation of `day` whose rows break the contract, vouched for by the manifest
    (as a buggy ingest would publish it): validation must still catch it."""
    manifest = lake.read_manifest("flights", day)
    path = lake.path(manifest["files"]["clean/flights"]["path"])
    lake.write_parquet_atomic(path, rows)
    manifest["files"]["clean/flights"]["sha256"] = hashlib.sha256(lake.fs.cat(path)).hexdigest()
    lake.write_json_atomic(lake.manifest("flights", day), manifest)


def test_second_validation_of_unchanged_partitions_rechecks_nothing(clean_lake):
    ctx = context_for(clean_lake, as_of=DAYS[-1])
    first = validate_table(ctx, "flights", DAYS)
    assert first.success and first.rechecked == ISO and first.gx_partitions == ISO
    entries = {d: clean_lake.fs.info(entry_path(clean_lake, "flights", "flights", d)) for d in DAYS}

    second = validate_table(ctx, "flights", DAYS)

    assert second.success and second.rechecked == [] and second.gx_partitions == []
    assert second.gx_docs is None and second.gx_results == []
    # the cache entries were read, not rewritten
    assert {
        d: clean_lake.fs.info(entry_path(clean_lake, "flights", "flights", d)) for d in DAYS
    } == entries
    # the report still covers every partition, with the same native verdicts
    assert second.partitions == 3 and second.rows == first.rows
    assert second.results == first.results
    page = clean_lake.fs.cat_file(second.docs_index).decode()
    assert "no changed partition tonight" in page


def test_a_re_cleaned_day_alone_is_rechecked(clean_lake):
    ctx = context_for(clean_lake, as_of=DAYS[-1])
    validate_table(ctx, "flights", DAYS)
    # upstream re-delivers the middle day with one flight fewer: a new generation
    landed = clean_lake.landing_day("flights", DAYS[1]) + "/flights.csv"
    lines = clean_lake.fs.cat_file(landed).decode().splitlines(keepends=True)
    clean_lake.write_bytes_atomic(landed, "".join(lines[:-1]).encode())
    dims = clean_lake.latest_dimension_snapshot("flights", DAYS[-1])
    clean_day(clean_lake.root, "flights", DAYS[1], dims)

    report = validate_table(ctx, "flights", DAYS)

    assert report.success and report.rechecked == [ISO[1]] and report.gx_partitions == [ISO[1]]
    assert report.gx_rows == len(clean_lake.read_partition("flights", "clean", "flights", DAYS[1]))


def test_a_changed_partition_with_a_violation_is_rechecked_and_fails_naming_it(clean_lake):
    ctx = context_for(clean_lake, as_of=DAYS[-1])
    assert validate_table(ctx, "flights", DAYS).success
    rows = clean_lake.read_partition("flights", "clean", "flights", DAYS[2])
    rows.loc[0, "distance"] = 99999.0
    _publish_as_buggy_ingest(clean_lake, DAYS[2], rows)

    with pytest.raises(ContractBroken) as broken:
        validate(ctx, "flights", DAYS)

    message = str(broken.value)
    assert (
        f"rule distance:between[1,6000]: 1 unexpected value(s) in partition(s) date={ISO[2]}"
        in message
    )
    report = clean_lake.read_json(f"{clean_lake.validation_dir('flights', DAYS[-1])}/flights.json")
    assert report["rechecked"] == [ISO[2]]
    # the next night, nothing changed: the failure is read back from the cache, not lost
    again = validate_table(ctx, "flights", DAYS)
    assert again.rechecked == [] and [f.partitions for f in again.failures] == [[ISO[2]]]


def test_a_contract_change_invalidates_every_cached_result(clean_lake, monkeypatch):
    ctx = context_for(clean_lake, as_of=DAYS[-1])
    validate_table(ctx, "flights", DAYS)
    contract = load_contract("flights")
    columns = [
        c.model_copy(update={"max": 1000}) if c.name == "distance" else c for c in contract.columns
    ]
    tighter = contract.model_copy(update={"columns": columns})
    monkeypatch.setattr(validate_module, "load_contract", lambda table: tighter)

    report = validate_table(ctx, "flights", DAYS)

    assert report.rechecked == ISO
    (failure,) = report.failures
    assert failure.rule == "distance:between[1,1000]" and failure.partitions == ISO


def test_a_changed_dimension_set_invalidates_every_cached_result(clean_lake):
    ctx = context_for(clean_lake, as_of=DAYS[-1])
    validate_table(ctx, "flights", DAYS)
    airlines = f"{clean_lake.latest_dimension_snapshot('flights', DAYS[-1])}/airlines.csv"
    frame = pd.read_csv(clean_lake.fs.open(airlines), dtype=str)
    clean_lake.write_bytes_atomic(
        airlines, frame[frame["carrier"] != "UA"].to_csv(index=False).encode()
    )

    report = validate_table(ctx, "flights", DAYS)

    assert report.rechecked == ISO
    (failure,) = report.failures
    assert failure.rule == "carrier:in_set" and failure.partitions == ISO


def test_gx_runs_on_the_newest_changed_partitions_up_to_the_row_cap(clean_lake, gx_max_rows):
    ctx = context_for(clean_lake, as_of=DAYS[-1])
    gx_max_rows(1)  # below one day: the newest changed day alone
    capped = validate_table(ctx, "flights", DAYS)
    assert capped.rechecked == ISO and capped.gx_partitions == [ISO[-1]]
    assert capped.gx_docs is not None and clean_lake.exists(capped.gx_docs)

    gx_max_rows(0)  # native checks only
    rows = clean_lake.read_partition("flights", "clean", "flights", DAYS[0])
    _publish_as_buggy_ingest(clean_lake, DAYS[0], pd.concat([rows, rows.iloc[[0]]]))
    native_only = validate_table(ctx, "flights", DAYS)
    assert native_only.rechecked == [ISO[0]] and native_only.gx_partitions == []
    (failure,) = native_only.failures
    assert failure.rule == "key:unique" and failure.unexpected_count == 2
    assert failure.partitions == [ISO[0]]


def test_background_gx_adds_its_results_to_the_report_and_page(clean_lake, monkeypatch):
    monkeypatch.setenv("NIGHTSHIFT_VALIDATION_GX_BACKGROUND", "true")
    get_settings.cache_clear()
    try:
        ctx = context_for(clean_lake, as_of=DAYS[-1])
        report = validate_table(ctx, "flights", DAYS)
    finally:
        monkeypatch.setenv("NIGHTSHIFT_VALIDATION_GX_BACKGROUND", "false")
        get_settings.cache_clear()
    # the stage returned with the native verdict; GX is still to come
    assert report.success and report.gx_status == "pending" and report.gx_results == []
    assert "running in the background" in clean_lake.fs.cat_file(report.docs_index).decode()

    deadline = time.monotonic() + 120
    while (stored := clean_lake.read_json(report.report_path))["gx_status"] == "pending":
        assert time.monotonic() < deadline, "the background GX run did not finish in 120 s"
        time.sleep(0.5)

    assert stored["gx_status"] == "done" and stored["gx_disagrees"] == []
    assert {r["rule"] for r in stored["gx_results"]} >= {"key:unique", "table:row_count"}
    assert all(r["success"] for r in stored["gx_results"])
    assert clean_lake.exists(stored["gx_docs"])
    page = clean_lake.fs.cat_file(report.docs_index).decode()
    assert "running in the background" not in page and "Great Expectations" in page


def test_a_background_gx_process_runs_at_the_lowest_cpu_priority(tmp_lake):
    # nothing waits for the Data Docs, while the night's next stages wait for a core
    process = start_background(tmp_lake, "flights", DAYS[-1], "flights", "no-run", [ISO[-1]])
    try:
        assert os.getpriority(os.PRIO_PROCESS, process.pid) == 19
        # its own session is its own scheduling group under autogroup scheduling: the
        # group's weight must drop too, or the process competes with the flow as an equal
        autogroup = Path(f"/proc/{process.pid}/autogroup")
        if autogroup.exists():
            assert autogroup.read_text().split()[-1] == "19", autogroup.read_text()
            # the flow keeps its own weight; a process in the root group (a session begun
            # by PID 1, as under CI runners) reads an empty file: nice 0, not an autogroup
            own = Path("/proc/self/autogroup").read_text().split()
            assert not own or own[-1] != "19", own
    finally:
        # an empty lake: no such partition, the process fails (and says so in its log)
        assert process.wait(timeout=120) != 0


def test_a_header_only_day_the_contract_accepts_does_not_fail_the_row_count(tmp_lake):
    """Weather's real 2013-12-31 delivery is header-only (`on_empty_day: warn`): ingest
    publishes it with a warning, and validation judges the row count over the window, as
    the suite did when GX saw the whole batch; GX, seeing only that empty changed day,
    is not counted as disagreeing."""
    days = [date(2013, 12, 30), date(2013, 12, 31)]
    land_days(tmp_lake, get_dataset("flights"), days[0], days[-1])
    dims = tmp_lake.latest_dimension_snapshot("flights", days[-1])
    clean_day(tmp_lake.root, "flights", days[0], dims)
    ctx = context_for(tmp_lake, as_of=days[-1])
    assert validate_table(ctx, "weather", days[:1]).success
    clean_day(tmp_lake.root, "flights", days[1], dims)

    report = validate_table(ctx, "weather", days)

    assert tmp_lake.read_partition("flights", "clean", "weather", days[1]).empty
    assert report.rechecked == ["2013-12-31"] and report.success, report.failures
    gx_row_count = next(r for r in report.gx_results if r["rule"] == "table:row_count")
    assert not gx_row_count["success"] and report.gx_disagrees == []


def test_a_failed_background_gx_run_says_so_instead_of_staying_pending(clean_lake):
    ctx = context_for(clean_lake, as_of=DAYS[-1])
    report = validate_table(ctx, "flights", DAYS)
    missing = "2013-07-09"  # no partition: the GX process cannot read it

    with pytest.raises(FileNotFoundError, match="date=2013-07-09"):
        run_background(clean_lake, "flights", DAYS[-1], "flights", report.run_id, [missing])

    stored = clean_lake.read_json(report.report_path)
    assert stored["gx_status"].startswith("failed: no published clean flights partition")
    assert "did not finish: failed" in clean_lake.fs.cat_file(report.docs_index).decode()


def test_the_ingest_leaves_each_published_partitions_result_validation_reads_nothing_back(
    clean_lake, gx_max_rows, monkeypatch
):
    """The pandas ingest checked each clean partition on the bytes it published: the
    validate stage reports those days as checked tonight without reading any partition
    (native checks only here), and the verdicts equal a check from scratch."""
    ctx = context_for(clean_lake, as_of=DAYS[-1])
    gx_max_rows(0)
    stored = {
        d: clean_lake.read_json(entry_path(clean_lake, "flights", "flights", d)) for d in DAYS
    }
    assert all(entry["fresh"] for entry in stored.values())
    manifests = {d: clean_lake.read_manifest("flights", d) for d in DAYS}
    assert [stored[d]["key"]["content_sha256"] for d in DAYS] == [
        manifests[d]["files"]["clean/flights"]["sha256"] for d in DAYS
    ]
    read: list[date] = []
    original = type(clean_lake).read_partition

    def counting(self, dataset, layer, table, day, columns=None):
        read.append(day)
        return original(self, dataset, layer, table, day, columns)

    monkeypatch.setattr(type(clean_lake), "read_partition", counting)

    from_ingest = validate_table(ctx, "flights", DAYS)

    assert read == [] and from_ingest.success and from_ingest.rechecked == ISO
    # the validation took them as reported: the next one finds nothing new
    entries = [clean_lake.read_json(entry_path(clean_lake, "flights", "flights", d)) for d in DAYS]
    assert not any(entry["fresh"] for entry in entries)
    assert validate_table(ctx, "flights", DAYS).rechecked == []

    for day in DAYS:  # the same partitions checked from scratch, read back
        clean_lake.fs.rm(entry_path(clean_lake, "flights", "flights", day))
    from_scratch = validate_table(ctx, "flights", DAYS)
    assert sorted(read) == DAYS and from_scratch.rechecked == ISO
    assert from_scratch.results == from_ingest.results


def test_a_day_the_ingest_rejects_leaves_no_result_in_the_cache(tmp_lake):
    """Only a published generation's results enter the cache: a rejected day's rows are
    never vouched for."""
    day = date(2013, 7, 1)
    land_days(tmp_lake, get_dataset("flights"), day, day)
    landed = tmp_lake.landing_day("flights", day) + "/flights.csv"
    header = tmp_lake.fs.cat_file(landed).decode().splitlines(keepends=True)[0]
    tmp_lake.write_bytes_atomic(landed, header.encode())  # no flights: `day:not_empty`
    dims = tmp_lake.latest_dimension_snapshot("flights", day)

    with pytest.raises(DayRejected):
        clean_day(tmp_lake.root, "flights", day, dims)

    for table in ("flights", "weather"):
        assert not tmp_lake.exists(entry_path(tmp_lake, "flights", table, day))
