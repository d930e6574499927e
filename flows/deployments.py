"""The deployments, declared once: `nightshift serve` and `nightshift deploy` both use them.

    nightly-retrain/nightly-retrain   cron NIGHTSHIFT_SCHEDULE_CRON (02:00) in
                                      NIGHTSHIFT_SCHEDULE_TIMEZONE; as_of = the scheduled date
    backfill/backfill                 on demand: start..end, only the dates not yet done
                                      + an event trigger: `nightshift.model.decayed` or
                                      `nightshift.data.drifted` for its dataset starts
                                      one backfill of the event's as_of, debounced

`serve` runs both from one long-lived process (one machine, no work pool). `deploy`
registers the same two on a `process` work pool, whose `prefect worker` processes start
each run in a fresh subprocess (the server path). Entry points are module paths
(`flows.nightly.nightly_retrain`), so a worker needs this package installed, not a checkout
at the same relative path.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.events import DeploymentEventTrigger
from prefect.schedules import Cron, Schedule

from flows.backfill import backfill
from flows.nightly import nightly_retrain
from flows.params import NightlyParams
from tasks.core.settings import Settings
from tasks.monitoring.events import RETRAIN_EVENTS, dataset_resource_id
from tasks.ops.schedule import scheduled_as_of

NIGHTLY_DEPLOYMENT = "nightly-retrain/nightly-retrain"
BACKFILL_DEPLOYMENT = "backfill/backfill"


def nightly_schedule(settings: Settings) -> Schedule:
    """The nightly cron, in the configured time zone."""
    return Cron(settings.schedule_cron, timezone=settings.schedule_timezone)


def retrain_trigger(settings: Settings, dataset: str) -> DeploymentEventTrigger:
    """Event-driven retraining beside the cron: a decay or drift event of `dataset` starts
    one backfill of the event's `as_of`; more events within the debounce window start
    nothing more (a reactive trigger, threshold 1, fires once per `within` window).

    On the backfill deployment, not the nightly one: a backfill runs the nightly flow only
    for a date without a completed release, so when the night that raised the event goes
    on to release a model (the nightly emits before it retrains), the triggered run finds
    the night done and trains nothing; when that night failed, it retrains it. Only
    `start`/`end` are passed: the run keeps the deployment's own `params`.
    """
    return DeploymentEventTrigger(
        name=f"nightshift-retrain-on-decay-{dataset}",
        description=f"Retrain {dataset} when its champion decays or its data drifts "
        f"(at most one run per {settings.retrain_debounce_s:g} s).",
        expect=set(RETRAIN_EVENTS),
        match={"prefect.resource.id": dataset_resource_id(dataset)},
        posture="Reactive",
        threshold=1,
        within=timedelta(seconds=settings.retrain_debounce_s),
        parameters={"start": "{{ event.payload.as_of }}", "end": "{{ event.payload.as_of }}"},
    )


def build_deployments(
    settings: Settings,
    *,
    work_pool: str | None = None,
    nightly_parameters: dict[str, Any] | None = None,
) -> list[RunnerDeployment]:
    """Both deployments; on `work_pool` when given (runs start in `working_dir` = here)."""
    pool_args: dict[str, Any] = {}
    if work_pool:
        # Relative settings (NIGHTSHIFT_HOME=.nightshift, ./nightshift.env) resolve as they
        # do for `nightshift run` started here, not in the worker's temporary directory.
        pool_args = {"work_pool_name": work_pool, "job_variables": {"working_dir": str(Path.cwd())}}
    common: dict[str, Any] = {
        "entrypoint_type": EntrypointType.MODULE_PATH,
        "concurrency_limit": 1,  # two runs of one date would race for the same partitions
        **pool_args,
    }
    dataset = NightlyParams.model_validate((nightly_parameters or {}).get("params", {})).dataset
    nightly = nightly_retrain.to_deployment(
        name="nightly-retrain",
        schedules=[nightly_schedule(settings)],
        parameters=nightly_parameters or {},
        tags=["nightshift", "nightly"],
        description="Retrain on data up to the scheduled date; register; compare with the "
        "champion. Leave as_of empty to use the scheduled date.",
        **common,
    )
    backfilling = backfill.to_deployment(
        name="backfill",
        triggers=[retrain_trigger(settings, dataset)],
        # the nights a backfill runs use the nightly's params (dataset, budgets, release)
        parameters={k: v for k, v in (nightly_parameters or {}).items() if k == "params"},
        tags=["nightshift", "backfill"],
        description="Run nightly-retrain for every date of start..end without a registered "
        "model version, oldest first.",
        **common,
    )
    return [nightly, backfilling]


def ensure_process_work_pool(name: str) -> None:
    """Create the `process` work pool `name` unless it exists (what `prefect work-pool create` does)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.workers.process import ProcessWorker

    async def create() -> None:
        async with get_client() as client:
            with contextlib.suppress(ObjectAlreadyExists):
                await client.create_work_pool(
                    WorkPoolCreate(
                        name=name,
                        type="process",
                        base_job_template=ProcessWorker.get_default_base_job_template(),
                    )
                )

    asyncio.run(create())


def deploy(
    settings: Settings, work_pool: str, nightly_parameters: dict[str, Any] | None = None
) -> list[str]:
    """Register both deployments on the process work pool; returns their names."""
    ensure_process_work_pool(work_pool)
    deployments = build_deployments(
        settings, work_pool=work_pool, nightly_parameters=nightly_parameters
    )
    for deployment in deployments:
        deployment.apply(work_pool_name=work_pool)
    return [f"{d.flow_name}/{d.name}" for d in deployments]


def next_nightly_runs(
    settings: Settings, count: int, after: datetime
) -> list[tuple[datetime, date]]:
    """The next `count` scheduled starts after `after`, with the `as_of` each run will use.

    Uses the server's own schedule model, so this is what the Prefect scheduler creates.
    """
    from prefect.server.schemas.schedules import CronSchedule

    schedule = CronSchedule(cron=settings.schedule_cron, timezone=settings.schedule_timezone)
    starts = asyncio.run(schedule.get_dates(n=count, start=after))
    return [(start, scheduled_as_of(start, settings.schedule_timezone)) for start in starts]
