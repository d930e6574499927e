"""Register: log the run to MLflow and register a self-contained pyfunc model.

The registered artifact takes raw clean rows (the columns of clean/flights) and applies
its own fitted preprocessing, so serving cannot drift from training:
`mlflow models serve -m models:/<name>@champion` answers with probabilities.
Promotion uses registry aliases (`champion`, `challenger`), never the deprecated stages.
"""

from __future__ import annotations

import json
import logging
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient
from prefect import get_run_logger, task

from tasks.features import INPUT_COLUMNS

CHAMPION, CHALLENGER = "champion", "challenger"
# Raw clean columns the model reads; everything else in a request is ignored.
MODEL_INPUT_COLUMNS = INPUT_COLUMNS

logger = logging.getLogger("nightshift.registry")


class FlightDelayModel(mlflow.pyfunc.PythonModel):
    """Pyfunc: raw clean flight rows in, probability of arriving >15 min late out."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        from tasks.features import TabularPreprocessor
        from tasks.train import load_network

        self.preprocessor = TabularPreprocessor.from_json(
            Path(context.artifacts["preprocessor"]).read_text()
        )
        self.net = load_network(context.artifacts["weights"], context.artifacts["net_config"])
        self.threshold = json.loads(Path(context.artifacts["decision"]).read_text())["threshold"]

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict | None = None
    ) -> pd.DataFrame:
        from tasks.features import feature_frame
        from tasks.model import predict_proba

        rows = model_input.reset_index(drop=True)
        proba = predict_proba(self.net, *self.preprocessor.transform(feature_frame(rows)))
        return pd.DataFrame({"probability_late": proba, "predicted_late": proba >= self.threshold})


def configure_mlflow(tracking_uri: str, experiment: str, artifact_root: str) -> str:
    """Point MLflow at the store and make sure the experiment exists (created once, here).

    Creating the SQLite store from several processes at once races in its migrations,
    so the flow process initialises it before anything fans out.
    """
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        experiment_id = found.experiment_id
    elif tracking_uri.startswith("sqlite:") or tracking_uri.startswith("file:"):
        experiment_id = client.create_experiment(experiment, artifact_location=artifact_root)
    else:  # a tracking server chooses its own artifact store
        experiment_id = client.create_experiment(experiment)
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def champion_scorer(tracking_uri: str, model_name: str):
    """A function scoring rows with the current `champion`, or returning None if there is none."""

    def score(rows: pd.DataFrame) -> tuple[str, np.ndarray] | None:
        client = MlflowClient(tracking_uri)
        try:
            version = client.get_model_version_by_alias(model_name, CHAMPION)
        except MlflowException:
            return None
        mlflow.set_tracking_uri(tracking_uri)
        model = mlflow.pyfunc.load_model(f"models:/{model_name}@{CHAMPION}")
        proba = model.predict(rows[MODEL_INPUT_COLUMNS])["probability_late"].to_numpy()
        return version.version, proba

    return score


def git_commit() -> str:
    """The commit of the code that trained the model ('unknown' outside a git checkout)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parent,
            timeout=10,
            check=True,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@dataclass
class Registration:
    """Where the model went and why it got its alias."""

    run_id: str
    experiment_id: str
    model_name: str
    model_uri: str
    version: str
    alias: str
    reason: str
    previous_champion: str | None


def choose_alias(
    model_auc: float, champion_auc: float | None, margin: float = 0.0
) -> tuple[str, str]:
    """`champion` when there is none or the new model is at least as good on the same holdout."""
    if champion_auc is None:
        return CHAMPION, "no champion yet"
    if model_auc >= champion_auc - margin:
        return (
            CHAMPION,
            f"holdout AUC {model_auc:.4f} >= champion's {champion_auc:.4f} - {margin:g}",
        )
    return CHALLENGER, f"holdout AUC {model_auc:.4f} < champion's {champion_auc:.4f} - {margin:g}"


def _flatten(prefix: str, values: dict[str, Any]) -> dict[str, float]:
    return {f"{prefix}{k}": float(v) for k, v in values.items() if isinstance(v, int | float)}


def run_params(as_of: date, features, train_config, trained, seed: int) -> dict[str, Any]:
    """What the MLflow run records as parameters: the flow's inputs and the split."""
    return {
        "as_of": as_of,
        "seed": seed,
        **train_config.model_dump(),
        "train_days": features.train_days,
        "holdout_days": features.holdout_days,
        "kept_epoch": trained.kept_epoch,
        "threshold": trained.threshold,
    }


