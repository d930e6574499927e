"""Run-time plumbing of the flows: the Prefect API and the Dask task runner.

Without `PREFECT_API_URL`, every Dask worker process would start its own ephemeral
Prefect server (and orphan it). So the CLI starts one private server subprocess, exports
its URL to the environment before the Dask cluster starts, and stops it at the end. Its
SQLite database stays under `<home>/prefect`, where `make ui-prefect` opens it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date

from prefect.context import FlowRunContext
from prefect.events.worker import EventsWorker
from prefect.logging.handlers import APILogWorker
from prefect.server.api.server import SubprocessASGIServer
from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings
from prefect_dask import DaskTaskRunner

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


@contextmanager
def prefect_api() -> Iterator[str]:
    """Yield a Prefect API URL: the configured one, or a private embedded server's."""
    configured = get_current_settings().api.url
    if configured:
        yield configured
        return
    server = SubprocessASGIServer()
    server.start(timeout=120)
    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            yield server.api_url
    finally:
        # Ship the last log lines and events before the server they go to goes away.
        APILogWorker.drain_all(timeout=10)
        EventsWorker.drain_all(timeout=10)
        os.environ.pop("PREFECT_API_URL", None)
        server.stop()


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
    """The run context of the current flow run: dates resolved, cluster up, MLflow ready.

    An empty `as_of` is the date the run was scheduled for, in the schedule's time zone.
    MLflow's store and experiment are created here, in the flow process, before anything
    fans out to the workers.
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
    return with_experiment(ctx)
