"""Register → gate → promote: the release, as three steps the flow shows one by one.

1. `register_challenger` logs the run to MLflow (parameters, metrics, lineage, plots,
   datasets) and registers the served model (the compressed ONNX network behind the
   `ServedModel` pyfunc) as a new version with alias `challenger`.
2. `gate_challenger` loads that version as a server would, re-scores the holdout, compares
   it with the champion overall and per slice and checks the budgets; each check becomes
   a version tag.
3. `promote_challenger` moves `champion` when the gate passed.

Around the three, `registry.undo_release_on_failure` settles releases earlier runs left
unfinished, then deletes a half-made version and puts the aliases back (compare-and-set).
The release marker says how far this release got; only a `completed` release (version tag
`release_state=completed`) counts as a finished night. `release_model` runs all three in
one call (tests, the CLI).
"""

from __future__ import annotations

import glob
import json
import logging
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field, replace
from datetime import date
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities import Metric, Param
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import (
    MLFLOW_GIT_COMMIT,
    MLFLOW_PARENT_RUN_ID,
    MLFLOW_RUN_NOTE,
    MLFLOW_SOURCE_NAME,
    MLFLOW_SOURCE_TYPE,
)

from data_contracts import load_contract
from tasks.core.context import RunContext
from tasks.core.results import write_result
from tasks.evaluation.blend import BlendChoice
from tasks.evaluation.champion import CHALLENGER, CHAMPION
from tasks.evaluation.diagnostics import slice_metrics
from tasks.evaluation.evaluate import Evaluation
from tasks.features.build import FeatureSet
from tasks.ingest.plan import IngestSummary
from tasks.monitoring.drift import DriftReport, drift_metrics
from tasks.release.card import ModelCard, registered_model_description
from tasks.release.compress import Compression
from tasks.release.config import ReleaseConfig
from tasks.release.gate import gate_checks, serving_smoke_test
from tasks.release.integrity import record_digests
from tasks.release.lineage import pandas_dataset
from tasks.release.pyfunc import SERVING_MODULES, ServedModel, sha256_file
from tasks.release.registry import (
    COMPLETED,
    RELEASE_STATE_TAG,
    AliasMoved,
    mark_release,
    promote_version,
    undo_release_on_failure,
)
from tasks.training.incremental import (
    STUDENT_DIGEST_TAG,
    WEIGHING_TREE_DIGEST_TAG,
    WEIGHING_TREE_FIT_UNTIL_TAG,
    WEIGHTS_DIGEST_TAG,
    TrainingPlan,
    full_plan,
)
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
    card: ModelCard | None = None


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
        # days trained on their last good generation, or without them (`nightshift hold`)
        "held_days": ",".join(sorted(ingested.held_days)) or "none",
        "contracts": ",".join(load_contract(t).tag for t in ctx.spec.tables),
        "git_commit": git_commit(),
        "prefect_flow_run_id": str(ctx.flow_run_id or "none"),
    }


# Measures logged per scorer as `<measure>/<scorer>`: MLflow groups a metric's scorers in one
# section (model next to baseline and champion) instead of 40 alphabetical charts.
DETAIL_MEASURES = ("pr_auc", "log_loss", "brier", "calibration_error", "precision", "recall", "f1")
EPOCH_DAY = date(1970, 1, 1)


def headline_metrics(evaluation: Evaluation, compression: Compression) -> dict[str, float]:
    """The holdout ROC AUCs: linked to the logged model and the holdout dataset."""
    return {
        "holdout_roc_auc": evaluation.model["roc_auc"],
        "served_roc_auc": compression.served_auc,
        "baseline_roc_auc": evaluation.baseline["roc_auc"],
        **({"champion_roc_auc": evaluation.champion["roc_auc"]} if evaluation.champion else {}),
    }


