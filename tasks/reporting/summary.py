"""The run summary: what an operator reads after a run (published by `prefect_tasks`).

It opens with a verdict line (promoted, kept, or failed, and why), warns when the new
model trails the baseline or the champion, lists the hyperparameters the model was
trained with next to the inputs, the slices with their deltas, and the last nights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tasks.core.context import RunContext
from tasks.evaluation.baseline import BASELINE_NAME
from tasks.release.card import served_form
from tasks.reporting.trend import trend_markdown

if TYPE_CHECKING:  # results of the stages; importing them here would load torch
    from tasks.evaluation.evaluate import Evaluation
    from tasks.features.build import FeatureSet
    from tasks.ingest.plan import IngestSummary
    from tasks.quality.validate import ValidationReport
    from tasks.release.compress import Compression
    from tasks.release.register import Registration
    from tasks.training.config import TrainConfig
    from tasks.training.incremental import TrainingPlan
    from tasks.training.tune import TuneResult

# A slice is flagged when the new model loses more than this AUC (the gate's default margin).
SLICE_MARGIN = 0.02


def md_code(text: str) -> str:
    """Text shown as code in Markdown: ids like `flights/clean@1.0.0` never become links."""
    return f"`{text}`"


def md_cell(text: object) -> str:
    """A Markdown table cell: a `|` inside would end the cell."""
    return str(text).replace("|", "\\|")


def slice_deltas(slices: list[dict], margin: float = SLICE_MARGIN) -> list[dict]:
    """The slices with the model's AUC delta vs the baseline and the champion, flagged.

    A slice is a regression when the model trails the baseline or the champion there by more
    than `margin`; regressions come first, worst first.
    """
    rows = []
    for entry in slices:
        model = entry["model_roc_auc"]
        row = {"slice": entry["slice"], "rows": entry["rows"], "model_roc_auc": round(model, 4)}
        deltas = []
        for other in ("baseline", "champion"):
            if f"{other}_roc_auc" in entry:
                row[f"{other}_roc_auc"] = round(entry[f"{other}_roc_auc"], 4)
                row[f"delta_vs_{other}"] = round(model - entry[f"{other}_roc_auc"], 4)
                deltas.append(row[f"delta_vs_{other}"])
        row["regression"] = bool(deltas) and min(deltas) < -margin
        row["_worst"] = min(deltas) if deltas else 0.0
        rows.append(row)
    rows.sort(key=lambda r: (not r["regression"], r["_worst"]))
    return [{k: v for k, v in r.items() if k != "_worst"} for r in rows]


def hyperparameter_rows(inputs: dict, trained: dict) -> list[dict]:
    """One row per hyperparameter: the value given to the run and the one the model used."""
    return [
        {
            "hyperparameter": key,
            "input": inputs.get(key),
            "trained_with": trained.get(key),
            "tuned": inputs.get(key) != trained.get(key),
        }
        for key in sorted(set(inputs) | set(trained))
    ]


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
    champion_version: str | None = None
    hyperparameters: list[dict] = field(default_factory=list)
    tuning: str = "off"
    slices: list[dict] = field(default_factory=list)
    trend: list[dict] = field(default_factory=list)
    slice_margin: float = SLICE_MARGIN
    blend_auc: float | None = None
    blend_weight: float | None = None  # the network's weight chosen on the validation days
    candidate: str = "network"
    # how the network was trained: "full" or "fine-tune" (from the champion), and why
    training_mode: str = "full"
    training_reason: str = ""
    compression_search: str = "all variants"
    # tables whose Great Expectations run was still going in the background when the run
    # ended (validation_gx_background): their suite results join the Data Docs when done
    gx_pending: list[str] = field(default_factory=list)

    def data_docs_note(self) -> str:
        """Where the Data Docs are, and whether GX is still writing into them."""
        if not self.gx_pending:
            return str(self.data_docs)
        return (
            f"{self.data_docs} (Great Expectations on {', '.join(self.gx_pending)} still "
            "running in the background: its suite results join this page when done)"
        )

    @property
    def promoted(self) -> bool:
        return self.alias == "champion"

    def verdict(self) -> str:
        """One line: promoted or kept, and why."""
        if self.promoted:
            return (
                f"**PROMOTED**: {self.model_name} v{self.version} is now @champion "
                f"({md_cell(self.alias_reason)})."
            )
        held = f"v{self.champion_version}" if self.champion_version else "the champion"
        return (
            f"**KEPT**: {held} stays @champion; v{self.version} is @{self.alias} "
            f"({md_cell(self.alias_reason)})."
        )

    def warnings(self) -> list[str]:
        """What deserves a second look even when the gate passed."""
        out = []
        served = self.served_auc if self.served_auc is not None else self.model_auc
        if self.candidate == "blend" and served < self.baseline_auc:
            out.append(
                f"The served blend trails the baseline by {self.baseline_auc - served:.3f} "
                f"AUC ({served:.4f} vs {self.baseline_auc:.4f})."
            )
        if self.model_auc < self.baseline_auc:
            # with a blend served, the network alone is what still trails the tree
            subject = "The network alone" if self.candidate == "blend" else "The new model"
            out.append(
                f"{subject} trails the baseline by {self.baseline_auc - self.model_auc:.3f} "
                f"AUC ({self.model_auc:.4f} vs {self.baseline_auc:.4f})."
            )
        if self.champion_auc is not None and served < self.champion_auc:
            out.append(
                f"The served model trails the champion by {self.champion_auc - served:.3f} AUC "
                f"({served:.4f} vs {self.champion_auc:.4f})."
            )
        regressions = [s["slice"] for s in self.slices if s["regression"]]
        if regressions:
            out.append(
                f"{len(regressions)} slice(s) trail the baseline or the champion by more than "
                f"{self.slice_margin:g} AUC: {', '.join(md_code(s) for s in regressions[:5])}"
                + (" ..." if len(regressions) > 5 else "")
            )
        return out

    def markdown(self) -> str:
        return "\n".join(
            [
                f"# nightly-retrain {self.as_of} ({self.dataset})",
                "",
                self.verdict(),
                "",
                f"Training: **{self.training_mode}**"
                + (f" ({md_cell(self.training_reason)})" if self.training_reason else "")
                + f"; compression tried {self.compression_search}.",
                "",
                *(f"> ⚠️ {w}" for w in self.warnings()),
                "",
                *self._quality_section(),
                *self._served_section(),
                *self._hyperparameter_section(),
                *self._slices_section(),
                *self._data_section(),
                *(["## Last nights", "", trend_markdown(self.trend), ""] if self.trend else []),
                f"MLflow run `{self.mlflow_run_id}` in `{self.tracking_uri}`.",
            ]
        )

    def _quality_section(self) -> list[str]:
        champion = f"{self.champion_auc:.4f}" if self.champion_auc is not None else "none yet"
        served = f"{self.served_auc:.4f}" if self.served_auc is not None else "–"
        first, last = self.holdout_days
        return [
            f"| holdout {first}..{last} ({self.holdout_rows:,} rows) | ROC AUC |",
            "|---|---:|",
            f"| new model | {self.model_auc:.4f} |",
            f"| new model, served form ({self.candidate}) | {served} |",
            *(
                [
                    f"| network + tree blend, network weight {self.blend_weight:.2f} "
                    f"(chosen on validation days) | {self.blend_auc:.4f} |"
                ]
                if self.blend_auc is not None and self.blend_weight is not None
                else []
            ),
            f"| baseline ({BASELINE_NAME}) | {self.baseline_auc:.4f} |",
            f"| current champion | {champion} |",
            "",
        ]

    def _served_section(self) -> list[str]:
        if not self.served_variant:
            return []
        return [
            f"Served form: **{served_form(self.served_variant)}**, holdout AUC "
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

    def _hyperparameter_section(self) -> list[str]:
        if not self.hyperparameters:
            return []
        return [
            f"## Hyperparameters ({self.tuning})",
            "",
            "| hyperparameter | input (Parameters tab) | trained with |",
            "|---|---|---|",
            *(
                f"| {r['hyperparameter']} | {md_cell(r['input'])} | "
                + (
                    f"**{md_cell(r['trained_with'])}**"
                    if r["tuned"]
                    else md_cell(r["trained_with"])
                )
                + " |"
                for r in self.hyperparameters
            ),
            "",
        ]

    def _slices_section(self) -> list[str]:
        if not self.slices:
            return []
        others = [o for o in ("baseline", "champion") if f"delta_vs_{o}" in self.slices[0]]
        head = " | ".join(f"Δ vs {o}" for o in others)
        lines = [
            "## Slices (worst first)",
            "",
            f"| slice | rows | model AUC | {head} | |",
            "|---|---:|---:|" + "---:|" * len(others) + "---|",
        ]
        for s in self.slices:
            deltas = " | ".join(f"{s[f'delta_vs_{o}']:+.4f}" for o in others)
            flag = "⚠️ regression" if s["regression"] else ""
            lines.append(
                f"| {md_cell(s['slice'])} | {s['rows']:,} | {s['model_roc_auc']:.4f} | {deltas} "
                f"| {flag} |"
            )
        return [*lines, ""]

    def _data_section(self) -> list[str]:
        return [
            "## Data",
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
            f"Data Docs: `{self.data_docs}`"
            + (
                f" (Great Expectations on {', '.join(self.gx_pending)} still running in the "
                "background: its suite results join that page when done)"
                if self.gx_pending
                else ""
            ),
            "",
        ]


def failed_markdown(run_name: str, message: str | None) -> str:
    """The summary of a run that failed: the verdict and the error, nothing registered."""
    detail = (message or "no message").strip()
    return "\n".join(
        [
            f"# {run_name}",
            "",
            "**FAILED**: no model was registered; @champion is unchanged.",
            "",
            "```",
            detail[:4000],
            "```",
        ]
    )


def tuning_label(tuned: TuneResult | None) -> str:
    """How the trained hyperparameters were chosen, in a few words."""
    if tuned is not None and tuned.source:
        return f"no search: {tuned.source}"
    if tuned is None or not tuned.enabled:
        return "no search: the inputs were used"
    return (
        f"Optuna: best of {tuned.trials_total} trial(s), #{tuned.best_trial} "
        f"val AUC {tuned.best_value:.4f}"
    )


def build_summary(
    ctx: RunContext,
    ingested: IngestSummary,
    reports: list[ValidationReport],
    features: FeatureSet,
    evaluation: Evaluation,
    compression: Compression | None,
    registration: Registration,
    tuned: TuneResult | None = None,
    inputs: TrainConfig | None = None,
    trend: list[dict] | None = None,
    slice_margin: float = SLICE_MARGIN,
    plan: TrainingPlan | None = None,
) -> RunSummary:
    """Collect the run's numbers from the stages' results."""
    docs = next((r.docs_index for r in reports if r.docs_index), None)
    trained_with = tuned.config.model_dump() if tuned is not None else {}
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
        served_variant=(
            compression.chosen
            + (
                f" + LightGBM tree (network weight {compression.blend_weight:.2f})"
                if compression.served_candidate == "blend"
                else ""
            )
        )
        if compression
        else None,
        served_auc=compression.served_auc if compression else None,
        blend_auc=evaluation.blend["roc_auc"] if evaluation.blend else None,
        blend_weight=evaluation.blend_choice.weight if evaluation.blend_choice else None,
        candidate=evaluation.candidate,
        size_ratio=compression.size_ratio() if compression else None,
        speedup_batch1=compression.speedup_batch1() if compression else None,
        gate=registration.gate,
        champion_version=registration.previous_champion,
        hyperparameters=hyperparameter_rows(
            inputs.model_dump() if inputs is not None else trained_with, trained_with
        ),
        tuning=tuning_label(tuned),
        slices=slice_deltas(evaluation.slices, slice_margin),
        trend=list(trend or []),
        slice_margin=slice_margin,
        training_mode=plan.mode if plan is not None else "full",
        training_reason=plan.reason if plan is not None else "",
        compression_search=compression.search if compression else "no variants",
        gx_pending=[r.dataset for r in reports if r.gx_status == "pending"],
    )