def version_tags(as_of: date, ingested, features) -> dict[str, str]:
    """Lineage tags of a model version: which data, contracts, code and run made it."""
    from prefect.runtime import flow_run

    from data_contracts import load_contract

    return {
        "as_of": str(as_of),
        "data_window": f"{ingested.days[0]}..{as_of}",
        "train_rows": str(features.train_rows),
        "holdout_rows": str(features.holdout_rows),
        "clean_rows": str(ingested.clean_rows),
        "quarantined_rows": str(ingested.quarantined_rows),
        "contracts": ",".join(load_contract(name).tag for name in ("flights", "weather")),
        "git_commit": git_commit(),
        "prefect_flow_run_id": str(flow_run.get_id() or "none"),
    }


def register_model(
    *,
    model_name: str,
    tracking_uri: str,
    experiment_id: str,
    as_of: date,
    ingested,
    features,
    train_config,
    trained,
    evaluation,
    seed: int,
) -> Registration:
    """Log params, metrics, lineage and the pyfunc; register it; set its alias."""
    from tasks.lake import Lake

    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    lake = Lake.of(features.holdout_path)
    holdout = lake.read_parquet(features.holdout_path)
    train_rows = lake.read_parquet(features.train_path, columns=MODEL_INPUT_COLUMNS + ["label"])
    example = holdout[MODEL_INPUT_COLUMNS].head(5).reset_index(drop=True)

    params = run_params(as_of, features, train_config, trained, seed)
    tags = version_tags(as_of, ingested, features)
    with (
        mlflow.start_run(experiment_id=experiment_id, run_name=f"nightly-{as_of}") as run,
        tempfile.TemporaryDirectory() as scratch,
    ):
        run_id = run.info.run_id
        client.log_batch(
            run_id,
            params=[Param(k, str(v)[:6000]) for k, v in params.items()],
            metrics=[
                Metric(k, v, 0, 0)
                for k, v in {
                    **_flatten("holdout_", evaluation.model),
                    **_flatten("baseline_", evaluation.baseline),
                    **(_flatten("champion_", evaluation.champion) if evaluation.champion else {}),
                    "validation_auc": trained.validation_auc,
                    "train_seconds": trained.seconds,
                    "train_samples_per_second": trained.samples_per_second,
                }.items()
            ]
            + [
                Metric(f"epoch_{key}", float(entry[key]), 0, int(entry["epoch"]))
                for entry in trained.history
                for key in ("train_loss", "val_auc")
            ],
            tags=[],
        )
        mlflow.set_tags(tags)
        for context, frame, source in (
            ("training", train_rows, features.train_path),
            ("holdout", holdout, features.holdout_path),
        ):
            dataset = mlflow.data.from_pandas(
                frame,
                source=source,
                targets="label",
                name=f"flights-{context}-{tags['data_window']}",
            )
            mlflow.log_input(dataset, context=context)
        decision = Path(scratch, "decision.json")
        decision.write_text(json.dumps({"threshold": trained.threshold}))
        signature = infer_signature(example, _output_example())
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=FlightDelayModel(),
            artifacts={
                "weights": trained.weights_path,
                "net_config": trained.net_config_path,
                "preprocessor": features.preprocessor_path,
                "decision": str(decision),
            },
            code_paths=[str(Path(__file__).resolve().parent)],
            signature=signature,
            input_example=example,
            registered_model_name=model_name,
        )
        mlflow.log_artifact(evaluation.predictions_path, artifact_path="evaluation")

    version = str(info.registered_model_version)
    champion_auc = evaluation.champion["roc_auc"] if evaluation.champion else None
    alias, reason = choose_alias(evaluation.model["roc_auc"], champion_auc)
    previous = evaluation.champion_version
    for key, value in {
        **tags,
        "alias_decision": alias,
        "alias_reason": reason,
        "holdout_roc_auc": f"{evaluation.model['roc_auc']:.5f}",
        "baseline_roc_auc": f"{evaluation.baseline['roc_auc']:.5f}",
        "mlflow_run_id": run_id,
    }.items():
        client.set_model_version_tag(model_name, version, key, str(value))
    if alias == CHAMPION and previous is not None:
        client.set_model_version_tag(model_name, version, "previous_champion", previous)
    client.set_registered_model_alias(model_name, alias, version)
    return Registration(
        run_id=run_id,
        experiment_id=experiment_id,
        model_name=model_name,
        model_uri=f"models:/{model_name}/{version}",
        version=version,
        alias=alias,
        reason=reason,
        previous_champion=previous,
    )


def _output_example() -> pd.DataFrame:
    """The shape of the pyfunc's answer, for the signature."""
    return pd.DataFrame({"probability_late": [0.1], "predicted_late": [False]})


@task(name="register-model")
def register_model_task(**kwargs: Any) -> Registration:
    """Prefect task: MLflow run + registered pyfunc version + alias."""
    log = get_run_logger()
    registration = register_model(**kwargs)
    log.info(
        "register: %s v%s -> @%s (%s); MLflow run %s",
        kwargs["model_name"],
        registration.version,
        registration.alias,
        registration.reason,
        registration.run_id,
    )
    return registration
