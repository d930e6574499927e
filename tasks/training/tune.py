"""Tune: an Optuna hyperparameter search whose trials run in parallel on the Dask workers.

The search space is declared once (`suggest_train_config`); the best trial's parameters are
replayed through the same function (`FixedTrial`) to build the TrainConfig the DDP training
uses. The study lives across nights, one per dataset and search space, in a SQLite database
in the lake (`studies/<dataset>/study.db`, `study_storage_url`): a night starts from the
history of every earlier night instead of cold. Trial values of different nights are AUCs
on different validation days, so they inform the sampler but never pick tonight's config:
each warm night re-scores the champion's configuration and the best of earlier nights on
tonight's validation days, adds a few new trials (`TuneConfig.warm_trials`), and trains
the best trial *of tonight*. Re-running the same night continues it. It is an Optuna
RDB storage because only that one has trial heartbeats: a trial whose worker was killed
stops beating, is marked FAIL after the grace period and re-queued once
(`RetryHeartbeatStaleTrialCallback`), instead of staying RUNNING forever as in a journal file. Trials are pruned by successive halving on their
per-epoch validation AUC, and every trial is a MLflow run nested under one tuning run.

Trials are cheaper than the final training: fewer epochs and fewer ensemble members
(`TuneConfig.epochs`, `TuneConfig.members`). The ranking of hyperparameters, not the
final model, is what they are for.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field, replace
from typing import Literal

import distributed
import optuna
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from tasks.core.allocator import steady_heap
from tasks.core.context import RunContext
from tasks.core.results import write_result
from tasks.core.settings import get_settings
from tasks.features.build import FeatureSet
from tasks.ops.cluster import gather_within, gpu_or_all_workers, stage_client
from tasks.training.config import TrainConfig, TuneConfig
from tasks.training.devices import probe_devices
from tasks.training.incremental import TrainingPlan, train_config_from_params
from tasks.training.loop import fit_network, load_training_data, mix_seed

logger = logging.getLogger("nightshift.tune")

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


# Batch sizes by where the trials run: on a GPU small batches leave it idle (a bare loop
# over the default network on an H100 ran 0.25M samples/s at 1,024 rows and 4.8M at 65,536).
BATCH_SIZES = {"cpu": [256, 512, 1024, 2048], "gpu": [1024, 4096, 8192, 16384, 65536]}
Space = Literal["cpu", "gpu"]


def suggest_train_config(
    trial: optuna.Trial, base: TrainConfig, space: Space = "cpu"
) -> TrainConfig:
    """The search space, declared once: sampled during the search, replayed for the winner."""
    width = trial.suggest_categorical("width", [64, 128, 256, 512])
    depth = trial.suggest_int("depth", 1, 3)
    # periodic numeric embeddings cost ~2x the epoch time on CPU and their effect is mixed
    # (full year: holdout AUC up, validation-days AUC down; BENCHMARKS.md §16): searched
    # where a GPU pays for the trials, and validation decides; configured elsewhere
    extra = (
        {"numeric_embedding": trial.suggest_categorical("numeric_embedding", ["none", "periodic"])}
        if space == "gpu"
        else {}
    )
    return base.model_copy(
        update={
            **extra,
            "learning_rate": trial.suggest_float("learning_rate", 3e-4, 1e-2, log=True),
            "hidden": [max(16, width >> layer) for layer in range(depth)],
            "embedding_dim": trial.suggest_categorical("embedding_dim", [4, 8, 16, 32]),
            "dropout": trial.suggest_float("dropout", 0.0, 0.4),
            "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
            "batch_size": trial.suggest_categorical("batch_size", BATCH_SIZES[space]),
        }
    )


def best_train_config(params: dict, base: TrainConfig, space: Space = "cpu") -> TrainConfig:
    """The TrainConfig for a trial's parameters (same function as the search, no drift)."""
    return suggest_train_config(optuna.trial.FixedTrial(params), base, space)


