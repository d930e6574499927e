"""The drift check as a Prefect task (the only module of this package importing Prefect)."""

from __future__ import annotations

from uuid import UUID

from prefect import get_run_logger, task
from prefect.runtime import flow_run

from tasks.core.context import RunContext
from tasks.core.settings import task_timeout
from tasks.features.build import FeatureSet
from tasks.monitoring.check import check_drift
from tasks.monitoring.drift import DriftReport, report_markdown
from tasks.monitoring.events import emit_drift_breach
from tasks.reporting.prefect_tasks import attach_artifact

DRIFT_ARTIFACT = "drift-report"


@task(name="check-drift", timeout_seconds=task_timeout("check-drift"))
def check_drift_task(ctx: RunContext, features: FeatureSet) -> DriftReport:
    """Newest days vs the training window, per feature and label rate: the `drift-report`
    artifact on the flow run, the MLflow run `drift-<as_of>`, and the report for the gate.

    A breach only warns here; with `on_breach: hold` the promotion gate refuses the model.
    A breach also emits `nightshift.data.drifted` (the backfill deployment's retraining
    trigger listens for it; the night that raised it is not retrained twice).
    """
    report = check_drift(ctx, features)
    run = ctx.flow_run_id or flow_run.id
    attach_artifact(
        UUID(str(run)) if run else None,
        DRIFT_ARTIFACT,
        "markdown",
        report_markdown(report),
        f"drift {ctx.dataset} as_of {ctx.as_of}: {report.status}",
    )
    log = get_run_logger()
    if report.breaches:
        log.warning("%s (on_breach: %s)", report.summary(), report.on_breach)
        emit_drift_breach(
            ctx.dataset,
            ctx.as_of.isoformat(),
            {
                "breaches": list(report.breaches),
                "status": report.status,
                "on_breach": report.on_breach,
                "current_days": list(report.current_days),
            },
        )
    else:
        log.info(report.summary())
    return report
