"""The validate stage as a Prefect task (the only module of this package importing Prefect)."""

from __future__ import annotations

from prefect import get_run_logger, task

from tasks.core.context import RunContext
from tasks.core.settings import task_timeout
from tasks.ingest.plan import IngestSummary
from tasks.quality.validate import ValidationReport, validate


@task(
    name="validate-contract",
    timeout_seconds=task_timeout("validate-contract"),
    task_run_name="validate-{table}",
)
def validate_contract(ctx: RunContext, table: str, ingested: IngestSummary) -> ValidationReport:
    """GX validation of one table's clean batch; fails the run naming rule and partitions."""
    report = validate(ctx, table, ingested.day_dates)
    get_run_logger().info(
        "validate: %s passed %d expectations on %d rows (contract %s); Data Docs: %s",
        table,
        report.expectations,
        report.rows,
        report.contract,
        report.docs_index,
    )
    return report
