"""The evaluate stage as a Prefect task (the only module of this package importing Prefect)."""

from __future__ import annotations

from prefect import get_run_logger, task

from tasks.core.context import RunContext
from tasks.core.settings import task_timeout
from tasks.evaluation.evaluate import Evaluation, evaluate
from tasks.features.build import FeatureSet
from tasks.training.loop import TrainResult


@task(name="evaluate-on-holdout", timeout_seconds=task_timeout("evaluate-on-holdout"))
def evaluate_on_holdout(
    ctx: RunContext, features: FeatureSet, trained: TrainResult, slice_min_rows: int = 300
) -> Evaluation:
    """Model vs gradient-boosting baseline vs current champion, same holdout rows."""
    return evaluate(ctx, features, trained, slice_min_rows, get_run_logger())
