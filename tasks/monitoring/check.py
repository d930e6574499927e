"""The drift stage: the training window against the newest days, recorded where people look.

Reads the features stage's two sides (training window = reference, holdout = the newest
days up to `as_of`), compares them with the limits of the fact table's data contract
(`tasks.monitoring.drift`), writes the report as the stage result (so `nightshift
register` run alone finds it) and logs it to MLflow as one run, `drift-<as_of>`, that the
release nests under the night's run. Runs before training: a drift that holds promotion
is known before the expensive stages, and is on record even if they fail.
"""

from __future__ import annotations

import logging
from datetime import date

from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME, MLFLOW_RUN_NOTE

from data_contracts import load_contract
from tasks.core.context import RunContext
from tasks.core.results import read_result, result_path, write_result
from tasks.core.tracking import with_experiment
from tasks.features.build import FeatureSet
from tasks.monitoring.drift import (
    DriftReport,
    check_overrides,
    compare_windows,
    drift_metrics,
    report_markdown,
)

EPOCH_DAY = date(1970, 1, 1)
logger = logging.getLogger("nightshift.drift")


def check_drift(ctx: RunContext, features: FeatureSet) -> DriftReport:
    """Compare the run's holdout days with its training window; log it to MLflow, record it.

    A breach is not an error here: what it does (`warn` or `hold`) is the gate's business.
    """
    spec = ctx.spec
    contract = load_contract(spec.fact.name)
    if contract.drift is not None:
        check_overrides(spec, contract.drift, f"data_contracts/{spec.fact.name}.yaml")
    columns = [*spec.input_columns, "label"]
    reference = ctx.lake.read_parquet(features.train_path, columns=columns)
    current = ctx.lake.read_parquet(features.holdout_path, columns=columns)
    report = compare_windows(spec, reference, current, contract.drift, contract=contract.tag)
    report.mlflow_run_id = log_drift_run(with_experiment(ctx), report)
    return write_result(ctx, "drift", report)


def log_drift_run(ctx: RunContext, report: DriftReport) -> str:
    """Log the report as the MLflow run `drift-<as_of>` (metrics in one batch); its id.

    Step = days since 1970-01-01 and timestamp = as_of, as the release's `nightly/*`
    metrics, so the experiment's charts draw one point per night.
    """
    client = MlflowClient(ctx.tracking_uri)
    run = client.create_run(
        str(ctx.experiment_id),
        tags={
            MLFLOW_RUN_NAME: f"drift-{ctx.as_of}",
            MLFLOW_RUN_NOTE: report_markdown(report),
            "as_of": str(ctx.as_of),
            "dataset": ctx.dataset,
            "drift_status": report.status,
            "prefect_flow_run_id": str(ctx.flow_run_id or "none"),
        },
    )
    day = (ctx.as_of - EPOCH_DAY).days
    client.log_batch(
        run.info.run_id,
        metrics=[
            Metric(name, float(value), day * 86_400_000, day)
            for name, value in drift_metrics(report).items()
        ],
        tags=[RunTag("drift_breaches", "; ".join(report.breaches)[:5000] or "none")],
    )
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def recorded_drift(ctx: RunContext, features: FeatureSet) -> DriftReport | None:
    """The drift report recorded for this run's split, or None when the check did not run
    for it (never run, or run before the features were rebuilt with other windows)."""
    if not ctx.lake.exists(result_path(ctx, "drift")):
        return None
    report = read_result(ctx, "drift", DriftReport)
    if report.status != "unchecked" and (
        report.reference_days != tuple(features.train_days)
        or report.current_days != tuple(features.holdout_days)
    ):
        logger.warning(
            "drift: the recorded report compares %s..%s with %s..%s, not this run's split; "
            "ignored (run `nightshift drift --as-of %s` again)",
            *report.current_days,
            *report.reference_days,
            ctx.as_of,
        )
        return None
    return report
