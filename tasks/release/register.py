"""Register → gate → promote: the release, as three steps the flow shows one by one.

1. `register_challenger` logs the run to MLflow (parameters, metrics, lineage, plots,
   datasets) and registers the served model (the compressed ONNX network behind the
   `ServedModel` pyfunc) as a new version with alias `challenger`.
2. `gate_challenger` loads that version as a server would, re-scores the holdout, compares
   it with the champion overall and per slice and checks the budgets; each check becomes
   a version tag.
3. `promote_challenger` moves `champion` when the gate passed.

Around the three, `registry.undo_release_on_failure` deletes a half-made version and puts
the aliases back. `release_model` runs all three in one call (tests, the CLI).
"""

from __future__ import annotations

import glob
import json
import logging
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities import Metric, Param
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from data_contracts import load_contract
from tasks.core.context import RunContext
from tasks.core.results import write_result
from tasks.evaluation.champion import CHALLENGER, CHAMPION
from tasks.evaluation.diagnostics import slice_metrics
from tasks.evaluation.evaluate import Evaluation
from tasks.features.build import FeatureSet
from tasks.ingest.plan import IngestSummary
from tasks.release.compress import Compression
from tasks.release.config import ReleaseConfig
from tasks.release.gate import gate_checks, serving_smoke_test
from tasks.release.pyfunc import SERVING_MODULES, ServedModel, sha256_file
from tasks.release.registry import mark_release, promote_version, undo_release_on_failure
from tasks.training.loop import TrainResult
from tasks.training.tune import TuneResult

logger = logging.getLogger("nightshift.register")

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Challenger:
    """A registered version that holds `challenger`, waiting for the gate."""

    run_id: str
    experiment_id: str
    model_name: str
    model_uri: str
    version: str
    previous_champion: str | None


@dataclass
class GateResult:
    """The promotion gate's verdict on a challenger, check by check."""

    passed: bool
    reason: str
    checks: list[dict] = field(default_factory=list)


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


def git_commit() -> str:
    """The commit of the code that trained the model ('unknown' outside a git checkout)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            timeout=10,
            check=True,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=REPO_ROOT,
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def version_tags(ctx: RunContext, ingested: IngestSummary, features: FeatureSet) -> dict[str, str]:
    """Lineage tags of a model version: which data, contracts, code and run made it."""
    return {
        "dataset": ctx.dataset,
        "as_of": str(ctx.as_of),
        "data_window": f"{ingested.days[0]}..{ctx.as_of}",
        "train_rows": str(features.train_rows),
        "holdout_rows": str(features.holdout_rows),
        "clean_rows": str(ingested.clean_rows),
        "quarantined_rows": str(ingested.quarantined_rows),
        "contracts": ",".join(load_contract(t).tag for t in ctx.spec.tables),
        "git_commit": git_commit(),
        "prefect_flow_run_id": str(ctx.flow_run_id or "none"),
    }


def _flatten(prefix: str, values: dict[str, Any]) -> dict[str, float]:
    return {f"{prefix}{k}": float(v) for k, v in values.items() if isinstance(v, int | float)}


def _run_metrics(evaluation: Evaluation, compression: Compression, trained: TrainResult):
    chosen = compression.chosen_variant
    values = {
        **_flatten("holdout_", evaluation.model),
        **_flatten("baseline_", evaluation.baseline),
        **(_flatten("champion_", evaluation.champion) if evaluation.champion else {}),
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
    }
    return [Metric(k, v, 0, 0) for k, v in values.items()] + [
        Metric(f"epoch_{key}", float(entry[key]), 0, int(entry["epoch"]))
        for entry in trained.history
        for key in ("train_loss", "val_auc")
    ]


def _serving_code(scratch: str) -> str:
    """A copy of just the modules serving executes (no Prefect, Dask, Spark or torch)."""
    root = Path(scratch, "serving-code")
    for pattern in SERVING_MODULES:
        for source in glob.glob(str(REPO_ROOT / pattern)):
            target = root / Path(source).relative_to(REPO_ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return str(root / "tasks")


# What the served model imports (see tasks/release/pyfunc.py); pinned to this environment's
# versions. Declared rather than inferred: MLflow's inference loads the model in a
# subprocess on every registration, and the list must never grow the pipeline's packages.
SERVING_PACKAGES = ("mlflow", "onnxruntime", "pandas", "numpy")


def serving_requirements() -> list[str]:
    """The served model's pip requirements, at the versions it was registered with."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in SERVING_PACKAGES]