def params_of(config: TrainConfig, space: Space = "cpu") -> dict | None:
    """The search-space point of an existing config, or None when the space cannot express it."""
    params = {
        "width": config.hidden[0],
        "depth": len(config.hidden),
        "learning_rate": config.learning_rate,
        "embedding_dim": config.embedding_dim,
        "dropout": config.dropout,
        "weight_decay": config.weight_decay,
        "batch_size": config.batch_size,
    }
    try:
        replayed = best_train_config(params, config, space)
    except ValueError:  # a categorical value outside its choices
        return None
    return params if replayed == config else None


def make_pruner(config: TuneConfig) -> optuna.pruners.BasePruner:
    """Successive halving over epochs: keep the best third at each rung (or never prune)."""
    if not config.pruning:
        return optuna.pruners.NopPruner()
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)


@dataclass(frozen=True)
class Liveness:
    """How a trial proves it is alive: a heartbeat every `heartbeat_s`; none for `grace_s`
    and it is failed (and retried up to `retries` times) by the next trial that starts."""

    heartbeat_s: int = 5
    grace_s: int = 20
    retries: int = 2
    sqlite_timeout_s: float = 60.0


def study_storage_url(ctx: RunContext) -> str:
    """Where the dataset's study lives, across nights: the one place that says so."""
    return f"sqlite:///{ctx.studies_dir()}/study.db"


def study_name_for(ctx: RunContext, space: Space = "cpu") -> str:
    """One study per dataset and search space (Optuna refuses a categorical whose choices
    change, and the GPU space has other batch sizes)."""
    return f"{ctx.dataset}-network" + ("" if space == "cpu" else f"-{space}")


def trial_night(trial: optuna.trial.FrozenTrial) -> str:
    """The `as_of` of the night that ran a trial ("" for trials from before it was recorded)."""
    return str(trial.user_attrs.get("as_of", ""))


def open_study(
    storage_url: str,
    study_name: str,
    config: TuneConfig,
    sampler_seed: int,
    liveness: Liveness = Liveness(),
) -> optuna.Study:
    """Create or load the persistent study (maximising validation ROC AUC).

    Several trial processes write the SQLite file at once: each connection waits up to
    `sqlite_timeout_s` for the write lock instead of failing with "database is locked".
    """
    storage = RDBStorage(
        storage_url,
        engine_kwargs={"connect_args": {"timeout": liveness.sqlite_timeout_s}},
        heartbeat_interval=liveness.heartbeat_s,
        grace_period=liveness.grace_s,
        heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=liveness.retries),
    )
    return optuna.create_study(
        study_name=study_name,
        storage=storage,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=sampler_seed),
        pruner=make_pruner(config),
        load_if_exists=True,
    )


@dataclass
class TrialBatchReport:
    """What one worker's batch of trials did."""

    trials: int
    pruned: int
    completed: int
    epochs_trained: int


@dataclass(frozen=True)
class TrialBatch:
    """One worker's share of the search: how many trials, on which study, with which data."""

    batch: int
    n_trials: int
    storage_url: str
    study_name: str
    dataset: str
    train_path: str
    preprocessor_path: str
    base: TrainConfig
    config: TuneConfig
    seed: int
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    deadline: float
    earlier_trials: int = 0
    space: Space = "cpu"
    finished_target: int = 0
    liveness: Liveness = Liveness()
    as_of: str = ""  # the night: recorded on every trial, tonight's best is chosen by it


def _optimize(study: optuna.Study, objective, job: TrialBatch) -> None:
    """`study.optimize` for this batch, tolerating a queued trial run twice.

    Two workers starting at once can both take the same queued trial (SQLite has no row
    locks to make Optuna's WAITING → RUNNING step exclusive); the second to finish then
    gets `UpdateFinishedTrialError`. Its result is a duplicate of one already recorded, so
    it is dropped and the batch goes on; `MaxTrialsCallback` and the deadline still bound it.
    """
    while True:
        try:
            study.optimize(
                objective,
                n_trials=job.n_trials,
                timeout=max(1.0, job.deadline - time.time()),
                gc_after_trial=False,
                # a batch re-run after its worker died stops once the run has its trials
                callbacks=[MaxTrialsCallback(job.finished_target, states=FINISHED)],
            )
            return
        except optuna.exceptions.UpdateFinishedTrialError as error:
            logger.warning("tune: %s (another worker ran it too); going on", error)
            finished = len(study.get_trials(deepcopy=False, states=FINISHED))
            if finished >= job.finished_target or time.time() >= job.deadline:
                return


