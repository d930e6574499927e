"""Report: what an operator reads after a run, published as Prefect artifacts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from tasks.links import run_links_markdown


@dataclass
class RunSummary:
    """The run in numbers: data, contract, model quality, registry outcome."""

    as_of: str
    days: int
    raw_rows: int
    clean_rows: int
    quarantined_rows: int
    duplicates_dropped: int
    weather_quarantined_rows: int
    contracts: list[str]
    train_rows: int
    holdout_rows: int
    holdout_days: tuple[str, str]
    model_auc: float
    baseline_auc: float
    champion_auc: float | None
    model_name: str
    version: str
    alias: str
    alias_reason: str
    mlflow_run_id: str
    tracking_uri: str
    data_docs: str | None
    served_variant: str | None = None
    served_auc: float | None = None
    size_ratio: float | None = None
    speedup_batch1: float | None = None
    gate: list[dict] | None = None

    def markdown(self) -> str:
        champion = f"{self.champion_auc:.4f}" if self.champion_auc is not None else "none yet"
        return "\n".join(
            [
                f"# nightly-retrain {self.as_of}",
                "",
                "| data | rows |",
                "|---|---:|",
                f"| raw (landed, {self.days} days) | {self.raw_rows:,} |",
                f"| clean | {self.clean_rows:,} |",
                f"| quarantined | {self.quarantined_rows:,} |",
                f"| duplicates dropped | {self.duplicates_dropped:,} |",
                f"| weather readings quarantined | {self.weather_quarantined_rows:,} |",
                "",
                f"Contracts: {', '.join(self.contracts)} — passed. Data Docs: `{self.data_docs}`",
                "",
                f"| holdout {self.holdout_days[0]}..{self.holdout_days[1]} ({self.holdout_rows:,} rows) "
                "| ROC AUC |",
                "|---|---:|",
                f"| new model | {self.model_auc:.4f} |",
                f"| baseline (HistGradientBoosting) | {self.baseline_auc:.4f} |",
                f"| current champion | {champion} |",
                "",
                *(
                    [
                        f"Served form: **{self.served_variant}** ONNX, holdout AUC "
                        f"{self.served_auc:.4f}, {self.size_ratio:.1f}x smaller and "
                        f"{self.speedup_batch1:.1f}x faster at batch 1 than the fp32 torch network.",
                        "",
                        "| promotion gate | result | detail |",
                        "|---|---|---|",
                        *(
                            f"| {c['name']} | {'pass' if c['passed'] else '**FAIL**'} | {c['detail']} |"
                            for c in self.gate or []
                        ),
                        "",
                    ]
                    if self.served_variant
                    else []
                ),
                f"Registered **{self.model_name} v{self.version}** as **@{self.alias}** ({self.alias_reason}).",
                f"MLflow run `{self.mlflow_run_id}` in `{self.tracking_uri}`.",
            ]
        )


def build_summary(
    as_of: date,
    ingested,
    reports,
    features,
    evaluation,
    registration,
    tracking_uri: str,
    compression=None,
) -> RunSummary:
    """Collect the run's numbers from the stages' results."""
    docs = next((r.docs_index for r in reports if r.docs_index), None)
    return RunSummary(
        as_of=str(as_of),
        days=len(ingested.days),
        raw_rows=ingested.raw_rows,
        clean_rows=ingested.clean_rows,
        quarantined_rows=ingested.quarantined_rows,
        duplicates_dropped=ingested.duplicates_dropped,
        weather_quarantined_rows=ingested.weather_quarantined_rows,
        contracts=[r.contract for r in reports],
        train_rows=features.train_rows,
        holdout_rows=features.holdout_rows,
        holdout_days=features.holdout_days,
        model_auc=evaluation.model["roc_auc"],
        baseline_auc=evaluation.baseline["roc_auc"],
        champion_auc=evaluation.champion["roc_auc"] if evaluation.champion else None,
        model_name=registration.model_name,
        version=registration.version,
        alias=registration.alias,
        alias_reason=registration.reason,
        mlflow_run_id=registration.run_id,
        tracking_uri=tracking_uri,
        data_docs=docs,
        served_variant=compression.chosen if compression else None,
        served_auc=compression.chosen_variant.roc_auc if compression else None,
        size_ratio=compression.size_ratio() if compression else None,
        speedup_batch1=compression.speedup_batch1() if compression else None,
        gate=registration.gate,
    )


@task(name="publish-summary")
def publish_summary(
    as_of: date,
    ingested,
    reports,
    features,
    evaluation,
    registration,
    tracking_uri: str,
    compression=None,
) -> RunSummary:
    """Attach the run summary and the metric table to the flow run as artifacts."""
    summary = build_summary(
        as_of, ingested, reports, features, evaluation, registration, tracking_uri, compression
    )
    create_markdown_artifact(
        key="nightly-summary",
        markdown=summary.markdown(),
        description=f"nightly-retrain as_of {summary.as_of}",
    )
    rows = [
        {"scorer": "model", "roc_auc": round(summary.model_auc, 5)},
        {"scorer": "baseline", "roc_auc": round(summary.baseline_auc, 5)},
    ]
    if summary.champion_auc is not None:
        rows.append({"scorer": "champion", "roc_auc": round(summary.champion_auc, 5)})
    create_table_artifact(key="holdout-metrics", table=rows, description="ROC AUC on the holdout")
    if compression is not None:
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
            table=[
                {k: (round(v, 5) if isinstance(v, float) else v) for k, v in row.items()}
                for row in evaluation.slices
            ],
            description=f"slices with >= {evaluation.slice_min_rows} holdout rows",
        )
    create_markdown_artifact(
        key="nightly-links",
        markdown=run_links_markdown(
            as_of=summary.as_of,
            tracking_uri=tracking_uri,
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
                if summary.served_variant
                else None
            ),
        ),
        description="MLflow run and model version, Data Docs, promotion decision",
    )
    return summary
