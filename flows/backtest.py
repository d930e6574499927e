"""The backtest flow: retrain at each cut-off and score the period that follows.

Rolling origin, the time-correct form of cross-validation: for each month (or week) of
the range, the fold runs the nightly stages with `as_of` = the period's last day and the
period as the holdout, so it trains on every day before the period. The folds write under
`backtests/<name>/` with a study and an MLflow experiment of their own: a backtest never
touches the nightly runs, the nightly tuning study or the model registry.
"""

from __future__ import annotations

import time
from datetime import date

from prefect import flow
from pydantic import Field

from flows.params import NightlyParams
from flows.runtime import dask_task_runner, open_run
from tasks.backtest.plan import Every, backtest_context, fold_context, plan_folds
from tasks.backtest.prefect_tasks import publish_backtest
from tasks.backtest.report import BacktestReport, fold_result
from tasks.core.settings import get_settings
from tasks.core.tracking import with_experiment
from tasks.evaluation.prefect_tasks import evaluate_on_holdout
from tasks.features.prefect_tasks import build_features_task
from tasks.ingest.prefect_tasks import ingest_landed_days
from tasks.quality.prefect_tasks import validate_contract
from tasks.release.prefect_tasks import compress_network_task
from tasks.training.prefect_tasks import train_network_task, tune_hyperparameters_task


@flow(
    name="backtest",
    flow_run_name="backtest-{start}..{end}-{every}",
    task_runner=dask_task_runner(get_settings()),
    log_prints=True,
)
def backtest(
    start: date = Field(description="First day scored (its period's first fold)."),
    end: date = Field(description="Last day scored (included)."),
    every: Every = Field(default="month", description="Fold length: month or week."),
    params: NightlyParams = Field(
        default=NightlyParams(), description="The nightly parameters each fold runs with."
    ),
) -> BacktestReport:
    """Retrain at every cut-off of [start, end] and score the following period."""
    night = open_run(end, params.dataset)
    name = f"{night.dataset}-{start}..{end}-{every}"
    folds = plan_folds(start, end, every)
    ctx = with_experiment(backtest_context(night, name))

    # Ingest and validate once, through the last scored day (the lake's clean/ is shared;
    # the stage results go under backtests/<name>/)
    ingested = ingest_landed_days(ctx, params.first_day, params.engine)
    for table in ctx.spec.tables:
        validate_contract(ctx, table, ingested)

    # One fold per period: the nightly stages up to what the release would serve
    results = []
    for fold in folds:
        started = time.perf_counter()
        fctx = fold_context(night, fold, name).with_(experiment_id=ctx.experiment_id)
        features = build_features_task(fctx, ingested, fold.holdout_days)
        tuned = tune_hyperparameters_task(fctx, features, params.train, params.tune)
        trained = train_network_task(fctx, features, tuned, params.world_size)
        evaluation = evaluate_on_holdout(fctx, features, trained, params.release.slice_min_rows)
        compression = compress_network_task(
            fctx, features, trained, params.release.compression, evaluation
        )
        results.append(
            fold_result(fold, features, evaluation, compression, time.perf_counter() - started)
        )

    # Report: the table and plot in the lake, MLflow and the Prefect UI
    return publish_backtest(ctx, name, every, results)
