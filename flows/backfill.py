"""The backfill flow: run `nightly-retrain` for every date of a range that is not done yet.

Sequential by default (each night's run is a subflow, so the Prefect UI shows one child
run per date under the backfill), because the nights share the registry's champion and
later nights compare against earlier ones.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from prefect import flow
from pydantic import Field

from flows.nightly import nightly_retrain
from tasks.backfill import BackfillResult, plan_backfill, publish_backfill
from tasks.settings import get_settings
from tasks.train import TrainConfig
from tasks.tune import TuneConfig


@flow(name="backfill", flow_run_name="backfill-{start}..{end}", log_prints=True)
def backfill(
    start: date = Field(description="First as_of date of the range."),
    end: date = Field(description="Last as_of date of the range (included)."),
    rerun_done: bool = Field(
        default=False,
        description="Also re-run dates that already have a registered model version.",
    ),
    holdout_days: Annotated[int, Field(ge=1, le=120)] = Field(  # bounds: see flows/nightly.py
        default=31, description="Days before as_of held out."
    ),
    first_day: date | None = Field(default=None, description="First day of data; default: all."),
    train: TrainConfig = Field(default=TrainConfig(), description="Network and loop."),
    tune: TuneConfig = Field(default=TuneConfig(), description="Hyperparameter search."),
    engine: Literal["dask", "spark"] = Field(default="dask", description="Ingestion engine."),
) -> list[BackfillResult]:
    """Run the nightly flow for each date of [start, end] not yet done, oldest first."""
    settings = get_settings()

    # Plan: the dates without a registered model version
    todo = plan_backfill(start, end, settings.tracking_uri, settings.model_name, rerun_done)

    # Run: one nightly subflow per date, in order; a failed night does not stop the rest
    results = []
    for as_of in todo:
        state = nightly_retrain(
            as_of=as_of,
            holdout_days=holdout_days,
            first_day=first_day,
            train=train,
            tune=tune,
            engine=engine,
            return_state=True,
        )
        results.append(BackfillResult.of(as_of, state))

    # Report: a table artifact; the backfill fails if any night failed
    return publish_backfill(start, end, results)
