"""The native checks agree with the Great Expectations suite, rule for rule.

A real clean day of flights (landed, cleaned by the pandas engine, read back from its
Parquet file), then seeded violations of every kind of rule: GX and the native checks
must give every rule the same verdict, and the same unexpected count for the map rules.
"""

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from data_contracts import load_contract
from tasks.datasets import get_dataset
from tasks.ingest.pandas_engine import clean_day
from tasks.landing.simulator import land_days
from tasks.quality.dimensions import allowed_sets, dimensions_dir
from tasks.quality.gx_suite import run_suite
from tasks.quality.native_checks import (
    as_validated,
    check_partition,
    check_partitions,
    suite_fingerprint,
)

DAY = date(2013, 7, 1)
COUNTED = {"not_null", "between", "in_set", "regex", "unique"}  # GX's map expectations


@pytest.fixture(scope="module")
def clean_flights(tmp_path_factory):
    from tasks.core.lake import Lake

    lake = Lake(str(tmp_path_factory.mktemp("native") / "lake"))
    spec = get_dataset("flights")
    land_days(lake, spec, DAY, DAY)
    dims = lake.latest_dimension_snapshot("flights", DAY)
    clean_day(lake.root, "flights", DAY, dims)
    frame = lake.read_partition("flights", "clean", "flights", DAY)
    return frame, allowed_sets(lake, spec, dimensions_dir(lake, spec, DAY))


def _seeded(frame: pd.DataFrame) -> pd.DataFrame:
    bad = frame.copy()
    bad["carrier"] = bad["carrier"].astype(object)
    bad.loc[0, "carrier"] = None  # carrier:not_null
    bad.loc[1, "distance"] = 99999.0  # distance:between[1,6000]
    bad.loc[2, "dep_delay"] = -1000.0  # dep_delay:between (a nullable column)
    bad.loc[3, "origin"] = "BOS"  # origin:in_set (inline set)
    bad.loc[4, "carrier"] = "ZZ"  # carrier:in_set (the airlines dimension's set)
    bad.loc[5, "dest"] = "miami"  # dest:regex
    bad.loc[6, "tailnum"] = "n-1"  # tailnum:regex (a nullable column)
    bad.loc[7, "carrier"] = 7  # carrier:type[string] (an object column, one value)
    bad["flight"] = bad["flight"].astype("float64")  # flight:type[int] (the whole column)
    return pd.concat([bad, bad.iloc[[8, 9]]], ignore_index=True)  # key:unique (4 rows)


def _compare(frame, contract, allowed) -> dict[str, tuple]:
    gx = {r["rule"]: r for r in run_suite(frame, contract, allowed, None).outcomes}
    native = {r.rule: r for r in check_partition(frame, contract, allowed)}
    assert set(native) == set(gx)
    for name, ours in native.items():
        theirs = gx[name]
        assert ours.success == theirs["success"], (name, ours, theirs)
        if any(kind in name for kind in COUNTED):
            assert ours.unexpected_count == theirs["unexpected_count"], (name, ours, theirs)
    return {name: (r.success, r.unexpected_count) for name, r in native.items()}


def test_native_and_gx_agree_on_a_clean_partition(clean_flights):
    frame, allowed = clean_flights
    verdicts = _compare(frame, load_contract("flights"), allowed)
    assert all(ok for ok, _ in verdicts.values())


def test_native_and_gx_agree_on_seeded_violations_of_every_rule_kind(clean_flights):
    frame, allowed = clean_flights
    verdicts = _compare(_seeded(frame), load_contract("flights"), allowed)
    failed = {name: count for name, (ok, count) in verdicts.items() if not ok}
    assert failed == {
        "carrier:not_null": 1,
        "carrier:type[string]": 1,
        "carrier:in_set": 2,  # ZZ, and the int 7
        "distance:between[1,6000]": 1,
        "dep_delay:between[-240,2880]": 1,
        "origin:in_set": 1,
        "dest:regex": 1,
        "tailnum:regex": 1,
        "flight:type[int]": len(frame) + 2,  # the whole column (GX: the dtype is wrong)
        "key:unique": 4,
    }


def test_native_and_gx_agree_on_a_missing_column_and_a_short_partition(clean_flights):
    frame, allowed = clean_flights
    contract = load_contract("flights")
    short = contract.model_copy(
        update={
            "thresholds": contract.thresholds.model_copy(
                update={"min_rows_per_partition": len(frame) + 1}
            )
        }
    )
    verdicts = _compare(frame.drop(columns=["tailnum"]), short, allowed)
    failed = {name for name, (ok, _) in verdicts.items() if not ok}
    assert failed == {"tailnum:exists", "tailnum:type[string]", "tailnum:regex", "table:row_count"}


def test_the_suite_fingerprint_follows_rules_and_dimension_sets(clean_flights):
    _, allowed = clean_flights
    contract = load_contract("flights")
    base = suite_fingerprint(contract, allowed)
    assert suite_fingerprint(contract, allowed) == base
    fewer = {k: v[:-1] for k, v in allowed.items()}
    assert suite_fingerprint(contract, fewer) != base
    tighter = contract.model_copy(
        update={"thresholds": contract.thresholds.model_copy(update={"min_rows_per_partition": 9})}
    )
    assert suite_fingerprint(tighter, allowed) != base


def test_text_read_without_pandas_metadata_is_judged_alike_and_normalised(clean_flights):
    """A Parquet file without pandas' metadata (the Spark engine's) reads as pandas' `str`
    dtype: GX's type list cannot name it, and the native checks fail it the same way;
    `as_validated` gives both the nullable string dtype the Dask engine's files read as."""
    frame, allowed = clean_flights
    text = [c for c, dtype in frame.dtypes.items() if isinstance(dtype, pd.StringDtype)]
    assert {"carrier", "origin", "dest", "tailnum"} <= set(text)
    as_spark = frame.astype({c: pd.StringDtype(na_value=float("nan")) for c in text})
    contract = load_contract("flights")

    verdicts = _compare(as_spark, contract, allowed)
    checked = {c.name for c in contract.columns if c.type == "string"}
    expected = {f"{c}:type[string]" for c in checked}
    assert {n for n, (ok, _) in verdicts.items() if not ok} == expected
    assert all(ok for ok, _ in _compare(as_validated(as_spark), contract, allowed).values())


def test_partitions_checked_together_get_each_partition_s_own_results(clean_flights):
    """`check_partitions` over several days' rows at once (the ingest checks a frame of
    days so) gives every day exactly `check_partition`'s result on that day alone: seeded
    violations on one day, fewer on another, none on an empty one."""
    frame, allowed = clean_flights
    contract = load_contract("flights")
    first = _seeded(frame)
    second = frame.copy()
    second["date"] = DAY + timedelta(days=1)
    second["carrier"] = second["carrier"].astype(object)
    second["flight"] = second["flight"].astype("float64")  # the dtypes the first day has
    second.loc[3, "origin"] = "BOS"
    second = pd.concat([second, second.iloc[[4]]], ignore_index=True)  # one key twice
    days = [first, second.iloc[:0], second]
    day_of_row = np.repeat(np.arange(len(days)), [len(d) for d in days])

    together = check_partitions(
        pd.concat(days, ignore_index=True), day_of_row, len(days), contract, allowed
    )

    assert together == [check_partition(d, contract, allowed) for d in days]
    counts = [{r.rule: r.unexpected_count for r in rules if not r.success} for rules in together]
    assert counts[1] == {"table:row_count": 0} and counts[2]["key:unique"] == 2
    assert counts[0]["key:unique"] == 4 and counts[2]["origin:in_set"] == 1
