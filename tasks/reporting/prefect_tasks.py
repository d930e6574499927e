"""The run's Prefect artifacts (the only module of this package importing Prefect)."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from tasks.core.context import RunContext
from tasks.evaluation.evaluate import Evaluation
from tasks.features.build import FeatureSet
from tasks.ingest.plan import IngestSummary
from tasks.quality.validate import ValidationReport
from tasks.release.compress import Compression
from tasks.release.register import Registration
from tasks.reporting.links import run_links_markdown
from tasks.reporting.summary import RunSummary, build_summary


def _rounded(rows: list[dict]) -> list[dict]:
    return [{k: (round(v, 5) if isinstance(v, float) else v) for k, v in r.items()} for r in rows]


@task(name="publish-summary")
def publish_summary(
    ctx: RunContext,
    ingested: IngestSummary,
    reports: list[ValidationReport],
    features: FeatureSet,
    evaluation: Evaluation,
    compression: Compression,
    registration: Registration,
) -> RunSummary:
    """Attach the run summary, the metric tables and the links to the flow run."""
    summary = build_summary(ctx, ingested, reports, features, evaluation, compression, registration)
    create_markdown_artifact(
        key="nightly-summary",
        markdown=summary.markdown(),
        description=f"nightly-retrain {summary.dataset} as_of {summary.as_of}",
    )
    rows = [
        {"scorer": "model", "roc_auc": round(summary.model_auc, 5)},
        {"scorer": "baseline", "roc_auc": round(summary.baseline_auc, 5)},
    ]
    if summary.champion_auc is not None:
        rows.append({"scorer": "champion", "roc_auc": round(summary.champion_auc, 5)})
    create_table_artifact(key="holdout-metrics", table=rows, description="ROC AUC on the holdout")
    create_table_artifact(
        key="compression-variants",
        table=compression.rows(),
        description=f"kept {compression.chosen} (smallest within AUC drop "
        f"{compression.auc_drop_budget:g})",
    )
    if registration.gate:
        create_table_artifact(
            key="promotion-gate",
            table=registration.gate,
            description=f"v{registration.version} -> @{registration.alias}",
        )
    if evaluation.slices:
        create_table_artifact(
            key="holdout-slices",
            table=_rounded(evaluation.slices),
            description=f"slices with >= {evaluation.slice_min_rows} holdout rows",
        )
    create_markdown_artifact(
        key="nightly-links",
        markdown=run_links_markdown(
            as_of=summary.as_of,
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
        description="MLflow run and model version, Data Docs, promotion decision",
    )
    return summary
