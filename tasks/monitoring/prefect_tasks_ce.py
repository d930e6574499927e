"""Continuous evaluation as a Prefect task: the decay chart artifact and the decay event.

(A thin module like `prefect_tasks.py`; the drift stage's tasks live there.)
"""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from tasks.core.context import RunContext
from tasks.core.settings import get_settings, task_timeout
from tasks.ingest.plan import IngestSummary
from tasks.monitoring.continuous import (
    ContinuousEvaluation,
    decay_markdown,
    evaluate_champion,
    read_history,
)
from tasks.monitoring.events import emit_model_decayed


@task(name="evaluate-champion", timeout_seconds=task_timeout("evaluate-champion"))
def evaluate_champion_task(ctx: RunContext, ingested: IngestSummary) -> ContinuousEvaluation:
    """Score @champion on the days labelled since its as_of; chart it; emit on decay."""
    settings = get_settings()
    log = get_run_logger()
    result = evaluate_champion(
        ctx,
        ingested,
        floor_auc=settings.decay_floor_auc,
        max_auc_drop=settings.decay_max_auc_drop,
        max_days=settings.decay_max_days,
        log=log,
    )
    point = result.point
    if point is None:
        return result
    create_markdown_artifact(
        key=f"decay-{ctx.dataset}",
        markdown=f"## Champion decay — {ctx.dataset}\n\n"
        f"`{ctx.model_name}@champion` scored each night on the days labelled since its "
        f"as_of (MLflow run `decay-{ctx.model_name}`, metrics `decay/champion_*`).\n\n"
        + decay_markdown(read_history(ctx.lake, ctx.dataset)),
        description=f"{ctx.dataset} as_of {ctx.as_of}: champion v{point.champion_version} — "
        f"{point.reason}",
    )
    if point.breached:
        emit_model_decayed(point)
        log.warning("evaluate-champion: emitted nightshift.model.decayed: %s", point.reason)
    return result
