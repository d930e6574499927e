"""Distributed training: torch DDP with one rank per Dask worker, dispatched from the flow.

The flow process asks the scheduler for its workers, picks a free port on rank 0's host,
and submits one pinned task per rank (`workers=[address]`, no other worker allowed, never
retried by Dask alone: a lone re-run rank would wait for peers that are gone). Each rank
reads its own shard of the training Parquet from the lake (a path travels, not data),
keeps its tensors on its device, and runs the same loop as single-process training
(`tasks.training.loop.fit_network`) under DistributedDataParallel: gloo on CPU, NCCL on GPUs.
Rank 0 validates, writes a checkpoint per epoch and the final weights.

Dispatch from the flow process, never from a task running on the same cluster: that task
would hold one of the worker slots the ranks need and the job would deadlock.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import socket
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

import distributed
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from tasks.core.allocator import steady_heap
from tasks.core.context import RunContext
from tasks.core.results import write_result
from tasks.core.settings import get_settings
from tasks.features.build import FeatureSet
from tasks.ops.cluster import gather_within, gpu_or_all_workers, stage_client
from tasks.training.checkpoint import checkpoint_fingerprint, clear_checkpoints
from tasks.training.config import FitSample, TrainConfig
from tasks.training.devices import DevicePlan, WorkerDevices, plan_rank_devices, probe_devices
from tasks.training.incremental import TrainingPlan
from tasks.training.loop import (
    TrainResult,
    fit_network,
    load_training_data,
    load_weights,
    write_trained_network,
)

if TYPE_CHECKING:  # tune loads Optuna and MLflow, which a rank never needs (its warm-up)
    from tasks.training.tune import TuneResult

logger = logging.getLogger("nightshift.ddp")


def free_port_here() -> tuple[str, int]:
    """A TCP port free right now on this worker's host (asked on rank 0's worker)."""
    worker = distributed.get_worker()
    host = distributed.comm.get_address_host(worker.address)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return host, probe.getsockname()[1]


def rank_device(planned: str) -> torch.device:
    """The device the plan gave this rank: `cuda:0` is the worker's own GPU (its
    CUDA_VISIBLE_DEVICES lists it first), else the CPU."""
    if planned.startswith("cuda"):
        torch.cuda.set_device(0)
        return torch.device("cuda", 0)
    return torch.device("cpu")


@dataclass(frozen=True)
class TrainingJob:
    """What to train: the data references, the hyperparameters and where results go."""

    dataset: str
    train_path: str
    preprocessor_path: str
    out_dir: str
    config: TrainConfig
    seed: int
    init_weights_path: str | None = None  # a fine-tune starts from these (the champion's)
    sample: FitSample | None = None  # and fits these rows of the window (FitSample)


@dataclass(frozen=True)
class Rendezvous:
    """Where and how the ranks meet: rank 0's host and free port, the group size, a
    timeout, and the device plan (backend, each rank's device)."""

    host: str
    port: int
    world_size: int
    timeout_s: float
    plan: DevicePlan


@steady_heap()
def train_rank(
    job: TrainingJob,
    rank: int,
    meet: Rendezvous,
    threads: int,
    fail_after_epoch: int | None = None,
) -> tuple[str, TrainResult | None]:
    """One DDP rank, run inside a Dask worker: join the group, train its shard, leave.

    Returns the digest of the rank's last-epoch parameters (all ranks must agree) and,
    from rank 0, the training result.
    """
    started = time.perf_counter()
    # The nanny starts workers with OMP_NUM_THREADS=1; give each rank its share of the host.
    torch.set_num_threads(threads)
    device = rank_device(meet.plan.devices[rank])
    dist.init_process_group(
        meet.plan.backend,
        init_method=f"tcp://{meet.host}:{meet.port}",
        rank=rank,
        world_size=meet.world_size,
        timeout=timedelta(seconds=meet.timeout_s),
    )
    try:
        is_chief = rank == 0
        data = load_training_data(
            job.dataset,
            job.train_path,
            job.preprocessor_path,
            job.config.validation_days,
            meet.world_size,
            shard_ids=[rank],
            device=device,
            with_validation=is_chief,
            sample=job.sample,
        )
        outcome = fit_network(
            data,
            job.config,
            job.seed,
            device=device,
            wrap=lambda net: DistributedDataParallel(
                net, device_ids=[0] if device.type == "cuda" else None
            ),
            is_chief=is_chief,
            checkpoint_dir=f"{job.out_dir}/checkpoints",
            fingerprint=checkpoint_fingerprint(
                job.config,
                job.seed,
                job.train_path,
                job.preprocessor_path,
                job.init_weights_path,
                job.sample,
            ),
            fail_after_epoch=fail_after_epoch,
            initial_state=load_weights(job.init_weights_path) if job.init_weights_path else None,
        )
        if not is_chief:
            return outcome.last_parameters_digest, None
        result = write_trained_network(
            outcome, data, job.config, job.out_dir, started, meet.world_size
        )
        return outcome.last_parameters_digest, result
    finally:
        dist.destroy_process_group()


def one_worker_per_process(
    client: distributed.Client, candidates: list[str] | None = None
) -> list[str]:
    """Worker addresses (of `candidates`, default all), sorted, one per (host, process id).

    torch.distributed allows one default process group per process, so two ranks must never
    land in one process: a threads-only cluster (`processes=False`), or a client that
    Prefect's Dask runner picked up from the caller, has several workers in one process.
    """
    pids = client.run(os.getpid, workers=candidates)
    seen: set[tuple[str, int]] = set()
    chosen = []
    for address in sorted(pids):
        place = (distributed.comm.get_address_host(address), pids[address])
        if place not in seen:
            seen.add(place)
            chosen.append(address)
    return chosen


class RanksLost(RuntimeError):
    """A DDP attempt lost a rank: its worker left the cluster, or a peer's connection broke."""


@dataclass(frozen=True)
class DdpLimits:
    """How long DDP waits and how often it tries again (from the settings by default).

    `group_timeout_s` bounds a rank's wait for a peer inside torch.distributed (rendezvous
    and collectives); `wait_timeout_s` bounds the whole attempt as seen from the caller;
    `attempts` counts the tries in one call, each on the workers alive at that moment.
    """

    attempts: int = 3
    group_timeout_s: float = 300.0
    wait_timeout_s: float = 4 * 3600.0
    poll_s: float = 1.0

    @classmethod
    def from_settings(cls) -> DdpLimits:
        """The limits the operator configured (NIGHTSHIFT_DDP_*)."""
        settings = get_settings()
        return cls(settings.ddp_attempts, settings.ddp_group_timeout_s, settings.ddp_wait_timeout_s)


def is_peer_loss(error: BaseException) -> bool:
    """Whether a rank's error means a peer went away (retry on the survivors), not a bug.

    torch raises its DistError family (DistBackendError, DistNetworkError, DistStoreError)
    for a broken group: a peer's connection reset, a rendezvous or collective timeout.
    """
    if isinstance(error, dist.DistError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and any(
        mark in text for mark in ("Connection reset", "Connection closed", "Broken pipe", "gloo")
    )


def _rank_workers(client: distributed.Client) -> list[str]:
    """The worker processes that can hold a rank right now, as the scheduler sees them."""
    return one_worker_per_process(client, gpu_or_all_workers(client))


def _await_ranks(
    client: distributed.Client,
    futures: list[distributed.Future],
    chosen: list[str],
    limits: DdpLimits,
) -> list:
    """The ranks' results, or an error as soon as one rank fails or its worker leaves.

    A rank pinned to a worker that died never fails by itself: the scheduler keeps it
    waiting for that address, and a nanny restarts the worker on a new one. So the wait
    polls: a rank that raised, a chosen worker gone from the scheduler, or the attempt's
    deadline ends it. The peers of a lost rank fail on their own within the group timeout
    (gloo sees the connection reset at once).
    """
    deadline = time.monotonic() + limits.wait_timeout_s
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(
                f"ddp: the ranks did not finish within {limits.wait_timeout_s:.0f} s "
                "(NIGHTSHIFT_DDP_WAIT_TIMEOUT_S)"
            )
        with contextlib.suppress(TimeoutError), client.as_current():
            pending = [f for f in futures if not f.done()]
            distributed.wait(
                pending or futures, timeout=min(limits.poll_s, left), return_when="FIRST_COMPLETED"
            )
        failed = [f for f in futures if f.status in ("error", "cancelled")]
        if failed:
            _settle(client, futures, chosen, limits)
            rank = futures.index(failed[0])
            error = (
                failed[0].exception(timeout=limits.poll_s) if failed[0].status == "error" else None
            )
            if error is not None and not is_peer_loss(error):
                raise error  # a real error of the job (bad data, a bug): no retry repairs it
            raise RanksLost(f"ddp: rank {rank} on {chosen[rank]} failed: {error!r}") from error
        if all(f.status == "finished" for f in futures):
            return gather_within(client, futures, limits.poll_s)
        alive = set(client.scheduler_info(n_workers=-1)["workers"])
        gone = [w for w in chosen if w not in alive]
        if gone:
            _settle(client, futures, chosen, limits)
            raise RanksLost(f"ddp: worker(s) {', '.join(gone)} left the cluster during training")


def _settle(
    client: distributed.Client,
    futures: list[distributed.Future],
    chosen: list[str],
    limits: DdpLimits,
) -> None:
    """Let the ranks still running on live workers end before the attempt is given up.

    Dask cannot interrupt a running task: a cancelled rank 0 would go on and could still
    be writing its checkpoint while the next attempt reads it. Its peers end by themselves
    once one rank is gone (gloo sees the reset at once; at worst the group timeout), so
    the wait is bounded by that timeout. Ranks pinned to a worker that left never run and
    are not waited for.
    """
    alive = set(client.scheduler_info(n_workers=-1)["workers"])
    running = [f for f, w in zip(futures, chosen, strict=True) if w in alive and not f.done()]
    if running:
        with contextlib.suppress(TimeoutError), client.as_current():
            distributed.wait(running, timeout=limits.group_timeout_s + limits.poll_s)


def _run_attempt(
    client: distributed.Client,
    job: TrainingJob,
    chosen: list[str],
    limits: DdpLimits,
    fail_after_epoch: int | None,
    log: logging.Logger | logging.LoggerAdapter,
) -> list:
    """One rendezvous on `chosen` (a fresh port), ranks submitted pinned, results awaited."""
    world_size = len(chosen)
    hosts = [distributed.comm.get_address_host(w) for w in chosen]
    cores = client.run(lambda: len(os.sched_getaffinity(0)), workers=chosen)
    host, port = client.submit(
        free_port_here, workers=[chosen[0]], allow_other_workers=False, pure=False
    ).result(timeout=limits.wait_timeout_s)  # the worker may still be importing torch
    probes = client.run(probe_devices, workers=chosen)
    plan = plan_rank_devices(
        [WorkerDevices(w, *probes[w]) for w in chosen], nccl_available=dist.is_nccl_available()
    )
    log.info("ddp: %s", plan.reason)
    meet = Rendezvous(host, port, world_size, limits.group_timeout_s, plan)
    log.info(
        "ddp: %d rank(s) on %s, rendezvous tcp://%s:%d", world_size, ", ".join(chosen), host, port
    )
    futures = [
        client.submit(
            train_rank,
            job,
            rank,
            meet,
            max(1, cores[address] // hosts.count(hosts[rank])),
            fail_after_epoch,
            workers=[address],
            allow_other_workers=False,
            pure=False,
            retries=0,
            key=f"ddp-rank-{rank}-{port}",
        )
        for rank, address in enumerate(chosen)
    ]
    try:
        return _await_ranks(client, futures, chosen, limits)
    except BaseException:
        # a rank waiting for a dead worker's address would wait forever: drop them all
        client.cancel(futures)
        raise


def train_distributed(
    client: distributed.Client,
    job: TrainingJob,
    world_size: int | None = None,
    limits: DdpLimits | None = None,
    fail_after_epoch: int | None = None,
    log: logging.Logger | logging.LoggerAdapter = logger,
) -> TrainResult:
    """Run DDP training with one rank per Dask worker and return rank 0's result.

    When a rank is lost (its worker killed, a peer's connection reset), the attempt ends
    within the group timeout, and the next attempt asks the scheduler again for the
    workers alive now, meets on a fresh port, and resumes from rank 0's last checkpoint,
    on fewer ranks when fewer workers remain. After `limits.attempts` tries it raises.
    A simulated failure (the `fail_after_epoch` test hook) is not retried here.
    """
    limits = limits or DdpLimits.from_settings()
    workers = _rank_workers(client)
    world_size = world_size or len(workers)
    if world_size > len(workers):
        raise ValueError(
            f"world_size {world_size} needs as many Dask worker processes; the cluster at "
            f"{client.scheduler.address} has {len(workers)} (workers that share a process, "
            "as in a threads-only LocalCluster, count once: a process holds one DDP rank)"
        )
    if job.config.batch_size < world_size:
        raise ValueError(
            f"batch_size {job.config.batch_size} is smaller than world_size {world_size}"
        )
    # the checkpoint identity leaves out the world size (checkpoint.py): a retry, also a
    # Prefect retry of the task, may resume on fewer workers than the attempt that wrote it
    for attempt in range(1, limits.attempts + 1):
        chosen = workers[: min(world_size, len(workers))]
        try:
            results = _run_attempt(client, job, chosen, limits, fail_after_epoch, log)
            break
        except (RanksLost, TimeoutError) as error:
            if attempt == limits.attempts:
                raise RanksLost(
                    f"ddp: gave up after {attempt} attempt(s) (NIGHTSHIFT_DDP_ATTEMPTS); "
                    f"last: {error}"
                ) from error
            log.warning("ddp: attempt %d/%d failed: %s", attempt, limits.attempts, error)
            workers = _surviving_workers(client, limits)
    digests = [digest for digest, _ in results]
    if len(set(digests)) != 1:
        raise RuntimeError(f"ddp: ranks ended with different parameters: {digests}")
    result = results[0][1]
    assert result is not None
    result.rank_parameter_digests = digests
    result.attempts = attempt
    return result


def _surviving_workers(client: distributed.Client, limits: DdpLimits) -> list[str]:
    """The workers to re-plan on after a lost rank: those the scheduler lists now.

    Waits (within the group timeout) for at least one: a nanny may be restarting the only
    worker. A worker that dies but is not yet noticed is caught by the next attempt.
    """
    time.sleep(limits.poll_s)  # let the scheduler notice a worker that just died
    client.wait_for_workers(1, timeout=limits.group_timeout_s)
    workers = _rank_workers(client)
    if not workers:
        raise RanksLost("ddp: no Dask worker left to train on")
    return workers


# What a rank imports the first time it runs in a worker process: this module (torch, the
# loop, the model) when its task is unpickled, then torch._dynamo, which
# DistributedDataParallel's constructor reads (BENCHMARKS.md: seconds on a small machine).
RANK_MODULES = ("tasks.training.ddp", "torch._dynamo")


def import_rank_modules() -> None:
    """Import `RANK_MODULES` in this worker (its own module already is, by unpickling)."""
    for module in RANK_MODULES:
        importlib.import_module(module)


def warm_up_ranks(ctx: RunContext) -> None:
    """Start importing what a DDP rank needs in every worker that can hold one, now.

    Between the ingest and the training the Dask workers sit idle (validation, features,
    drift and the plan run in the flow process), while a fine-tune night has no search to
    import torch there first: without this the train stage's ranks pay for the imports,
    one worker after another on a small machine. Fire and forget: nothing waits for it, a
    rank that starts before its worker finished waits on Python's import lock (never
    imports twice), and an import error surfaces where it always did, in the rank.
    """
    if not ctx.dask_address:  # a stage run alone starts its cluster when it needs one
        return
    with stage_client(ctx.dask_address, get_settings()) as client:
        distributed.fire_and_forget(
            [
                client.submit(
                    import_rank_modules, workers=[worker], allow_other_workers=False, pure=False
                )
                for worker in _rank_workers(client)
            ]
        )


def train(
    ctx: RunContext,
    features: FeatureSet,
    tuned: TuneResult,
    world_size: int | None = None,
    log: logging.Logger | logging.LoggerAdapter = logger,
    plan: TrainingPlan | None = None,
) -> TrainResult:
    """The train stage: DDP on the run's Dask cluster with the tuned hyperparameters.

    Dispatched from the calling process (the flow's, or the CLI's), never from a task on
    the same cluster. A retry resumes from rank 0's last checkpoint for the same job.
    On a fine-tune night (`plan`) the ranks start from the champion's weights and run
    the plan's fine-tune epochs with its hyperparameters.
    """
    config, init_weights, sample = tuned.config, None, None
    if plan is not None and plan.fine_tune:
        config = config.model_copy(update={"epochs": plan.fine_tune_epochs})
        init_weights, sample = plan.init_weights_path, plan.sample
        log.info(
            "train: fine-tuning champion v%s for %d epoch(s) from its weights, on %s",
            plan.parent_version,
            plan.fine_tune_epochs,
            sample.describe() if sample else "every fitting row of the window",
        )
    job = TrainingJob(
        dataset=ctx.dataset,
        train_path=features.train_path,
        preprocessor_path=features.preprocessor_path,
        out_dir=ctx.run_dir("model"),
        config=config,
        seed=ctx.seed,
        init_weights_path=init_weights,
        sample=sample,
    )
    with stage_client(ctx.dask_address, get_settings()) as client:
        log.info("train: Dask dashboard %s", client.dashboard_link)
        result = train_distributed(client, job, world_size, log=log)
    log.info(
        "train: %d rank(s), %d fitting rows, kept epoch %d, validation AUC %.4f, "
        "%.0f samples/s, %.1f s%s",
        result.world_size,
        result.train_rows,
        result.kept_epoch,
        result.validation_auc,
        result.samples_per_second,
        result.seconds,
        f" (resumed after epoch {result.resumed_from_epoch}, attempt {result.attempts})"
        if result.resumed_from_epoch
        else "",
    )
    written = write_result(ctx, "train", result)
    # the stage succeeded (weights + result.json written): its checkpoints are done with
    clear_checkpoints(f"{job.out_dir}/checkpoints")
    return written
