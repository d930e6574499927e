"""The run summary: what an operator reads after a run (published by `prefect_tasks`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tasks.core.context import RunContext

if TYPE_CHECKING:  # results of the stages; importing them here would load torch
    from tasks.evaluation.evaluate import Evaluation
    from tasks.features.build import FeatureSet
    from tasks.ingest.plan import IngestSummary
    from tasks.quality.validate import ValidationReport
    from tasks.release.compress import Compression
    from tasks.release.register import Registration


def md_code(text: str) -> str:
    """Text shown as code in Markdown: ids like `flights/clean@1.0.0` never become links."""
    return f"`{text}`"


def md_cell(text: object) -> str:
    """A Markdown table cell: a `|` inside would end the cell."""
    return str(text).replace("|", "\\|")


@dataclass
class RunSummary:
    """The run in numbers: data, contract, model quality, registry outcome."""

    dataset: str
    as_of: str
    days: int
    raw_rows: int
    clean_rows: int
    quarantined_rows: int
    duplicates_dropped: int
    side_quarantined_rows: dict[str, int]
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
    gate: list[dict] = field(default_factory=list)

    def markdown(self) -> str:
        champion = f"{self.champion_auc:.4f}" if self.champion_auc is not None else "none yet"
        return "\n".join(
            [
                f"# nightly-retrain {self.as_of} ({self.dataset})",
                "",
                "| data | rows |",
                "|---|---:|",
                f"| raw (landed, {self.days} days) | {self.raw_rows:,} |",
                f"| clean | {self.clean_rows:,} |",
                f"| quarantined | {self.quarantined_rows:,} |",
                f"| duplicates dropped | {self.duplicates_dropped:,} |",
                *(
                    f"| {name} rows quarantined | {rows:,} |"
                    for name, rows in self.side_quarantined_rows.items()
                ),
                "",
                f"Contracts: {', '.join(md_code(c) for c in self.contracts)} — passed. "
                f"Data Docs: `{self.data_docs}`",
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
                            f"| {c['name']} | {'pass' if c['passed'] else '**FAIL**'} | {md_cell(c['detail'])} |"
                            for c in self.gate or []
                        ),
                        "",
                    ]
                    if self.served_variant
                    else []
                ),
                f"Registered **{self.model_name} v{self.version}** as **@{self.alias}** "
                f"({md_cell(self.alias_reason)}).",
                f"MLflow run `{self.mlflow_run_id}` in `{self.tracking_uri}`.",
            ]
        )


def build_summary(
    ctx: RunContext,
    ingested: IngestSummary,
    reports: list[ValidationReport],
    features: FeatureSet,
    evaluation: Evaluation,
    compression: Compression | None,
    registration: Registration,
) -> RunSummary:
    """Collect the run's numbers from the stages' results."""
    docs = next((r.docs_index for r in reports if r.docs_index), None)
    return RunSummary(
        dataset=ctx.dataset,
        as_of=str(ctx.as_of),
        days=len(ingested.days),
        raw_rows=ingested.raw_rows,
        clean_rows=ingested.clean_rows,
        quarantined_rows=ingested.quarantined_rows,
        duplicates_dropped=ingested.duplicates_dropped,
        side_quarantined_rows=dict(ingested.side_quarantined_rows),
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
        tracking_uri=ctx.tracking_uri,
        data_docs=docs,
        served_variant=compression.chosen if compression else None,
        served_auc=compression.chosen_variant.roc_auc if compression else None,
        size_ratio=compression.size_ratio() if compression else None,
        speedup_batch1=compression.speedup_batch1() if compression else None,
        gate=registration.gate,
    )
