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
from dataclasses import asdict, dataclass, field
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


class TamperedArtifactError(RuntimeError):
    """A model artifact no longer matches the sha256 recorded when it was registered."""


class FlightDelayModel(mlflow.pyfunc.PythonModel):
    """Pyfunc: raw clean flight rows in, probability of arriving >15 min late out.

    Serves the compressed ONNX network (onnxruntime) after its own preprocessing. Every
    artifact is checked against the sha256 manifest written at registration before use.
    Versions registered before compression existed (torch weights, no ONNX) still load.
    """

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        from tasks.features import TabularPreprocessor

        artifacts = context.artifacts
        if "manifest" in artifacts:
            verify_artifacts(artifacts, json.loads(Path(artifacts["manifest"]).read_text()))
        elif "onnx" in artifacts:
            raise TamperedArtifactError(
                "model has an ONNX network but no sha256 manifest; refusing to serve it"
            )
        self.preprocessor = TabularPreprocessor.from_json(
            Path(artifacts["preprocessor"]).read_text()
        )
        self.threshold = json.loads(Path(artifacts["decision"]).read_text())["threshold"]
        self.session, self.net = None, None
        if "onnx" in artifacts:
            from tasks.compress import session

            self.session = session(artifacts["onnx"], threads=SERVING_THREADS)
        else:
            from tasks.train import load_network

            self.net = load_network(artifacts["weights"], artifacts["net_config"])

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict | None = None
    ) -> pd.DataFrame:
        from tasks.features import feature_frame

        rows = model_input.reset_index(drop=True)
        codes, numeric = self.preprocessor.transform(feature_frame(rows))
        if self.session is not None:
            from tasks.compress import onnx_proba

            proba = onnx_proba(self.session, codes, numeric)
        else:
            from tasks.model import predict_proba

            proba = predict_proba(self.net, codes, numeric)
        return pd.DataFrame({"probability_late": proba, "predicted_late": proba >= self.threshold})


# onnxruntime threads per loaded model: a scoring server runs one model per worker process.
SERVING_THREADS = 1


