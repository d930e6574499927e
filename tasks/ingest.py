"""Ingest: parse and type the landed days, join weather and planes, drop duplicates,
split rows into clean/ and quarantine/ by the data contracts, one day per Dask task.

Each partition is processed by `clean_day`, a plain function (testable without Prefect or
Dask). The Prefect task `ingest_flights` fans the days out to the Dask cluster and skips
days whose inputs (raw bytes, dimension snapshot, contracts, code version) did not change.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import time
from dataclasses import asdict, dataclass
from datetime import date
from typing import TYPE_CHECKING, Literal

import distributed
import pandas as pd
from prefect import get_run_logger, task

from data_contracts import Contract, load_contract
from tasks.lake import Lake
from tasks.quality import ContractViolation, check_schema, typed_frame_and_violations

if TYPE_CHECKING:  # pyspark is imported only when the Spark engine runs
    from pyspark.sql import SparkSession

logger = logging.getLogger("nightshift.ingest")

# Bump when the cleaning logic changes, so every partition is rebuilt on the next run.
INGEST_CODE_VERSION = "1"

PLANE_COLUMNS = {
    "year": "plane_year",
    "type": "plane_type",
    "manufacturer": "manufacturer",
    "engines": "engines",
    "seats": "seats",
    "engine": "engine",
}
DATE_PARTS = ("year", "month", "day")


@dataclass
class PartitionReport:
    """Accounting of one day: raw rows = clean + quarantined + duplicates dropped."""

    day: str
    fingerprint: str
    raw_rows: int = 0
    clean_rows: int = 0
    quarantined_rows: int = 0
    duplicates_dropped: int = 0
    weather_raw_rows: int = 0
    weather_clean_rows: int = 0
    weather_quarantined_rows: int = 0
    weather_duplicates_dropped: int = 0
    skipped: bool = False
    seconds: float = 0.0

    @property
    def quarantine_fraction(self) -> float:
        return self.quarantined_rows / self.raw_rows if self.raw_rows else 0.0


def landing_file(lake: Lake, day: date, dataset: str) -> str:
    """The delivered file of `dataset` for `day`: `<dataset>.csv`, or gzipped `<dataset>.csv.gz`.

    Upstream may compress a delivery; both engines read gzip natively. When neither exists
    the plain name is returned, so the error names the file that was expected.
    """
    folder = lake.landing_day(day)
    for name in (f"{dataset}.csv", f"{dataset}.csv.gz"):
        if lake.exists(f"{folder}/{name}"):
            return f"{folder}/{name}"
    return f"{folder}/{dataset}.csv"


def _open_delivery(lake: Lake, path: str):
    if not lake.exists(path):
        raise ContractViolation(f"{path}: file not delivered (rule: file:exists)")
    return lake.fs.open(path, "rb", compression="gzip" if path.endswith(".gz") else None)


def read_head(lake: Lake, path: str, size: int = 1 << 16) -> str:
    """The header line of a delivered CSV (reads at most `size` bytes); fails on an empty file."""
    try:
        with _open_delivery(lake, path) as handle:
            head = handle.read(size)
    except (OSError, EOFError) as error:  # gzip.BadGzipFile is an OSError
        raise ContractViolation(
            f"{path}: corrupt or truncated compressed file (rule: file:readable): {error}"
        ) from error
    lines = [line for line in head.split(b"\n") if line.strip()]
    if not lines:
        raise ContractViolation(f"{path}: empty file (rule: file:not_empty)")
    try:
        return lines[0].decode("utf-8").rstrip("\r")
    except UnicodeDecodeError as error:
        raise ContractViolation(
            f"{path}: line 1: bytes that are not UTF-8 (rule: file:encoding)"
        ) from error


def unique_header(columns: list[str]) -> list[str]:
    """Column names as pandas makes them unique (`a`, `a.1`), so both engines agree."""
    seen: dict[str, int] = {}
    out = []
    for name in columns:
        candidate = name
        while candidate in seen:
            seen[name] += 1
            candidate = f"{name}.{seen[name]}"
        seen.setdefault(candidate, 0)
        out.append(candidate)
    return out


def require_columns(columns: list[str], contract: Contract, source: str) -> None:
    """Schema-level check of a delivered file's header against the landing contract of the
    dataset (every delivered column) and the clean one (every column a rule reads).

    A missing or renamed column fails the file: no row of it could be kept.
    """
    frame = pd.DataFrame(columns=columns)
    check_schema(frame, load_contract(contract.dataset, "landing"), source)
    check_schema(frame, contract, source)
    missing_parts = [p for p in DATE_PARTS if p not in columns]
    if missing_parts:
        raise ContractViolation(
            f"{source}: missing column(s) {missing_parts} (rule: schema:required_columns)"
        )


_QUOTED = re.compile(rb'"(?:[^"]|"")*"')


def _short_line(payload: bytes) -> tuple[int, int] | None:
    """(line, fields) of the first line with fewer fields than the header, else None.

    Lines are counted as both engines count them: blank lines are skipped.
    """
    lines = [line for line in _QUOTED.sub(b"", payload).splitlines() if line.strip()]
    expected = lines[0].count(b",")
    for number, line in enumerate(lines[1:], start=2):
        if line.count(b",") < expected:
            return number, line.count(b",") + 1
    return None


_FIELD_COUNT = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")


def _read_raw_csv(lake: Lake, path: str) -> pd.DataFrame:
    """Read a delivered CSV as text, keeping each row's line number for the quarantine.

    A file that cannot be read row by row (empty, corrupt gzip, not UTF-8, a line with
    the wrong number of fields) fails with the file, the line and the rule named.
    """
    try:
        with _open_delivery(lake, path) as handle:
            payload = handle.read()
    except (OSError, EOFError) as error:
        raise ContractViolation(
            f"{path}: corrupt or truncated compressed file (rule: file:readable): {error}"
        ) from error
    if not payload.strip():
        raise ContractViolation(f"{path}: empty file (rule: file:not_empty)")
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError as error:
        line = payload[: error.start].count(b"\n") + 1
        raise ContractViolation(
            f"{path}: line {line}: bytes that are not UTF-8 (rule: file:encoding)"
        ) from error
    try:
        frame = pd.read_csv(io.BytesIO(payload), dtype=str, keep_default_na=False)
    except pd.errors.ParserError as error:
        match = _FIELD_COUNT.search(str(error))
        if match is None:
            raise ContractViolation(
                f"{path}: unreadable CSV (rule: file:parseable): {error}"
            ) from error
        expected, line, found = match.groups()
        raise ContractViolation(
            f"{path}: line {line}: expected {expected} fields, found {found} (rule: csv:field_count)"
        ) from error
    short = _short_line(payload)  # pandas pads a short line with "" instead of failing
    if short is not None:
        line, found = short
        raise ContractViolation(
            f"{path}: line {line}: expected {frame.shape[1]} fields, found {found} "
            "(rule: csv:field_count)"
        )
    frame["_source_line"] = frame.index + 2  # 1-based, after the header line
    return frame


def _quarantine_frame(raw: pd.DataFrame, mask: pd.Series, reasons: pd.Series, source: str):
    out = raw.loc[mask].copy()
    out["_rules"] = reasons.loc[mask].astype(str)
    out["_source_file"] = source
    return out.astype({c: "string" for c in out.columns if c != "_source_line"})


def _drop_exact_duplicates(raw: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    data_columns = [c for c in raw.columns if c != "_source_line"]
    duplicated = raw.duplicated(subset=data_columns, keep="first")
    return raw.loc[~duplicated], int(duplicated.sum())


def _row_dates(raw: pd.DataFrame) -> pd.Series:
    parts = [pd.to_numeric(raw[p], errors="coerce") for p in DATE_PARTS]
    stamp = pd.to_datetime(
        pd.DataFrame({"year": parts[0], "month": parts[1], "day": parts[2]}), errors="coerce"
    )
    return stamp.dt.date


def _split_rows(
    raw: pd.DataFrame, contract: Contract, day: date, source: str, allowed_sets: dict
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Typed clean rows and quarantined raw rows of one delivered file."""
    require_columns(list(raw.columns), contract, source)
    typed, reasons = typed_frame_and_violations(raw, contract, allowed_sets)
    wrong_day = _row_dates(raw) != day
    reasons = reasons.where(~wrong_day, reasons + ";date:matches_partition")
    reasons = reasons.str.lstrip(";")
    typed.insert(0, "date", day)
    key_duplicate = typed.duplicated(subset=contract.key, keep="first") & (reasons == "")
    reasons = reasons.where(~key_duplicate, "key:unique")
    bad = reasons != ""
    clean = typed.loc[~bad].copy()
    for rule in contract.source_columns:
        if rule.type == "int" and not rule.nullable:  # no nulls left: plain int64 for readers
            clean[rule.name] = clean[rule.name].astype("int64")
    return clean, _quarantine_frame(raw, bad, reasons, source)


