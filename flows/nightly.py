"""The nightly retraining flow: a table of contents, one task per stage.

ingest → validate → features → drift → evaluate-champion (continuous evaluation) →
plan (fine-tune the champion or retrain in full) → tune (Dask workers) → train (DDP on Dask
workers) → evaluate, with the compression variants built beside it → compress (timed, kept)
→ register → gate → promote → summary
"""

from __future__ import annotations

from datetime import date

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import Field

from flows.params import NightlyParams
from flows.runtime import (
    dask_task_runner,
    deferred,
    nightly_run_name,
    open_run,
    prepare_in_background,
    prepared,
    submit_beside,
)
from tasks.core.runlock import run_lock
from tasks.core.settings import get_settings, task_timeout
from tasks.ingest.prefect_tasks import ingest_landed_days

# The later stages, imported when first called (their modules load torch, MLflow, ONNX and
# Great Expectations: seconds the first task need not wait for), in the background while
# the ingest runs; `deferred` is `from module import names`, lazily.
evaluate_on_holdout, fit_trees_task = deferred(
    "tasks.evaluation.prefect_tasks", "evaluate_on_holdout", "fit_trees_task"
)
(PendingTrees,) = deferred("tasks.evaluation.trees", "PendingTrees")
(build_features_task,) = deferred("tasks.features.prefect_tasks", "build_features_task")
(check_drift_task,) = deferred("tasks.monitoring.prefect_tasks", "check_drift_task")
(evaluate_champion_task,) = deferred("tasks.monitoring.prefect_tasks_ce", "evaluate_champion_task")
(validate_contract,) = deferred("tasks.quality.prefect_tasks", "validate_contract")
(
    build_compression_task,
    compress_network_task,
    gate_challenger_task,
    promote_challenger_task,
    register_challenger_task,
) = deferred(
    "tasks.release.prefect_tasks",
    "build_compression_task",
    "compress_network_task",
    "gate_challenger_task",
    "promote_challenger_task",
    "register_challenger_task",
)
(undo_release_on_failure,) = deferred("tasks.release.registry", "undo_release_on_failure")
publish_failure, publish_summary = deferred(
    "tasks.reporting.prefect_tasks", "publish_failure", "publish_summary"
)
(warm_up_ranks,) = deferred("tasks.training.ddp", "warm_up_ranks")
plan_training_task, train_network_task, tune_hyperparameters_task = deferred(
    "tasks.training.prefect_tasks",
    "plan_training_task",
    "train_network_task",
    "tune_hyperparameters_task",
)


@flow(
    name="nightly-retrain",
    flow_run_name=nightly_run_name,  # nightly-<as_of>, also when the schedule sets the date
    task_runner=dask_task_runner(get_settings()),
    log_prints=True,
    on_failure=[publish_failure],  # a failed night still gets a `nightly-summary` saying why
)
def nightly_retrain(
    as_of: date | None = Field(
        default=None,
        description="Last day of data to use. Empty: the date the run was scheduled for "
        "(in NIGHTSHIFT_SCHEDULE_TIMEZONE), so the nightly schedule needs no parameter.",
    ),
    params: NightlyParams = Field(
        default=NightlyParams(), description="Dataset, split, training, search and release."
    ),
):
    """Retrain the dataset's model on data up to `as_of` and register it in MLflow.

    Long on purpose: one call per stage, so the flow reads as the night's table of contents.
    Returns the night's `tasks.reporting.summary.RunSummary` (not annotated: Prefect
    evaluates a flow's annotations when it is defined, and that module loads sklearn).
    """
    ctx = open_run(as_of, params.dataset)
    # one run per night: a second run of this dataset and as_of fails here, naming us
    with run_lock(ctx.lake, ctx.dataset, ctx.as_of, owner=f"flow run {ctx.flow_run_id}"):
        # Meanwhile, in the flow process: MLflow's store and experiment, the later stages'
        # imports (collected before anything that logs to MLflow fans out)
        preparing = prepare_in_background(ctx)

        # Ingest: landing → clean/ + quarantine/ on the Dask cluster or on Spark
        ingested = ingest_landed_days(ctx, params.first_day, params.engine)
        ctx = prepared(preparing)
        # The Dask workers idle until training: they import torch for its ranks meanwhile
        warm_up_ranks(ctx)

        # Validate: every table's data contract, with Great Expectations; a breach stops here
        reports = [validate_contract(ctx, table, ingested) for table in ctx.spec.tables]

        # Features: time split and preprocessing fitted on the training window
        features = build_features_task(ctx, ingested, params.holdout_days)

        # Drift: newest days vs the training window, limits from the contract (warn or hold)
        drift = check_drift_task(ctx, features)

        # Watch: tonight's @champion on the days labelled since its as_of; decay → event
        evaluate_champion_task(ctx, ingested)

        # Plan: fine-tune the champion (weights, preprocessing, config) or retrain in full
        plan = plan_training_task(ctx, features, params.release.compression)
        features = plan.features  # a fine-tune keeps the champion's fitted preprocessing

        # Meanwhile, in a thread of this process at the lowest CPU priority: Evaluate's
        # LightGBM baseline and weighing tree (they need only the window), fitted in the
        # cycles the tuning and the training leave idle
        with ThreadPoolTaskRunner(max_workers=1) as trees_beside:
            fitting = submit_beside(
                trees_beside,
                fit_trees_task,
                ctx=ctx,
                features=features,
                base=params.train,
                plan=plan,
            )

            # Tune: Optuna trials on the Dask workers, each a nested MLflow run (not on
            # fine-tunes)
            tuned = tune_hyperparameters_task(ctx, features, params.train, params.tune, plan)

            # Train: torch DDP, one rank per Dask worker, dispatched from the flow process
            trained = train_network_task(ctx, features, tuned, params.world_size, plan)

            # Evaluate: new model vs baseline vs champion, same holdout; network or blend?
            # Beside it, in a thread of this process: Compress's int8 / pruned / low-rank /
            # distilled ONNX variants, built and scored (they need only the network; a
            # fine-tune builds fp32 and the champion's variant only: the same architecture)
            with ThreadPoolTaskRunner(max_workers=1) as beside:
                building = submit_beside(
                    beside,
                    build_compression_task,
                    ctx=ctx,
                    features=features,
                    trained=trained,
                    config=params.release.compression,
                    plan=plan,
                )
                # the trees are waited for inside, once the network and the champion
                # are scored: the rest of the fit shares the cores with that work
                trees = PendingTrees(fitting)
                evaluation = evaluate_on_holdout(
                    ctx, features, trained, params.release.slice_min_rows, plan, trees
                )
                built = building.result(timeout=task_timeout("compress-network"))

        # Compress: the variants timed with the cores to themselves; keep the smallest
        # within budget (served blended with the tree when the blend won)
        compression = compress_network_task(
            ctx, features, trained, params.release.compression, evaluation, plan, built
        )

        # Release: register @challenger → gate → promote @champion; undone if a step fails
        with undo_release_on_failure(ctx):
            challenger = register_challenger_task(
                ctx,
                ingested,
                features,
                tuned,
                trained,
                evaluation,
                compression,
                params.release,
                drift,
                plan,
            )
            gate = gate_challenger_task(
                ctx, challenger, features, evaluation, compression, params.release, drift
            )
            registration = promote_challenger_task(ctx, challenger, gate)

        # Report: what an operator reads in the Prefect UI, attached to this flow run
        return publish_summary(
            ctx,
            ingested,
            reports,
            features,
            evaluation,
            compression,
            registration,
            tuned,
            params.train,
            params.release,
            plan,
        )
