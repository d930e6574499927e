"""The evaluate stage as a Prefect task (the only module of this package importing Prefect)."""

from __future__ import annotations

from prefect import get_run_logger, task

from tasks.core.context import RunContext
from tasks.core.settings import task_timeout
from tasks.evaluation.evaluate import Evaluation, evaluate
from tasks.features.build import FeatureSet
from tasks.training.incremental import TrainingPlan
from tasks.training.loop import TrainResult


@task(name="evaluate-on-holdout", timeout_seconds=task_timeout("evaluate-on-holdout"))
def evaluate_on_holdout(
    ctx: RunContext,
    features: FeatureSet,
    trained: TrainResult,
    slice_min_rows: int = 300,
    plan: TrainingPlan | None = None,
) -> Evaluation:
    """Model vs gradient-boosting baseline vs current champion, same holdout rows.

    On a fine-tune night a winning blend keeps its fitting-days tree (no refit).
    """
    fine_tune = plan is not None and plan.fine_tune
    return evaluate(
        ctx, features, trained, slice_min_rows, get_run_logger(), refit_tree=not fine_tune
    )