def run_metrics(
    evaluation: Evaluation,
    compression: Compression,
    trained: TrainResult,
    as_of: date,
    drift: DriftReport | None = None,
) -> list[Metric]:
    """Every other metric of the nightly run, grouped by measure, plus the nightly trend
    (and the drift check's `drift/*` when it ran).

    `nightly/*` is logged at step = days since 1970-01-01 and timestamp = as_of, so the
    experiment's charts (x axis: step or time) draw one point per night: the trend.
    """
    chosen = compression.chosen_variant
    scorers = {"model": evaluation.model, "baseline": evaluation.baseline}
    if evaluation.champion:
        scorers["champion"] = evaluation.champion
    values = {
        f"{measure}/{scorer}": float(numbers[measure])
        for measure in DETAIL_MEASURES
        for scorer, numbers in scorers.items()
        if isinstance(numbers.get(measure), int | float)
    }
    values |= {
        "served/auc_drop": chosen.auc_drop,
        "served/size_bytes": chosen.size_bytes,
        "served/latency_ms_batch1": compression.served_latency_ms,
        "served/network_latency_ms_batch1": chosen.latency_ms_batch1,
        "served/latency_ms_batch1024": chosen.latency_ms_batch1024,
        "served/size_ratio": compression.size_ratio(),
        "served/speedup_batch1": compression.speedup_batch1(),
        "training/validation_auc": trained.validation_auc,
        **_blend_metrics(evaluation),
        "training/seconds": trained.seconds,
        "training/samples_per_second": trained.samples_per_second,
        **(drift_metrics(drift) if drift else {}),
    }
    day = (as_of - EPOCH_DAY).days
    night_ms = day * 86_400_000
    nightly = {
        "nightly/model_roc_auc": evaluation.model["roc_auc"],
        "nightly/served_roc_auc": compression.served_auc,
        "nightly/baseline_roc_auc": evaluation.baseline["roc_auc"],
    }
    return (
        [Metric(k, float(v), 0, 0) for k, v in values.items()]
        + [Metric(k, float(v), night_ms, day) for k, v in nightly.items()]
        + [
            Metric(f"training/{key}", float(entry[key]), 0, int(entry["epoch"]))
            for entry in trained.history
            for key in ("train_loss", "val_auc")
        ]
    )


def _blend_metrics(evaluation: Evaluation) -> dict[str, float]:
    """The blend's validation choice and its holdout AUC (logged whichever candidate won)."""
    choice = evaluation.blend_choice
    if choice is None or evaluation.blend is None:
        return {}
    return {
        "blend/weight": choice.weight,
        "blend/validation_auc_network": choice.network_validation_auc,
        "blend/validation_auc_tree": choice.tree_validation_auc,
        "blend/validation_auc_blend": choice.blend_validation_auc,
        "blend/holdout_roc_auc": evaluation.blend["roc_auc"],
    }


def run_tags(ctx: RunContext, tags: dict[str, str], tuned: TuneResult) -> dict[str, str]:
    """The run's tags: lineage, plus MLflow's own (source commit) where its UI shows them."""
    commit = tags.get("git_commit", "unknown").removesuffix("-dirty")
    out = {
        **tags,
        MLFLOW_SOURCE_NAME: "flows/nightly.py",
        MLFLOW_SOURCE_TYPE: "JOB",
        "as_of": str(ctx.as_of),
    }
    if commit != "unknown":
        out[MLFLOW_GIT_COMMIT] = commit
    if tuned.parent_run_id:
        out["tune_run_id"] = tuned.parent_run_id
    return out


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
BLEND_PACKAGES = ("lightgbm",)  # only a served blend loads its tree


def serving_requirements(blend: bool = False) -> list[str]:
    """The served model's pip requirements, at the versions it was registered with."""
    from importlib.metadata import version

    names = SERVING_PACKAGES + (BLEND_PACKAGES if blend else ())
    return [f"{name}=={version(name)}" for name in names]