@steady_heap()
def run_trial_batch(job: TrialBatch, threads: int) -> TrialBatchReport:
    """Run `job.n_trials` trials of the shared study in this process (a Dask worker)."""
    import torch

    torch.set_num_threads(threads)
    # a GPU worker's own GPU is its cuda:0; trials on CPU workers stay on the CPU
    device = "cuda:0" if job.space == "gpu" and probe_devices()[1] else "cpu"
    data = load_training_data(
        job.dataset, job.train_path, job.preprocessor_path, job.base.validation_days, device=device
    )
    mlflow = MlflowClient(job.tracking_uri)
    # Seeded per batch and per continuation: a re-run must not replay the first run's samples.
    study = open_study(
        job.storage_url,
        job.study_name,
        job.config,
        mix_seed(job.seed, job.batch, job.earlier_trials) % 2**32,
        job.liveness,
    )
    report = TrialBatchReport(0, 0, 0, 0)
    worker_address = distributed.get_worker().address

    def objective(trial: optuna.Trial) -> float:
        trial_config = suggest_train_config(trial, job.base, job.space).model_copy(
            update={
                "epochs": job.config.epochs,
                "members": job.config.members,
                "keep": "best_validation",
            }
        )
        # whose trial died (for operators, the fault test); which night (tonight's compete)
        trial.set_user_attr("worker", worker_address)
        trial.set_user_attr("as_of", job.as_of)
        run = mlflow.create_run(
            job.experiment_id,
            tags={
                MLFLOW_PARENT_RUN_ID: job.parent_run_id,
                MLFLOW_RUN_NAME: f"trial-{trial.number}",
            },
        )
        mlflow.log_batch(
            run.info.run_id,
            params=[optuna_param(k, v) for k, v in {**trial.params, "trial": trial.number}.items()],
        )
        epochs_done = 0

        def on_epoch(epoch: int, val_auc: float) -> None:
            nonlocal epochs_done
            epochs_done = epoch
            mlflow.log_metric(run.info.run_id, "val_auc", val_auc, step=epoch)
            trial.report(val_auc, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch} (val_auc {val_auc:.4f})")

        status = "FAILED"
        try:
            outcome = fit_network(
                data, trial_config, job.seed, device=device, on_epoch=on_epoch, log=logger
            )
            status = "FINISHED"
            mlflow.log_metric(run.info.run_id, "best_val_auc", outcome.kept_auc)
            return outcome.kept_auc
        except optuna.TrialPruned:
            status = "KILLED"
            mlflow.set_tag(run.info.run_id, "optuna_state", "pruned")
            raise
        finally:
            trial.set_user_attr("epochs_trained", epochs_done)
            report.epochs_trained += epochs_done
            mlflow.set_terminated(run.info.run_id, status=status)

    _optimize(study, objective, job)
    return report


def optuna_param(key: str, value: object):
    """A MLflow Param entity for one trial parameter."""
    from mlflow.entities import Param

    return Param(key, str(value))


@dataclass
class TuneResult:
    """The search's outcome: the training config to use and how the search went."""

    config: TrainConfig
    enabled: bool
    study_name: str = ""
    storage_url: str = ""
    best_params: dict = field(default_factory=dict)
    best_value: float | None = None
    best_trial: int | None = None
    trials_total: int = 0
    trials_this_run: int = 0
    pruned_this_run: int = 0
    completed_this_run: int = 0
    failed_this_run: int = 0
    epochs_trained_this_run: int = 0
    parent_run_id: str | None = None
    seconds: float = 0.0
    space: str = "cpu"
    # where the config came from when no search ran for it ("" = the given inputs)
    source: str = ""


@dataclass
class NightStudy:
    """The dataset's study as tonight opens it."""

    storage_url: str
    study_name: str
    known: set[int]  # trial numbers that existed before tonight's run
    warm: bool  # completed trials of earlier nights exist: tonight adds `warm_trials`
    enqueued: list[str]  # what tonight re-scores first ("given", "champion", "earlier best")
    n_trials: int  # tonight's trials, the re-scored ones included


