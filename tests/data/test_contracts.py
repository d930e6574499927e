"""Data tests: the contracts themselves, and Great Expectations on real clean data."""

import hashlib
from datetime import date, timedelta

import pandas as pd
import pytest

from data_contracts import load_contract
from tasks.datasets import get_dataset
from tasks.ingest.pandas_engine import clean_day
from tasks.landing.simulator import land_days
from tasks.quality.validate import ContractBroken, validate, validate_table
from tests.conftest import context_for

DAYS = [date(2013, 7, 1) + timedelta(days=i) for i in range(3)]


@pytest.fixture
def clean_lake(tmp_lake):
    land_days(tmp_lake, get_dataset("flights"), DAYS[0], DAYS[-1])
    dims = tmp_lake.latest_dimension_snapshot("flights", DAYS[-1])
    for day in DAYS:
        clean_day(tmp_lake.root, "flights", day, dims)
    return tmp_lake


@pytest.mark.parametrize("dataset", ["flights", "weather"])
def test_contracts_load_versioned_and_consistent(dataset):
    contract = load_contract(dataset)
    names = [c.name for c in contract.columns]
    assert len(names) == len(set(names))
    assert set(contract.key) <= set(names)
    assert contract.tag.startswith(f"{dataset}/clean@{contract.version}+")
    for column in contract.columns:
        if column.min is not None and column.max is not None:
            assert column.min <= column.max, column.name


def test_real_clean_data_honours_its_contracts_and_one_page_keeps_every_result(clean_lake):
    ctx = context_for(clean_lake, as_of=DAYS[-1])
    reports = [validate_table(ctx, table, DAYS) for table in ("weather", "flights")]
    for report in reports:
        assert report.success, [f.describe() for f in report.failures]
        assert report.rows > 0 and report.expectations > 20
        assert clean_lake.exists(report.report_path)
        assert clean_lake.exists(report.gx_docs)  # the table's own GX Data Docs site
        assert report.as_of == str(DAYS[-1]) and len(report.results) == report.expectations
    # the night's page lists both contracts, the later validation did not replace the first
    page = clean_lake.fs.cat_file(reports[-1].docs_index).decode()
    assert reports[0].docs_index == reports[1].docs_index
    assert all(r.contract in page for r in reports) and "<script" not in page
    gx_page = clean_lake.fs.cat_file(reports[0].gx_docs).decode()
    assert f"{DAYS[-1]} {reports[0].contract.replace('/', ':')}" in gx_page


def test_broken_clean_batch_fails_naming_rule_and_partition(clean_lake):
    path = clean_lake.partition_file("clean", "flights", DAYS[1])
    rows = clean_lake.read_parquet(path)
    rows.loc[0, "distance"] = 99999.0  # out of range
    rows = pd.concat([rows, rows.iloc[[1]]], ignore_index=True)  # duplicate flight key
    clean_lake.write_parquet_atomic(path, rows)
    # published as if by a buggy ingest (the manifest vouches for it): GX must still catch it
    manifest = clean_lake.read_manifest("flights", DAYS[1])
    manifest["files"]["clean/flights"]["sha256"] = hashlib.sha256(
        clean_lake.fs.cat(path)
    ).hexdigest()
    clean_lake.write_json_atomic(clean_lake.manifest("flights", DAYS[1]), manifest)

    with pytest.raises(ContractBroken) as broken:
        validate(context_for(clean_lake, as_of=DAYS[-1]), "flights", DAYS)

    message = str(broken.value)
    assert (
        "rule distance:between[1,6000]: 1 unexpected value(s) in partition(s) date=2013-07-02"
        in message
    )
    assert "rule key:unique" in message and "date=2013-07-02" in message


def test_quarantine_threshold_breach_fails_the_batch(clean_lake):
    manifest_path = clean_lake.manifest("flights", DAYS[0])
    manifest = clean_lake.read_json(manifest_path)
    counts = manifest["sources"]["flights"]
    counts["quarantined_rows"] = int(counts["raw_rows"] * 0.05)
    clean_lake.write_json_atomic(manifest_path, manifest)

    report = validate_table(context_for(clean_lake, as_of=DAYS[-1]), "flights", DAYS)

    assert not report.success
    (failure,) = report.failures
    assert failure.rule == "quarantine_fraction<=0.02" and failure.partitions == ["2013-07-01"]
