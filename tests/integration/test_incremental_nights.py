"""Integration: three consecutive real nights (Prefect test server, Dask LocalCluster, GX,
MLflow SQLite, DDP): the first retrains in full, the second, one new day later, fine-tunes
the first's network from its weights, skips the search, tries only the champion's
compression variant, and is still judged by the gate against the champion on its holdout;
the third fine-tunes the second, a fine-tuned champion.
"""

from datetime import date

import pytest
from mlflow.tracking import MlflowClient

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_night_with_one_new_day_fine_tunes_the_champion_and_is_gated(
    prefect_server, monkeypatch, tmp_path
):
    from flows.nightly import nightly_retrain
    from flows.params import NightlyParams
    from tasks.core.lake import Lake
    from tasks.core.settings import get_settings
    from tasks.datasets import get_dataset
    from tasks.landing.simulator import land_days
    from tasks.release.config import ReleaseConfig
    from tasks.release.registry import promote_version
    from tasks.training.config import TrainConfig, TuneConfig
    from tasks.training.loop import load_weights

    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    lake = Lake(str(tmp_path / "lake"))
    monkeypatch.setenv("NIGHTSHIFT_LAKE_ROOT", lake.root)
    monkeypatch.setenv("NIGHTSHIFT_MLFLOW_TRACKING_URI", tracking_uri)
    monkeypatch.setenv("NIGHTSHIFT_FULL_RETRAIN_EVERY_DAYS", "7")
    monkeypatch.setenv("NIGHTSHIFT_FINE_TUNE_EPOCHS", "1")
    monkeypatch.setenv("NIGHTSHIFT_FINE_TUNE_REPLAY_FRACTION", "0.5")
    get_settings.cache_clear()
    try:
        flights = get_dataset("flights")
        model_name = get_settings().model_name or flights.model_name
        params = NightlyParams(
            holdout_days=2,
            train=TrainConfig(epochs=2, members=1, hidden=[32], validation_days=1),
            tune=TuneConfig(enabled=False),
            # the first night must become the champion on a window this small, so the
            # absolute floors are off; the champion comparison (auc_margin) stays as is
            release=ReleaseConfig(min_auc=0.0, baseline_margin=0.5, slice_margin=0.5),
        )
        land_days(lake, flights, date(2013, 3, 1), date(2013, 3, 7))
        first = nightly_retrain(as_of=date(2013, 3, 7), params=params, return_state=True)
        assert first.is_completed(), first.message
        full = first.result()
        assert (full.training_mode, full.alias) == ("full", "champion")

        land_days(lake, flights, date(2013, 3, 8), date(2013, 3, 8))  # one new day
        second = nightly_retrain(as_of=date(2013, 3, 8), params=params, return_state=True)
        assert second.is_completed(), second.message
        tuned = second.result()

        assert tuned.training_mode == "fine-tune", tuned.training_reason
        assert f"champion v{full.version}" in tuned.training_reason
        # the gate judged it against the champion, scored on the same holdout
        assert tuned.champion_version == full.version and tuned.champion_auc is not None
        auc_check = next(c for c in tuned.gate if c["name"] == "auc")
        assert "champion" in auc_check["detail"] and "no champion" not in auc_check["detail"]
        assert tuned.alias in ("champion", "challenger")

        client = MlflowClient(tracking_uri)
        full_run = client.get_run(client.get_model_version(model_name, full.version).run_id)
        version = client.get_model_version(model_name, tuned.version)
        run = client.get_run(version.run_id)
        assert full_run.data.params["training_mode"] == "full"
        assert full_run.data.params["last_full_retrain_as_of"] == "2013-03-07"
        assert run.data.params["training_mode"] == "fine-tune"
        assert run.data.params["parent_version"] == full.version
        assert run.data.params["last_full_retrain_as_of"] == "2013-03-07"
        assert version.tags["training_mode"] == "fine-tune"
        # the champion's hyperparameters, its fitted preprocessing, one fine-tune epoch
        assert run.data.params["hidden"] == full_run.data.params["hidden"]
        night = lake.run_dir("flights", date(2013, 3, 8))
        before = lake.run_dir("flights", date(2013, 3, 7))
        trained = lake.read_json(f"{night}/train/result.json")
        assert trained["epochs_run"] == 1
        # on every row the champion never fitted (its validation day, 03-05) and about half
        # of the older ones; the run records the fraction
        sample = lake.read_json(f"{night}/plan/result.json")["sample"]
        assert (sample["new_after"], sample["replay_fraction"]) == ("2013-03-04", 0.5)
        days = lake.read_parquet(f"{night}/features/train.parquet")["date"].astype(str)
        new, older = int((days == "2013-03-05").sum()), int((days < "2013-03-05").sum())
        assert new + 0.4 * older < trained["train_rows"] < new + 0.6 * older
        assert run.data.params["fine_tune_replay_fraction"] == "0.5"
        assert lake.fs.cat(f"{night}/plan/champion_preprocessor.json") == lake.fs.cat(
            f"{before}/features/preprocessor.json"
        )
        started_from = load_weights(f"{night}/plan/champion_weights.pt")
        champion_weights = load_weights(f"{before}/model/weights.pt")
        assert all(started_from[k].equal(v) for k, v in champion_weights.items())
        # compression tried fp32 and the champion's variant only, and said so
        chosen = version_tag(client, model_name, full.version, "compression_variant")
        tried = [v["name"] for v in lake.read_json(f"{night}/compress/result.json")["variants"]]
        assert sorted(tried) == sorted({"fp32", chosen})
        assert tuned.compression_search.endswith("(the champion's variant)")
        # the blend was weighed with the champion's tree (staged, checked), not a new fit;
        # it was fitted before tonight's validation day, and the release passes it on
        first_tags = client.get_model_version(model_name, full.version).tags
        assert lake.fs.cat(f"{night}/plan/champion_blend_tree.txt") == lake.fs.cat(
            f"{before}/evaluation/blend_tree.txt"
        )
        choice = lake.read_json(f"{night}/evaluate/result.json")["blend_choice"]
        assert choice["validation_tree_source"].startswith(f"champion v{full.version}'s")
        assert choice["validation_tree_fit_until"] == first_tags["weighing_tree_fit_until"]
        assert first_tags["weighing_tree_fit_until"] < "2013-03-06"  # tonight's validation day
        assert version.tags["weighing_tree_sha256"] == first_tags["weighing_tree_sha256"]

        # A third night on a champion that was itself fine-tuned (its served model ships the
        # preprocessor under the name its plan staged): it is fine-tuned again. Promoted by
        # hand when the gate kept it, as `nightshift promote` would.
        if tuned.alias != "champion":
            promote_version(client, model_name, tuned.version, "test: a fine-tuned champion")
        land_days(lake, flights, date(2013, 3, 9), date(2013, 3, 9))
        third = nightly_retrain(as_of=date(2013, 3, 9), params=params, return_state=True)
        assert third.is_completed(), third.message
        again = third.result()
        assert again.training_mode == "fine-tune", again.training_reason
        assert f"champion v{tuned.version}" in again.training_reason
        third_night = lake.run_dir("flights", date(2013, 3, 9))
        third_choice = lake.read_json(f"{third_night}/evaluate/result.json")["blend_choice"]
        assert third_choice["validation_tree_source"].startswith(f"champion v{tuned.version}'s")
        assert third_choice["validation_tree_fit_until"] == first_tags["weighing_tree_fit_until"]
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


def version_tag(client: MlflowClient, name: str, version: str, tag: str) -> str:
    return client.get_model_version(name, version).tags[tag]
