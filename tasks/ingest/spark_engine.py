"""The Spark engine: the same cleaning as the pandas engine, as native Spark expressions.

All changed days are processed in one Spark write per source: the landed CSV files are read
once by the dialect both engines share (`tasks.ingest.dialect`: compression and encoding
by content, one CSV dialect, physical line numbers) into normalised copies, which Spark
parses as multi-line CSV with an explicit all-text schema; rows are typed and checked
by the column expressions of `tasks.quality.spark_rules` (compiled from the same rule
catalogue as the pandas rules), deduplicated with window functions and joined with the side
sources and dimensions as the dataset spec declares. Each source's rows are written once,
clean, quarantined and duplicate rows side by side (`_stage`); the rows per day of each
come from that write's Parquet footers.
No data row is collected from Spark to the driver: besides the one pass over each delivered
file that writes its normalised copy, the driver only sees per-day row counts. Output is
the lake's layout (one `part-0.parquet` per partition) and the same manifests, so the rest
of the pipeline cannot tell which engine ran.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import date

import pyarrow as pa
import pyarrow.parquet as pq
from py4j.protocol import Py4JJavaError
from pyspark.errors import PySparkException
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from data_contracts import Contract, load_contract
from tasks.core.lake import Lake
from tasks.core.settings import get_settings
from tasks.datasets import get_dataset
from tasks.datasets.spec import DatasetSpec, Join, Source
from tasks.ingest.dialect import LINE_COLUMN, read_delivery, write_normalised
from tasks.ingest.generation import DayRejected, publish_day, staged_file, staging
from tasks.ingest.plan import (
    PartitionReport,
    SourceCounts,
    check_accounting,
    contract_metadata,
    landing_file,
)
from tasks.ingest.reader import require_columns
from tasks.quality.dimensions import allowed_sets
from tasks.quality.rules import DATE_MATCHES_PARTITION, KEY_UNIQUE, ContractViolation
from tasks.quality.spark_rules import finite_double, rule_columns, to_date, typed_columns

logger = logging.getLogger("nightshift.ingest_spark")

_SESSION_LOCK = threading.Lock()
# pandas' default NA strings: the pandas engine reads dimensions with them
PANDAS_NA_VALUES = (
    "",
    "#N/A",
    "#N/A N/A",
    "#NA",
    "-1.#IND",
    "-1.#QNAN",
    "-NaN",
    "-nan",
    "1.#IND",
    "1.#QNAN",
    "<NA>",
    "N/A",
    "NA",
    "NULL",
    "NaN",
    "None",
    "n/a",
    "nan",
    "null",
)


def spark_session(
    master: str, shuffle_partitions: int = 8, local_java_options: str | None = None
) -> SparkSession:
    """The process's shared SparkSession (start-up costs seconds: create it once).

    ANSI mode stays on (Spark 4's default); the rules use `try_cast`, so a bad value
    becomes a quarantined row, never a failed job.

    A local session's JVM (driver and executors in one, started here) gets
    `local_java_options` (default: the `spark_local_java_options` setting, HotSpot's first
    JIT tier only): an ingest is a few short jobs in a fresh JVM, and the optimising
    compiler spent more CPU compiling them than its faster code saved, about a third of
    the JVM's CPU at x10 (BENCHMARKS.md §30). It applies only when this call starts the
    JVM; a cluster's executors keep their own options.
    """
    # local mode talks to itself: stay on loopback instead of the host's first interface
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    if local_java_options is None:
        local_java_options = get_settings().spark_local_java_options
    builder = SparkSession.builder
    if master.startswith("local") and local_java_options:
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


def _col(name: str) -> Column:
    return F.col(f"`{name}`")


def _hadoop_path(lake: Lake, path: str) -> str:
    return f"file://{path}" if lake.is_local else path


def _files_by_header(
    lake: Lake,
    dataset: str,
    days: list[date],
    source: Source,
    contract: Contract,
    scratch: str,
) -> dict[tuple[str, ...], list[tuple[date, str, str, int]]]:
    """Read each day's delivery with the shared dialect, check its header, and write its
    normalised copy under `scratch`; grouped by header (one Spark parse per header).

    Each entry is (day, landed path, normalised copy, data rows). The driver reads every
    file once, as the pandas engine does: that is what makes both engines split, decode
    and number records the same way (`tasks.ingest.dialect`).
    """
    groups: dict[tuple[str, ...], list[tuple[date, str, str, int]]] = {}
    for day in days:
        path = landing_file(lake, dataset, day, source.name)
        delivery = read_delivery(lake, path)
        require_columns(delivery.header, contract, source, path)
        copy = f"{scratch}/{source.name}/{day.isoformat()}/{source.name}.csv"
        write_normalised(lake, delivery, copy)
        groups.setdefault(tuple(delivery.header), []).append((day, path, copy, len(delivery.rows)))
    return groups


def _records(
    spark: SparkSession,
    lake: Lake,
    header: tuple[str, ...],
    files: list[tuple[date, str, str, int]],
) -> DataFrame:
    """The data rows of normalised copies: raw text columns, line, landed file and day.

    `multiLine` keeps a quoted line break inside its value; FAILFAST because the copies are
    written by `write_normalised`, so a record Spark cannot parse is a bug, not bad input.
    """
    schema = T.StructType(
        [T.StructField(LINE_COLUMN, T.LongType())]
        + [T.StructField(name, T.StringType()) for name in header]  # the copy's own header
    )
    frame = spark.read.csv(
        [_hadoop_path(lake, copy) for _, _, copy, _ in files],
        schema=schema,
        header=True,
        multiLine=True,
        escape='"',
        mode="FAILFAST",
        encoding="UTF-8",
    )
    day = F.regexp_extract(F.col("_metadata.file_path"), r"/(\d{4}-\d{2}-\d{2})/[^/]+$", 1)
    landed = F.create_map(*[F.lit(x) for d, path, _, _ in files for x in (d.isoformat(), path)])
    return frame.select(
        # an unquoted empty field reads as null in Spark, as "" in pandas: "" on both
        *[F.coalesce(_col(c), F.lit("")).alias(c) for c in header],
        F.col(LINE_COLUMN),
        landed[day].alias("_source_file"),
        F.to_date(day).alias("_day"),
    )


def _row_date_matches(source: Source) -> Column:
    """True where the row's own date (from the source's date columns) is its partition's."""
    if source.date_parts:
        parts = [finite_double(F.col(f"`{p}`")) for p in source.date_parts]
        return (
            (parts[0] == F.year("_day"))
            & (parts[1] == F.month("_day"))
            & (parts[2] == F.dayofmonth("_day"))
        )
    return to_date(F.col(f"`{source.date_column}`")) == F.col("_day")