def _log_served_model(
    ctx: RunContext,
    scratch: str,
    features: FeatureSet,
    trained: TrainResult,
    compression: Compression,
    example: pd.DataFrame,
) -> tuple[str, str]:
    """Log the pyfunc (ONNX network + preprocessing + spec) and register it.

    Returns the registered version and the logged model's id.
    """
    spec = ctx.spec
    serving = Path(scratch, "serving.json")
    blend = compression.served_candidate == "blend"
    serving.write_text(
        json.dumps(
            {
                "dataset": ctx.dataset,
                # a blend's decision uses the cut chosen on the blend's validation scores
                "threshold": compression.blend_threshold if blend else trained.threshold,
                "blend_weight": compression.blend_weight if blend else None,
            }
        )
    )
    served = {
        "onnx": compression.chosen_onnx_path,
        "preprocessor": features.preprocessor_path,
        "serving": str(serving),
        **({"tree": compression.tree_path} if blend else {}),
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
        pip_requirements=serving_requirements(blend),
        registered_model_name=ctx.model_name,
    )
    return str(info.registered_model_version), info.model_id


def drift_tags(drift: DriftReport | None) -> dict[str, str]:
    """What the night's drift check said, as run and version tags (`unchecked` without one)."""
    if drift is None:
        return {"drift_status": "unchecked", "drift_breaches": "none"}
    return {
        "drift_status": drift.status,
        "drift_breaches": "; ".join(drift.breaches)[:4000] or "none",
        **({"drift_run_id": drift.mlflow_run_id} if drift.mlflow_run_id else {}),
    }


def _compression_tags(compression: Compression) -> dict[str, str]:
    chosen = compression.chosen_variant
    return {
        "compression_variant": chosen.name,
        "artifact_size_bytes": str(chosen.size_bytes),
        "latency_ms_batch1": f"{chosen.latency_ms_batch1:.4f}",
        "latency_ms_batch1024": f"{chosen.latency_ms_batch1024:.3f}",
        "artifact_sha256": compression.chosen_sha256,
        "served_candidate": compression.served_candidate,
        **(
            {
                "blend_weight": f"{compression.blend_weight:.2f}",
                "served_latency_ms_batch1": f"{compression.served_latency_ms:.4f}",
            }
            if compression.blend_weight is not None
            else {}
        ),
    }


def dataset_names(dataset: str, features: FeatureSet) -> dict[str, str]:
    """MLflow dataset names: each context named after its own window of days."""
    return {
        "training": f"{dataset}-training-{features.train_days[0]}..{features.train_days[1]}",
        "holdout": f"{dataset}-holdout-{features.holdout_days[0]}..{features.holdout_days[1]}",
    }


def _log_run_inputs(ctx: RunContext, features: FeatureSet, holdout: pd.DataFrame) -> dict:
    """Datasets the run trained and was judged on (MLflow dataset lineage); by context."""
    lake = ctx.lake
    columns = [*ctx.spec.input_columns, "label"]
    names = dataset_names(ctx.dataset, features)
    logged = {}
    for context, frame, source in (
        ("training", lake.read_parquet(features.train_path, columns=columns), features.train_path),
        ("holdout", holdout, features.holdout_path),
    ):
        # what from_pandas records, without its per-value loops (8.5 s on the year)
        dataset = pandas_dataset(frame, source=source, targets="label", name=names[context])
        mlflow.log_input(dataset, context=context)
        logged[context] = dataset
    return logged


def _log_tables(evaluation: Evaluation, compression: Compression) -> None:
    """Slices, calibration, variants and the scorers' metrics as MLflow tables."""
    scorers = {"model": evaluation.model, "baseline": evaluation.baseline}
    if evaluation.champion:
        scorers["champion"] = evaluation.champion
    mlflow.log_table(
        pd.DataFrame([{"scorer": k, **v} for k, v in scorers.items()]),
        "evaluation/holdout_metrics.json",
    )
    if evaluation.slices:
        mlflow.log_table(pd.DataFrame(evaluation.slices), "evaluation/slices.json")
    if evaluation.calibration:
        mlflow.log_table(pd.DataFrame(evaluation.calibration), "evaluation/calibration.json")
    mlflow.log_table(pd.DataFrame(compression.rows()), "compression/variants.json")


