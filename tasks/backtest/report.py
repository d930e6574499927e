"""The backtest's table, plot and MLflow run: one row per fold, the same scorers as a night.

Each fold reports the network alone, the in-run baseline, the network + tree blend and
what the release would have served (the compressed network, or the blend when it won on
the fold's own validation days), all on the fold's scored period. A fold counts as a win
when the served model's AUC is at least the baseline's.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path

from tasks.backtest.plan import Fold


@dataclass
class FoldResult:
    """What one fold measured on its scored period."""

    label: str
    cutoff: str
    first: str
    last: str
    train_rows: int
    holdout_rows: int
    network_auc: float
    baseline_auc: float
    blend_auc: float | None
    served_auc: float
    candidate: str
    blend_weight: float | None
    seconds: float

    @property
    def served_minus_baseline(self) -> float:
        return self.served_auc - self.baseline_auc

    @property
    def win(self) -> bool:
        return self.served_auc >= self.baseline_auc


def fold_result(fold: Fold, features, evaluation, compression, seconds: float) -> FoldResult:
    """One fold's row, from the stage results of its run."""
    return FoldResult(
        label=fold.label,
        cutoff=fold.cutoff.isoformat(),
        first=fold.first.isoformat(),
        last=fold.last.isoformat(),
        train_rows=features.train_rows,
        holdout_rows=features.holdout_rows,
        network_auc=round(evaluation.model["roc_auc"], 5),
        baseline_auc=round(evaluation.baseline["roc_auc"], 5),
        blend_auc=round(evaluation.blend["roc_auc"], 5) if evaluation.blend else None,
        served_auc=round(compression.served_auc, 5),
        candidate=compression.served_candidate,
        blend_weight=compression.blend_weight,
        seconds=round(seconds, 1),
    )


@dataclass
class BacktestReport:
    """The backtest's rows and where its table, plot and MLflow run are."""

    name: str
    dataset: str
    every: str
    folds: list[FoldResult]
    baseline_name: str
    report_dir: str = ""
    plot_path: str = ""
    mlflow_run_id: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def wins(self) -> int:
        return sum(f.win for f in self.folds)

    def markdown(self) -> str:
        """The table a person reads (Prefect artifact, README, BENCHMARKS.md)."""
        lines = [
            f"# Backtest `{self.name}`",
            "",
            f"Rolling origin, every {self.every}: each fold trains on every day before its "
            "period and scores the period. Served = what the release would have registered "
            "(compressed network, or the blend when it won on the fold's validation days).",
            "",
            f"**Served ≥ baseline ({self.baseline_name}) in {self.wins} of {len(self.folds)} "
            "folds.**",
            "",
            "| fold | trained through | scored rows | network | baseline | blend | served "
            "(candidate) | served − baseline |",
            "|---|---|---:|---:|---:|---:|---|---:|",
        ]
        for f in self.folds:
            blend = f"{f.blend_auc:.4f}" if f.blend_auc is not None else "–"
            weight = f", w {f.blend_weight:.2f}" if f.blend_weight is not None else ""
            lines.append(
                f"| {f.label} | {f.cutoff} | {f.holdout_rows:,} | {f.network_auc:.4f} | "
                f"{f.baseline_auc:.4f} | {blend} | {f.served_auc:.4f} ({f.candidate}{weight}) | "
                f"{f.served_minus_baseline:+.4f} |"
            )
        if self.folds:
            mean = sum(f.served_minus_baseline for f in self.folds) / len(self.folds)
            lines += ["", f"Mean served − baseline: {mean:+.4f} AUC."]
        return "\n".join(lines + [""] + self.notes)

    def save(self, report_dir: str) -> None:
        """`report.json`, `report.md` and `auc.png` in `report_dir` (a local folder)."""
        out = Path(report_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.report_dir = str(out)
        self.plot_path = str(out / "auc.png")
        save_plot(self.folds, self.plot_path, self.baseline_name)
        (out / "report.md").write_text(self.markdown())
        (out / "report.json").write_text(json.dumps(asdict(self), indent=1))


def save_plot(folds: list[FoldResult], path: str, baseline_name: str) -> None:
    """AUC per fold: served, network, baseline (and blend): where the model wins and loses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f.label for f in folds]
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(folds) + 2), 4))
    ax.plot(labels, [f.served_auc for f in folds], "o-", label="served", linewidth=2)
    ax.plot(labels, [f.network_auc for f in folds], "s--", label="network alone")
    ax.plot(labels, [f.baseline_auc for f in folds], "^-", label=f"baseline ({baseline_name})")
    blends = [f.blend_auc for f in folds]
    if any(b is not None for b in blends):
        ax.plot(labels, [b if b is not None else float("nan") for b in blends], "x:", label="blend")
    ax.set_ylabel("ROC AUC on the scored period")
    ax.set_xlabel("fold (scored period)")
    ax.set_title("Backtest: rolling origin")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def log_to_mlflow(report: BacktestReport, tracking_uri: str, experiment_id: str) -> str:
    """One MLflow run for the backtest: a metric per scorer and fold, the table, the plot."""
    import mlflow
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME, MLFLOW_RUN_NOTE

    client = MlflowClient(tracking_uri)
    run = client.create_run(
        experiment_id,
        tags={
            MLFLOW_RUN_NAME: f"backtest-{report.name}",
            MLFLOW_RUN_NOTE: report.markdown(),
            "dataset": report.dataset,
            "every": report.every,
        },
    )
    metrics = []
    for step, f in enumerate(report.folds):
        timestamp = int(date.fromisoformat(f.last).toordinal() - date(1970, 1, 1).toordinal())
        ms = timestamp * 86_400_000
        values = {
            "backtest/served_roc_auc": f.served_auc,
            "backtest/network_roc_auc": f.network_auc,
            "backtest/baseline_roc_auc": f.baseline_auc,
            "backtest/served_minus_baseline": f.served_minus_baseline,
            **({"backtest/blend_roc_auc": f.blend_auc} if f.blend_auc is not None else {}),
        }
        metrics += [Metric(k, float(v), ms, step) for k, v in values.items()]
    metrics.append(Metric("backtest/wins", float(report.wins), 0, 0))
    metrics.append(Metric("backtest/folds", float(len(report.folds)), 0, 0))
    client.log_batch(run.info.run_id, metrics=metrics)
    mlflow.set_tracking_uri(tracking_uri)
    for name in ("report.md", "report.json", "auc.png"):
        client.log_artifact(run.info.run_id, str(Path(report.report_dir, name)), "backtest")
    client.set_terminated(run.info.run_id)
    report.mlflow_run_id = run.info.run_id
    return run.info.run_id