def _flag_rows(
    rows: DataFrame, header: tuple[str, ...], contract: Contract, source: Source, allowed: dict
) -> DataFrame:
    """Raw columns, typed columns (`_t_<name>`), `_dup` and `_rules` for every data row.

    The rows are shuffled once, by day: both windows below and the staged write (`_stage`)
    are keyed by the day first (a file is one day's delivery, so adding
    the day to a window's keys changes no group), so Spark plans no further exchange for
    them: three exchanges of every row became one, about a tenth of the JVM's CPU at x10
    (BENCHMARKS.md, "Spark ingest profile").
    """
    rows = rows.repartition("_day")
    exact = Window.partitionBy("_day", "_source_file", *[_col(c) for c in header]).orderBy(
        "_source_line"
    )
    rows = rows.withColumn("_dup", F.row_number().over(exact) > 1)

    rows = rows.select("*", *typed_columns(contract))
    reasons = rule_columns(contract, allowed)
    same_day = _row_date_matches(source)
    reasons.append(F.when(~F.coalesce(same_day, F.lit(False)), F.lit(DATE_MATCHES_PARTITION)))
    rows = rows.select("*", F.concat_ws(";", *reasons).alias("_rules"))
    # Key uniqueness, first occurrence wins. Counting exact duplicates in the window changes
    # nothing for the rows kept: an exact duplicate always follows its own first occurrence.
    key = [F.col(f"_t_{k}") for k in contract.key if k != "date"]
    first = Window.partitionBy("_day", "_source_file", *key).orderBy("_source_line")
    return rows.withColumn(
        "_rules",
        F.when((F.row_number().over(first) > 1) & (F.col("_rules") == ""), KEY_UNIQUE).otherwise(
            F.col("_rules")
        ),
    )


def _quarantine_columns(header: tuple[str, ...]) -> list[str]:
    """The quarantine's columns: the delivery's raw ones, then where and why."""
    return [*header, LINE_COLUMN, "_rules", "_source_file"]