def _log_served_model(
    ctx: RunContext,
    scratch: str,
    features: FeatureSet,
    trained: TrainResult,
    compression: Compression,
    example: pd.DataFrame,
) -> str:
    """Log the pyfunc (ONNX network + preprocessing + spec) and register it; its version."""
    spec = ctx.spec
    serving = Path(scratch, "serving.json")
    serving.write_text(json.dumps({"dataset": ctx.dataset, "threshold": trained.threshold}))
    served = {
        "onnx": compression.chosen_onnx_path,
        "preprocessor": features.preprocessor_path,
        "serving": str(serving),
    }
    manifest = Path(scratch, "manifest.json")
    manifest.write_text(json.dumps({name: sha256_file(p) for name, p in served.items()}))
    output_example = pd.DataFrame({spec.output: [0.1], spec.decision: [False]})
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=ServedModel(),
        artifacts={**served, "manifest": str(manifest)},
        code_paths=[_serving_code(scratch)],
        signature=infer_signature(example, output_example),
        input_example=example,
        pip_requirements=serving_requirements(),
        registered_model_name=ctx.model_name,
    )
    return str(info.registered_model_version)


def _compression_tags(compression: Compression) -> dict[str, str]:
    chosen = compression.chosen_variant
    return {
        "compression_variant": chosen.name,
        "artifact_size_bytes": str(chosen.size_bytes),
        "latency_ms_batch1": f"{chosen.latency_ms_batch1:.4f}",
        "latency_ms_batch1024": f"{chosen.latency_ms_batch1024:.3f}",
        "artifact_sha256": compression.chosen_sha256,
    }


def _log_run_inputs(
    ctx: RunContext, features: FeatureSet, holdout: pd.DataFrame, data_window: str
) -> None:
    """Datasets the run trained and was judged on (MLflow dataset lineage)."""
    lake = ctx.lake
    columns = [*ctx.spec.input_columns, "label"]
    for context, frame, source in (
        ("training", lake.read_parquet(features.train_path, columns=columns), features.train_path),
        ("holdout", holdout, features.holdout_path),
    ):
        dataset = mlflow.data.from_pandas(
            frame, source=source, targets="label", name=f"{ctx.dataset}-{context}-{data_window}"
        )
        mlflow.log_input(dataset, context=context)


def register_challenger(
    ctx: RunContext,
    ingested: IngestSummary | None,
    features: FeatureSet,
    tuned: TuneResult,
    trained: TrainResult,
    evaluation: Evaluation,
    compression: Compression,
    release: ReleaseConfig,
    lineage: dict[str, str] | None = None,
) -> Challenger:
    """Log the run and register the served model as `@challenger` (a pending release)."""
    mlflow.set_tracking_uri(ctx.tracking_uri)
    client = MlflowClient(ctx.tracking_uri)
    holdout = ctx.lake.read_parquet(features.holdout_path)
    example = holdout[list(ctx.spec.input_columns)].head(5).reset_index(drop=True)
    chosen = compression.chosen_variant
    params = {
        "as_of": ctx.as_of,
        "dataset": ctx.dataset,
        "seed": ctx.seed,
        **tuned.config.model_dump(),
        "train_days": features.train_days,
        "holdout_days": features.holdout_days,
        "kept_epoch": trained.kept_epoch,
        "threshold": trained.threshold,
        **{f"release_{k}": v for k, v in release.model_dump().items()},
    }
    tags = {
        **(lineage if lineage is not None else version_tags(ctx, ingested, features)),
        **_compression_tags(compression),
    }
    previous = evaluation.champion_version
    with (
        mlflow.start_run(experiment_id=ctx.experiment_id, run_name=f"nightly-{ctx.as_of}") as run,
        tempfile.TemporaryDirectory() as scratch,
    ):
        run_id = run.info.run_id
        client.log_batch(
            run_id,
            params=[Param(k, str(v)[:6000]) for k, v in params.items()],
            metrics=_run_metrics(evaluation, compression, trained),
        )
        mlflow.set_tags(tags)
        _log_run_inputs(ctx, features, holdout, tags.get("data_window", str(ctx.as_of)))
        for path in evaluation.plot_paths:
            mlflow.log_artifact(path, artifact_path="evaluation/plots")
        mlflow.log_dict(evaluation.slices, "evaluation/slices.json")
        mlflow.log_dict(evaluation.calibration, "evaluation/calibration.json")
        mlflow.log_dict(
            {"chosen": compression.chosen, "rows": compression.rows()}, "compression/variants.json"
        )
        mlflow.log_artifact(trained.weights_path, artifact_path="fp32")
        mlflow.log_artifact(trained.net_config_path, artifact_path="fp32")
        version = _log_served_model(ctx, scratch, features, trained, compression, example)
        mark_release(ctx, version, "pending")
        mlflow.log_artifact(evaluation.predictions_path, artifact_path="evaluation")

    for key, value in {
        **tags,
        "holdout_roc_auc": f"{evaluation.model['roc_auc']:.5f}",
        "served_roc_auc": f"{chosen.roc_auc:.5f}",
        "baseline_roc_auc": f"{evaluation.baseline['roc_auc']:.5f}",
        "mlflow_run_id": run_id,
    }.items():
        client.set_model_version_tag(ctx.model_name, version, key, str(value))
    client.set_registered_model_alias(ctx.model_name, CHALLENGER, version)
    challenger = Challenger(
        run_id=run_id,
        experiment_id=str(ctx.experiment_id),
        model_name=ctx.model_name,
        model_uri=f"models:/{ctx.model_name}/{version}",
        version=version,
        previous_champion=previous,
    )
    return write_result(ctx, "register", challenger)


