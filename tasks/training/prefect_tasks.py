"""The tune and train stages as Prefect tasks (the only module of this package importing Prefect).

Both are called in the flow process, which dispatches their work to the Dask workers: a
task that itself occupied a worker would hold a slot the trials or the ranks need.
"""

from __future__ import annotations

from prefect import get_run_logger, task

from tasks.core.context import RunContext
from tasks.core.settings import task_timeout
from tasks.features.build import FeatureSet
from tasks.training.config import TrainConfig, TuneConfig
from tasks.training.ddp import train
from tasks.training.loop import TrainResult
from tasks.training.tune import TuneResult, tune


@task(name="tune-hyperparameters", timeout_seconds=task_timeout("tune-hyperparameters"))
def tune_hyperparameters_task(
    ctx: RunContext, features: FeatureSet, base: TrainConfig, config: TuneConfig
) -> TuneResult:
    """Optuna trials on the Dask workers, each a nested MLflow run; the best config."""
    return tune(ctx, features, base, config, get_run_logger())


@task(
    name="train-network-ddp",
    timeout_seconds=task_timeout("train-network-ddp"),
    retries=1,
    retry_delay_seconds=5,
)
def train_network_task(
    ctx: RunContext, features: FeatureSet, tuned: TuneResult, world_size: int | None = None
) -> TrainResult:
    """Torch DDP, one rank per Dask worker; a retry resumes from the last checkpoint."""
    return train(ctx, features, tuned, world_size, get_run_logger())
