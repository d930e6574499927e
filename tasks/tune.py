"""Tune: an Optuna hyperparameter search whose trials run in parallel on the Dask workers.

The search space is declared once (`suggest_train_config`); the best trial's parameters are
replayed through the same function (`FixedTrial`) to build the TrainConfig the DDP training
uses. The study lives in a journal file in the lake (`runs/<as_of>/tune/study.journal`;
Optuna's file backend locks it, so worker processes share it safely), so re-running the
same night continues the study. Trials are pruned by successive halving on their
per-epoch validation AUC, and every trial is a MLflow run nested under one tuning run.

Trials are cheaper than the final training: fewer epochs and fewer ensemble members
(`TuneConfig.epochs`, `TuneConfig.members`). The ranking of hyperparameters, not the
final model, is what they are for.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from datetime import date

import distributed
import optuna
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from prefect import get_run_logger, task
from pydantic import BaseModel, Field

from tasks.lake import Lake
from tasks.train import TrainConfig, fit_network, load_training_data, mix_seed

logger = logging.getLogger("nightshift.tune")


class TuneConfig(BaseModel):
    """Budget of the hyperparameter search (a form in the Prefect UI)."""

    enabled: bool = Field(default=True, description="Search before training (else use `train`).")
    n_trials: int = Field(default=6, ge=1, le=1000, description="Trials added by this run.")
    timeout_s: float = Field(
        default=180, gt=0, le=86400, description="Stop starting new trials after this many s."
    )
    epochs: int = Field(
        default=3, ge=1, le=50, description="Epochs per trial (the pruner's full budget)."
    )
    members: int = Field(
        default=2, ge=1, le=32, description="Ensemble members per trial (cheaper than final)."
    )
    pruning: bool = Field(
        default=True, description="Successive-halving pruning on per-epoch validation AUC."
    )


def suggest_train_config(trial: optuna.Trial, base: TrainConfig) -> TrainConfig:
    """The search space, declared once: sampled during the search, replayed for the winner."""
    width = trial.suggest_categorical("width", [64, 128, 256, 512])
    depth = trial.suggest_int("depth", 1, 3)
    return base.model_copy(
        update={
            "learning_rate": trial.suggest_float("learning_rate", 3e-4, 1e-2, log=True),
            "hidden": [max(16, width >> layer) for layer in range(depth)],
            "embedding_dim": trial.suggest_categorical("embedding_dim", [4, 8, 16, 32]),
            "dropout": trial.suggest_float("dropout", 0.0, 0.4),
            "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
            "batch_size": trial.suggest_categorical("batch_size", [256, 512, 1024, 2048]),
        }
    )


def best_train_config(params: dict, base: TrainConfig) -> TrainConfig:
    """The TrainConfig for a trial's parameters (same function as the search, no drift)."""
    return suggest_train_config(optuna.trial.FixedTrial(params), base)


def params_of(config: TrainConfig) -> dict | None:
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
        replayed = best_train_config(params, config)
    except ValueError:  # a categorical value outside its choices
        return None
    return params if replayed == config else None


def make_pruner(config: TuneConfig) -> optuna.pruners.BasePruner:
    """Successive halving over epochs: keep the best third at each rung (or never prune)."""
    if not config.pruning:
        return optuna.pruners.NopPruner()
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)


def open_study(
    storage_path: str, study_name: str, config: TuneConfig, sampler_seed: int
) -> optuna.Study:
    """Create or load the persistent study (maximising validation ROC AUC)."""
    storage = JournalStorage(JournalFileBackend(storage_path))
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


