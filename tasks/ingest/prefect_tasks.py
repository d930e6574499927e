"""The ingest stage as a Prefect task (the only module of this package that imports Prefect)."""

from __future__ import annotations

from datetime import date

from prefect import get_run_logger, task

from tasks.core.context import RunContext
from tasks.core.settings import task_timeout
from tasks.ingest.plan import Engine, IngestSummary
from tasks.ingest.stage import ingest


@task(
    name="ingest-landed-days",
    timeout_seconds=task_timeout("ingest-landed-days"),
    retries=1,
    retry_delay_seconds=5,
)
def ingest_landed_days(
    ctx: RunContext, first_day: date | None = None, engine: Engine = "dask"
) -> IngestSummary:
    """Landing → clean/ + quarantine/ for every changed day, on the flow's Dask cluster or Spark."""
    return ingest(ctx, first_day, engine, get_run_logger())
