"""The evaluate stage as a Prefect task (the only module of this package importing Prefect)."""

from __future__ import annotations

from prefect import get_run_logger, task

from tasks.core.context import RunContext
from tasks.core.settings import task_timeout
from tasks.evaluation.blend import ReusedTree
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

    On a fine-tune night the blend is weighed with the champion's tree (the plan staged
    it, checked): one tree fit, the baseline's, instead of two."""
    staged = plan.init_weighing_tree if plan is not None and plan.fine_tune else None
    reuse = ReusedTree(*staged) if staged else None
    return evaluate(ctx, features, trained, slice_min_rows, get_run_logger(), reuse)
