"""Every stage runs alone from the CLI, on the lake as it stands, in order: ingest →
validate → features → tune → train → evaluate → compress → register. Each reads the
results the stages before it recorded, prints what it did or its result as JSON, and a
broken input fails the stage naming the rule, with exit code 1."""

from __future__ import annotations

import json
from datetime import date

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from flows.cli import app
from tasks.core.lake import Lake
from tasks.core.settings import get_settings
from tasks.datasets import get_dataset
from tasks.landing.simulator import land_days

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FIRST, AS_OF = date(2013, 4, 1), date(2013, 4, 30)  # the stages' defaults need 2+ weeks


@pytest.fixture
def home(monkeypatch, tmp_path):
    monkeypatch.setenv("NIGHTSHIFT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NIGHTSHIFT_DASK_WORKERS", "2")
    get_settings.cache_clear()
    land_days(Lake(get_settings().lake_url), get_dataset("flights"), FIRST, AS_OF)
    yield get_settings()
    monkeypatch.undo()
    get_settings.cache_clear()


def _stage(*args: str) -> dict:
    result = CliRunner().invoke(app, [*args, "--as-of", str(AS_OF), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout[result.stdout.index("{") if "{" in result.stdout else 0 :])


def test_each_stage_runs_alone_on_the_lake_in_order(home):
    ingest = _stage("ingest")
    assert ingest["dataset"] == "flights" and len(ingest["days"]) == 30
    assert ingest["raw_rows"] == ingest["clean_rows"] + ingest["quarantined_rows"]

    validated = CliRunner().invoke(app, ["validate", "--as-of", str(AS_OF)])
    assert validated.exit_code == 0, validated.output
    assert "nightshift validate flights 2013-04-30: done" in validated.output

    features = _stage("features", "--holdout-days", "3")
    assert features["holdout_days"] == ["2013-04-28", "2013-04-30"]

    tuned = _stage("tune", "--trials", "1")
    assert tuned["trials_this_run"] == 1

    trained = _stage("train")
    assert trained["world_size"] == 2 and 0.5 < trained["validation_auc"] < 1

    evaluated = _stage("evaluate")
    assert evaluated["holdout_rows"] == features["holdout_rows"]

    compressed = _stage("compress")
    assert compressed["chosen"]

    registered = _stage("register")
    assert registered["alias"] in ("champion", "challenger")
    version = MlflowClient(home.tracking_uri).get_model_version(
        "nycflights-delay", registered["version"]
    )
    assert version.tags["as_of"] == str(AS_OF) and version.tags["gate_passed"] in ("true", "false")


def test_a_stage_fails_with_the_rule_named_and_exit_code_one(home):
    lake = Lake(home.lake_url)
    path = f"{lake.landing_day('flights', AS_OF)}/flights.csv"
    raw = pd.read_csv(lake.fs.open(path), dtype=str, keep_default_na=False)
    lake.write_bytes_atomic(path, raw.drop(columns=["dest"]).to_csv(index=False).encode())

    result = CliRunner().invoke(app, ["ingest", "--as-of", str(AS_OF)])

    assert result.exit_code == 1
    assert "nightshift ingest flights 2013-04-30: FAILED" in result.output
    assert "'dest'" in result.output and "schema:required_columns" in result.output