def _tagged(flagged: DataFrame, header: tuple[str, ...], contract: Contract) -> DataFrame:
    """Every flagged row once, tagged `_kind` (clean, quarantine or dup), with the clean
    layer's columns (null unless clean) and the quarantine's as `_q<i>` (null unless
    quarantined; positional names, so a raw header never clashes with a clean column).

    One frame per source and header: `_stage` writes it in one job and the per-day counts
    of each kind come from that write's Parquet footers, so no row is cached and no
    separate job counts them (BENCHMARKS.md, "Spark ingest, second pass").
    """
    kind = (
        F.when(F.col("_dup"), F.lit("dup"))
        .when(F.col("_rules") == "", F.lit("clean"))
        .otherwise(F.lit("quarantine"))
    )
    rows = flagged.withColumn("_kind", kind)
    clean, bad = F.col("_kind") == "clean", F.col("_kind") == "quarantine"
    raw = [_col(c) for c in _quarantine_columns(header)]
    return rows.select(
        "_kind",
        "_day",
        F.when(clean, F.col("_day")).alias("date"),
        *[F.when(clean, F.col(f"_t_{c.name}")).alias(c.name) for c in contract.source_columns],
        *[F.when(bad, value).alias(f"_q{i}") for i, value in enumerate(raw)],
    )


def _clean_rows(tagged: DataFrame, contract: Contract) -> DataFrame:
    """A side source's clean rows, for the fact's join."""
    columns = ["date", *[c.name for c in contract.source_columns]]
    return tagged.where(F.col("_kind") == "clean").select(*columns)


def _dimension(spark: SparkSession, lake: Lake, dims_dir: str, join: Join) -> DataFrame:
    """A dimension's kept columns by key, typed like the pandas engine's read (first row wins)."""
    raw = spark.read.csv(
        _hadoop_path(lake, f"{dims_dir}/{join.table}.csv"), header=True, escape='"'
    ).withColumn("_seq", F.monotonically_increasing_id())
    keys = list(join.on.values())
    first = Window.partitionBy(*[_col(k) for k in keys]).orderBy("_seq")
    raw = raw.withColumn("_rn", F.row_number().over(first)).where("_rn = 1")

    def text(c: str) -> Column:
        return F.when(~F.coalesce(_col(c).isin(*PANDAS_NA_VALUES), F.lit(True)), _col(c))

    out = [text(k).alias(k) for k in keys]
    for source, target in join.columns.items():
        value = text(source)
        if join.types.get(target) == "float":
            value = value.try_cast("double")
        out.append(value.alias(target))
    return raw.select(*out)


@dataclass
class _Staged:
    """One layer of a source written by Spark under `_staging/`, not yet visible in the lake."""

    layer: str
    dataset: str
    folder: str  # the layer's `_kind=<layer>` folder of the staged write
    columns: dict[str, str]  # column in the staged files -> the lake's name, in order
    schema: pa.Schema
    rows: dict[date, int]
    metadata: dict[str, str]


def _stage(
    lake: Lake,
    frame: DataFrame,
    dataset: str,
    days: list[date],
    contract: Contract,
    layers: dict[str, dict[str, str]],
) -> tuple[list[_Staged], dict[date, int]]:
    """Write the tagged rows `frame` in one job, partitioned by kind and day, into a staging
    folder; return each layer's view of it (`layers`: layer -> {staged column: lake name})
    and the duplicates per day. Rows per day and kind are read from the footers.
    """
    folder = lake.path("_staging", "_spark", f"{dataset}-{uuid.uuid4().hex}")
    (
        frame.repartition("_day")  # all rows of a day in one task: one file per day and kind
        .withColumn("_partition", F.date_format("_day", "yyyy-MM-dd"))
        .drop("_day")
        .write.partitionBy("_kind", "_partition")
        .parquet(_hadoop_path(lake, folder))
    )

    def rows(kind: str) -> dict[date, int]:
        return {
            day: sum(
                pq.read_metadata(lake.fs.open(p, "rb")).num_rows
                for p in _staged_files(lake, f"{folder}/_kind={kind}", day)
            )
            for day in days
        }

    staged = []
    for layer, columns in layers.items():
        view = frame.select(*[_col(staged).alias(name) for staged, name in columns.items()])
        staged.append(
            _Staged(
                layer,
                dataset,
                f"{folder}/_kind={layer}",
                columns,
                _arrow_schema(view),
                rows(layer),
                contract_metadata(contract),
            )
        )
    return staged, rows("dup")


def _staged_files(lake: Lake, folder: str, day: date) -> list[str]:
    day_folder = f"{folder}/_partition={day.isoformat()}"
    return sorted(lake.fs.glob(f"{day_folder}/*.parquet")) if lake.fs.exists(day_folder) else []


