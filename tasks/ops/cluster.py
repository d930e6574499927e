"""The Dask cluster the stages share: an existing scheduler, or a local one sized to the machine.

With `NIGHTSHIFT_DASK_ADDRESS` everything connects to that scheduler (dask-kubernetes,
dask-jobqueue, a dask-cuda-worker fleet). Without it, the flow's task runner (see
`flows/runtime.py`) starts a LocalCUDACluster when GPUs and dask-cuda are present, else a
LocalCluster of the size `local_cluster_kwargs` chooses; a stage run alone from the CLI
starts the same local cluster for its own duration (`stage_client`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

import distributed

from tasks.core.settings import Settings

logger = logging.getLogger("nightshift.cluster")


def gpu_count() -> int:
    """GPUs torch can use here (0 on a CPU build or a broken CUDA install)."""
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # a broken CUDA install must not stop a CPU run
        return 0


def dask_cuda_usable() -> bool:
    try:
        import dask_cuda  # noqa: F401
    except Exception:  # ImportError, or cuda bindings missing without the CUDA extra
        return False
    return True


def local_cluster_kwargs(settings: Settings) -> dict:
    """The local CPU cluster: one single-threaded worker process per core (at most 4).

    Dashboards bind to loopback on a free port: never another run's, never all interfaces.
    """
    workers = settings.dask_workers or max(1, min(4, os.cpu_count() or 1))
    return {
        "n_workers": workers,
        "threads_per_worker": 1,
        "processes": True,
        "dashboard_address": "127.0.0.1:0",
    }


@contextmanager
def stage_client(address: str | None, settings: Settings) -> Iterator[distributed.Client]:
    """A client on `address`, or on a local cluster started for this block (CLI stages)."""
    if address:
        with distributed.Client(address, set_as_default=False) as client:
            yield client
        return
    kwargs = local_cluster_kwargs(settings)
    logger.info("starting a local Dask cluster (%d workers)", kwargs["n_workers"])
    with (
        distributed.LocalCluster(**kwargs) as cluster,
        distributed.Client(cluster, set_as_default=False) as client,
    ):
        yield client
