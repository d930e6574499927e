"""The run's Prefect artifacts and tags (the only module of this package importing Prefect).

The artifacts are attached to the flow run itself, not to the task that publishes them: the
Prefect UI then lists them under the flow run (a task-run artifact shows "Flow run: None"
on the Artifacts page). The flow run is tagged with what people filter by: `as_of:<date>`,
`dataset:<name>`, `version:<n>` and `alias:<champion|challenger>`.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING
from uuid import UUID

from prefect import task
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import ArtifactCreate

from tasks.core.context import RunContext
from tasks.core.settings import task_timeout
from tasks.release.config import ReleaseConfig
from tasks.reporting.links import run_links_markdown

if TYPE_CHECKING:  # the stages' results: importing them here would load torch and sklearn
    # on the path of every run's start (`open_run` tags the flow run from this module)
    from tasks.evaluation.evaluate import Evaluation
    from tasks.features.build import FeatureSet
    from tasks.ingest.plan import IngestSummary
    from tasks.quality.validate import ValidationReport
    from tasks.release.compress import Compression
    from tasks.release.register import Registration
    from tasks.reporting.summary import RunSummary
    from tasks.training.config import TrainConfig
    from tasks.training.incremental import TrainingPlan
    from tasks.training.tune import TuneResult


def _cell(value):
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 5)
    return value


def _current_flow_run_id(ctx: RunContext | None = None) -> UUID | None:
    from prefect.runtime import flow_run

    found = (ctx.flow_run_id if ctx else None) or flow_run.id
    return UUID(str(found)) if found else None


def attach_artifact(flow_run_id: UUID | None, key: str, kind: str, data, description: str):
    """Create an artifact on the flow run (no task run), the way the UI lists run artifacts."""
    if kind == "table":
        data = json.dumps([{k: _cell(v) for k, v in row.items()} for row in data])
    with get_client(sync_client=True) as client:
        return client.create_artifact(
            artifact=ArtifactCreate(
                key=key, type=kind, data=data, description=description, flow_run_id=flow_run_id
            )
        )


def tag_flow_run(flow_run_id: UUID | str | None, tags: list[str]) -> None:
    """Add tags to the flow run, replacing earlier values of the same `name:` prefix."""
    if flow_run_id is None:
        return
    flow_run_id = UUID(str(flow_run_id))
    with get_client(sync_client=True) as client:
        current = client.read_flow_run(flow_run_id).tags or []
        names = {t.split(":", 1)[0] + ":" for t in tags}
        kept = [t for t in current if not t.startswith(tuple(names))]
        client.update_flow_run(flow_run_id, tags=[*kept, *tags])


def _publish_tables(run: UUID | None, summary: RunSummary, compression, registration) -> None:
    rows = [
        {"scorer": "model", "roc_auc": summary.model_auc},
        {"scorer": "served model", "roc_auc": summary.served_auc},
        {"scorer": "baseline", "roc_auc": summary.baseline_auc},
    ]
    if summary.champion_auc is not None:
        rows.append({"scorer": "champion", "roc_auc": summary.champion_auc})
    attach_artifact(run, "holdout-metrics", "table", rows, "ROC AUC on the holdout")
    attach_artifact(
        run,
        "compression-variants",
        "table",
        compression.rows(),
        f"kept {compression.chosen} (smallest within AUC drop {compression.auc_drop_budget:g})",
    )
    if registration.gate:
        attach_artifact(
            run,
            "promotion-gate",
            "table",
            registration.gate,
            f"v{registration.version} -> @{registration.alias}",
        )
    if summary.slices:
        regressions = sum(s["regression"] for s in summary.slices)
        attach_artifact(
            run,
            "holdout-slices",
            "table",
            summary.slices,
            f"model AUC per slice, deltas vs baseline and champion; {regressions} regression(s) "
            f"(worse by more than {summary.slice_margin:g}), listed first",
        )
    if summary.trend:
        attach_artifact(
            run, "nightly-trend", "table", summary.trend, "the last nights, from the registry"
        )


@task(name="publish-summary", timeout_seconds=task_timeout("publish-summary"))
def publish_summary(
    ctx: RunContext,
    ingested: IngestSummary,
    reports: list[ValidationReport],
    features: FeatureSet,
    evaluation: Evaluation,
    compression: Compression,
    registration: Registration,
    tuned: TuneResult | None = None,
    inputs: TrainConfig | None = None,
    release: ReleaseConfig | None = None,
    plan: TrainingPlan | None = None,
) -> RunSummary:
    """Attach the run summary, the metric tables and the links to the flow run; tag it."""
    from tasks.reporting.summary import build_summary
    from tasks.reporting.trend import registry_trend

    summary = build_summary(
        ctx,
        ingested,
        reports,
        features,
        evaluation,
        compression,
        registration,
        tuned=tuned,
        inputs=inputs,
        trend=registry_trend(ctx.tracking_uri, registration.model_name),
        slice_margin=(release or ReleaseConfig()).slice_margin,
        plan=plan,
    )
    run = _current_flow_run_id(ctx)
    attach_artifact(
        run,
        "nightly-summary",
        "markdown",
        summary.markdown(),
        f"nightly-retrain {summary.dataset} as_of {summary.as_of}",
    )
    _publish_tables(run, summary, compression, registration)
    attach_artifact(
        run,
        "nightly-links",
        "markdown",
        run_links_markdown(
            as_of=summary.as_of,
            dataset=summary.dataset,
            tracking_uri=ctx.tracking_uri,
            experiment_id=registration.experiment_id,
            run_id=summary.mlflow_run_id,
            model_name=summary.model_name,
            version=summary.version,
            alias=summary.alias,
            alias_reason=summary.alias_reason,
            docs_index=summary.data_docs,
            compression=(
                f"{summary.served_variant}: {summary.size_ratio:.1f}x smaller, "
                f"{summary.speedup_batch1:.1f}x faster at batch 1 than fp32"
            ),
        ),
        "MLflow run and model version, Data Docs, promotion decision",
    )
    tag_flow_run(run, [f"version:{summary.version}", f"alias:{summary.alias}"])
    return summary


def publish_failure(flow, flow_run, state) -> None:
    """Flow `on_failure` hook: a `nightly-summary` that says the run failed, and why."""
    from tasks.reporting.summary import failed_markdown

    run_id = UUID(str(flow_run.id))
    attach_artifact(
        run_id,
        "nightly-summary",
        "markdown",
        failed_markdown(flow_run.name, state.message),
        f"{flow_run.name} failed",
    )
    tag_flow_run(run_id, ["alias:unchanged"])
