"""Backfill: plan which nights to run, and report how each went.

The plan is a plain function over the registry (see `tasks.ops.schedule`), so it is tested
without Prefect; the flow in `flows/backfill.py` only loops over the plan.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date
from typing import Any

from tasks.ops.schedule import completed_as_of_dates, dates_to_run

logger = logging.getLogger("nightshift.backfill")


@dataclass
class BackfillResult:
    """One night of a backfill: its date, final state and registered version."""

    as_of: str
    state: str
    version: str | None
    alias: str | None
    message: str | None

    @classmethod
    def of(cls, as_of: date, state: Any) -> BackfillResult:
        """From a night's final (Prefect) state: completed with its summary, or why not."""
        if state.is_completed():
            summary = state.result()
            return cls(str(as_of), state.name, summary.version, summary.alias, None)
        return cls(str(as_of), state.name, None, None, state.message)


class BackfillFailed(RuntimeError):
    """Some nights of a backfill failed; the message names each date and why."""


def plan_backfill(
    start: date,
    end: date,
    tracking_uri: str,
    model_name: str,
    rerun_done: bool = False,
    log: logging.Logger | logging.LoggerAdapter = logger,
) -> list[date]:
    """The dates of [start, end] without a registered version (all of them if `rerun_done`)."""
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


def failed_nights(start: date, end: date, results: list[BackfillResult]) -> None:
    """Fail (naming each night and why) when any night of the backfill failed."""
    failed = [r for r in results if r.state.lower() != "completed"]
    if failed:
        raise BackfillFailed(
            f"backfill {start}..{end}: {len(failed)} of {len(results)} night(s) failed: "
            + "; ".join(f"{r.as_of}: {r.message}" for r in failed)
        )
