"""The Spark engine: Spark schedules the batches of changed days, each cleaned by `clean_batch`.

The changed days are grouped into batches of consecutive days (`plan.plan_batches`, as on
Dask, at least one per executor core), and one Spark job runs them, one task per batch:
each Python worker cleans its batch with the pandas engine's `clean_batch` (Arrow-parsed
deliveries, the shared dialect and rule catalogue, one generation per day staged, checked
and published alone, the contract checks run on the written bytes and left in the
validation cache). Only each batch's reports come back to the driver; no data row does.

Why not Spark SQL: the earlier engine compiled the same rules into column expressions
and needed ~20 s for 31 days at x10 even in a warm JVM, ~27 s in a fresh one, where
DuckDB needs 1.3 s (BENCHMARKS.md "Spark ingest, third pass"). Running the one cleaning
function both engines share also makes the rules, messages, quarantine rows and
accounting identical by construction, not by a second implementation kept in step.
The job is a plain RDD of batches (`parallelize` + `mapPartitions`), not a DataFrame's
`mapInArrow`: its inputs and outputs are a few reports, not rows, and a fresh JVM's first
SQL job costs ~2 s more CPU (planner and Arrow classes) than its first RDD job.
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import date

from py4j.protocol import Py4JJavaError
from pyspark.errors import PySparkException
from pyspark.sql import SparkSession

from tasks.core.lake import Lake
from tasks.core.settings import get_settings
from tasks.datasets import get_dataset
from tasks.ingest.generation import DayRejected
from tasks.ingest.plan import PartitionReport, delivered_bytes, plan_batches

logger = logging.getLogger("nightshift.ingest_spark")

_SESSION_LOCK = threading.Lock()


def spark_session(
    master: str, shuffle_partitions: int = 8, local_java_options: str | None = None
) -> SparkSession:
    """The process's shared SparkSession (start-up costs seconds: create it once).

    ANSI mode stays on (Spark 4's default).

    A local session's JVM (driver and executors in one, started here) gets
    `local_java_options` (default: the `spark_local_java_options` setting, HotSpot's first
    JIT tier only): an ingest is a short job in a fresh JVM, and the optimising compiler
    spent more CPU compiling than its faster code saved (BENCHMARKS.md §30). It applies
    only when this call starts the JVM; a cluster's executors keep their own options.
    A local session's Python workers run this interpreter (`PYSPARK_PYTHON`, unless set):
    they import the project's ingest code, which the first `python3` on the PATH may lack.
    """
    # local mode talks to itself: stay on loopback instead of the host's first interface
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    if local_java_options is None:
        local_java_options = get_settings().spark_local_java_options
    builder = SparkSession.builder
    if master.startswith("local"):
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        if local_java_options:
            builder = builder.config("spark.driver.extraJavaOptions", local_java_options)
    with _SESSION_LOCK:
        return (
            builder.master(master)
            .appName("nightshift-ingest")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
            .config("spark.driver.memory", "2g")
            .config("spark.sql.execution.arrow.pyspark.enabled", "true")
            .getOrCreate()
        )


def _clean_batches(
    lake_root: str, dataset: str, dims_dir: str | None
) -> Callable[[Iterator[list[tuple[date, str]]]], Iterator[object]]:
    """The function each Spark task runs on its partition (one batch of days): the batch's
    outcomes from `clean_batch` (reports and `DayRejected`s), as one list.

    Any other error is returned, not raised, so that one failing batch does not cancel the
    other batches' tasks (as on Dask, the driver raises it once every batch is done).
    """

    def clean(batches: Iterator[list[tuple[date, str]]]) -> Iterator[object]:
        # the Arrow pool a Dask worker's preload picks (flat peak RSS with the scale,
        # BENCHMARKS §29), before the engine allocates; set again in a reused worker: a no-op
        from tasks.ops.worker_preload import use_jemalloc

        use_jemalloc()
        # imported on the worker: the driver needs neither pandas' engine nor its imports
        from tasks.ingest.pandas_engine import clean_batch

        for batch in batches:
            try:
                yield clean_batch(lake_root, dataset, batch, dims_dir, engine="spark")
            except Exception as error:  # noqa: BLE001 - re-raised by the driver
                try:
                    pickle.dumps(error)
                except Exception:  # noqa: BLE001 - an error that cannot travel: its text
                    error = RuntimeError(f"{type(error).__name__}: {error}")
                yield error

    return clean


def clean_days_spark(
    spark: SparkSession,
    lake_root: str,
    dataset: str,
    todo: list[tuple[date, str]],
    dims_dir: str | None,
    log: logging.Logger | logging.LoggerAdapter = logger,
) -> tuple[list[PartitionReport], list[DayRejected]]:
    """Clean the days `todo` (day, fingerprint) in one Spark job, a batch of days per task.

    Same outputs, manifests, validation-cache entries and rejected days as the Dask engine
    (`pandas_engine.clean_days_dask`): every day is tried and published alone, so one bad
    day never keeps the good ones from being published; a delivery breaking its contract is
    a rejected day (`fail`). Any other error is raised once every batch is done; a failure
    of Spark itself (a lost executor) is raised naming the days.
    """
    if not todo:
        return [], []
    lake = Lake(lake_root)
    spec = get_dataset(dataset)
    slots = spark.sparkContext.defaultParallelism
    sized = [((day, fp), delivered_bytes(lake, spec, day)) for day, fp in todo]
    batches = plan_batches(sized, get_settings().ingest_batch_bytes, min_batches=slots, slots=slots)
    log.info(
        "ingest: %d day(s) in %d batch(es) on %d Spark core(s)", len(todo), len(batches), slots
    )
    # one partition per batch, so one task per batch: Spark spreads them over its cores
    outcomes = spark.sparkContext.parallelize(batches, len(batches))
    try:
        results = outcomes.mapPartitions(_clean_batches(lake_root, dataset, dims_dir)).collect()
    except (PySparkException, Py4JJavaError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise RuntimeError(
            f"Spark ingestion of landing partitions {todo[0][0]}..{todo[-1][0]} "
            f"({len(todo)} day(s)) under {lake.path('landing', dataset, 'daily')} "
            f"failed: {first_line}"
        ) from error
    reports: list[PartitionReport] = []
    rejected: list[DayRejected] = []
    failure: Exception | None = None
    for outcome in results:
        if isinstance(outcome, Exception):
            failure = failure or outcome
            continue
        for result in outcome:
            (rejected if isinstance(result, DayRejected) else reports).append(result)
    if failure is not None:
        raise failure
    return reports, rejected
