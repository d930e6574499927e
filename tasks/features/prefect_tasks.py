"""The features stage as a Prefect task (the only module of this package importing Prefect)."""

from __future__ import annotations

from prefect import get_run_logger, task

from tasks.core.context import RunContext
from tasks.core.settings import task_timeout
from tasks.features.build import FeatureSet, build_features
from tasks.ingest.plan import IngestSummary


@task(name="build-features", timeout_seconds=task_timeout("build-features"))
def build_features_task(ctx: RunContext, ingested: IngestSummary, holdout_days: int) -> FeatureSet:
    """Time split + preprocessing fitted on the training window."""
    features = build_features(ctx, ingested, holdout_days)
    get_run_logger().info(
        "features: train %s..%s (%d rows, %.1f%% positive), holdout %s..%s (%d rows, "
        "%.1f%% positive); %d rows have no label",
        *features.train_days,
        features.train_rows,
        100 * features.positive_rate_train,
        *features.holdout_days,
        features.holdout_rows,
        100 * features.positive_rate_holdout,
        features.unlabelled_rows,
    )
    return features
