"""Code tests for the row-level contract rules (contract YAML -> pandas masks)."""

import pandas as pd
import pytest

from data_contracts import load_contract
from tasks.quality.pandas_rules import typed_frame_and_violations
from tasks.quality.rules import ContractViolation, check_columns, row_rules

AIRLINES = {"airlines.carrier": ["AA", "UA", "B6"]}


def _raw(**overrides):
    row = {
        "carrier": "AA",
        "flight": "11",
        "tailnum": "N3ABAA",
        "origin": "JFK",
        "dest": "MIA",
        "sched_dep_time": "900",
        "sched_arr_time": "1205",
        "distance": "1089",
        "dep_time": "902",
        "dep_delay": "2",
        "arr_time": "1210",
        "arr_delay": "5",
        "air_time": "160",
    }
    row.update(overrides)
    return row


@pytest.mark.parametrize(
    ("override", "rule"),
    [
        ({"distance": "abc"}, "distance:type[float]"),
        ({"flight": "12.5"}, "flight:type[int]"),
        ({"distance": "99999"}, "distance:between[1,6000]"),
        ({"carrier": "ZZ"}, "carrier:in_set"),
        ({"origin": "BOS"}, "origin:in_set"),
        ({"dest": "miami"}, "dest:regex"),
        ({"carrier": "NA"}, "carrier:not_null"),
        ({"sched_dep_time": ""}, "sched_dep_time:not_null"),
    ],
)
def test_each_broken_rule_is_named(override, rule):
    raw = pd.DataFrame([_raw(), _raw(**override)])
    _, reasons = typed_frame_and_violations(raw, load_contract("flights"), AIRLINES)
    assert reasons.iloc[0] == ""
    assert rule in reasons.iloc[1].split(";")


def test_nullable_columns_accept_missing_values_and_types_are_parsed():
    raw = pd.DataFrame([_raw(dep_time="NA", arr_delay="", tailnum="NA")])
    typed, reasons = typed_frame_and_violations(raw, load_contract("flights"), AIRLINES)
    assert reasons.iloc[0] == ""
    assert pd.isna(typed["dep_time"].iloc[0]) and pd.isna(typed["tailnum"].iloc[0])
    assert typed["distance"].dtype == "float64" and str(typed["flight"].dtype) == "Int64"


def test_several_broken_rules_are_all_reported():
    raw = pd.DataFrame([_raw(distance="-5", carrier="ZZ")])
    _, reasons = typed_frame_and_violations(raw, load_contract("flights"), AIRLINES)
    assert set(reasons.iloc[0].split(";")) == {"distance:between[1,6000]", "carrier:in_set"}


def test_missing_column_is_a_clear_schema_error_naming_file_and_column():
    raw = pd.DataFrame([_raw()]).drop(columns=["distance"])
    with pytest.raises(
        ContractViolation, match=r"landing/x\.csv.*distance.*schema:required_columns"
    ):
        check_columns(raw.columns, load_contract("flights"), "landing/x.csv")


def test_a_one_sided_bound_is_named_with_its_open_side():
    from data_contracts import ColumnRule, Contract

    contract = Contract(
        dataset="t",
        layer="clean",
        version="1",
        key=["x"],
        columns=[
            ColumnRule(name="x", type="float", min=0),
            ColumnRule(name="y", type="int", max=9),
        ],
    )
    names = [r.name for r in row_rules(contract)]
    assert names == ["x:type[float]", "x:between[0,inf]", "y:type[int]", "y:between[-inf,9]"]
    _, reasons = typed_frame_and_violations(
        pd.DataFrame({"x": ["-1", "5"], "y": ["3", "10"]}), contract
    )
    assert reasons.tolist() == ["x:between[0,inf]", "y:between[-inf,9]"]


def test_the_gx_suite_names_every_rule_of_the_catalogue():
    import great_expectations as gx

    from tasks.quality.gx_suite import build_suite

    gx.get_context(mode="ephemeral")
    contract = load_contract("flights")
    suite = build_suite(contract, AIRLINES)
    named = {e.meta["rule"] for e in suite.expectations}
    assert {r.name for r in row_rules(contract, AIRLINES)} <= named
    assert {"key:unique", "table:row_count"} <= named
