"""The ingest stage: every landed day of the dataset up to `as_of`, on Dask or on Spark.

The same function runs in the flow (`prefect_tasks.ingest_landed_days`) and alone from
the CLI (`nightshift ingest`). Unchanged days are skipped by content hash; the result is
written to `runs/<dataset>/<as_of>/ingest/result.json` for the stages after it.
"""

from __future__ import annotations

import logging
from datetime import date
from typing import TYPE_CHECKING

import distributed

from tasks.core.context import RunContext
from tasks.core.lake import Lake
from tasks.core.results import write_result
from tasks.core.settings import get_settings
from tasks.ingest.pandas_engine import clean_days_dask
from tasks.ingest.plan import (
    Engine,
    IngestSummary,
    PartitionReport,
    changed_days,
    days_to_ingest,
)
from tasks.ops.cluster import stage_client
from tasks.quality.dimensions import dimensions_dir

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
    """
    reports, todo = changed_days(Lake(lake_root), dataset, days, dims_dir)
    log.info("ingest (%s): %d day(s) to process, %d unchanged", engine, len(todo), len(reports))
    if engine == "spark":
        from tasks.ingest.spark_engine import clean_days_spark

        if spark is None:
            raise ValueError("engine='spark' needs a SparkSession (spark_engine.spark_session)")
        done = clean_days_spark(spark, lake_root, dataset, todo, dims_dir)
    elif engine == "dask":
        if client is None:
            raise ValueError("engine='dask' needs a distributed.Client")
        done = clean_days_dask(client, lake_root, dataset, todo, dims_dir, log)
    else:
        raise ValueError(f"unknown ingest engine {engine!r}; expected 'dask' or 'spark'")
    reports.update({r.day: r for r in done})
    return [reports[d.isoformat()] for d in days]


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
    dims_dir = dimensions_dir(lake, ctx.spec, ctx.as_of)
    if engine == "spark":
        from tasks.ingest.spark_engine import spark_session

        spark = spark_session(ctx.spark_master)
        reports = ingest_days(
            ctx.lake_root, ctx.dataset, days, dims_dir, log=log, engine="spark", spark=spark
        )
    else:
        with stage_client(ctx.dask_address, get_settings()) as client:
            reports = ingest_days(
                ctx.lake_root, ctx.dataset, days, dims_dir, client, log, engine=engine
            )
    summary = IngestSummary.of(ctx.spec, reports, engine)
    log.info(
        "ingest: %d raw rows -> %d clean, %d quarantined, %d duplicates dropped (%d days)",
        summary.raw_rows,
        summary.clean_rows,
        summary.quarantined_rows,
        summary.duplicates_dropped,
        len(days),
    )
    return write_result(ctx, "ingest", summary)
