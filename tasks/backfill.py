"""Backfill: plan which nights to run, and report how each went.

The plan is a plain function over the registry (see `tasks.schedule`), so it is tested
without Prefect; the flow in `flows/backfill.py` only loops over the plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.states import State

from tasks.schedule import completed_as_of_dates, dates_to_run


@dataclass
class BackfillResult:
    """One night of a backfill: its date, final state and registered version."""

    as_of: str
    state: str
    version: str | None
    alias: str | None
    message: str | None

    @classmethod
    def of(cls, as_of: date, state: State) -> BackfillResult:
        if state.is_completed():
            summary = state.result()
            return cls(str(as_of), state.name, summary.version, summary.alias, None)
        return cls(str(as_of), state.name, None, None, state.message)


class BackfillFailed(RuntimeError):
    """Some nights of a backfill failed; the message names each date and why."""


@task(name="plan-backfill")
def plan_backfill(
    start: date, end: date, tracking_uri: str, model_name: str, rerun_done: bool = False
) -> list[date]:
    """The dates of [start, end] without a registered version (all of them if `rerun_done`)."""
    log = get_run_logger()
    done = completed_as_of_dates(tracking_uri, model_name)
    todo = dates_to_run(start, end, done, rerun=rerun_done)
    skipped = [d for d in done if start <= d <= end and d not in todo]
    log.info(
        "backfill %s..%s: %d to run, %d already done (%s)",
        start,
        end,
        len(todo),
        len(skipped),
        ", ".join(str(d) for d in sorted(skipped)) or "none",
    )
    return todo


@task(name="publish-backfill")
def publish_backfill(start: date, end: date, results: list[BackfillResult]) -> list[BackfillResult]:
    """Attach the per-night table; fail (naming the nights) when any night failed."""
    create_table_artifact(
        key="backfill-nights",
        table=[r.__dict__ for r in results] or [{"as_of": "-", "state": "nothing to run"}],
        description=f"backfill {start}..{end}",
    )
    failed = [r for r in results if r.state.lower() != "completed"]
    if failed:
        raise BackfillFailed(
            f"backfill {start}..{end}: {len(failed)} of {len(results)} night(s) failed: "
            + "; ".join(f"{r.as_of}: {r.message}" for r in failed)
        )
    return results
