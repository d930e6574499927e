"""Ingest on Spark: the same cleaning as `tasks.ingest` (Dask), as native Spark expressions.

All changed days are processed in one Spark job per dataset: the landed CSV files are read
as text lines (to keep each row's line number), parsed with `from_csv`, typed and checked
by the column expressions of `tasks.quality_spark` (compiled from the same contract as the
pandas rules), deduplicated with window functions and joined with weather and planes.
No data row is collected to the driver: the driver only sees per-file problem counts and
per-day row counts. Output is the lake's layout (one `part-0.parquet` per partition) and
the same manifests, so the rest of the pipeline cannot tell which engine ran.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import date

import pyarrow as pa
import pyarrow.parquet as pq
from py4j.protocol import Py4JJavaError
from pyspark import StorageLevel
from pyspark.errors import PySparkException
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from data_contracts import Contract, load_contract
from tasks.ingest import (
    PLANE_COLUMNS,
    PartitionReport,
    contract_metadata,
    landing_file,
    read_head,
    require_columns,
    unique_header,
)
from tasks.lake import Lake
from tasks.quality import ContractViolation
from tasks.quality_spark import rule_columns, typed_columns

logger = logging.getLogger("nightshift.ingest_spark")

_SESSION_LOCK = threading.Lock()
# pandas' default NA strings: the planes dimension is read with them by the Dask engine
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


def spark_session(master: str, shuffle_partitions: int = 8) -> SparkSession:
    """The process's shared SparkSession (start-up costs seconds: create it once).

    ANSI mode stays on (Spark 4's default); the rules use `try_cast`, so a bad value
    becomes a quarantined row, never a failed job.
    """
    # local mode talks to itself: stay on loopback instead of the host's first interface
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    with _SESSION_LOCK:
        return (
            SparkSession.builder.master(master)
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
    lake: Lake, days: list[date], name: str, contract: Contract
) -> dict[tuple[str, ...], list[tuple[date, str]]]:
    """Group the days' landed files by header (one Spark parse per header); checks schemas."""
    groups: dict[tuple[str, ...], list[tuple[date, str]]] = {}
    for day in days:
        path = landing_file(lake, day, name)
        header = read_head(lake, path)
        columns = unique_header(next(csv.reader(io.StringIO(header))))
        require_columns(columns, contract, path)
        groups.setdefault(tuple(columns), []).append((day, path))
    return groups


def _lines(spark: SparkSession, lake: Lake, files: list[tuple[date, str]]) -> DataFrame:
    """Non-blank text lines with their file, day and 1-based line number (header = 1)."""
    lines = (
        spark.read.text([_hadoop_path(lake, path) for _, path in files])
        .select(
            "value",
            F.col("_metadata.file_path").alias("_uri"),
            F.col("_metadata.file_block_start").alias("_block"),
            F.monotonically_increasing_id().alias("_seq"),
        )
        .where(F.col("value") != "")  # pandas skips blank lines and does not count them
    )
    # a split of a file is read in order by one task; splits are ordered by their offset
    order = Window.partitionBy("_uri").orderBy("_block", "_seq")
    day = F.regexp_extract("_uri", r"/(\d{4}-\d{2}-\d{2})/[^/]+$", 1)
    prefix = lake.path("landing", "daily") + "/"
    return lines.select(
        "value",
        "_uri",
        F.row_number().over(order).cast("long").alias("_source_line"),
        F.to_date(day).alias("_day"),
        F.concat(F.lit(prefix), day, F.lit("/"), F.regexp_extract("_uri", r"/([^/]+)$", 1)).alias(
            "_source_file"
        ),
    )


def _field_count(value: Column) -> Column:
    # commas outside double-quoted fields, plus one
    unquoted = F.regexp_replace(value, r'"(?:[^"]|"")*"', "")
    return F.length(F.regexp_replace(unquoted, "[^,]", "")) + 1


def _check_lines(lines: DataFrame, n_fields: int) -> dict[str, int]:
    """Fail on a malformed line or non-UTF-8 bytes (like the Dask engine); rows per file."""
    flagged = lines.select(
        "_source_file",
        "_source_line",
        (_field_count(F.col("value")) != n_fields).alias("_bad_fields"),
        _field_count(F.col("value")).alias("_fields"),
        (~F.is_valid_utf8("value")).alias("_bad_utf8"),
    )
    per_file = flagged.groupBy("_source_file").agg(
        (F.count(F.lit(1)) - 1).alias("rows"),
        F.min(F.when(F.col("_bad_fields"), F.struct("_source_line", "_fields"))).alias(
            "bad_fields"
        ),
        F.min(F.when(F.col("_bad_utf8"), F.col("_source_line"))).alias("bad_utf8"),
    )
    counts: dict[str, int] = {}
    for row in per_file.collect():  # one small row per file
        if row["bad_utf8"] is not None:
            raise ContractViolation(
                f"{row['_source_file']}: line {row['bad_utf8']}: bytes that are not UTF-8 "
                "(rule: file:encoding)"
            )
        if row["bad_fields"] is not None:
            line, found = row["bad_fields"]
            raise ContractViolation(
                f"{row['_source_file']}: line {line}: expected {n_fields} fields, found {found} "
                "(rule: csv:field_count)"
            )
        counts[row["_source_file"]] = row["rows"]
    return counts


def _flag_rows(
    lines: DataFrame, header: tuple[str, ...], contract: Contract, allowed: dict
) -> DataFrame:
    """Raw columns, typed columns (`_t_<name>`), `_dup` and `_rules` for every data row."""
    schema = T.StructType([T.StructField(f"c{i}", T.StringType()) for i in range(len(header))])
    parsed = F.from_csv(
        F.col("value"), schema.simpleString(), {"escape": '"', "mode": "PERMISSIVE"}
    )
    rows = lines.where(F.col("_source_line") > 1).select(
        *[F.coalesce(parsed.getField(f"c{i}"), F.lit("")).alias(c) for i, c in enumerate(header)],
        "_source_line",
        "_source_file",
        "_day",
    )
    exact = Window.partitionBy("_source_file", *[_col(c) for c in header]).orderBy("_source_line")
    rows = rows.withColumn("_dup", F.row_number().over(exact) > 1)

    rows = rows.select("*", *typed_columns(contract))
    reasons = rule_columns(contract, allowed)
    parts = [F.col(f"`{p}`").try_cast("double") for p in ("year", "month", "day")]
    same_day = (
        (parts[0] == F.year("_day"))
        & (parts[1] == F.month("_day"))
        & (parts[2] == F.dayofmonth("_day"))
    )
    reasons.append(F.when(~F.coalesce(same_day, F.lit(False)), F.lit("date:matches_partition")))
    rows = rows.select("*", F.concat_ws(";", *reasons).alias("_rules"))
    # Key uniqueness, first occurrence wins. Counting exact duplicates in the window changes
    # nothing for the rows kept: an exact duplicate always follows its own first occurrence.
    key = [F.col(f"_t_{k}") for k in contract.key if k != "date"]
    first = Window.partitionBy("_source_file", *key).orderBy("_source_line")
    return rows.withColumn(
        "_rules",
        F.when((F.row_number().over(first) > 1) & (F.col("_rules") == ""), "key:unique").otherwise(
            F.col("_rules")
        ),
    )


def _clean(flagged: DataFrame, contract: Contract) -> DataFrame:
    return flagged.where(~F.col("_dup") & (F.col("_rules") == "")).select(
        F.col("_day").alias("date"),
        *[F.col(f"_t_{c.name}").alias(c.name) for c in contract.source_columns],
    )


def _quarantine(flagged: DataFrame, header: tuple[str, ...]) -> DataFrame:
    return flagged.where(~F.col("_dup") & (F.col("_rules") != "")).select(
        *[_col(c) for c in header], "_source_line", "_rules", "_source_file", "_day"
    )


def _planes(spark: SparkSession, lake: Lake, dims_dir: str) -> DataFrame:
    """Planes by tail number, typed like the Dask engine's pandas read (first row wins)."""
    raw = spark.read.csv(
        _hadoop_path(lake, f"{dims_dir}/planes.csv"), header=True, escape='"'
    ).withColumn("_seq", F.monotonically_increasing_id())
    first = Window.partitionBy("tailnum").orderBy("_seq")
    raw = raw.withColumn("_rn", F.row_number().over(first)).where("_rn = 1")

    def text(c: str) -> Column:
        return F.when(~F.coalesce(F.col(c).isin(*PANDAS_NA_VALUES), F.lit(True)), F.col(c))

    out = [text("tailnum").alias("tailnum")]
    for source, target in PLANE_COLUMNS.items():
        value = text(source)
        if target in ("plane_year", "engines", "seats"):
            value = value.try_cast("double")
        out.append(value.alias(target))
    return raw.select(*out)


@dataclass
class _Staged:
    """One output written by Spark under `_staging/`, not yet visible in the lake."""

    layer: str
    dataset: str
    folder: str
    schema: pa.Schema
    rows: dict[date, int]
    metadata: dict[str, str]


def _stage(
    lake: Lake, frame: DataFrame, layer: str, dataset: str, days: list[date], contract: Contract
) -> _Staged:
    """Write `frame` partitioned by day into a staging folder; rows per day from the footers."""
    folder = lake.path("_staging", f"{layer}-{dataset}-{uuid.uuid4().hex}")
    schema = _arrow_schema(frame.drop("_day"))
    (
        frame.withColumn("_partition", F.date_format("_day", "yyyy-MM-dd"))
        .drop("_day")
        .repartition("_partition")  # all rows of a day in one task: one file per day
        .write.partitionBy("_partition")
        .parquet(_hadoop_path(lake, folder))
    )
    rows = {
        day: sum(
            pq.read_metadata(lake.fs.open(p, "rb")).num_rows
            for p in _staged_files(lake, folder, day)
        )
        for day in days
    }
    return _Staged(layer, dataset, folder, schema, rows, contract_metadata(contract))


def _staged_files(lake: Lake, folder: str, day: date) -> list[str]:
    day_folder = f"{folder}/_partition={day.isoformat()}"
    return sorted(lake.fs.glob(f"{day_folder}/*.parquet")) if lake.fs.exists(day_folder) else []


def _commit(lake: Lake, staged: _Staged, days: list[date]) -> None:
    """Move each day's staged rows into the lake as its single `part-0.parquet`."""
    for day in days:
        tables = [
            pq.read_table(lake.fs.open(p, "rb")) for p in _staged_files(lake, staged.folder, day)
        ]
        table = pa.concat_tables(
            [t.cast(staged.schema) for t in tables] or [staged.schema.empty_table()]
        )
        buffer = pa.BufferOutputStream()
        metadata = {k.encode(): v.encode() for k, v in staged.metadata.items()}
        pq.write_table(table.replace_schema_metadata(metadata), buffer)
        path = lake.partition_file(staged.layer, staged.dataset, day)
        lake.write_bytes_atomic(path, buffer.getvalue().to_pybytes())
    lake.fs.rm(staged.folder, recursive=True)


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
    todo: list[tuple[date, str]],
    dims_dir: str,
) -> list[PartitionReport]:
    """Turn the landed days `todo` (day, fingerprint) into clean + quarantine + manifests.

    Same outputs as calling `tasks.ingest.clean_day` for each day. Accounting per day
    (raw = clean + quarantined + duplicates) is checked before anything becomes visible.
    A failure inside Spark (e.g. a gzip member truncated past what the driver checked) is
    re-raised naming the days, with the JVM's first line, instead of a bare Java trace.
    """
    if not todo:
        return []
    try:
        return _clean_days_spark(spark, lake_root, todo, dims_dir)
    except (PySparkException, Py4JJavaError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise ContractViolation(
            f"Spark ingestion of landing partitions {todo[0][0]}..{todo[-1][0]} "
            f"({len(todo)} day(s)) under {Lake(lake_root).path('landing', 'daily')} failed "
            f"(rule: file:readable): {first_line}"
        ) from error


def _clean_days_spark(
    spark: SparkSession,
    lake_root: str,
    todo: list[tuple[date, str]],
    dims_dir: str,
) -> list[PartitionReport]:
    started = time.perf_counter()
    lake = Lake(lake_root)
    days = [d for d, _ in todo]
    flights_contract, weather_contract = load_contract("flights"), load_contract("weather")
    airlines = spark.read.csv(_hadoop_path(lake, f"{dims_dir}/airlines.csv"), header=True)
    # the allowed set is a dimension (16 carriers), not data rows
    allowed = {"airlines.carrier": [r["carrier"] for r in airlines.select("carrier").collect()]}
    reports = {d: PartitionReport(day=d.isoformat(), fingerprint=fp) for d, fp in todo}
    counts: dict[str, dict[date, dict[str, int]]] = {}
    cleans: dict[str, list[DataFrame]] = {"weather": [], "flights": []}
    # quarantine keeps the raw columns as delivered: one output per header group
    quarantines: dict[str, list[tuple[DataFrame, list[date]]]] = {"weather": [], "flights": []}
    persisted: list[DataFrame] = []
    for dataset, contract in (("weather", weather_contract), ("flights", flights_contract)):
        per_day = {d: {"raw": 0, "dup": 0, "quarantined": 0, "clean": 0} for d in days}
        for header, files in _files_by_header(lake, days, dataset, contract).items():
            lines = _lines(spark, lake, files)
            raw_rows = _check_lines(lines, len(header))
            for day, path in files:
                per_day[day]["raw"] = raw_rows.get(path, 0)
            flagged = _flag_rows(lines, header, contract, allowed)
            flagged = flagged.persist(StorageLevel.DISK_ONLY)  # read by 3 jobs, bounded memory
            persisted.append(flagged)
            bad = ~F.col("_dup") & (F.col("_rules") != "")
            good = ~F.col("_dup") & (F.col("_rules") == "")
            per_day_counts = flagged.groupBy("_day").agg(
                F.sum(F.col("_dup").cast("long")).alias("dup"),
                F.sum(bad.cast("long")).alias("quarantined"),
                F.sum(good.cast("long")).alias("clean"),
            )
            for row in per_day_counts.collect():  # one small row per day
                per_day[row["_day"]].update(
                    dup=row["dup"], quarantined=row["quarantined"], clean=row["clean"]
                )
            cleans[dataset].append(_clean(flagged, contract))
            quarantines[dataset].append((_quarantine(flagged, header), [d for d, _ in files]))
        counts[dataset] = per_day

    weather = _union(cleans["weather"])
    weather_join = weather.select(
        F.col("date").alias("_wdate"),
        F.col("origin").alias("_worigin"),
        F.col("hour").alias("_whour"),
        *[
            F.col(c.name)
            for c in weather_contract.source_columns
            if c.name not in ("origin", "hour")
        ],
    )
    flights = _union(cleans["flights"])
    joined = flights.join(
        weather_join,
        (flights["date"] == weather_join["_wdate"])
        & (flights["origin"] == weather_join["_worigin"])
        & (F.floor(flights["sched_dep_time"] / 100) == weather_join["_whour"]),
        "left",
    ).drop("_wdate", "_worigin", "_whour")
    joined = joined.join(_planes(spark, lake, dims_dir), on="tailnum", how="left")
    order = [*flights.columns, *[c for c in joined.columns if c not in flights.columns]]
    joined = joined.select(*order).withColumn("_day", F.col("date"))
    weather = weather.withColumn("_day", F.col("date"))

    staged = [
        _stage(lake, weather, "clean", "weather", days, weather_contract),
        _stage(lake, joined, "clean", "flights", days, flights_contract),
    ]
    for dataset in ("weather", "flights"):
        for frame, group_days in quarantines[dataset]:
            contract = load_contract(dataset)
            staged.append(_stage(lake, frame, "quarantine", dataset, group_days, contract))
    for frame in persisted:
        frame.unpersist()
    written: dict[tuple[str, str], dict[date, int]] = {}
    for output in staged:
        written.setdefault((output.layer, output.dataset), {}).update(output.rows)

    seconds = round((time.perf_counter() - started) / len(days), 3)
    for day in days:
        report = reports[day]
        flights_counts, weather_counts = counts["flights"][day], counts["weather"][day]
        report.raw_rows, report.duplicates_dropped = flights_counts["raw"], flights_counts["dup"]
        report.clean_rows = written[("clean", "flights")][day]
        report.quarantined_rows = written[("quarantine", "flights")][day]
        report.weather_raw_rows = weather_counts["raw"]
        report.weather_duplicates_dropped = weather_counts["dup"]
        report.weather_clean_rows = written[("clean", "weather")][day]
        report.weather_quarantined_rows = written[("quarantine", "weather")][day]
        for dataset, expected in (("flights", flights_counts), ("weather", weather_counts)):
            clean = written[("clean", dataset)][day]
            quarantined = written[("quarantine", dataset)][day]
            # raw lines counted by one scan; rows written counted from the files' footers
            if (
                clean != expected["clean"]
                or quarantined != expected["quarantined"]
                or expected["raw"] != clean + quarantined + expected["dup"]
            ):
                raise RuntimeError(
                    f"{landing_file(lake, day, dataset)}: accounting broken: raw {expected['raw']}"
                    f" != {clean} clean + {quarantined} quarantined + {expected['dup']} duplicates"
                    f" (expected {expected['clean']} clean, {expected['quarantined']} quarantined)"
                )
    # every day's accounting holds: only now does anything become visible in the lake
    for output in staged:
        _commit(lake, output, list(output.rows))
    for day in days:
        report = reports[day]
        report.seconds = seconds
        lake.write_json_atomic(
            lake.manifest("flights", day),
            {
                **asdict(report),
                "engine": "spark",
                "contracts": [flights_contract.tag, weather_contract.tag],
                "landing_contracts": [
                    load_contract("flights", "landing").tag,
                    load_contract("weather", "landing").tag,
                ],
            },
        )
    return [reports[d] for d in days]


def _union(frames: list[DataFrame]) -> DataFrame:
    out = frames[0]
    for frame in frames[1:]:
        out = out.unionByName(frame, allowMissingColumns=True)
    return out
