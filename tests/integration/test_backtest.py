"""Integration: a real two-fold backtest (Prefect test server, Dask LocalCluster, GX, MLflow
SQLite): each fold trains on the days before its week and scores the week; nothing of the
nightly runs, the nightly study or the registry is touched.
"""

from datetime import date
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_weekly_backtest_scores_each_week_with_a_model_trained_before_it(
    prefect_server, monkeypatch, tmp_path
):
    from prefect.artifacts import Artifact

    from flows.backtest import backtest
    from flows.params import NightlyParams
    from tasks.core.lake import Lake
    from tasks.core.settings import get_settings
    from tasks.datasets import get_dataset
    from tasks.landing.simulator import land_days
    from tasks.training.config import TrainConfig, TuneConfig

    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("NIGHTSHIFT_LAKE_ROOT", str(tmp_path / "lake"))
    monkeypatch.setenv("NIGHTSHIFT_MLFLOW_TRACKING_URI", tracking_uri)
    get_settings.cache_clear()
    try:
        lake = Lake(str(tmp_path / "lake"))
        land_days(lake, get_dataset("flights"), date(2013, 1, 21), date(2013, 2, 24))
        state = backtest(
            start=date(2013, 2, 11),
            end=date(2013, 2, 24),
            every="week",
            params=NightlyParams(
                train=TrainConfig(epochs=1, members=2, hidden=[32], validation_days=3),
                tune=TuneConfig(n_trials=1, epochs=1, members=1),
            ),
            return_state=True,
        )
        assert state.is_completed(), state.message
        report = state.result()

        assert [f.label for f in report.folds] == ["2013-W07", "2013-W08"]
        first, second = report.folds
        assert (first.cutoff, first.first, first.last) == ("2013-02-10", "2013-02-11", "2013-02-17")
        assert second.cutoff == "2013-02-17"
        assert second.train_rows > first.train_rows  # the window expands fold by fold
        for fold in report.folds:
            assert fold.holdout_rows > 5000
            assert 0.55 < fold.baseline_auc < 0.9 and 0.5 < fold.network_auc < 0.9
            assert fold.candidate in ("network", "blend")
        assert report.wins == sum(f.served_auc >= f.baseline_auc for f in report.folds)

        # the table, plot and MLflow run
        for name in ("report.md", "report.json", "auc.png"):
            assert Path(report.report_dir, name).stat().st_size > 0
        client = MlflowClient(tracking_uri)
        run = client.get_run(report.mlflow_run_id)
        assert run.info.status == "FINISHED"
        history = client.get_metric_history(run.info.run_id, "backtest/served_roc_auc")
        assert [m.step for m in history] == [0, 1]
        assert {a.path for a in client.list_artifacts(run.info.run_id, "backtest")} >= {
            "backtest/report.md",
            "backtest/auc.png",
        }
        assert Artifact.get("backtest-flights") is not None

        # nothing of the nightly world: no registered version, no nightly run dir or study
        assert client.search_registered_models() == []
        assert not Path(tmp_path, "lake", "runs").exists()
        assert not Path(tmp_path, "lake", "studies").exists()
        assert Path(tmp_path, "lake", "backtests").is_dir()
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