def _day_table(lake: Lake, staged: _Staged, day: date) -> bytes:
    """One day's rows of a Spark output as the lake's single Parquet file (its bytes)."""
    tables = [
        pq.read_table(lake.fs.open(p, "rb"), columns=list(staged.columns)).rename_columns(
            list(staged.columns.values())
        )
        for p in _staged_files(lake, staged.folder, day)
    ]
    table = pa.concat_tables(
        [t.cast(staged.schema) for t in tables] or [staged.schema.empty_table()]
    )
    buffer = pa.BufferOutputStream()
    metadata = {k.encode(): v.encode() for k, v in staged.metadata.items()}
    pq.write_table(table.replace_schema_metadata(metadata), buffer)
    return buffer.getvalue().to_pybytes()


def _publish(
    lake: Lake, spec: DatasetSpec, report: PartitionReport, staged: list[_Staged]
) -> PartitionReport:
    """Stage one day's generation from Spark's output, check it and swap it in: the same
    protocol as the pandas engine (`generation.publish_day`)."""
    day = date.fromisoformat(report.day)
    with staging(lake, spec.name, day) as generation:
        for output in staged:
            if day in output.rows:
                path = staged_file(lake, spec.name, day, generation, output.layer, output.dataset)
                lake.write_bytes_atomic(path, _day_table(lake, output, day))
        return publish_day(lake, spec, report, generation, "spark")


def _arrow_schema(frame: DataFrame) -> pa.Schema:
    """The Arrow schema the lake uses: the Dask engine's (pandas) strings are large_string and
    every column is nullable."""
    from pyspark.sql.pandas.types import to_arrow_schema

    fields = [
        f.with_type(pa.large_string()) if f.type == pa.string() else f
        for f in to_arrow_schema(frame.schema)
    ]
    return pa.schema([f.with_nullable(True) for f in fields])