def gate_challenger(
    ctx: RunContext,
    challenger: Challenger,
    features: FeatureSet,
    evaluation: Evaluation,
    compression: Compression,
    release: ReleaseConfig,
) -> GateResult:
    """Judge the challenger: served like a server would, against the champion and budgets."""
    client = MlflowClient(ctx.tracking_uri)
    holdout = ctx.lake.read_parquet(features.holdout_path)
    served_proba = np.load(compression.predictions_path)
    smoke = serving_smoke_test(
        challenger.model_uri, holdout[list(ctx.spec.input_columns)], served_proba
    )
    champion_auc, slices = None, []
    if evaluation.champion is not None:
        champion_auc = evaluation.champion["roc_auc"]
        predictions = ctx.lake.read_parquet(evaluation.predictions_path, columns=["champion"])
        slices = slice_metrics(
            holdout["label"].to_numpy().astype(int),
            {"served": served_proba, "champion": predictions["champion"].to_numpy()},
            ctx.spec.slice_frame(holdout),
            release.slice_min_rows,
        )
    checks = gate_checks(
        served_auc=compression.chosen_variant.roc_auc,
        champion_auc=champion_auc,
        slices=slices,
        compression=compression,
        smoke=smoke,
        config=release,
    )
    passed = all(c.passed for c in checks)
    failed = [f"{c.name}: {c.detail}" for c in checks if not c.passed]
    reason = "gate passed: " + checks[0].detail if passed else "gate failed: " + " | ".join(failed)
    name, version = ctx.model_name, challenger.version
    for check in checks:
        verdict = ("pass: " if check.passed else "FAIL: ") + check.detail[:4000]
        client.set_model_version_tag(name, version, f"gate_{check.name}", verdict)
    client.set_model_version_tag(name, version, "gate_passed", str(passed).lower())
    client.set_model_version_tag(
        name, version, "alias_decision", CHAMPION if passed else CHALLENGER
    )
    client.set_model_version_tag(name, version, "alias_reason", reason[:4000])
    return GateResult(passed=passed, reason=reason, checks=[asdict(c) for c in checks])


def promote_challenger(ctx: RunContext, challenger: Challenger, gate: GateResult) -> Registration:
    """Move `@champion` to the challenger when the gate passed; the release is then complete."""
    previous = challenger.previous_champion
    if gate.passed:
        client = MlflowClient(ctx.tracking_uri)
        previous = promote_version(client, ctx.model_name, challenger.version, gate.reason[:4000])
    mark_release(ctx, challenger.version, "completed")
    return Registration(
        run_id=challenger.run_id,
        experiment_id=challenger.experiment_id,
        model_name=challenger.model_name,
        model_uri=challenger.model_uri,
        version=challenger.version,
        alias=CHAMPION if gate.passed else CHALLENGER,
        reason=gate.reason,
        previous_champion=previous,
        gate=gate.checks,
    )


def release_model(
    ctx: RunContext,
    ingested: IngestSummary | None,
    features: FeatureSet,
    tuned: TuneResult,
    trained: TrainResult,
    evaluation: Evaluation,
    compression: Compression,
    release: ReleaseConfig,
    lineage: dict[str, str] | None = None,
) -> Registration:
    """Register → gate → promote in one call, undone as a whole if any step fails."""
    with undo_release_on_failure(ctx):
        challenger = register_challenger(
            ctx, ingested, features, tuned, trained, evaluation, compression, release, lineage
        )
        gate = gate_challenger(ctx, challenger, features, evaluation, compression, release)
        return promote_challenger(ctx, challenger, gate)
