"""The evaluate stage as Prefect tasks (the only module of this package importing Prefect)."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.core.context import RunContext
from tasks.core.settings import task_timeout
from tasks.evaluation.blend import ReusedTree
from tasks.evaluation.evaluate import Evaluation, evaluate
from tasks.evaluation.trees import PendingTrees, TreeFits, fit_night_trees
from tasks.features.build import FeatureSet
from tasks.training.config import TrainConfig
from tasks.training.incremental import TrainingPlan
from tasks.training.loop import TrainResult


def _champion_tree(plan: TrainingPlan | None) -> ReusedTree | None:
    """On a fine-tune night, the champion's weighing tree the plan staged (checked)."""
    staged = plan.init_weighing_tree if plan is not None and plan.fine_tune else None
    return ReusedTree(*staged) if staged else None


@task(name="fit-trees", timeout_seconds=task_timeout("fit-trees"))
def fit_trees_task(
    ctx: RunContext, features: FeatureSet, base: TrainConfig, plan: TrainingPlan | None
) -> TreeFits:
    """The baseline and the blend's weighing tree, fitted while the network trains (in a
    thread of the flow at the lowest CPU priority: `tasks.evaluation.trees`), on the
    validation days training will split off: the champion's config's on a fine-tune
    night, else `base`'s (the search does not tune them)."""
    config = plan.config if plan is not None and plan.fine_tune and plan.config else base
    fits = fit_night_trees(
        ctx.spec,
        features,
        config.validation_days,
        ctx.run_dir("evaluation"),
        ctx.seed,
        _champion_tree(plan),
    )
    get_run_logger().info(
        "fit-trees: baseline and weighing tree ready (%s)",
        fits.weighing.source if fits.weighing else "no usable validation days",
    )
    return fits


# no cache key: nothing caches an evaluation, and `trees` may hold a future (unhashable)
@task(
    name="evaluate-on-holdout",
    timeout_seconds=task_timeout("evaluate-on-holdout"),
    cache_policy=NO_CACHE,
)
def evaluate_on_holdout(
    ctx: RunContext,
    features: FeatureSet,
    trained: TrainResult,
    slice_min_rows: int = 300,
    plan: TrainingPlan | None = None,
    trees: TreeFits | PendingTrees | None = None,
) -> Evaluation:
    """Model vs gradient-boosting baseline vs current champion, same holdout rows.

    `trees`: the night's trees, fitted while the network trains (none fitted here; a
    `PendingTrees` is waited for after the network and the champion are scored). Without
    them, on a fine-tune night the blend is weighed with the champion's tree (the plan
    staged it, checked): one tree fit, the baseline's, instead of two."""
    return evaluate(
        ctx, features, trained, slice_min_rows, get_run_logger(), _champion_tree(plan), trees
    )
