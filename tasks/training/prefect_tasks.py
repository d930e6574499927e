"""The plan, tune and train stages as Prefect tasks (the only module of this package importing
Prefect).

Tune and train are called in the flow process, which dispatches their work to the Dask
workers: a task that itself occupied a worker would hold a slot the trials or the ranks need.
"""

from __future__ import annotations

from prefect import get_run_logger, task

from tasks.core.context import RunContext
from tasks.core.settings import get_settings, task_timeout
from tasks.features.build import FeatureSet
from tasks.release.config import CompressionConfig
from tasks.training.config import TrainConfig, TuneConfig
from tasks.training.ddp import train
from tasks.training.incremental import TrainingPlan, plan_training
from tasks.training.loop import TrainResult
from tasks.training.tune import TuneResult, tune


@task(name="plan-training", timeout_seconds=task_timeout("plan-training"))
def plan_training_task(
    ctx: RunContext, features: FeatureSet, compression: CompressionConfig | None = None
) -> TrainingPlan:
    """Fine-tune the @champion or retrain in full (NIGHTSHIFT_FULL_RETRAIN_EVERY_DAYS); the
    champion's student is staged only when `compression` starts tonight's from it."""
    settings = get_settings()
    return plan_training(
        ctx,
        features,
        settings.full_retrain_every_days,
        settings.fine_tune_epochs,
        get_run_logger(),
        warm_student=compression is not None and compression.distill_fine_tune_epochs > 0,
        replay_fraction=settings.fine_tune_replay_fraction,
    )


@task(name="tune-hyperparameters", timeout_seconds=task_timeout("tune-hyperparameters"))
def tune_hyperparameters_task(
    ctx: RunContext,
    features: FeatureSet,
    base: TrainConfig,
    config: TuneConfig,
    plan: TrainingPlan | None = None,
) -> TuneResult:
    """Optuna trials on the Dask workers, each a nested MLflow run; the best config.

    Skipped on a fine-tune night: the champion's config is the config.
    """
    return tune(ctx, features, base, config, get_run_logger(), plan)


@task(
    name="train-network-ddp",
    timeout_seconds=task_timeout("train-network-ddp"),
    retries=1,
    retry_delay_seconds=5,
)
def train_network_task(
    ctx: RunContext,
    features: FeatureSet,
    tuned: TuneResult,
    world_size: int | None = None,
    plan: TrainingPlan | None = None,
) -> TrainResult:
    """Torch DDP, one rank per Dask worker; a retry resumes from the last checkpoint.

    On a fine-tune night the ranks start from the champion's weights.
    """
    return train(ctx, features, tuned, world_size, get_run_logger(), plan)