def _planes(lake: Lake, dims_dir: str) -> pd.DataFrame:
    planes = pd.read_csv(lake.fs.open(f"{dims_dir}/planes.csv"), na_values=["", "NA"])
    planes = planes.drop_duplicates("tailnum")[["tailnum", *PLANE_COLUMNS]]
    planes = planes.rename(columns=PLANE_COLUMNS)
    planes["tailnum"] = planes["tailnum"].astype("string")
    for column in ("plane_type", "manufacturer", "engine"):
        planes[column] = planes[column].astype("string")
    for column in ("plane_year", "engines", "seats"):
        planes[column] = planes[column].astype("float64")
    return planes


CONTRACT_METADATA_KEY = "nightshift.contract"


def contract_metadata(contract: Contract) -> dict[str, str]:
    """Parquet key/value metadata naming the contract a partition was cleaned under."""
    return {CONTRACT_METADATA_KEY: contract.tag, "nightshift.ingest_code": INGEST_CODE_VERSION}


def partition_fingerprint(lake: Lake, day: date, dims_dir: str) -> str:
    """Hash of everything a partition's output depends on: inputs, rules and code."""
    digest = hashlib.sha256(INGEST_CODE_VERSION.encode())
    for dataset in ("flights", "weather"):
        for layer in ("landing", "clean"):
            digest.update(load_contract(dataset, layer).fingerprint.encode())
    for path in (
        landing_file(lake, day, "flights"),
        landing_file(lake, day, "weather"),
        f"{dims_dir}/planes.csv",
        f"{dims_dir}/airlines.csv",
    ):
        digest.update(path.rsplit("/", 2)[-2].encode())
        if lake.exists(path):
            with lake.fs.open(path, "rb") as handle:
                digest.update(hashlib.sha256(handle.read()).digest())
    return digest.hexdigest()


