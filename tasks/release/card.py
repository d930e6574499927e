"""The model card: what a version is and why it holds its alias, as people read it in MLflow.

The same facts become the nightly MLflow run's description (the `mlflow.note.content` tag,
shown as the run's "Description"), the model version's description and the registered
model's description. Written at registration (gate pending) and again after the gate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tasks.evaluation.baseline import BASELINE_NAME


def served_form(variant: str) -> str:
    """ "lowrank-int8" → "lowrank-int8 ONNX"; a blend's "int8 + LightGBM tree (…)" →
    "int8 ONNX + LightGBM tree (…)": the ONNX file is the network, the tree is beside it."""
    name, plus, rest = variant.partition(" + ")
    return f"{name} ONNX" + (f" + {rest}" if plus else "")


def _auc(value: float | None) -> str:
    return f"{value:.4f}" if value is not None else "–"


@dataclass
class ModelCard:
    """The facts of one nightly model, from the run's stage results."""

    model_name: str
    dataset: str
    as_of: str
    data_window: str
    train_days: tuple[str, str]
    holdout_days: tuple[str, str]
    train_rows: int
    holdout_rows: int
    contracts: list[str]
    model_auc: float
    baseline_auc: float
    champion_auc: float | None
    champion_version: str | None
    served_variant: str
    served_auc: float
    served_size_bytes: int
    served_latency_ms: float
    hyperparameters: dict = field(default_factory=dict)
    tuning: str = ""
    version: str | None = None
    git_commit: str = ""
    prefect_flow_run_id: str = ""
    gate_passed: bool | None = None
    gate_reason: str = ""
    gate_checks: list[dict] = field(default_factory=list)

    @property
    def decision(self) -> str:
        if self.gate_passed is None:
            return "gate pending: `@challenger` until the promotion gate has run"
        alias = "`@champion`" if self.gate_passed else "`@challenger` (not promoted)"
        return f"{alias}: {self.gate_reason}"

    def warnings(self) -> list[str]:
        out = []
        if self.model_auc < self.baseline_auc:
            out.append(
                f"the model trails the baseline by {self.baseline_auc - self.model_auc:.3f} AUC"
            )
        if self.champion_auc is not None and self.served_auc < self.champion_auc:
            out.append(
                f"the served model trails the champion by "
                f"{self.champion_auc - self.served_auc:.3f} AUC"
            )
        return out

    def run_markdown(self) -> str:
        """The nightly run's description: a model card in Markdown."""
        champion = (
            f"v{self.champion_version} {_auc(self.champion_auc)}"
            if self.champion_version
            else "none yet"
        )
        lines = [
            f"## {self.model_name}"
            + (f" v{self.version}" if self.version else "")
            + f" — {self.dataset}, as_of {self.as_of}",
            "",
            f"**Decision:** {self.decision}",
            *(f"**Warning:** {w}." for w in self.warnings()),
            "",
            "| | |",
            "|---|---|",
            f"| data window | {self.data_window} |",
            f"| training days | {self.train_days[0]}..{self.train_days[1]} "
            f"({self.train_rows:,} rows) |",
            f"| holdout days | {self.holdout_days[0]}..{self.holdout_days[1]} "
            f"({self.holdout_rows:,} rows) |",
            f"| contracts | {', '.join(f'`{c}`' for c in self.contracts)} |",
            f"| holdout ROC AUC: model | {_auc(self.model_auc)} |",
            f"| holdout ROC AUC: baseline ({BASELINE_NAME}) | {_auc(self.baseline_auc)} |",
            f"| holdout ROC AUC: champion before this run | {champion} |",
            f"| served form | {served_form(self.served_variant)}, AUC {_auc(self.served_auc)}, "
            f"{self.served_size_bytes:,} bytes, {self.served_latency_ms:.3f} ms at batch 1 |",
            f"| hyperparameters | {self.tuning} |",
            f"| code | `{self.git_commit}` |",
            f"| Prefect flow run | `{self.prefect_flow_run_id}` |",
        ]
        if self.gate_checks:
            lines += ["", "| gate check | result | detail |", "|---|---|---|"]
            lines += [
                f"| {c['name']} | {'pass' if c['passed'] else 'FAIL'} | "
                f"{str(c['detail']).replace('|', chr(92) + '|')} |"
                for c in self.gate_checks
            ]
        if self.hyperparameters:
            lines += [
                "",
                "Trained with: "
                + ", ".join(f"`{k}={v}`" for k, v in sorted(self.hyperparameters.items())),
            ]
        return "\n".join(lines)

    def version_description(self) -> str:
        """The model version's description: what it is, how good, why its alias."""
        champion = (
            f"champion v{self.champion_version} {_auc(self.champion_auc)}"
            if self.champion_version
            else "no champion before it"
        )
        text = (
            f"{self.dataset} as_of {self.as_of}: trained on {self.train_days[0]}.."
            f"{self.train_days[1]}, judged on the holdout {self.holdout_days[0]}.."
            f"{self.holdout_days[1]} ({self.holdout_rows:,} rows). Served as "
            f"{served_form(self.served_variant)}: AUC {_auc(self.served_auc)} vs baseline {_auc(self.baseline_auc)} vs "
            f"{champion}. Alias {self.decision}."
        )
        warnings = self.warnings()
        return text + (" Warning: " + "; ".join(warnings) + "." if warnings else "")


def registered_model_description(model_name: str, dataset_description: str) -> str:
    """The registered model's description: what it predicts and how its aliases move."""
    return (
        f"{model_name}: {dataset_description}\n\n"
        "Retrained every night by nightshift (Prefect flow `nightly-retrain`). Every new "
        "version is registered as @challenger; it becomes @champion only when the promotion "
        "gate passes (served AUC vs the champion overall and per slice, size, latency, "
        "serving smoke test). Each version's description says what it is and why it holds "
        "its alias; its tags hold the lineage (data window, contracts, commit, runs)."
    )
