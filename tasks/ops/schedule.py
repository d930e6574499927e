"""Schedule: which date a nightly run is for, and which dates a backfill still owes.

A scheduled run carries no `as_of`: the date is the one the run was scheduled for, in
the schedule's time zone, so the 02:00 America/New_York run of 2013-12-31 trains on
data up to 2013-12-31 even if a worker picks it up late or after midnight UTC. A manual
run without `as_of` uses the day it was started. "Done" means the registry holds a
model version tagged with that `as_of` whose release completed (`release_state=completed`,
set as the release's last step): a version is registered only after the data passed its
contracts and the model was evaluated, and a release that died half-way (a crash, the
MLflow server gone) leaves no completed version, so that night stays "not done" and the
next backfill re-runs it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

NIGHTLY_CRON = "0 2 * * *"


def scheduled_as_of(scheduled_start: datetime, timezone: str) -> date:
    """The calendar date of a scheduled start, in the schedule's time zone."""
    if scheduled_start.tzinfo is None:  # Prefect hands out aware datetimes; be safe
        scheduled_start = scheduled_start.replace(tzinfo=ZoneInfo("UTC"))
    return scheduled_start.astimezone(ZoneInfo(timezone)).date()


def _as_date(value: date | str) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def resolve_as_of(
    as_of: date | str | None, timezone: str, scheduled_start: datetime | None = None
) -> date:
    """`as_of` as given, or the date the run was scheduled for (today when unscheduled)."""
    if as_of is not None:
        return _as_date(as_of)
    return scheduled_as_of(scheduled_start or datetime.now(ZoneInfo("UTC")), timezone)


def days_between(first: date, last: date) -> list[date]:
    """Every date from `first` to `last`, both included."""
    if last < first:
        raise ValueError(f"backfill range is empty: end {last} is before start {first}")
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def dates_to_run(first: date, last: date, done: Iterable[date], rerun: bool = False) -> list[date]:
    """The dates of [first, last] a backfill must run, oldest first (all of them if `rerun`)."""
    finished = set(done)
    return [d for d in days_between(first, last) if rerun or d not in finished]


def completed_as_of_dates(tracking_uri: str, model_name: str) -> set[date]:
    """The `as_of` dates for which the registry holds a completed release (finished nights)."""
    # MLflow imports here: `resolve_as_of` is on the path of every flow run's start.
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    try:
        versions = client.search_model_versions(f"name='{model_name}'")
    except MlflowException:
        return set()  # no registered model yet: nothing is done
    done = set()
    for version in versions:
        tags = version.tags or {}
        tag = tags.get("as_of")
        if tag and tags.get("release_state") == "completed":
            done.add(date.fromisoformat(tag))
    return done