def verify_artifacts(artifacts: dict[str, str], manifest: dict[str, str]) -> None:
    """Raise TamperedArtifactError naming the artifact whose bytes differ from the manifest."""
    from tasks.compress import sha256_file

    for name, expected in manifest.items():
        if name not in artifacts:
            raise TamperedArtifactError(f"artifact {name!r} listed in the manifest is missing")
        actual = sha256_file(artifacts[name])
        if actual != expected:
            raise TamperedArtifactError(
                f"artifact {name!r} ({artifacts[name]}) has sha256 {actual}, but "
                f"{expected} was recorded at registration; refusing to serve a modified model"
            )


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
        return str(version.version), proba  # MLflow 3 returns versions as int

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
    """Where the model went, why it got its alias, and the promotion gate's checks."""

    run_id: str
    experiment_id: str
    model_name: str
    model_uri: str
    version: str
    alias: str
    reason: str
    previous_champion: str | None
    gate: list[dict] = field(default_factory=list)


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
    compression,
    release,
    seed: int,
    lineage: dict[str, str] | None = None,
) -> Registration:
    """Log the run, register the compressed pyfunc as `challenger`, then gate `champion`.

    If anything fails after the version exists, `registry_transaction` deletes it and puts
    the aliases back, so the registry never holds a half-made release.
    """
    from tasks.diagnostics import slice_frame, slice_metrics
    from tasks.lake import Lake
    from tasks.promote import (
        gate_checks,
        promote_version,
        registry_transaction,
        serving_smoke_test,
    )

    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    lake = Lake.of(features.holdout_path)
    holdout = lake.read_parquet(features.holdout_path)
    train_rows = lake.read_parquet(features.train_path, columns=MODEL_INPUT_COLUMNS + ["label"])
    example = holdout[MODEL_INPUT_COLUMNS].head(5).reset_index(drop=True)
    served_proba = np.load(compression.predictions_path)
    chosen = compression.chosen_variant

    params = run_params(as_of, features, train_config, trained, seed)
    params.update({f"release_{k}": v for k, v in release.model_dump().items()})
    tags = lineage if lineage is not None else version_tags(as_of, ingested, features)
    tags = {
        **tags,
        "compression_variant": chosen.name,
        "artifact_size_bytes": str(chosen.size_bytes),
        "latency_ms_batch1": f"{chosen.latency_ms_batch1:.4f}",
        "latency_ms_batch1024": f"{chosen.latency_ms_batch1024:.3f}",
        "artifact_sha256": compression.chosen_sha256,
    }
    with registry_transaction(client, model_name) as created:
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
                        **(
                            _flatten("champion_", evaluation.champion)
                            if evaluation.champion
                            else {}
                        ),
                        "served_roc_auc": chosen.roc_auc,
                        "served_auc_drop": chosen.auc_drop,
                        "served_size_bytes": chosen.size_bytes,
                        "served_latency_ms_batch1": chosen.latency_ms_batch1,
                        "served_latency_ms_batch1024": chosen.latency_ms_batch1024,
                        "compression_size_ratio": compression.size_ratio(),
                        "compression_speedup_batch1": compression.speedup_batch1(),
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
            for path in evaluation.plot_paths:
                mlflow.log_artifact(path, artifact_path="evaluation/plots")
            mlflow.log_dict(evaluation.slices, "evaluation/slices.json")
            mlflow.log_dict(evaluation.calibration, "evaluation/calibration.json")
            mlflow.log_dict(
                {"chosen": compression.chosen, "rows": compression.rows()},
                "compression/variants.json",
            )
            mlflow.log_artifact(trained.weights_path, artifact_path="fp32")
            mlflow.log_artifact(trained.net_config_path, artifact_path="fp32")
            decision = Path(scratch, "decision.json")
            decision.write_text(json.dumps({"threshold": trained.threshold}))
            served = {
                "onnx": compression.chosen_onnx_path,
                "preprocessor": features.preprocessor_path,
                "decision": str(decision),
            }
            manifest = Path(scratch, "manifest.json")
            manifest.write_text(json.dumps(_manifest(served)))
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=FlightDelayModel(),
                artifacts={**served, "manifest": str(manifest)},
                code_paths=[str(Path(__file__).resolve().parent)],
                signature=infer_signature(example, _output_example()),
                input_example=example,
                registered_model_name=model_name,
            )
            version = str(info.registered_model_version)
            created.append(version)
            mlflow.log_artifact(evaluation.predictions_path, artifact_path="evaluation")

        for key, value in {
            **tags,
            "holdout_roc_auc": f"{evaluation.model['roc_auc']:.5f}",
            "served_roc_auc": f"{chosen.roc_auc:.5f}",
            "baseline_roc_auc": f"{evaluation.baseline['roc_auc']:.5f}",
            "mlflow_run_id": run_id,
        }.items():
            client.set_model_version_tag(model_name, version, key, str(value))
        client.set_registered_model_alias(model_name, CHALLENGER, version)

        model_uri = f"models:/{model_name}/{version}"
        smoke = serving_smoke_test(model_uri, holdout[MODEL_INPUT_COLUMNS], served_proba)
        champion_auc, slices = None, []
        if evaluation.champion is not None:
            champion_auc = evaluation.champion["roc_auc"]
            predictions = lake.read_parquet(evaluation.predictions_path, columns=["champion"])
            slices = slice_metrics(
                holdout["label"].to_numpy().astype(int),
                {"served": served_proba, "champion": predictions["champion"].to_numpy()},
                slice_frame(holdout),
                release.slice_min_rows,
            )
        checks = gate_checks(
            served_auc=chosen.roc_auc,
            champion_auc=champion_auc,
            slices=slices,
            compression=compression,
            smoke=smoke,
            config=release,
        )
        passed = all(c.passed for c in checks)
        failed = [f"{c.name}: {c.detail}" for c in checks if not c.passed]
        reason = (
            "gate passed: " + "; ".join(c.detail for c in checks[:1])
            if passed
            else "gate failed: " + " | ".join(failed)
        )
        for check in checks:
            client.set_model_version_tag(
                model_name,
                version,
                f"gate_{check.name}",
                ("pass: " if check.passed else "FAIL: ") + check.detail[:4000],
            )
        client.set_model_version_tag(model_name, version, "gate_passed", str(passed).lower())
        alias = CHAMPION if passed else CHALLENGER
        client.set_model_version_tag(model_name, version, "alias_decision", alias)
        client.set_model_version_tag(model_name, version, "alias_reason", reason[:4000])
        previous = evaluation.champion_version
        if passed:
            previous = promote_version(client, model_name, version, reason[:4000])
    return Registration(
        run_id=run_id,
        experiment_id=experiment_id,
        model_name=model_name,
        model_uri=model_uri,
        version=version,
        alias=alias,
        reason=reason,
        previous_champion=previous,
        gate=[asdict(c) for c in checks],
    )


def _manifest(artifacts: dict[str, str]) -> dict[str, str]:
    """sha256 of each served artifact, checked again when the model is loaded."""
    from tasks.compress import sha256_file

    return {name: sha256_file(path) for name, path in artifacts.items()}


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
