"""Code tests of how a run looks in MLflow: metric names, the nightly trend, tags, datasets."""

from __future__ import annotations

from datetime import date
from types import SimpleNamespace

from mlflow.tracking import MlflowClient

from tasks.core.tracking import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, configure_mlflow
from tasks.release.register import dataset_names, headline_metrics, run_metrics, run_tags

SCORES = {"roc_auc": 0.70, "brier": 0.16, "pr_auc": 0.4, "true_positives": 10, "rows": 100}


def _stages():
    evaluation = SimpleNamespace(
        model=dict(SCORES),
        baseline=dict(SCORES, roc_auc=0.71),
        champion=None,
        blend=None,
        blend_choice=None,
    )
    variant = SimpleNamespace(
        roc_auc=0.699,
        auc_drop=0.001,
        size_bytes=1000,
        latency_ms_batch1=0.1,
        latency_ms_batch1024=2.0,
    )
    compression = SimpleNamespace(
        chosen_variant=variant,
        size_ratio=lambda: 4.0,
        speedup_batch1=lambda: 3.0,
        served_auc=0.699,
        served_latency_ms=0.1,
    )
    trained = SimpleNamespace(
        validation_auc=0.7,
        seconds=5.0,
        samples_per_second=1e4,
        history=[{"epoch": 1, "train_loss": 0.5, "val_auc": 0.69}],
    )
    return evaluation, compression, trained


def test_model_and_baseline_share_a_section_and_one_point_per_night_draws_a_trend():
    evaluation, compression, trained = _stages()
    metrics = {m.key: m for m in run_metrics(evaluation, compression, trained, date(2013, 2, 28))}
    assert {"brier/model", "brier/baseline", "pr_auc/model", "pr_auc/baseline"} <= set(metrics)
    assert not any(k.startswith(("baseline_", "holdout_")) for k in metrics)  # no 1-bar zoo
    assert "true_positives/model" not in metrics  # counts live in the holdout_metrics table
    night = metrics["nightly/served_roc_auc"]
    assert night.step == (date(2013, 2, 28) - date(1970, 1, 1)).days == 15764
    assert night.timestamp == 15764 * 86_400_000 and night.value == 0.699
    assert metrics["training/val_auc"].step == 1
    assert headline_metrics(evaluation, compression) == {
        "holdout_roc_auc": 0.70,
        "served_roc_auc": 0.699,
        "baseline_roc_auc": 0.71,
    }


def test_datasets_are_named_after_their_own_window():
    features = SimpleNamespace(
        train_days=("2013-01-01", "2013-11-30"), holdout_days=("2013-12-01", "2013-12-31")
    )
    assert dataset_names("flights", features) == {
        "training": "flights-training-2013-01-01..2013-11-30",
        "holdout": "flights-holdout-2013-12-01..2013-12-31",
    }


def test_run_tags_carry_the_source_commit_and_the_tune_run():
    ctx = SimpleNamespace(as_of=date(2013, 2, 28))
    tags = run_tags(ctx, {"git_commit": "abc123-dirty"}, SimpleNamespace(parent_run_id="t1"))
    assert tags["mlflow.source.git.commit"] == "abc123" and tags["tune_run_id"] == "t1"
    assert tags["as_of"] == "2013-02-28"
    untuned = run_tags(ctx, {"git_commit": "unknown"}, SimpleNamespace(parent_run_id=None))
    assert "mlflow.source.git.commit" not in untuned and "tune_run_id" not in untuned


def test_the_experiment_is_a_model_training_experiment(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment_id = configure_mlflow(uri, "nightshift", (tmp_path / "a").as_uri())
    tags = MlflowClient(uri).get_experiment(experiment_id).tags
    assert tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND == "custom_model_development"
