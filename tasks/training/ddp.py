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

import logging
import os
import socket
import time
from dataclasses import dataclass
from datetime import timedelta

import distributed
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from tasks.core.context import RunContext
from tasks.core.results import write_result
from tasks.core.settings import get_settings
from tasks.features.build import FeatureSet
from tasks.ops.cluster import gpu_or_all_workers, stage_client
from tasks.training.checkpoint import checkpoint_fingerprint, clear_checkpoints
from tasks.training.config import TrainConfig
from tasks.training.devices import DevicePlan, WorkerDevices, plan_rank_devices, probe_devices
from tasks.training.loop import (
    TrainResult,
    fit_network,
    load_training_data,
    write_trained_network,
)
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


@dataclass(frozen=True)
class Rendezvous:
    """Where and how the ranks meet: rank 0's host and free port, the group size, a
    timeout, and the device plan (backend, each rank's device)."""

    host: str
    port: int
    world_size: int
    timeout_s: float
    plan: DevicePlan


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
                job.config, job.seed, job.train_path, job.preprocessor_path
            ),
            fail_after_epoch=fail_after_epoch,
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


def train_distributed(
    client: distributed.Client,
    job: TrainingJob,
    world_size: int | None = None,
    timeout_s: float = 300.0,
    fail_after_epoch: int | None = None,
    log: logging.Logger | logging.LoggerAdapter = logger,
) -> TrainResult:
    """Run DDP training with one rank per Dask worker and return rank 0's result."""
    workers = one_worker_per_process(client, gpu_or_all_workers(client))
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
    chosen = workers[:world_size]
    hosts = [distributed.comm.get_address_host(w) for w in chosen]
    cores = client.run(lambda: len(os.sched_getaffinity(0)), workers=chosen)
    host, port = client.submit(
        free_port_here, workers=[chosen[0]], allow_other_workers=False, pure=False
    ).result()
    probes = client.run(probe_devices, workers=chosen)
    plan = plan_rank_devices(
        [WorkerDevices(w, *probes[w]) for w in chosen], nccl_available=dist.is_nccl_available()
    )
    log.info("ddp: %s", plan.reason)
    meet = Rendezvous(host, port, world_size, timeout_s, plan)
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
        results = client.gather(futures)
    except Exception:
        client.gather(futures, errors="skip")  # let the peers time out before a retry
        raise
    digests = [digest for digest, _ in results]
    if len(set(digests)) != 1:
        raise RuntimeError(f"ddp: ranks ended with different parameters: {digests}")
    result = results[0][1]
    assert result is not None
    result.rank_parameter_digests = digests
    return result


def train(
    ctx: RunContext,
    features: FeatureSet,
    tuned: TuneResult,
    world_size: int | None = None,
    log: logging.Logger | logging.LoggerAdapter = logger,
) -> TrainResult:
    """The train stage: DDP on the run's Dask cluster with the tuned hyperparameters.

    Dispatched from the calling process (the flow's, or the CLI's), never from a task on
    the same cluster. A retry resumes from rank 0's last checkpoint for the same job.
    """
    job = TrainingJob(
        dataset=ctx.dataset,
        train_path=features.train_path,
        preprocessor_path=features.preprocessor_path,
        out_dir=ctx.run_dir("model"),
        config=tuned.config,
        seed=ctx.seed,
    )
    with stage_client(ctx.dask_address, get_settings()) as client:
        log.info("train: Dask dashboard %s", client.dashboard_link)
        result = train_distributed(client, job, world_size, log=log)
    log.info(
        "train: %d rank(s), kept epoch %d, validation AUC %.4f, %.0f samples/s, %.1f s%s",
        result.world_size,
        result.kept_epoch,
        result.validation_auc,
        result.samples_per_second,
        result.seconds,
        f" (resumed after epoch {result.resumed_from_epoch})" if result.resumed_from_epoch else "",
    )
    written = write_result(ctx, "train", result)
    # the stage succeeded (weights + result.json written): its checkpoints are done with
    clear_checkpoints(f"{job.out_dir}/checkpoints")
    return written
