"""The Dask cluster the stages share: an existing scheduler, or a local one sized to the machine.

One scheduler, two kinds of workers. CPU workers do ingest, validation, features and
evaluation; GPU workers, one per GPU, advertise a `GPU` resource and take the tune trials
and the DDP ranks. Work routes by the resources workers advertise, never by guessing
where it lands (`split_workers`): a cluster without GPU workers runs everything anywhere.

With `NIGHTSHIFT_DASK_ADDRESS` everything connects to that scheduler (dask-kubernetes,
dask-jobqueue, `dask cuda worker --resources GPU=1`); its GPU workers must advertise the
resource. Without it, the flow's task runner (see `flows/runtime.py`) starts a local
cluster: CPU workers only on a machine without GPUs, else `mixed_local_cluster` with both
kinds; a stage run alone from the CLI starts the same local cluster for its own duration
(`stage_client`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

import distributed

from tasks.core.settings import Settings

logger = logging.getLogger("nightshift.cluster")

# Every local CPU worker starts importing the ingest engine as it starts (`worker_preload`).
WORKER_PRELOAD = "tasks.ops.worker_preload"


def _no_gpu_driver() -> bool:
    """True when this machine has no NVIDIA or ROCm driver, so torch can see no GPU.

    Asking torch costs its import (seconds on a small machine) on the path of every run's
    start; without a driver the answer is known from the file system alone.
    """
    return not (os.path.exists("/proc/driver/nvidia/gpus") or os.path.exists("/dev/kfd"))


def gpu_count() -> int:
    """GPUs torch can use here (0 on a CPU build or a broken CUDA install)."""
    if _no_gpu_driver():
        return 0
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # a broken CUDA install must not stop a CPU run
        return 0


GPU, CPU = "GPU", "CPU"


def cpu_worker_count(settings: Settings, gpus: int = 0) -> int:
    """CPU workers of the local cluster: NIGHTSHIFT_DASK_WORKERS, or the cores left beside
    one core per GPU worker (at least 1, at most 4: each is a process with its own memory)."""
    if settings.dask_workers:
        return settings.dask_workers
    return max(1, min(4, (os.cpu_count() or 1) - gpus))


def local_cluster_kwargs(settings: Settings, preload: bool = True) -> dict:
    """The local CPU cluster: one single-threaded worker process per core (at most 4).

    Scheduler and workers listen on loopback; the dashboard (no authentication) on
    `NIGHTSHIFT_DASK_DASHBOARD_ADDRESS`, by default loopback on a free port: never another
    run's, never all interfaces. With `preload` (a cluster whose first work is the
    ingest: the flow's, `nightshift ingest`'s), each worker imports the ingest engine in
    the background as it starts (`WORKER_PRELOAD`), not in that first work.
    """
    return {
        "n_workers": cpu_worker_count(settings),
        "threads_per_worker": 1,
        "processes": True,
        "host": "127.0.0.1",
        "dashboard_address": settings.dask_dashboard_address,
        "preload": [WORKER_PRELOAD] if preload else [],
    }


def mixed_worker_spec(cpu_workers: int, gpus: int, preload: bool = True) -> dict[str, dict]:
    """Worker specs of the mixed local cluster: CPU workers that see no GPU, and one worker
    per GPU that sees its own GPU first (CUDA_VISIBLE_DEVICES rotated, as dask-cuda does),
    so that `cuda:0` inside a GPU worker is that worker's GPU."""
    from distributed import Nanny

    def nanny(env: dict[str, str], resources: dict[str, float], preload: list[str]) -> dict:
        options = {
            "nthreads": 1,
            "host": "127.0.0.1",
            "env": env,
            "resources": resources,
            "preload": preload,
        }
        return {"cls": Nanny, "options": options}

    # only the CPU workers ingest: the GPU workers do not pay the engine's imports
    cpu_preload = [WORKER_PRELOAD] if preload else []
    spec = {
        f"cpu-{i}": nanny({"CUDA_VISIBLE_DEVICES": ""}, {CPU: 1}, cpu_preload)
        for i in range(cpu_workers)
    }
    for g in range(gpus):
        rotated = ",".join(str((g + k) % gpus) for k in range(gpus))
        spec[f"gpu-{g}"] = nanny({"CUDA_VISIBLE_DEVICES": rotated}, {GPU: 1}, [])
    return spec


