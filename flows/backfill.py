"""The backfill flow: run `nightly-retrain` for every date of a range that is not done yet.

Sequential (each night's run is a subflow, so the Prefect UI shows one child run per date
under the backfill), because the nights share the registry's champion and later nights
compare against earlier ones.
"""

from __future__ import annotations

from datetime import date

from prefect import flow
from pydantic import Field

from flows.nightly import nightly_retrain
from flows.params import NightlyParams
from tasks.core.context import RunContext
from tasks.core.settings import get_settings
from tasks.ops.backfill import BackfillResult
from tasks.ops.prefect_tasks import plan_backfill_task, publish_backfill


@flow(name="backfill", flow_run_name="backfill-{start}..{end}", log_prints=True)
def backfill(
    start: date = Field(description="First as_of date of the range."),
    end: date = Field(description="Last as_of date of the range (included)."),
    rerun_done: bool = Field(
        default=False,
        description="Also re-run dates that already have a registered model version.",
    ),
    params: NightlyParams = Field(
        default=NightlyParams(), description="The nightly parameters each night runs with."
    ),
) -> list[BackfillResult]:
    """Run the nightly flow for each date of [start, end] not yet done, oldest first."""
    ctx = RunContext.from_settings(get_settings(), end, params.dataset)

    # Plan: the dates without a registered model version
    todo = plan_backfill_task(start, end, ctx.tracking_uri, ctx.model_name, rerun_done)

    # Run: one nightly subflow per date, in order; a failed night does not stop the rest
    results = [
        BackfillResult.of(night, nightly_retrain(as_of=night, params=params, return_state=True))
        for night in todo
    ]

    # Report: a table artifact; the backfill fails if any night failed
    return publish_backfill(start, end, results)
