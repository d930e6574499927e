"""Integration: a real backfill (Prefect test server, Dask LocalCluster, GX, MLflow SQLite)
over a range where one night is already done runs only the missing night.
"""

from datetime import date

import pytest
from mlflow.tracking import MlflowClient

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_backfill_runs_only_the_nights_without_a_registered_version(
    prefect_server, monkeypatch, tmp_path
):
    from flows.backfill import backfill
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
        model_name = get_settings().model_name or get_dataset("flights").model_name
        flights = get_dataset("flights")
        land_days(Lake(str(tmp_path / "lake")), flights, date(2013, 3, 1), date(2013, 3, 6))
        # The registry as an earlier night left it: 2013-03-05 is done.
        client = MlflowClient(tracking_uri)
        client.create_registered_model(model_name)
        client.create_model_version(
            model_name,
            source=str(tmp_path),
            tags={"as_of": "2013-03-05", "release_state": "completed"},
        )

        state = backfill(
            start=date(2013, 3, 5),
            end=date(2013, 3, 6),
            params=NightlyParams(
                holdout_days=2,
                train=TrainConfig(epochs=1, members=1, validation_days=1),
                tune=TuneConfig(enabled=False),
            ),
            return_state=True,
        )

        assert state.is_completed(), state.message
        [night] = state.result()
        assert (night.as_of, night.state) == ("2013-03-06", "Completed")
        versions = client.search_model_versions(f"name='{model_name}'")
        assert sorted(v.tags["as_of"] for v in versions) == ["2013-03-05", "2013-03-06"]
        new = next(v for v in versions if v.tags["as_of"] == "2013-03-06")
        assert str(new.version) == night.version and new.tags["prefect_flow_run_id"]
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
