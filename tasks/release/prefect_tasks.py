"""The release steps as Prefect tasks (the only module of this package importing Prefect)."""

from __future__ import annotations

from prefect import get_run_logger, task

from tasks.core.context import RunContext
from tasks.core.settings import task_timeout
from tasks.evaluation.evaluate import Evaluation
from tasks.features.build import FeatureSet
from tasks.ingest.plan import IngestSummary
from tasks.monitoring.drift import DriftReport
from tasks.release.compress import BuiltVariants, Compression, build_compression, compress
from tasks.release.config import CompressionConfig, ReleaseConfig
from tasks.release.register import (
    Challenger,
    GateResult,
    Registration,
    gate_challenger,
    promote_challenger,
    register_challenger,
)
from tasks.training.incremental import TrainingPlan
from tasks.training.loop import TrainResult
from tasks.training.tune import TuneResult


def _fine_tune_inputs(plan: TrainingPlan | None) -> tuple[str | None, tuple[str, str] | None]:
    """On a fine-tune night: the champion's variant (the only one built beside fp32) and
    its student (where compression may start one); (None, None) otherwise."""
    if plan is None or not plan.fine_tune:
        return None, None
    return plan.compression_variant, plan.init_student


@task(
    name="build-compression-variants",
    timeout_seconds=task_timeout("compress-network"),
)
def build_compression_task(
    ctx: RunContext,
    features: FeatureSet,
    trained: TrainResult,
    config: CompressionConfig,
    plan: TrainingPlan | None = None,
) -> BuiltVariants:
    """The ONNX variants built and scored on the holdout, not yet timed: it needs only the
    trained network, so the flow runs it beside the evaluate stage. On a fine-tune night
    only fp32 and the champion's variant are built (same architecture)."""
    only, warm_student = _fine_tune_inputs(plan)
    return build_compression(ctx, features, trained, config, get_run_logger(), only, warm_student)


@task(name="compress-network", timeout_seconds=task_timeout("compress-network"))
def compress_network_task(
    ctx: RunContext,
    features: FeatureSet,
    trained: TrainResult,
    config: CompressionConfig,
    evaluation: Evaluation | None = None,
    plan: TrainingPlan | None = None,
    built: BuiltVariants | None = None,
) -> Compression:
    """ONNX variants (fp32, int8, pruned, low-rank, distilled) timed; keep the smallest within
    the AUC budget.

    `built`: the variants `build_compression_task` made (else they are built here). With
    the evaluation's blend as the candidate, the kept variant is served blended. On a
    fine-tune night only fp32 and the champion's variant are built (same architecture).
    """
    blend = evaluation.blend_choice if evaluation is not None else None
    only, warm_student = _fine_tune_inputs(plan)
    log = get_run_logger()
    return compress(ctx, features, trained, config, log, blend, only, warm_student, built)


@task(name="register-challenger", timeout_seconds=task_timeout("register-challenger"))
def register_challenger_task(
    ctx: RunContext,
    ingested: IngestSummary,
    features: FeatureSet,
    tuned: TuneResult,
    trained: TrainResult,
    evaluation: Evaluation,
    compression: Compression,
    release: ReleaseConfig,
    drift: DriftReport | None = None,
    plan: TrainingPlan | None = None,
) -> Challenger:
    """MLflow run + the served pyfunc registered as a new version, alias @challenger."""
    challenger = register_challenger(
        ctx,
        ingested,
        features,
        tuned,
        trained,
        evaluation,
        compression,
        release,
        drift=drift,
        plan=plan,
    )
    get_run_logger().info(
        "register: %s v%s -> @challenger; MLflow run %s",
        challenger.model_name,
        challenger.version,
        challenger.run_id,
    )
    return challenger


@task(name="gate-challenger", timeout_seconds=task_timeout("gate-challenger"))
def gate_challenger_task(
    ctx: RunContext,
    challenger: Challenger,
    features: FeatureSet,
    evaluation: Evaluation,
    compression: Compression,
    release: ReleaseConfig,
    drift: DriftReport | None = None,
) -> GateResult:
    """The promotion gate: served AUC vs champion, slices, size, latency, serving smoke test,
    and the night's drift verdict (`on_breach: hold` refuses promotion)."""
    gate = gate_challenger(ctx, challenger, features, evaluation, compression, release, drift)
    get_run_logger().info("gate: v%s %s", challenger.version, gate.reason)
    return gate


@task(name="promote-challenger", timeout_seconds=task_timeout("promote-challenger"))
def promote_challenger_task(
    ctx: RunContext, challenger: Challenger, gate: GateResult
) -> Registration:
    """Move @champion when the gate passed; otherwise the version stays @challenger."""
    registration = promote_challenger(ctx, challenger, gate)
    get_run_logger().info(
        "promote: %s v%s -> @%s (%s)",
        registration.model_name,
        registration.version,
        registration.alias,
        registration.reason,
    )
    return registration
