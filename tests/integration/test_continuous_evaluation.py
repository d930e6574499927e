"""Integration: continuous evaluation in a real backfill (Prefect test server, Dask
LocalCluster, GX, MLflow SQLite). The first night has no champion and is skipped; each of
the 3 nights after it scores the champion on the days labelled since its as_of, and the
decay history (lake JSON, MLflow decay run, Prefect artifact) grows by one point a night.
"""

from datetime import date

import pytest
from mlflow.tracking import MlflowClient

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NIGHTS = ["2013-03-05", "2013-03-06", "2013-03-07", "2013-03-08"]


def test_decay_history_grows_night_by_night_in_a_3_night_backfill(
    prefect_server, monkeypatch, tmp_path
):
    from prefect.artifacts import Artifact

    from flows.backfill import backfill
    from flows.params import NightlyParams
    from tasks.core.lake import Lake
    from tasks.core.settings import get_settings
    from tasks.datasets import get_dataset
    from tasks.landing.simulator import land_days
    from tasks.monitoring.continuous import read_history
    from tasks.release.config import ReleaseConfig
    from tasks.training.config import TrainConfig, TuneConfig

    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("NIGHTSHIFT_LAKE_ROOT", str(tmp_path / "lake"))
    monkeypatch.setenv("NIGHTSHIFT_MLFLOW_TRACKING_URI", tracking_uri)
    monkeypatch.setenv("NIGHTSHIFT_DECAY_FLOOR_AUC", "0.99")  # every night decays: events
    get_settings.cache_clear()
    try:
        model_name = get_settings().model_name or get_dataset("flights").model_name
        lake = Lake(str(tmp_path / "lake"))
        land_days(lake, get_dataset("flights"), date(2013, 3, 1), date(2013, 3, 8))

        state = backfill(
            start=date.fromisoformat(NIGHTS[0]),
            end=date.fromisoformat(NIGHTS[-1]),
            params=NightlyParams(
                holdout_days=2,
                train=TrainConfig(epochs=1, members=1, validation_days=1),
                tune=TuneConfig(enabled=False),
                # a 1-epoch model must become the champion: the gate only checks budgets here
                release=ReleaseConfig(
                    auc_margin=0.1,
                    baseline_margin=0.5,
                    min_auc=0.0,
                    slice_margin=0.5,
                    max_latency_ms_batch1=1000,
                ),
            ),
            return_state=True,
        )
        assert state.is_completed(), state.message

        # night by night: each night's stage result counts the history after it
        grown = [
            lake.read_json(
                lake.run_dir("flights", date.fromisoformat(n), "evaluate-champion", "result.json")
            )
            for n in NIGHTS
        ]
        assert [g["history_points"] for g in grown] == [0, 1, 2, 3]
        assert "no @champion yet" in grown[0]["skipped"]

        history = read_history(lake, "flights")
        assert [h["as_of"] for h in history] == NIGHTS[1:]
        for entry in history:
            assert (
                entry["champion_as_of"] < entry["first_day"] <= entry["last_day"] == entry["as_of"]
            )
            assert entry["rows"] > 100 and 0 < entry["brier"] < 1
            assert entry["breached"] and "< floor 0.99" in entry["reason"]
        # the night after the first champion scores exactly the one day since its as_of
        assert (history[0]["champion_as_of"], history[0]["days"]) == (NIGHTS[0], 1)

        client = MlflowClient(tracking_uri)
        model = client.get_registered_model(model_name)
        assert model.tags["decay_last_as_of"] == NIGHTS[-1]
        auc = client.get_metric_history(model.tags["decay_run_id"], "decay/champion_roc_auc")
        days = [(date.fromisoformat(n) - date(1970, 1, 1)).days for n in NIGHTS[1:]]
        assert sorted(m.step for m in auc) == days  # one point per night on the chart
        assert [round(m.value, 6) for m in sorted(auc, key=lambda m: m.step)] == [
            round(h["roc_auc"], 6) for h in history
        ]

        chart = Artifact.get("decay-flights")
        assert chart is not None
        print(chart.data)  # the README's example chart comes from here (pytest -rP)
        assert [n for n in NIGHTS if f"| {n} |" in chart.data] == NIGHTS[1:]
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