def clean_day(
    lake_root: str, day: date, dims_dir: str, fingerprint: str | None = None
) -> PartitionReport:
    """Turn one landed day into clean + quarantine partitions and a manifest; idempotent.

    The manifest is written last, so a partition counts as done only when all of its
    files are in place; every file is replaced atomically. `fingerprint` is the caller's
    `partition_fingerprint` when it already hashed the inputs to decide to come here.
    """
    started = time.perf_counter()
    lake = Lake(lake_root)
    fingerprint = fingerprint or partition_fingerprint(lake, day, dims_dir)
    report = PartitionReport(day=day.isoformat(), fingerprint=fingerprint)
    flights_contract, weather_contract = load_contract("flights"), load_contract("weather")
    folder = lake.landing_day(day)
    airlines = pd.read_csv(lake.fs.open(f"{dims_dir}/airlines.csv"), dtype=str)
    allowed = {"airlines.carrier": airlines["carrier"].dropna().tolist()}

    weather_path, flights_path = (
        landing_file(lake, day, "weather"),
        landing_file(lake, day, "flights"),
    )
    weather_raw = _read_raw_csv(lake, weather_path)
    report.weather_raw_rows = len(weather_raw)
    weather_raw, report.weather_duplicates_dropped = _drop_exact_duplicates(weather_raw)
    weather, weather_quarantine = _split_rows(
        weather_raw, weather_contract, day, weather_path, allowed
    )
    report.weather_clean_rows, report.weather_quarantined_rows = (
        len(weather),
        len(weather_quarantine),
    )

    flights_raw = _read_raw_csv(lake, flights_path)
    report.raw_rows = len(flights_raw)
    flights_raw, report.duplicates_dropped = _drop_exact_duplicates(flights_raw)
    flights, flights_quarantine = _split_rows(
        flights_raw, flights_contract, day, flights_path, allowed
    )
    flights["sched_dep_hour"] = (flights["sched_dep_time"] // 100).astype("Int64")
    weather_join = weather.rename(columns={"hour": "sched_dep_hour"}).drop(columns=["date"])
    flights = flights.merge(weather_join, on=["origin", "sched_dep_hour"], how="left")
    flights = flights.merge(_planes(lake, dims_dir), on="tailnum", how="left")
    flights = flights.drop(columns=["sched_dep_hour"])
    report.clean_rows, report.quarantined_rows = len(flights), len(flights_quarantine)

    total = report.clean_rows + report.quarantined_rows + report.duplicates_dropped
    if total != report.raw_rows:  # a bug here would silently lose rows: refuse to write
        raise RuntimeError(f"{folder}: accounting broken, raw {report.raw_rows} != {total}")

    flights_meta, weather_meta = (
        contract_metadata(flights_contract),
        contract_metadata(weather_contract),
    )
    lake.write_parquet_atomic(lake.partition_file("clean", "flights", day), flights, flights_meta)
    lake.write_parquet_atomic(
        lake.partition_file("quarantine", "flights", day), flights_quarantine, flights_meta
    )
    lake.write_parquet_atomic(lake.partition_file("clean", "weather", day), weather, weather_meta)
    lake.write_parquet_atomic(
        lake.partition_file("quarantine", "weather", day), weather_quarantine, weather_meta
    )
    report.seconds = round(time.perf_counter() - started, 3)
    lake.write_json_atomic(
        lake.manifest("flights", day),
        {
            **asdict(report),
            "engine": "dask",
            "contracts": [flights_contract.tag, weather_contract.tag],
            "landing_contracts": [
                load_contract("flights", "landing").tag,
                load_contract("weather", "landing").tag,
            ],
        },
    )
    return report


def _stored_report(lake: Lake, day: date, fingerprint: str) -> PartitionReport | None:
    """The manifest's report when it was built from inputs with this fingerprint."""
    path = lake.manifest("flights", day)
    if not lake.exists(path):
        return None
    stored = lake.read_json(path)
    if stored.get("fingerprint") != fingerprint:
        return None
    fields = {k: v for k, v in stored.items() if k in PartitionReport.__dataclass_fields__}
    return PartitionReport(**{**fields, "skipped": True})


@dataclass
class IngestSummary:
    """What the nightly run needs to know about ingestion: partitions and accounting."""

    days: list[str]
    processed: int
    skipped: int
    raw_rows: int
    clean_rows: int
    quarantined_rows: int
    duplicates_dropped: int
    weather_quarantined_rows: int
    worst_day: str | None
    worst_quarantine_fraction: float


Engine = Literal["dask", "spark"]


def days_to_ingest(
    lake: Lake,
    first_day: date,
    as_of: date,
    log: logging.Logger | logging.LoggerAdapter = logger,
) -> list[date]:
    """Landed days in [first_day, as_of]; partitions dated after `as_of` wait for their run.

    A partition dated in the future is not an error (upstream may deliver early), but it is
    never read by an earlier run, and the run says so instead of ignoring it silently.
    """
    landed = lake.landed_days()
    future = [d for d in landed if d > as_of]
    if future:
        log.warning(
            "ingest: %d landed partition(s) dated after as_of=%s left for a later run: %s",
            len(future),
            as_of,
            ", ".join(d.isoformat() for d in future[:5]) + (" ..." if len(future) > 5 else ""),
        )
    return [d for d in landed if first_day <= d <= as_of]


def ingest_days(
    lake_root: str,
    days: list[date],
    dims_dir: str,
    client: distributed.Client | None = None,
    log: logging.Logger | logging.LoggerAdapter = logger,
    engine: Engine = "dask",
    spark: SparkSession | None = None,
) -> list[PartitionReport]:
    """Process the days that changed, on Dask (`client`) or Spark (`spark`); reuse the rest.

    Both engines write the same partitions and manifests, so the content-hash watermark
    (the manifests' fingerprints) is shared: switching engines does not rebuild the lake.
    """
    lake = Lake(lake_root)
    reports: dict[str, PartitionReport] = {}
    todo: list[tuple[date, str]] = []
    for day in days:
        fingerprint = partition_fingerprint(lake, day, dims_dir)
        existing = _stored_report(lake, day, fingerprint)
        if existing is None:
            todo.append((day, fingerprint))
        else:
            reports[existing.day] = existing
    log.info("ingest (%s): %d day(s) to process, %d unchanged", engine, len(todo), len(reports))
    if engine == "spark":
        from tasks.ingest_spark import clean_days_spark

        if spark is None:
            raise ValueError(
                "engine='spark' needs a SparkSession (tasks.ingest_spark.spark_session)"
            )
        for report in clean_days_spark(spark, lake_root, todo, dims_dir):
            reports[report.day] = report
        return [reports[d.isoformat()] for d in days]
    if engine != "dask":
        raise ValueError(f"unknown ingest engine {engine!r}; expected 'dask' or 'spark'")
    if client is None:
        raise ValueError("engine='dask' needs a distributed.Client")
    futures = [
        client.submit(clean_day, lake_root, day, dims_dir, fingerprint, pure=False, retries=1)
        for day, fingerprint in todo
    ]
    step = max(1, len(futures) // 10)
    for done, future in enumerate(distributed.as_completed(futures, loop=client.loop), start=1):
        try:
            report = future.result()
        except Exception:
            client.gather(futures, errors="skip")  # let the other partitions finish first
            raise
        reports[report.day] = report
        if done % step == 0 or done == len(futures):
            log.info("ingest: %d/%d day(s) processed", done, len(futures))
    return [reports[d.isoformat()] for d in days]


@task(name="ingest-flights", retries=1, retry_delay_seconds=5)
def ingest_flights(
    lake_root: str,
    as_of: date,
    first_day: date,
    dask_address: str,
    engine: Engine = "dask",
    spark_master: str = "local[*]",
) -> IngestSummary:
    """Ingest every landed day in [first_day, as_of] into clean/ and quarantine/.

    `engine="dask"` fans days out to the flow's Dask cluster; `engine="spark"` runs one
    Spark job on `spark_master` (the session is shared by the process and kept alive).
    """
    log = get_run_logger()
    lake = Lake(lake_root)
    days = days_to_ingest(lake, first_day, as_of, log)
    if not days:
        raise FileNotFoundError(
            f"no landed days between {first_day} and {as_of} under {lake.path('landing', 'daily')}"
            f"; run `nightshift land --through {as_of}` first"
        )
    dims_dir = lake.latest_dimension_snapshot(as_of)
    if engine == "spark":
        from tasks.ingest_spark import spark_session

        reports = ingest_days(
            lake_root, days, dims_dir, log=log, engine="spark", spark=spark_session(spark_master)
        )
    else:
        with distributed.Client(dask_address) as client:
            reports = ingest_days(lake_root, days, dims_dir, client, log)
    worst = max(reports, key=lambda r: r.quarantine_fraction)
    summary = IngestSummary(
        days=[r.day for r in reports],
        processed=sum(not r.skipped for r in reports),
        skipped=sum(r.skipped for r in reports),
        raw_rows=sum(r.raw_rows for r in reports),
        clean_rows=sum(r.clean_rows for r in reports),
        quarantined_rows=sum(r.quarantined_rows for r in reports),
        duplicates_dropped=sum(r.duplicates_dropped for r in reports),
        weather_quarantined_rows=sum(r.weather_quarantined_rows for r in reports),
        worst_day=worst.day,
        worst_quarantine_fraction=round(worst.quarantine_fraction, 5),
    )
    log.info(
        "ingest: %d raw rows -> %d clean, %d quarantined, %d duplicates dropped (%d days)",
        summary.raw_rows,
        summary.clean_rows,
        summary.quarantined_rows,
        summary.duplicates_dropped,
        len(days),
    )
    return summary
