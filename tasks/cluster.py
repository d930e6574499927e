"""The Dask cluster every Dask-backed stage shares: from settings, or local by default.

With `NIGHTSHIFT_DASK_ADDRESS` the flow connects to an existing scheduler (dask-kubernetes,
dask-jobqueue, a dask-cuda-worker fleet). Without it, the flow's task runner starts a
LocalCUDACluster when GPUs and dask-cuda are present, else a LocalCluster sized to the
machine, and tears it down when the flow ends.
"""

from __future__ import annotations

import logging
import os

from prefect.context import FlowRunContext
from prefect_dask import DaskTaskRunner

from tasks.settings import Settings

logger = logging.getLogger("nightshift.cluster")


def _gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # a broken CUDA install must not stop a CPU run
        return 0


def _dask_cuda_usable() -> bool:
    try:
        import dask_cuda  # noqa: F401
    except Exception:  # ImportError, or cuda bindings missing without the [cu12] extra
        return False
    return True


def dask_task_runner(settings: Settings) -> DaskTaskRunner:
    """The task runner for flows: an existing scheduler, or a local (CUDA) cluster."""
    if settings.dask_address:
        return DaskTaskRunner(address=settings.dask_address)
    gpus = _gpu_count()
    if gpus and _dask_cuda_usable():
        return DaskTaskRunner(
            cluster_class="dask_cuda.LocalCUDACluster",
            cluster_kwargs={"dashboard_address": ":0", "resources": {"GPU": 1}},
        )
    workers = settings.dask_workers or max(1, min(4, os.cpu_count() or 1))
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={
            "n_workers": workers,
            "threads_per_worker": 1,
            "processes": True,
            "dashboard_address": ":0",  # never collide with another run's dashboard
        },
    )


def flow_scheduler_address() -> str:
    """The scheduler address of the running flow's Dask task runner.

    The runner creates its client lazily; touching `.client` starts (or connects to) the
    cluster so that stages dispatching their own Dask work use the very same cluster.
    """
    context = FlowRunContext.get()
    runner = getattr(context, "task_runner", None)
    if not isinstance(runner, DaskTaskRunner):
        raise RuntimeError("flow_scheduler_address() needs a flow running on a DaskTaskRunner")
    return runner.client.scheduler.address