def model_card(
    ctx: RunContext,
    tags: dict[str, str],
    features: FeatureSet,
    tuned: TuneResult,
    evaluation: Evaluation,
    compression: Compression,
) -> ModelCard:
    """The facts the run description and the version description are written from."""
    chosen = compression.chosen_variant
    tuning = (
        f"Optuna best of {tuned.trials_total} trial(s) (#{tuned.best_trial}, val AUC "
        f"{tuned.best_value:.4f}; tune run `{tuned.parent_run_id}`)"
        if tuned.enabled
        else f"no search: {tuned.source}"
        if tuned.source
        else "as given (no search)"
    )
    return ModelCard(
        model_name=ctx.model_name,
        dataset=ctx.dataset,
        as_of=str(ctx.as_of),
        data_window=tags.get("data_window", str(ctx.as_of)),
        train_days=tuple(features.train_days),
        holdout_days=tuple(features.holdout_days),
        train_rows=features.train_rows,
        holdout_rows=features.holdout_rows,
        contracts=[c for c in tags.get("contracts", "").split(",") if c],
        model_auc=evaluation.model["roc_auc"],
        baseline_auc=evaluation.baseline["roc_auc"],
        champion_auc=evaluation.champion["roc_auc"] if evaluation.champion else None,
        champion_version=evaluation.champion_version,
        served_variant=chosen.name
        + (
            f" + LightGBM tree (network weight {compression.blend_weight:.2f})"
            if compression.blend_weight
            else ""
        ),
        served_auc=compression.served_auc,
        served_size_bytes=chosen.size_bytes,
        served_latency_ms=compression.served_latency_ms,
        hyperparameters=tuned.config.model_dump(),
        tuning=tuning,
        git_commit=tags.get("git_commit", ""),
        prefect_flow_run_id=tags.get("prefect_flow_run_id", ""),
    )


def describe(client: MlflowClient, ctx: RunContext, run_id: str, card: ModelCard) -> None:
    """Write the card where MLflow shows it: run description, version, registered model."""
    client.set_tag(run_id, MLFLOW_RUN_NOTE, card.run_markdown())
    client.update_model_version(ctx.model_name, card.version, card.version_description()[:5000])
    client.update_registered_model(
        ctx.model_name, registered_model_description(ctx.model_name, ctx.spec.description)
    )


def run_params(
    ctx: RunContext,
    features: FeatureSet,
    tuned: TuneResult,
    trained: TrainResult,
    release: ReleaseConfig,
) -> dict[str, object]:
    """The nightly run's MLflow parameters: data window, hyperparameters, release settings."""
    return {
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


def _nest_stage_runs(
    client: MlflowClient, run_id: str, tuned: TuneResult, drift: DriftReport | None
) -> None:
    """Nest the night's earlier MLflow runs (tune and its trials, drift) under its run."""
    for child in (tuned.parent_run_id, drift.mlflow_run_id if drift else None):
        if child:
            client.set_tag(child, MLFLOW_PARENT_RUN_ID, run_id)


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
    drift: DriftReport | None = None,
    plan: TrainingPlan | None = None,
) -> Challenger:
    """Log the run and register the served model as `@challenger` (a pending release);
    the night's drift report, when given, adds its tags, metrics and nested run.

    The training mode (`plan`; none: a full retrain) goes into run params and version
    tags with the fp32 weights' digest: what the next night's fine-tune decision reads.
    """
    mlflow.set_tracking_uri(ctx.tracking_uri)
    client = MlflowClient(ctx.tracking_uri)
    holdout = ctx.lake.read_parquet(features.holdout_path)
    example = holdout[list(ctx.spec.input_columns)].head(5).reset_index(drop=True)
    training = (plan or full_plan(features, "", ctx.as_of)).lineage()
    params = {**run_params(ctx, features, tuned, trained, release), **training}
    tags = {
        **(lineage if lineage is not None else version_tags(ctx, ingested, features)),
        **_compression_tags(compression),
        **drift_tags(drift),
        **training,
        **_weights_digest_tags(trained, compression, evaluation),
    }
    tags = run_tags(ctx, tags, tuned)
    card = model_card(ctx, tags, features, tuned, evaluation, compression)
    with (
        mlflow.start_run(experiment_id=ctx.experiment_id, run_name=f"nightly-{ctx.as_of}") as run,
        tempfile.TemporaryDirectory() as scratch,
    ):
        run_id = run.info.run_id
        # before anything is registered: a version made by a `log_model` that then fails
        # is found again by this run id (the undo, or the next run's reconciliation)
        mark_release(ctx, None, "registering", run_id)
        client.log_batch(
            run_id,
            params=[Param(k, str(v)[:6000]) for k, v in params.items()],
            metrics=run_metrics(evaluation, compression, trained, ctx.as_of, drift),
        )
        mlflow.set_tags({**tags, MLFLOW_RUN_NOTE: card.run_markdown()})
        _nest_stage_runs(client, run_id, tuned, drift)
        datasets = _log_run_inputs(ctx, features, holdout)
        _log_run_artifacts(trained, evaluation, compression)
        version, model_id = _log_served_model(ctx, scratch, features, trained, compression, example)
        mark_release(ctx, version, "pending", run_id)
        # the holdout AUCs, linked to the logged model and the holdout: "Datasets used"
        mlflow.log_metrics(
            headline_metrics(evaluation, compression),
            model_id=model_id,
            dataset=datasets["holdout"],
        )
        mlflow.log_artifact(evaluation.predictions_path, artifact_path="evaluation")

    _tag_version(client, ctx.model_name, version, tags, evaluation, compression, run_id)
    record_digests(ctx.tracking_uri, ctx.model_name, version)  # checked by every loader
    client.set_registered_model_alias(ctx.model_name, CHALLENGER, version)
    card.version = version
    describe(client, ctx, run_id, card)
    challenger = Challenger(
        run_id=run_id,
        experiment_id=str(ctx.experiment_id),
        model_name=ctx.model_name,
        model_uri=f"models:/{ctx.model_name}/{version}",
        version=version,
        previous_champion=evaluation.champion_version,
        card=card,
    )
    return write_result(ctx, "register", challenger)


