"""The backtest's publishing step as a Prefect task (the only module here importing Prefect)."""

from __future__ import annotations

import tempfile

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from tasks.backtest.report import BacktestReport, FoldResult, log_to_mlflow
from tasks.core.context import RunContext
from tasks.core.settings import task_timeout
from tasks.evaluation.baseline import BASELINE_NAME


@task(name="publish-backtest", timeout_seconds=task_timeout("publish-backtest"))
def publish_backtest(
    ctx: RunContext, name: str, every: str, folds: list[FoldResult]
) -> BacktestReport:
    """The table and plot: in the lake, as a MLflow run, and as Prefect artifacts."""
    report = BacktestReport(name, ctx.dataset, every, folds, BASELINE_NAME)
    local = ctx.lake.is_local
    report.save(
        ctx.lake.path("backtests", name, "report")
        if local
        else tempfile.mkdtemp(prefix="nightshift-backtest-")
    )
    log_to_mlflow(report, ctx.tracking_uri, str(ctx.experiment_id))
    key = f"backtest-{ctx.dataset}"
    create_markdown_artifact(key=key, markdown=report.markdown(), description=name)
    create_table_artifact(
        key=f"{key}-folds",
        table=[
            {**vars(f), "served_minus_baseline": round(f.served_minus_baseline, 5)}
            for f in report.folds
        ],
        description=f"{name}: one row per fold",
    )
    get_run_logger().info(
        "backtest %s: served >= baseline in %d of %d fold(s); table %s/report.md, MLflow run %s",
        name,
        report.wins,
        len(report.folds),
        report.report_dir,
        report.mlflow_run_id,
    )
    return report
