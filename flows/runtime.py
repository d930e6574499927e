"""Run-time plumbing of the flows: the Prefect API, the Dask task runner, deferred stages.

Without `PREFECT_API_URL`, every Dask worker process would start its own ephemeral
Prefect server (and orphan it). So the CLI finds or starts the embedded server
(`flows/server.py`: kept across runs by default), exports its URL to the environment
before the Dask cluster starts, and, for a server of its own, stops it at the end. Its
SQLite database stays under `<home>/prefect`, where `make ui-prefect` opens it.

Start-up is on the clock (issue 14: <= 5 s from `nightshift run` to the first task), so
this module imports nothing it does not need before the first task: the later stages'
task modules (torch, MLflow, ONNX, Great Expectations) load through `Deferred`, in the
background while the ingest runs.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import date
from typing import Any

from prefect.context import FlowRunContext
from prefect.futures import PrefectFuture
from prefect.task_runners import ThreadPoolTaskRunner
from prefect_dask import DaskTaskRunner

from flows.server import open_prefect_api
from tasks.core.context import RunContext
from tasks.core.settings import Settings, get_settings
from tasks.core.tracking import with_experiment
from tasks.ops.cluster import (
    cpu_worker_count,
    gpu_count,
    local_cluster_kwargs,
    mixed_local_cluster,
)
from tasks.ops.schedule import resolve_as_of

# The longest wait for the background preparation (MLflow store, imports) after the ingest.
PREPARE_TIMEOUT_S = 600.0


@contextmanager
def prefect_api() -> Iterator[str]:
    """Yield a Prefect API URL that answers: the configured one, or the embedded server's."""
    with open_prefect_api(get_settings()) as api:
        api.wait_until_ready()
        yield api.url


# Modules of the `Deferred` names created so far: what `prepare_in_background` imports.
DEFERRED_MODULES: dict[str, None] = {}


class Deferred:
    """A name of a stage module (a Prefect task, a hook, a context manager), imported
    when it is first called or read.

    The later stages' modules import torch, MLflow, ONNX and Great Expectations: seconds
    a run need not spend before its first task. `prepare_in_background` imports them
    while the ingest runs; a call before that import finished waits for it (Python's
    per-module import lock), never imports twice.
    """

    def __init__(self, module: str, name: str) -> None:
        self.module, self.__name__ = module, name
        DEFERRED_MODULES[module] = None

    def resolve(self):
        """The object itself (imports its module on first use)."""
        return getattr(importlib.import_module(self.module), self.__name__)

    def __call__(self, *args, **kwargs):
        return self.resolve()(*args, **kwargs)

    def __getattr__(self, name: str):  # `.submit`, `.with_options`, ...: the object's own
        if name.startswith("__"):  # copy/pickle probing a half-built instance
            raise AttributeError(name)
        return getattr(self.resolve(), name)

    def __repr__(self) -> str:
        return f"Deferred({self.module}.{self.__name__})"


def deferred(module: str, *names: str) -> tuple[Deferred, ...]:
    """`from module import names`, deferred: one `Deferred` per name."""
    return tuple(Deferred(module, name) for name in names)


def submit_beside(runner: ThreadPoolTaskRunner, task: Deferred, **parameters: Any) -> PrefectFuture:
    """Start a stage's Prefect task in a thread of the flow process, beside the flow's own
    next stage (the caller waits on the future, bounded by the stage's timeout).

    Without its Prefect timeout: Prefect cannot time a task out in a worker thread, and
    warns on every run when one has a timeout (0 reads as none).
    """
    return runner.submit(task.with_options(timeout_seconds=0), parameters)


def prepare_in_background(ctx: RunContext) -> Future[RunContext]:
    """Start, in a thread of the flow process: MLflow's store and experiment, then the
    imports of the deferred stage modules. The ingest runs meanwhile (its work is on the
    Dask workers; nothing of it logs to MLflow). `prepared` collects the context.
    """

    def prepare() -> RunContext:
        ready = with_experiment(ctx)
        for module in list(DEFERRED_MODULES):
            importlib.import_module(module)
        return ready

    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nightshift-prepare")
    try:
        return executor.submit(prepare)
    finally:
        executor.shutdown(wait=False)


def prepared(future: Future[RunContext]) -> RunContext:
    """The run context with its MLflow experiment, once the background preparation ended
    (its error, e.g. an unreachable tracking server, is raised here)."""
    return future.result(timeout=PREPARE_TIMEOUT_S)


def dask_task_runner(settings: Settings) -> DaskTaskRunner:
    """The flows' task runner: an existing scheduler, or a local cluster of the machine's
    cores, with one GPU worker per GPU beside the CPU workers when there are GPUs."""
    if settings.dask_address:
        return DaskTaskRunner(address=settings.dask_address)
    gpus = gpu_count()
    if gpus:
        return DaskTaskRunner(
            cluster_class=mixed_local_cluster,
            cluster_kwargs={
                "cpu_workers": cpu_worker_count(settings, gpus),
                "gpus": gpus,
                "dashboard_address": settings.dask_dashboard_address,
            },
        )
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster", cluster_kwargs=local_cluster_kwargs(settings)
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


def scheduled_start():
    """When the current flow run was scheduled to start (None outside a flow run)."""
    from prefect.runtime import flow_run

    return flow_run.scheduled_start_time if flow_run.id else None


def nightly_run_name() -> str:
    """Run name `nightly-<as_of>`, also for scheduled runs whose `as_of` is not given."""
    from prefect.runtime import flow_run

    as_of = flow_run.parameters.get("as_of")
    return f"nightly-{resolve_as_of(as_of, get_settings().schedule_timezone, scheduled_start())}"


def open_run(as_of: date | None, dataset: str) -> RunContext:
    """The run context of the current flow run: dates resolved, cluster up.

    An empty `as_of` is the date the run was scheduled for, in the schedule's time zone.
    MLflow's store and experiment come with `prepare_in_background` + `prepared`, in the
    flow process, before anything that logs to MLflow fans out to the workers.
    """
    from prefect.runtime import flow_run

    from tasks.reporting.prefect_tasks import tag_flow_run

    settings = get_settings()
    ctx = RunContext.from_settings(
        settings,
        resolve_as_of(as_of, settings.schedule_timezone, scheduled_start()),
        dataset,
        dask_address=flow_scheduler_address(),
        flow_run_id=str(flow_run.id) if flow_run.id else None,
    )
    if flow_run.id:  # filterable in the UI from the start, also when the run fails
        tag_flow_run(flow_run.id, [f"as_of:{ctx.as_of}", f"dataset:{ctx.dataset}"])
    return ctx