def _open_night_study(
    ctx: RunContext,
    base: TrainConfig,
    config: TuneConfig,
    space: Space,
    liveness: Liveness,
    champion: TrainConfig | None = None,
) -> NightStudy:
    """Open the dataset's study and queue what tonight must re-score before searching.

    A new study starts with the given config as its first trial, so the search can only
    improve on it. A warm one (earlier nights completed trials) re-scores the champion's
    config and the best config of earlier nights on tonight's validation days, so the
    configs known to be good compete with tonight's new trials on equal terms.
    """
    if not ctx.lake.is_local:
        raise ValueError(
            f"tune: the study database needs a local (or NFS-locking) lake, got {ctx.lake_root}; "
            "disable tuning or point the lake at a shared filesystem"
        )
    ctx.lake.fs.makedirs(ctx.studies_dir(), exist_ok=True)
    storage_url, study_name = study_storage_url(ctx), study_name_for(ctx, space)
    study = open_study(storage_url, study_name, config, ctx.seed, liveness)
    trials = study.get_trials(deepcopy=False)
    tonight = ctx.as_of.isoformat()
    earlier = [t for t in trials if t.state == TrialState.COMPLETE and trial_night(t) != tonight]
    # params already run or queued tonight are not queued twice (a rerun of the night)
    seen = [t.params for t in trials if trial_night(t) == tonight or t.state == TrialState.WAITING]
    candidates: list[tuple[str, dict | None]] = []
    if not trials:
        candidates.append(("given", params_of(base, space)))
    if earlier:
        if champion is not None:
            candidates.append(("champion", params_of(champion, space)))
        candidates.append(("earlier best", max(earlier, key=lambda t: t.value).params))
    n_trials = config.n_trials
    if earlier and config.warm_trials is not None:
        n_trials = min(config.n_trials, config.warm_trials)
    enqueued: list[str] = []
    for label, params in candidates:
        # never more than tonight runs: a queued trial left over would run on a later night
        if params is not None and params not in seen and len(enqueued) < n_trials:
            study.enqueue_trial(params)
            seen.append(params)
            enqueued.append(label)
    return NightStudy(
        storage_url, study_name, {t.number for t in trials}, bool(earlier), enqueued, n_trials
    )


def fail_orphaned_trials(study: optuna.Study) -> list[int]:
    """Mark FAIL (and re-queue, via the retry callback) every trial still RUNNING.

    Called only once every batch of this run has returned: a RUNNING trial then belongs
    to a process that is gone (a killed worker), whether or not its grace period is over.
    """
    storage = study._storage
    callback = storage.get_heartbeat_stale_trial_callback()
    orphans = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in orphans:
        failed = storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        if failed and callback is not None:
            callback(study, storage.get_trial(trial._trial_id))
    return [t.number for t in orphans]


def _summarise_study(
    job: TrialBatch, known: set[int], reports: list[TrialBatchReport], started: float
) -> TuneResult:
    """Tonight's best trial's config and how this run's trials went.

    Only trials of tonight compete: their values are AUCs on the same validation days.
    (Without a completed trial tonight, e.g. every one pruned, the study's best stands in.)
    """
    study = open_study(job.storage_url, job.study_name, job.config, job.seed, job.liveness)
    trials = study.get_trials(deepcopy=False)
    new = [t for t in trials if t.number not in known]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        raise RuntimeError(f"tune: study {job.study_name} has no completed trial; raise the budget")
    tonight = [t for t in complete if trial_night(t) == job.as_of]
    if not tonight:
        logger.warning("tune: no trial completed tonight; using the study's best of any night")
    best = max(tonight or complete, key=lambda t: t.value)
    return TuneResult(
        config=best_train_config(best.params, job.base, job.space),
        enabled=True,
        study_name=job.study_name,
        storage_url=job.storage_url,
        best_params=dict(best.params),
        best_value=round(float(best.value), 5),
        best_trial=best.number,
        trials_total=len(trials),
        trials_this_run=len(new),
        pruned_this_run=sum(t.state == TrialState.PRUNED for t in new),
        completed_this_run=sum(t.state == TrialState.COMPLETE for t in new),
        failed_this_run=sum(t.state == TrialState.FAIL for t in new),
        epochs_trained_this_run=sum(r.epochs_trained for r in reports),
        parent_run_id=job.parent_run_id,
        seconds=round(time.perf_counter() - started, 2),
        space=job.space,
    )