def run_trial_batch(
    batch: int,
    n_trials: int,
    storage_path: str,
    study_name: str,
    train_path: str,
    preprocessor_path: str,
    base: TrainConfig,
    config: TuneConfig,
    seed: int,
    tracking_uri: str,
    experiment_id: str,
    parent_run_id: str,
    threads: int,
    deadline: float,
    earlier_trials: int = 0,
) -> TrialBatchReport:
    """Run `n_trials` trials of the shared study in this process (a Dask worker)."""
    import torch

    torch.set_num_threads(threads)
    data = load_training_data(train_path, preprocessor_path, base.validation_days)
    mlflow = MlflowClient(tracking_uri)
    # Seeded per batch and per continuation: a re-run must not replay the first run's samples.
    study = open_study(
        storage_path, study_name, config, mix_seed(seed, batch, earlier_trials) % 2**32
    )
    report = TrialBatchReport(0, 0, 0, 0)

    def objective(trial: optuna.Trial) -> float:
        trial_config = suggest_train_config(trial, base).model_copy(
            update={"epochs": config.epochs, "members": config.members, "keep": "best_validation"}
        )
        run = mlflow.create_run(
            experiment_id,
            tags={MLFLOW_PARENT_RUN_ID: parent_run_id, MLFLOW_RUN_NAME: f"trial-{trial.number}"},
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
            outcome = fit_network(data, trial_config, seed, on_epoch=on_epoch, log=logger)
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

    study.optimize(
        objective,
        n_trials=n_trials,
        timeout=max(1.0, deadline - time.time()),
        gc_after_trial=False,
    )
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
    storage_path: str = ""
    best_params: dict = field(default_factory=dict)
    best_value: float | None = None
    best_trial: int | None = None
    trials_total: int = 0
    trials_this_run: int = 0
    pruned_this_run: int = 0
    completed_this_run: int = 0
    epochs_trained_this_run: int = 0
    parent_run_id: str | None = None
    seconds: float = 0.0


def tune_hyperparameters(
    client: distributed.Client,
    lake_root: str,
    as_of: date,
    train_path: str,
    preprocessor_path: str,
    base: TrainConfig,
    config: TuneConfig,
    seed: int,
    tracking_uri: str,
    experiment_id: str,
    log: logging.Logger | logging.LoggerAdapter = logger,
) -> TuneResult:
    """Run (or continue) the night's study on the Dask workers; return the best config.

    The MLflow store must already exist (created in the calling process): trials on
    several workers initialising a fresh SQLite store at once race in its migrations.
    """
    if not config.enabled:
        return TuneResult(config=base, enabled=False)
    started = time.perf_counter()
    lake = Lake(lake_root)
    if not lake.is_local:
        raise ValueError(
            f"tune: the study journal needs a local (or NFS-locking) lake, got {lake_root}; "
            "disable tuning or point the lake at a shared filesystem"
        )
    tune_dir = lake.run_dir(as_of, "tune")
    lake.fs.makedirs(tune_dir, exist_ok=True)
    storage_path, study_name = f"{tune_dir}/study.journal", f"nightly-{as_of.isoformat()}"
    before = open_study(storage_path, study_name, config, seed)
    known = {t.number for t in before.get_trials(deepcopy=False)}
    baseline = params_of(base)
    if not known and baseline is not None:
        # The hand-tuned defaults are the first trial: the search can only improve on them.
        before.enqueue_trial(baseline, skip_if_exists=True)

    mlflow = MlflowClient(tracking_uri)
    parent = mlflow.create_run(experiment_id, tags={MLFLOW_RUN_NAME: f"tune-{as_of}"})
    workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
    batches = min(len(workers), config.n_trials)
    counts = [config.n_trials // batches + (i < config.n_trials % batches) for i in range(batches)]
    cores = client.run(lambda: len(os.sched_getaffinity(0)), workers=workers[:batches])
    deadline = time.time() + config.timeout_s
    log.info(
        "tune: study %s (%d earlier trial(s)), %d trial(s) on %d worker(s), %d epoch(s) each",
        study_name,
        len(known),
        config.n_trials,
        batches,
        config.epochs,
    )
    futures = [
        client.submit(
            run_trial_batch,
            batch,
            count,
            storage_path,
            study_name,
            train_path,
            preprocessor_path,
            base,
            config,
            seed,
            tracking_uri,
            experiment_id,
            parent.info.run_id,
            max(1, cores[workers[batch]] // batches),
            deadline,
            len(known),
            workers=[workers[batch]],
            pure=False,
        )
        for batch, count in enumerate(counts)
    ]
    try:
        reports = client.gather(futures)
    except Exception:
        mlflow.set_terminated(parent.info.run_id, status="FAILED")
        raise
    study = open_study(storage_path, study_name, config, seed)
    trials = study.get_trials(deepcopy=False)
    new = [t for t in trials if t.number not in known]
    completed = [t for t in trials if t.state == TrialState.COMPLETE]
    if not completed:
        mlflow.set_terminated(parent.info.run_id, status="FAILED")
        raise RuntimeError(f"tune: study {study_name} has no completed trial; raise the budget")
    best = study.best_trial
    result = TuneResult(
        config=best_train_config(best.params, base),
        enabled=True,
        study_name=study_name,
        storage_path=storage_path,
        best_params=dict(best.params),
        best_value=round(float(best.value), 5),
        best_trial=best.number,
        trials_total=len(trials),
        trials_this_run=len(new),
        pruned_this_run=sum(t.state == TrialState.PRUNED for t in new),
        completed_this_run=sum(t.state == TrialState.COMPLETE for t in new),
        epochs_trained_this_run=sum(r.epochs_trained for r in reports),
        parent_run_id=parent.info.run_id,
        seconds=round(time.perf_counter() - started, 2),
    )
    for key, value in result.best_params.items():
        mlflow.log_param(parent.info.run_id, f"best_{key}", value)
    mlflow.log_metric(parent.info.run_id, "best_val_auc", result.best_value)
    mlflow.log_metric(parent.info.run_id, "trials_pruned", result.pruned_this_run)
    mlflow.log_metric(parent.info.run_id, "trials_completed", result.completed_this_run)
    mlflow.set_terminated(parent.info.run_id)
    return result


@task(name="tune-hyperparameters")
def tune_task(
    scheduler_address: str,
    lake_root: str,
    as_of: date,
    train_path: str,
    preprocessor_path: str,
    base: TrainConfig,
    config: TuneConfig,
    seed: int,
    tracking_uri: str,
    experiment_id: str,
) -> TuneResult:
    """Prefect task, called in the flow process: fan the trials out to the Dask workers."""
    log = get_run_logger()
    if not config.enabled:
        log.info("tune: disabled, training with the given hyperparameters")
        return TuneResult(config=base, enabled=False)
    with distributed.Client(scheduler_address) as client:
        log.info("tune: Dask dashboard %s", client.dashboard_link)
        result = tune_hyperparameters(
            client,
            lake_root,
            as_of,
            train_path,
            preprocessor_path,
            base,
            config,
            seed,
            tracking_uri,
            experiment_id,
            log,
        )
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
    return result
