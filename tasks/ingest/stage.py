"""The ingest stage: every landed day of the dataset up to `as_of`, on Dask or on Spark.

The same function runs in the flow (`prefect_tasks.ingest_landed_days`) and alone from
the CLI (`nightshift ingest`). Unchanged days are skipped by content hash; the result is
written to `runs/<dataset>/<as_of>/ingest/result.json` for the stages after it.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta
from typing import TYPE_CHECKING

import distributed

from data_contracts import load_contract
from tasks.core.context import RunContext
from tasks.core.lake import Lake
from tasks.core.results import write_result
from tasks.core.settings import get_settings
from tasks.datasets import get_dataset
from tasks.datasets.spec import DatasetSpec
from tasks.ingest.generation import MISSING_DAY, DayRejected, remove_unreferenced
from tasks.ingest.holds import held_days
from tasks.ingest.pandas_engine import clean_days_dask
from tasks.ingest.plan import (
    Engine,
    IngestSummary,
    PartitionReport,
    changed_days,
    days_to_ingest,
    held_report,
)
from tasks.ops.cluster import stage_client
from tasks.quality.dimensions import dimensions_dir
from tasks.quality.rules import ContractViolation

if TYPE_CHECKING:  # pyspark is imported only when the Spark engine runs
    from pyspark.sql import SparkSession

logger = logging.getLogger("nightshift.ingest")


def ingest_days(
    lake_root: str,
    dataset: str,
    days: list[date],
    dims_dir: str | None,
    client: distributed.Client | None = None,
    log: logging.Logger | logging.LoggerAdapter = logger,
    engine: Engine = "dask",
    spark: SparkSession | None = None,
) -> list[PartitionReport]:
    """Process the days that changed, on Dask (`client`) or Spark (`spark`); reuse the rest.

    Both engines write the same partitions and manifests, so the content-hash watermark
    (the manifests' fingerprints) is shared: switching engines does not rebuild the lake.
    Held days are not touched. A day whose new generation is rejected keeps its previous
    one; with the contract's `hold` outcome the night goes on (the report says why),
    otherwise `DaysRejected` names every rejected day, file and rule, after the good days
    were published.
    """
    lake = Lake(lake_root)
    reports, todo = changed_days(lake, dataset, days, dims_dir)
    log.info("ingest (%s): %d day(s) to process, %d unchanged", engine, len(todo), len(reports))
    if engine == "spark":
        from tasks.ingest.spark_engine import clean_days_spark

        if spark is None:
            raise ValueError("engine='spark' needs a SparkSession (spark_engine.spark_session)")
        done, rejected = clean_days_spark(spark, lake_root, dataset, todo, dims_dir, log)
    elif engine == "dask":
        if client is None:
            raise ValueError("engine='dask' needs a distributed.Client")
        done, rejected = clean_days_dask(client, lake_root, dataset, todo, dims_dir, log)
    else:
        raise ValueError(f"unknown ingest engine {engine!r}; expected 'dask' or 'spark'")
    reports.update({r.day: r for r in done})
    spec = get_dataset(dataset)
    for report in reports.values():  # files a killed run moved or left behind: unreadable
        if report.skipped and not report.held:
            day = date.fromisoformat(report.day)
            remove_unreferenced(lake, spec, day, lake.read_manifest(dataset, day)["files"])
    for error in sorted(rejected, key=lambda e: e.day):
        log.warning("ingest: %s", error.message)
        if error.outcome == "hold":
            day = date.fromisoformat(error.day)
            reports[error.day] = held_report(lake, spec, day, f"held by contract: {error.message}")
    failed = sorted((e for e in rejected if e.outcome != "hold"), key=lambda e: e.day)
    if failed:
        raise DaysRejected(failed)
    return [reports[d.isoformat()] for d in days]


class DaysRejected(ContractViolation):
    """One or more days' new generations were rejected; their previous ones are kept."""

    def __init__(self, rejected: list[DayRejected]) -> None:
        self.days = [e.day for e in rejected]
        lines = "\n".join(f"  - {e.message}" for e in rejected)
        super().__init__(
            f"ingest rejected {len(rejected)} day(s) ({', '.join(self.days)}); each keeps its "
            f"previous generation, and its new delivery is retried next run:\n{lines}\n"
            "fix and re-deliver the day, or hold it: `nightshift hold --day D --reason ...`"
        )


def missing_days(
    lake: Lake, spec: DatasetSpec, landed: list[date], first_day: date, as_of: date
) -> list[date]:
    """Days up to `as_of` with no delivery at all, from the first landed day (or
    `first_day`) on, that no operator holds: the `day:delivered` rule's subjects."""
    if not landed:
        return []
    start = max(first_day, landed[0])
    have = set(landed)
    held = held_days(lake, spec.name)
    gaps = []
    day = start
    while day <= as_of:
        if day not in have and day.isoformat() not in held:
            gaps.append(day)
        day += timedelta(days=1)
    return gaps


def check_missing_days(
    lake: Lake,
    spec: DatasetSpec,
    days: list[date],
    first_day: date,
    as_of: date,
    log: logging.Logger | logging.LoggerAdapter = logger,
) -> tuple[dict[str, str], DayRejected | None]:
    """Apply the fact contract's `on_missing_day` to every undelivered day up to `as_of`.

    Returns the days held because of it (day -> reason) and, with `fail`, the error to
    raise once the delivered days are ingested.
    """
    gaps = missing_days(lake, spec, days, first_day, as_of)
    if not gaps:
        return {}, None
    outcome = load_contract(spec.fact.name).thresholds.on_missing_day
    names = ", ".join(d.isoformat() for d in gaps[:10]) + (" ..." if len(gaps) > 10 else "")
    folder = lake.path("landing", spec.name, "daily")
    message = (
        f"{len(gaps)} day(s) up to as_of={as_of} never delivered under {folder}: {names} "
        f"(rule: {MISSING_DAY}, outcome: {outcome})"
    )
    log.warning("ingest: %s", message)
    if outcome == "hold":
        return {
            d.isoformat(): f"held by contract: not delivered (rule: {MISSING_DAY})" for d in gaps
        }, None
    return {}, DayRejected(message, gaps[0].isoformat(), outcome)


def ingest(
    ctx: RunContext,
    first_day: date | None = None,
    engine: Engine = "dask",
    log: logging.Logger | logging.LoggerAdapter = logger,
) -> IngestSummary:
    """Ingest every landed day in [first_day, as_of] into clean/ and quarantine/."""
    lake = ctx.lake
    days = days_to_ingest(lake, ctx.dataset, first_day or date.min, ctx.as_of, log)
    if not days:
        raise FileNotFoundError(
            f"no landed days of {ctx.dataset} between {first_day or 'the first'} and "
            f"{ctx.as_of} under {lake.path('landing', ctx.dataset, 'daily')}; run "
            f"`nightshift land --dataset {ctx.dataset} --through {ctx.as_of}` first"
        )
    landed = [d for d in lake.landed_days(ctx.dataset) if d <= ctx.as_of]
    held_missing, missing = check_missing_days(
        lake, ctx.spec, landed, first_day or date.min, ctx.as_of, log
    )
    dims_dir = dimensions_dir(lake, ctx.spec, ctx.as_of)
    if engine == "spark":
        from tasks.ingest.spark_engine import spark_session

        spark = spark_session(ctx.spark_master)
        reports = ingest_days(
            ctx.lake_root, ctx.dataset, days, dims_dir, log=log, engine="spark", spark=spark
        )
    else:
        with stage_client(ctx.dask_address, get_settings(), preload=True) as client:
            reports = ingest_days(
                ctx.lake_root, ctx.dataset, days, dims_dir, client, log, engine=engine
            )
    if missing is not None:  # the delivered days are in; now say what never came
        raise DaysRejected([missing])
    summary = IngestSummary.of(ctx.spec, reports, engine)
    summary.held_days.update(held_missing)
    if summary.held_days:
        log.warning("ingest: held day(s): %s", ", ".join(sorted(summary.held_days)))
    log.info(
        "ingest: %d raw rows -> %d clean, %d quarantined, %d duplicates dropped (%d days)",
        summary.raw_rows,
        summary.clean_rows,
        summary.quarantined_rows,
        summary.duplicates_dropped,
        len(days),
    )
    return write_result(ctx, "ingest", summary)