def run_trial_rounds(
    client: distributed.Client,
    job: TrialBatch,
    workers: list[str],
    wait_s: float,
    log: logging.Logger | logging.LoggerAdapter = logger,
    rounds: int = 3,
) -> list[TrialBatchReport]:
    """Run `job.n_trials` trials as one batch per worker, until they all finished.

    Each batch prefers its worker but may run elsewhere: when a worker dies mid-trial, the
    scheduler re-runs its batch on a worker that remains, where the dead trial is failed
    (no heartbeat) and retried. After every round, trials still RUNNING are orphans and
    are failed and re-queued; another round runs the re-queued ones (and any trials still
    missing), at most `rounds` rounds. Each round waits at most `wait_s`.
    """
    study = open_study(job.storage_url, job.study_name, job.config, job.seed, job.liveness)
    target = len(study.get_trials(deepcopy=False, states=FINISHED)) + job.n_trials
    reports: list[TrialBatchReport] = []
    todo = job.n_trials
    for round_no in range(1, rounds + 1):
        batches = max(1, min(len(workers), todo))
        counts = [todo // batches + (i < todo % batches) for i in range(batches)]
        cores = client.run(lambda: len(os.sched_getaffinity(0)), workers=workers[:batches])
        futures = [
            client.submit(
                run_trial_batch,
                replace(job, batch=job.batch + batch, n_trials=count, finished_target=target),
                max(1, cores[workers[batch]] // batches),
                workers=[workers[batch]],
                allow_other_workers=True,  # a batch outlives its worker
                pure=False,
            )
            for batch, count in enumerate(counts)
        ]
        reports += gather_within(client, futures, wait_s)
        orphans = fail_orphaned_trials(study)
        if orphans:
            log.warning("tune: trial(s) %s lost their worker: failed and re-queued", orphans)
        waiting = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
        missing = target - len(study.get_trials(deepcopy=False, states=FINISHED))
        todo = max(waiting, missing)
        if todo <= 0 or time.time() >= job.deadline:
            break
        target += waiting if missing <= 0 else 0
        job = replace(job, batch=job.batch + batches)
        workers = gpu_or_all_workers(client) or workers
        log.info("tune: round %d left %d trial(s) to run; another round", round_no, todo)
    return reports


def tune_hyperparameters(
    client: distributed.Client,
    ctx: RunContext,
    features: FeatureSet,
    base: TrainConfig,
    config: TuneConfig,
    log: logging.Logger | logging.LoggerAdapter = logger,
    liveness: Liveness | None = None,
    champion: TrainConfig | None = None,
) -> TuneResult:
    """Run tonight's share of the dataset's study on the Dask workers; return tonight's best.

    `champion` is the current champion's training config (re-scored first on a warm night).

    The MLflow store and experiment must already exist (`ctx.experiment_id`, created in the
    calling process): trials on several workers initialising a fresh SQLite store at once
    race in its migrations.
    """
    if not config.enabled:
        return TuneResult(config=base, enabled=False)
    settings = get_settings()
    liveness = liveness or Liveness(settings.tune_heartbeat_s, settings.tune_grace_s)
    started = time.perf_counter()
    workers = gpu_or_all_workers(client)
    probes = client.run(probe_devices, workers=workers)
    space: Space = "gpu" if any(gpus for _, gpus in probes.values()) else "cpu"
    night = _open_night_study(ctx, base, config, space, liveness, champion)
    storage_url, study_name, known = night.storage_url, night.study_name, night.known
    n_trials = night.n_trials
    mlflow = MlflowClient(ctx.tracking_uri)
    parent = mlflow.create_run(str(ctx.experiment_id), tags={MLFLOW_RUN_NAME: f"tune-{ctx.as_of}"})
    job = TrialBatch(
        batch=0,
        n_trials=n_trials,
        storage_url=storage_url,
        study_name=study_name,
        dataset=ctx.dataset,
        train_path=features.train_path,
        preprocessor_path=features.preprocessor_path,
        base=base,
        config=config,
        seed=ctx.seed,
        tracking_uri=ctx.tracking_uri,
        experiment_id=str(ctx.experiment_id),
        parent_run_id=parent.info.run_id,
        deadline=time.time() + config.timeout_s,
        earlier_trials=len(known),
        space=space,
        liveness=liveness,
        as_of=ctx.as_of.isoformat(),
    )
    log.info(
        "tune: study %s (%d earlier trial(s)%s), %d trial(s) on %d %s worker(s), %d epoch(s) "
        "each%s",
        study_name,
        len(known),
        ", warm" if night.warm else "",
        n_trials,
        min(len(workers), n_trials),
        space.upper(),
        config.epochs,
        f"; re-scoring first: {', '.join(night.enqueued)}" if night.enqueued else "",
    )
    wait_s = config.timeout_s + settings.tune_wait_timeout_s
    try:
        reports = run_trial_rounds(client, job, workers, wait_s, log)
        result = _summarise_study(job, known, reports, started)
    except Exception:
        mlflow.set_terminated(parent.info.run_id, status="FAILED")
        raise
    for key, value in result.best_params.items():
        mlflow.log_param(parent.info.run_id, f"best_{key}", value)
    mlflow.log_metric(parent.info.run_id, "best_val_auc", result.best_value)
    mlflow.log_metric(parent.info.run_id, "trials_pruned", result.pruned_this_run)
    mlflow.log_metric(parent.info.run_id, "trials_completed", result.completed_this_run)
    mlflow.set_terminated(parent.info.run_id)
    return result


def champion_train_config(ctx: RunContext, log=logger) -> TrainConfig | None:
    """The training config of the dataset's current `@champion`, from its MLflow run's params.

    None when there is no champion, or its run's params do not make a TrainConfig (an older
    release, a hand-registered version): the search then simply does not re-score it.
    """
    client = MlflowClient(ctx.tracking_uri)
    try:
        version = client.get_model_version_by_alias(ctx.model_name, "champion")
        params = client.get_run(version.run_id).data.params
    except Exception:  # no model, no alias: nothing to warm-start from
        return None
    try:
        return train_config_from_params(params)
    except ValueError as error:
        log.info("tune: champion v%s's params are not a TrainConfig (%s)", version.version, error)
        return None


def tune(
    ctx: RunContext,
    features: FeatureSet,
    base: TrainConfig,
    config: TuneConfig,
    log: logging.Logger | logging.LoggerAdapter = logger,
    plan: TrainingPlan | None = None,
) -> TuneResult:
    """The tune stage: the search on the run's Dask cluster (or `base` when disabled).

    A fine-tune night (`plan`) searches nothing: the champion's config is the config (its
    weights only fit that shape), and the study waits for the next full retrain.
    """
    if plan is not None and plan.fine_tune:
        assert plan.config is not None
        source = f"champion v{plan.parent_version}'s config (fine-tune night)"
        log.info("tune: skipped, %s", source)
        return write_result(
            ctx, "tune", TuneResult(config=plan.config, enabled=False, source=source)
        )
    if not config.enabled:
        log.info("tune: disabled, training with the given hyperparameters")
        return write_result(ctx, "tune", TuneResult(config=base, enabled=False))
    with stage_client(ctx.dask_address, get_settings()) as client:
        log.info("tune: Dask dashboard %s", client.dashboard_link)
        champion = champion_train_config(ctx, log)
        result = tune_hyperparameters(client, ctx, features, base, config, log, champion=champion)
    log.info(
        "tune: %d trial(s) this run (%d pruned, %d complete), %d in the study; best #%d "
        "val AUC %.4f %s (%.1f s)",
        result.trials_this_run,
        result.pruned_this_run,
        result.completed_this_run,
        result.trials_total,
        result.best_trial,
        result.best_value,
        result.best_params,
        result.seconds,
    )
    return write_result(ctx, "tune", result)