def clean_days_spark(
    spark: SparkSession,
    lake_root: str,
    dataset: str,
    todo: list[tuple[date, str]],
    dims_dir: str | None,
) -> tuple[list[PartitionReport], list[DayRejected]]:
    """Turn the landed days `todo` (day, fingerprint) into clean + quarantine + manifests.

    Same outputs as calling the pandas engine's `clean_day` for each day, and the same
    rejected days. Accounting per day (raw = clean + quarantined + duplicates) is checked
    before anything becomes visible; each day is then staged, checked and swapped in.
    A failure inside Spark (e.g. a gzip member truncated past what the driver checked) is
    re-raised naming the days, with the JVM's first line, instead of a bare Java trace.
    """
    if not todo:
        return [], []
    # Spark's own output and the normalised copies of the deliveries (`_files_by_header`)
    scratch = Lake(lake_root).path("_staging", "_spark")
    normalised = f"{scratch}/normalised-{dataset}-{uuid.uuid4().hex}"
    try:
        return _clean_days_spark(spark, lake_root, dataset, todo, dims_dir, normalised)
    except (PySparkException, Py4JJavaError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise ContractViolation(
            f"Spark ingestion of landing partitions {todo[0][0]}..{todo[-1][0]} "
            f"({len(todo)} day(s)) under {Lake(lake_root).path('landing', dataset, 'daily')} "
            f"failed (rule: file:readable): {first_line}"
        ) from error
    finally:  # scratch: whatever happened, it goes
        if Lake(lake_root).exists(scratch):
            Lake(lake_root).fs.rm(scratch, recursive=True)


@dataclass
class _Group:
    """One source's deliveries that share a header: days, raw rows per day, tagged rows."""

    header: tuple[str, ...]
    raw: dict[date, int]
    tagged: DataFrame


def _tag_source(
    spark: SparkSession,
    lake: Lake,
    dataset: str,
    source: Source,
    days: list[date],
    allowed: dict,
    scratch: str,
) -> list[_Group]:
    """Read, check and tag one source's files for all days (one parse per header group).

    Nothing runs here: each group's rows are computed once, by the write that stages them.
    """
    contract = load_contract(source.name)
    out = []
    for header, files in _files_by_header(lake, dataset, days, source, contract, scratch).items():
        flagged = _flag_rows(
            _records(spark, lake, header, files), header, contract, source, allowed
        )
        raw = {day: rows for day, _, _, rows in files}
        out.append(_Group(header, raw, _tagged(flagged, header, contract)))
    return out


def _join_tables(
    spark: SparkSession,
    lake: Lake,
    spec: DatasetSpec,
    fact: DataFrame,
    daily: dict[str, DataFrame],
    dims_dir: str | None,
) -> DataFrame:
    """Left-join the side sources (same day) and dimensions into the fact rows, as declared."""
    joined = fact
    for join in spec.joins:
        if join.table in daily:
            right = daily[join.table]
            right_on = list(join.on.values())
            kept = [c for c in right.columns if c not in (*right_on, "date")]
            right = right.select(
                F.col("date").alias("_kdate"),
                *[_col(r).alias(f"_key_{i}") for i, r in enumerate(right_on)],
                *[_col(c).alias(join.columns.get(c, c)) for c in kept],
            )
            condition = joined["date"] == right["_kdate"]  # null unless the row is clean
        else:
            right = _dimension(spark, lake, str(dims_dir), join)
            right = right.select(
                *[_col(r).alias(f"_key_{i}") for i, r in enumerate(join.on.values())],
                *[_col(c) for c in right.columns if c not in join.on.values()],
            )
            condition = F.lit(True)
        for i, fact_column in enumerate(join.on):
            left = joined[f"`{fact_column}`"]
            if fact_column in join.floordiv:
                left = F.floor(left / join.floordiv[fact_column])
            condition = condition & (left == right[f"_key_{i}"])
        joined = joined.join(right, condition, "left")
        joined = joined.drop(*[c for c in joined.columns if c.startswith("_key") or c == "_kdate"])
    order = [*fact.columns, *[c for c in joined.columns if c not in fact.columns]]
    return joined.select(*order)


def _clean_days_spark(
    spark: SparkSession,
    lake_root: str,
    dataset: str,
    todo: list[tuple[date, str]],
    dims_dir: str | None,
    scratch: str,
) -> tuple[list[PartitionReport], list[DayRejected]]:
    """Long on purpose: one Spark write per source and header, then the per-day accounting
    and publication."""
    started = time.perf_counter()
    spec = get_dataset(dataset)
    lake = Lake(lake_root)
    days = [d for d, _ in todo]
    # the allowed sets are dimensions (e.g. 16 carriers), not data rows
    allowed = allowed_sets(lake, spec, dims_dir)
    groups = {
        s.name: _tag_source(spark, lake, dataset, s, days, allowed, scratch) for s in spec.sources
    }
    # the fact's join recomputes the side sources' few rows rather than caching them
    daily = {
        s.name: _union([_clean_rows(g.tagged, load_contract(s.name)) for g in groups[s.name]])
        for s in spec.side_sources
    }

    staged: list[_Staged] = []
    counts: dict[str, dict[date, SourceCounts]] = {}
    for source in spec.sources:
        contract = load_contract(source.name)
        for group in groups[source.name]:
            frame = group.tagged
            clean = ["date", *[c.name for c in contract.source_columns]]
            if source.name == spec.fact.name:
                frame = _join_tables(spark, lake, spec, frame, daily, dims_dir)
                clean += [c for c in frame.columns if c not in group.tagged.columns]
            layers = {
                "clean": {c: c for c in clean},
                "quarantine": {
                    f"_q{i}": c for i, c in enumerate(_quarantine_columns(group.header))
                },
            }
            outputs, dups = _stage(lake, frame, source.name, list(group.raw), contract, layers)
            staged += outputs
            written = {o.layer: o.rows for o in outputs}
            # raw lines counted by the driver's read; every other count from the files Spark
            # wrote: `check_accounting` below holds only if no row was lost or made up
            for day, raw in group.raw.items():
                counts.setdefault(source.name, {})[day] = SourceCounts(
                    raw_rows=raw,
                    clean_rows=written["clean"][day],
                    quarantined_rows=written["quarantine"][day],
                    duplicates_dropped=dups[day],
                )

    seconds = round((time.perf_counter() - started) / len(days), 3)
    reports = {}
    for day, fingerprint in todo:
        report = PartitionReport(
            day=day.isoformat(), fingerprint=fingerprint, fact=spec.fact.name, seconds=seconds
        )
        for source in spec.sources:
            report.sources[source.name] = counts[source.name][day]
        check_accounting(report, landing_file(lake, dataset, day, spec.fact.name))
        reports[day] = report
    # every day's accounting holds: only now is each day staged, checked and swapped in
    published, rejected = [], []
    for day in days:
        try:
            published.append(_publish(lake, spec, reports[day], staged))
        except DayRejected as error:
            rejected.append(error)
    return published, rejected


def _union(frames: list[DataFrame]) -> DataFrame:
    out = frames[0]
    for frame in frames[1:]:
        out = out.unionByName(frame, allowMissingColumns=True)
    return out
