"""The folds of a backtest: rolling-origin evaluation, the time-correct cross-validation.

Each fold trains on every day before its period (an expanding window, as the nightly run
does) and scores the period itself: with `every="month"`, train through March and score
April, then train through April and score May, and so on. A fold is a nightly run whose
`as_of` is the period's last day and whose holdout is the period.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Literal

from tasks.core.context import RunContext

Every = Literal["month", "week"]


@dataclass(frozen=True)
class Fold:
    """One cut-off: train on the days before `first`, score `first..last`."""

    first: date
    last: date
    label: str  # "2013-04" for a month, "2013-W14" for an ISO week

    @property
    def cutoff(self) -> date:
        """The last training day."""
        return self.first - timedelta(days=1)

    @property
    def holdout_days(self) -> int:
        return (self.last - self.first).days + 1


def _period(day: date, every: Every) -> tuple[date, date, str]:
    """The calendar month or ISO week (Monday..Sunday) holding `day`, and its label."""
    if every == "month":
        last = calendar.monthrange(day.year, day.month)[1]
        return day.replace(day=1), day.replace(day=last), f"{day:%Y-%m}"
    monday = day - timedelta(days=day.weekday())
    year, week, _ = monday.isocalendar()
    return monday, monday + timedelta(days=6), f"{year}-W{week:02d}"


def plan_folds(start: date, end: date, every: Every = "month") -> list[Fold]:
    """The folds covering `start..end`, one per period, clipped to the range."""
    if end < start:
        raise ValueError(f"backtest: --to {end} is before --from {start}")
    if every not in ("month", "week"):
        raise ValueError(f"backtest: --every must be month or week, got {every!r}")
    folds = []
    day = start
    while day <= end:
        first, last, label = _period(day, every)
        folds.append(Fold(max(first, start), min(last, end), label))
        day = last + timedelta(days=1)
    return folds


def backtest_context(ctx: RunContext, name: str) -> RunContext:
    """The backtest's own context: results under `backtests/<name>/`, MLflow runs in the
    `<experiment>-backtest` experiment, and a model name no version is registered under
    (so no champion is ever scored or touched)."""
    return ctx.with_(
        run_root=f"backtests/{name}",
        experiment=f"{ctx.experiment}-backtest",
        experiment_id=None,
        model_name=f"{ctx.model_name}-backtest",
    )


def fold_context(ctx: RunContext, fold: Fold, name: str) -> RunContext:
    """The run context of one fold: its own `as_of`, outputs, study, experiment and model.

    `backtests/<name>/runs/<as_of>/` holds the stages' outputs and `backtests/<name>/studies/`
    the fold's tuning study; MLflow runs go to the `<experiment>-backtest` experiment, and
    the model name is one no version is ever registered under, so no champion is scored.
    """
    return backtest_context(ctx, name).with_(as_of=fold.last)