def _weights_digest_tags(
    trained: TrainResult, compression: Compression, evaluation: Evaluation
) -> dict[str, str]:
    """The sha256 of the fp32 weights, of the student's and of the blend's weighing tree
    (with its last fitting day): a fine-tune night loads each only when its digest matches
    the one registered here."""
    tags = {WEIGHTS_DIGEST_TAG: sha256_file(trained.weights_path)}
    if compression.student_weights_path:
        tags[STUDENT_DIGEST_TAG] = sha256_file(compression.student_weights_path)
    choice = _weighed(evaluation)
    if choice is not None:
        tags[WEIGHING_TREE_DIGEST_TAG] = sha256_file(choice.weighing_tree_path)
        tags[WEIGHING_TREE_FIT_UNTIL_TAG] = choice.validation_tree_fit_until
    return tags


def _weighed(evaluation: Evaluation) -> BlendChoice | None:
    """The blend choice whose weighing tree the release keeps (None: no blend was weighed)."""
    choice = evaluation.blend_choice
    return choice if choice is not None and choice.validation_tree_fit_until else None


def _log_run_artifacts(
    trained: TrainResult, evaluation: Evaluation, compression: Compression
) -> None:
    """The run's plots and tables, the fp32 weights (the next fine-tune night starts from
    them), the distilled student's (its compression may start from those) and the blend's
    weighing tree (its evaluation may weigh with it)."""
    for path in evaluation.plot_paths:
        mlflow.log_artifact(path, artifact_path="evaluation/plots")
    _log_tables(evaluation, compression)
    mlflow.log_artifact(trained.weights_path, artifact_path="fp32")
    mlflow.log_artifact(trained.net_config_path, artifact_path="fp32")
    if compression.student_weights_path and compression.student_net_config_path:
        mlflow.log_artifact(compression.student_weights_path, artifact_path="student")
        mlflow.log_artifact(compression.student_net_config_path, artifact_path="student")
    choice = _weighed(evaluation)
    if choice is not None:  # evaluate names it WEIGHING_TREE_FILE, as the plan expects
        mlflow.log_artifact(choice.weighing_tree_path, artifact_path="blend")


def _tag_version(client, name, version, tags, evaluation, compression, run_id) -> None:
    for key, value in {
        **{k: v for k, v in tags.items() if not k.startswith("mlflow.")},
        "holdout_roc_auc": f"{evaluation.model['roc_auc']:.5f}",
        "served_roc_auc": f"{compression.served_auc:.5f}",
        "baseline_roc_auc": f"{evaluation.baseline['roc_auc']:.5f}",
        "mlflow_run_id": run_id,
    }.items():
        client.set_model_version_tag(name, version, key, str(value))


