"""The backfill's plan and report as Prefect tasks (the only module of this package importing
Prefect)."""

from __future__ import annotations

from datetime import date

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact

from tasks.core.settings import task_timeout
from tasks.ops.backfill import BackfillResult, failed_nights, plan_backfill


@task(name="plan-backfill", timeout_seconds=task_timeout("plan-backfill"))
def plan_backfill_task(
    start: date, end: date, tracking_uri: str, model_name: str, rerun_done: bool = False
) -> list[date]:
    """The dates of [start, end] without a registered version (all of them if `rerun_done`)."""
    return plan_backfill(start, end, tracking_uri, model_name, rerun_done, get_run_logger())


@task(name="publish-backfill", timeout_seconds=task_timeout("publish-backfill"))
def publish_backfill(start: date, end: date, results: list[BackfillResult]) -> list[BackfillResult]:
    """Attach the per-night table; fail (naming the nights) when any night failed."""
    create_table_artifact(
        key="backfill-nights",
        table=[r.__dict__ for r in results] or [{"as_of": "-", "state": "nothing to run"}],
        description=f"backfill {start}..{end}",
    )
    failed_nights(start, end, results)
    return results