def mixed_local_cluster(
    cpu_workers: int, gpus: int, dashboard_address: str = "127.0.0.1:0", preload: bool = True
) -> distributed.SpecCluster:
    """One scheduler on loopback with `cpu_workers` CPU workers and one worker per GPU
    (the CPU workers preload the ingest engine with `preload`, see `local_cluster_kwargs`)."""
    from distributed import Scheduler, SpecCluster

    return SpecCluster(
        workers=mixed_worker_spec(cpu_workers, gpus, preload),
        scheduler={
            "cls": Scheduler,
            "options": {"host": "127.0.0.1", "dashboard_address": dashboard_address},
        },
        name="nightshift-mixed",
    )


def split_workers(resources: dict[str, dict[str, float]]) -> tuple[list[str], list[str]]:
    """(CPU workers, GPU workers) by the resources each advertises, sorted.

    A worker advertising `GPU` is kept for GPU work; every other one is a CPU worker.
    """
    gpu = sorted(a for a, r in resources.items() if r.get(GPU, 0) > 0)
    cpu = sorted(a for a in resources if a not in gpu)
    return cpu, gpu


def workers_by_kind(client: distributed.Client) -> tuple[list[str], list[str]]:
    """The cluster's (CPU workers, GPU workers), as the scheduler knows them now."""
    info = client.scheduler_info(n_workers=-1)["workers"]
    return split_workers({a: w.get("resources") or {} for a, w in info.items()})


def cpu_work_options(client: distributed.Client) -> dict:
    """`submit` options that keep CPU work off the GPU workers (anywhere when there are none)."""
    cpu, gpu = workers_by_kind(client)
    if gpu and cpu:
        return {"workers": cpu, "allow_other_workers": False}
    return {}


def gpu_or_all_workers(client: distributed.Client) -> list[str]:
    """Where trials and DDP ranks go: the GPU workers when the cluster has any, else all."""
    cpu, gpu = workers_by_kind(client)
    return gpu or cpu


def gather_within(
    client: distributed.Client,
    futures: list[distributed.Future],
    timeout_s: float,
    errors: str = "raise",
) -> list:
    """`client.gather`, bounded: waits at most `timeout_s` for the futures, then gathers.

    `Client.gather` itself has no timeout, and a task pinned to a worker that died waits
    for it forever; every gather in the project goes through here (a layout test checks).
    Raises TimeoutError naming how many of the futures were still pending.
    """
    try:
        with client.as_current():  # `wait` finds its client as the current one
            distributed.wait(futures, timeout=timeout_s)
    except TimeoutError:
        pending = sum(not f.done() for f in futures)
        raise TimeoutError(
            f"{pending} of {len(futures)} Dask task(s) still pending after {timeout_s:.0f} s"
        ) from None
    return client.gather(futures, errors=errors)


def local_cluster(settings: Settings, preload: bool = True) -> distributed.SpecCluster:
    """A local cluster sized to the machine: CPU workers, plus one worker per GPU if any.
    `preload`: the CPU workers import the ingest engine as they start (the flow's cluster,
    whose first task is the ingest)."""
    gpus = gpu_count()
    if gpus:
        return mixed_local_cluster(
            cpu_worker_count(settings, gpus), gpus, settings.dask_dashboard_address, preload
        )
    return distributed.LocalCluster(**local_cluster_kwargs(settings, preload))


@contextmanager
def stage_client(
    address: str | None, settings: Settings, preload: bool = False
) -> Iterator[distributed.Client]:
    """A client on `address`, or on a local cluster started for this block (CLI stages).

    `preload` only for the ingest's own cluster: a tune or training stage run alone need
    not import the ingest engine beside its trials and ranks.
    """
    if address:
        with distributed.Client(address, set_as_default=False) as client:
            yield client
        return
    cluster = local_cluster(settings, preload)
    logger.info("started a local Dask cluster: %s", cluster)
    with cluster, distributed.Client(cluster, set_as_default=False) as client:
        yield client