def gate_challenger(
    ctx: RunContext,
    challenger: Challenger,
    features: FeatureSet,
    evaluation: Evaluation,
    compression: Compression,
    release: ReleaseConfig,
    drift: DriftReport | None = None,
) -> GateResult:
    """Judge the challenger: served like a server would, against the champion and budgets
    (and the night's drift verdict, when given: `on_breach: hold` refuses promotion)."""
    client = MlflowClient(ctx.tracking_uri)
    holdout = ctx.lake.read_parquet(features.holdout_path)
    served_proba = np.load(compression.predictions_path)
    smoke = serving_smoke_test(
        challenger.model_uri, holdout[list(ctx.spec.input_columns)], served_proba
    )
    champion_auc, slices, champion_as_of = None, [], None
    if evaluation.champion is not None:
        champion_auc = evaluation.champion["roc_auc"]
        if evaluation.champion_version:
            tags = client.get_model_version(ctx.model_name, evaluation.champion_version).tags
            champion_as_of = tags.get("as_of")
        predictions = ctx.lake.read_parquet(evaluation.predictions_path, columns=["champion"])
        slices = slice_metrics(
            holdout["label"].to_numpy().astype(int),
            {"served": served_proba, "champion": predictions["champion"].to_numpy()},
            ctx.spec.slice_frame(holdout),
            release.slice_min_rows,
        )
    checks = gate_checks(
        served_auc=compression.served_auc,
        baseline_auc=evaluation.baseline["roc_auc"],
        champion_auc=champion_auc,
        slices=slices,
        compression=compression,
        smoke=smoke,
        config=release,
        challenger_as_of=str(ctx.as_of),
        champion_as_of=champion_as_of,
        drift=drift,
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
    """Move `@champion` to the challenger when the gate passed; the release is then complete.

    The move is compare-and-set against the champion the gate compared with: if another
    run moved `@champion` meanwhile, this version stays `@challenger` and says why.
    """
    previous = challenger.previous_champion
    client = MlflowClient(ctx.tracking_uri)
    promoted = gate.passed
    if gate.passed:
        try:
            previous = promote_version(
                client,
                ctx.model_name,
                challenger.version,
                gate.reason[:4000],
                expected=challenger.previous_champion,
            )
        except AliasMoved as refused:
            logger.warning("promote: refused: %s", refused)
            promoted = False
            gate = replace(gate, reason=f"gate passed, promotion refused: {refused}")
            client.set_model_version_tag(
                ctx.model_name, challenger.version, "alias_decision", CHALLENGER
            )
            client.set_model_version_tag(
                ctx.model_name, challenger.version, "alias_reason", gate.reason[:4000]
            )
    if challenger.card is not None:
        card = replace(
            challenger.card,
            gate_passed=gate.passed,
            gate_reason=gate.reason,
            gate_checks=gate.checks,
        )
        describe(client, ctx, challenger.run_id, card)
    # last: only now does the night count as done (tasks.ops.schedule)
    client.set_model_version_tag(ctx.model_name, challenger.version, RELEASE_STATE_TAG, COMPLETED)
    mark_release(ctx, challenger.version, COMPLETED, challenger.run_id)
    return Registration(
        run_id=challenger.run_id,
        experiment_id=challenger.experiment_id,
        model_name=challenger.model_name,
        model_uri=challenger.model_uri,
        version=challenger.version,
        alias=CHAMPION if promoted else CHALLENGER,
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
    drift: DriftReport | None = None,
) -> Registration:
    """Register → gate → promote in one call, undone as a whole if any step fails."""
    with undo_release_on_failure(ctx):
        challenger = register_challenger(
            ctx,
            ingested,
            features,
            tuned,
            trained,
            evaluation,
            compression,
            release,
            lineage,
            drift,
        )
        gate = gate_challenger(ctx, challenger, features, evaluation, compression, release, drift)
        return promote_challenger(ctx, challenger, gate)
