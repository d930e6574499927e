"""The pandas engine: clean landed days of a dataset, a batch of days per Dask task.

`clean_day` is a plain function (testable without Prefect or Dask): it reads every source
the dataset delivers for the day, types and checks each row against the source's contract,
drops exact duplicates, joins the side sources and dimensions into the fact rows as the
dataset spec declares, and writes clean + quarantine partitions and the day's manifest;
each published clean partition's contract-suite result goes to the validation cache
(`validation_cache.check_clean_bytes`), so the validate stage need not read it back.
`clean_batch` does the same for several days with the dimensions read once, and
`clean_days_dask` fans the changed days out to a Dask cluster in batches sized by their
input bytes (`plan.plan_batches`). Each day is still its own generation, checked and
published alone: a day rejected in a batch does not stop the others.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING

import pandas as pd

from data_contracts import Contract, load_contract
from tasks.core.lake import Lake, parquet_bytes
from tasks.core.settings import get_settings
from tasks.datasets import get_dataset
from tasks.datasets.spec import DatasetSpec, Join, Source
from tasks.ingest.dialect import read_delivery_table
from tasks.ingest.generation import LAYERS, DayRejected, publish_day, staged_file, staging
from tasks.ingest.plan import (
    Engine,
    PartitionReport,
    SourceCounts,
    check_accounting,
    contract_metadata,
    delivered_bytes,
    landing_file,
    partition_fingerprint,
    plan_batches,
    stored_report,
)
from tasks.ingest.reader import require_columns
from tasks.quality.dimensions import allowed_sets
from tasks.quality.native_checks import suite_fingerprint
from tasks.quality.pandas_rules import floats, to_date, typed_frame_and_violations
from tasks.quality.rules import DATE_MATCHES_PARTITION, KEY_UNIQUE, ContractViolation
from tasks.quality.validation_cache import PartitionResult, TableCache, check_clean_bytes

if TYPE_CHECKING:  # imported by `clean_days_dask`: Spark's Python workers never need it
    import distributed

logger = logging.getLogger("nightshift.ingest")


def read_raw_csv(lake: Lake, path: str) -> pd.DataFrame:
    """Read a delivered CSV as text, keeping each row's physical line for the quarantine.

    The file is read by the dialect both engines share (`tasks.ingest.dialect`): a file
    that cannot be read row by row fails with the file, the line, the column and the rule.
    Plain files are parsed by Arrow into Arrow-backed text columns (no Python object per
    value), the others by the strict reader; both give the same frame.
    """
    table = read_delivery_table(lake, path)
    frame = table.to_pandas()
    for name in frame.columns[:-1]:  # `str` (NaN-missing) text, whichever reader it was
        if frame[name].dtype != "str":
            frame[name] = frame[name].astype("str")
    return frame


def _quarantine_frame(raw: pd.DataFrame, mask: pd.Series, reasons: pd.Series, source: str):
    """The quarantined raw rows as text, with the rules they broke and their file.

    Most days quarantine nothing; their empty frame is built from the column names
    alone: the same columns, dtypes and Parquet bytes, without the per-column `astype`
    of an empty selection (a few ms per file, BENCHMARKS "Dask ingest's fixed cost").
    """
    if not mask.any():
        empty = {c: pd.array([], dtype="string") for c in [*raw.columns, "_rules", "_source_file"]}
        empty["_source_line"] = raw["_source_line"].iloc[:0]
        return pd.DataFrame(empty)
    out = raw.loc[mask].copy()
    out["_rules"] = reasons.loc[mask].astype(str)
    out["_source_file"] = source
    return out.astype({c: "string" for c in out.columns if c != "_source_line"})


def _drop_exact_duplicates(raw: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    data_columns = [c for c in raw.columns if c != "_source_line"]
    duplicated = raw.duplicated(subset=data_columns, keep="first")
    return raw.loc[~duplicated], int(duplicated.sum())


def row_dates(raw: pd.DataFrame, source: Source) -> pd.Series:
    """Each raw row's own date (NaT where it cannot be read), from the source's date columns."""
    if source.date_parts:
        # the shared number grammar, as for typed columns (`2013d` is no year on either engine)
        parts = [pd.Series(floats(raw[p]), index=raw.index) for p in source.date_parts]
        frame = pd.DataFrame({"year": parts[0], "month": parts[1], "day": parts[2]})
        stamp = pd.to_datetime(frame, errors="coerce")
    else:
        return to_date(raw[source.date_column])
    return stamp.dt.date


def off_day(raw: pd.DataFrame, source: Source, day: date) -> pd.Series:
    """`row_dates(raw, source) != day`: the rows dated on another day, or on none.

    Rows whose date parts are exactly the day's numbers are on the day whatever else
    holds, so only the others (few or none on most days) go through `row_dates`, whose
    date objects per row were a tenth of a small day's cleaning.
    """
    if not source.date_parts:
        return row_dates(raw, source) != day
    year, month, dom = (floats(raw[p]) for p in source.date_parts)
    wrong = pd.Series(~((year == day.year) & (month == day.month) & (dom == day.day)), raw.index)
    if wrong.any():
        wrong[wrong] = (row_dates(raw.loc[wrong], source) != day).to_numpy()
    return wrong


def split_rows(
    raw: pd.DataFrame, contract: Contract, source: Source, day: date, path: str, allowed: dict
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Typed clean rows and quarantined raw rows of one delivered file."""
    require_columns(list(raw.columns), contract, source, path)
    typed, reasons = typed_frame_and_violations(raw, contract, allowed)
    wrong_day = off_day(raw, source, day)
    if wrong_day.any():  # no reason starts with ";" but those joined here to an empty one
        reasons = reasons.where(~wrong_day, reasons + ";" + DATE_MATCHES_PARTITION)
        reasons = reasons.str.lstrip(";")
    typed.insert(0, "date", day)
    key_duplicate = typed.duplicated(subset=contract.key, keep="first") & (reasons == "")
    reasons = reasons.where(~key_duplicate, KEY_UNIQUE)
    bad = reasons != ""
    clean = typed.loc[~bad].copy()
    for column in contract.source_columns:
        if column.type == "int" and not column.nullable:  # no nulls left: plain int64
            clean[column.name] = clean[column.name].astype("int64")
    return clean, _quarantine_frame(raw, bad, reasons, path)


def read_dimension(lake: Lake, dims_dir: str, join: Join) -> pd.DataFrame:
    """A dimension's kept columns by key, typed as the join declares (first row wins)."""
    with lake.fs.open(f"{dims_dir}/{join.table}.csv") as handle:
        table = pd.read_csv(handle, na_values=["", "NA"])
    keys = list(join.on.values())
    table = table.drop_duplicates(keys)[[*keys, *join.columns]].rename(columns=join.columns)
    for key in keys:
        table[key] = table[key].astype("string")
    for column, kind in join.types.items():
        table[column] = table[column].astype("float64" if kind == "float" else "string")
    return table


def join_tables(
    fact: pd.DataFrame,
    spec: DatasetSpec,
    daily: dict[str, pd.DataFrame],
    dimension: dict[str, pd.DataFrame],
) -> pd.DataFrame:
    """Left-join the day's side sources and the dimensions into the fact rows, as declared."""
    for join in spec.joins:
        left_on = []
        for fact_column, divisor in ((c, join.floordiv.get(c)) for c in join.on):
            if divisor:
                helper = f"_join_{fact_column}"
                fact[helper] = (fact[fact_column] // divisor).astype("Int64")
                left_on.append(helper)
            else:
                left_on.append(fact_column)
        right_on = list(join.on.values())
        if join.table in daily:
            right = daily[join.table].drop(columns=["date"])
            kept = [c for c in right.columns if c not in right_on]
            right = right[[*right_on, *kept]].rename(columns=join.columns)
        else:
            right = dimension[join.table]
        # join keys named after the fact's own columns never clash with the fact's names
        right = right.rename(columns={r: f"_key_{i}" for i, r in enumerate(right_on)})
        fact = fact.merge(
            right,
            left_on=left_on,
            right_on=[f"_key_{i}" for i in range(len(right_on))],
            how="left",
        )
        fact = fact.drop(columns=[c for c in fact.columns if c.startswith(("_join_", "_key_"))])
    return fact


@dataclass
class SharedInputs:
    """What every day of a run reads alike: the allowed-value sets and the joined dimension
    tables (typed, first row per key). Read once per batch, not once per day."""

    allowed: dict[str, list[str]]
    dimensions: dict[str, pd.DataFrame]
    # each table's suite fingerprint (the validation cache key's half), computed once
    suites: dict[str, str] = field(default_factory=dict)

    def suite(self, contract: Contract) -> str:
        if contract.dataset not in self.suites:
            self.suites[contract.dataset] = suite_fingerprint(contract, self.allowed)
        return self.suites[contract.dataset]

    @classmethod
    def read(cls, lake: Lake, spec: DatasetSpec, dims_dir: str | None) -> SharedInputs:
        side = {s.name for s in spec.side_sources}
        return cls(
            allowed=allowed_sets(lake, spec, dims_dir),
            dimensions={
                j.table: read_dimension(lake, str(dims_dir), j)
                for j in spec.joins
                if j.table not in side
            },
        )


def _cleaned_frames(
    lake: Lake, spec: DatasetSpec, day: date, shared: SharedInputs, report: PartitionReport
) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """Each source's (clean, quarantine) frames of one day, the fact joined; counts into
    `report`. A function of its own so that its intermediate frames end with it."""
    dataset = spec.name
    outputs: dict[str, tuple[pd.DataFrame, pd.DataFrame]] = {}
    for source in spec.sources:
        contract = load_contract(source.name)
        path = landing_file(lake, dataset, day, source.name)
        raw = read_raw_csv(lake, path)
        counts = SourceCounts(raw_rows=len(raw))
        raw, counts.duplicates_dropped = _drop_exact_duplicates(raw)
        clean, quarantine = split_rows(raw, contract, source, day, path, shared.allowed)
        counts.clean_rows, counts.quarantined_rows = len(clean), len(quarantine)
        report.sources[source.name] = counts
        outputs[source.name] = (clean, quarantine)

    daily = {s.name: outputs[s.name][0] for s in spec.side_sources}
    fact_clean, fact_quarantine = outputs[spec.fact.name]
    joined = join_tables(fact_clean, spec, daily, shared.dimensions)
    outputs[spec.fact.name] = (joined, fact_quarantine)
    check_accounting(report, lake.landing_day(dataset, day))
    return outputs


def _clean_and_publish(
    lake: Lake,
    spec: DatasetSpec,
    day: date,
    fingerprint: str,
    shared: SharedInputs,
    engine: Engine = "dask",
) -> PartitionReport:
    """One day's new generation, staged, checked and published (see `clean_day`).

    Each clean partition is also checked against its table's contract suite, on the bytes
    written (`validation_cache.check_clean_bytes`), and the result left in the validation
    cache once the day is published: the validate stage then reads a few hundred bytes per
    partition instead of the partition, and the checks ran in parallel on the workers that
    had the rows in memory. They run once the day's frames are written and dropped, so a
    worker holds one decoded partition more, not a second copy of the day.
    """
    started = time.perf_counter()
    dataset = spec.name
    report = PartitionReport(day=day.isoformat(), fingerprint=fingerprint, fact=spec.fact.name)
    outputs = _cleaned_frames(lake, spec, day, shared, report)
    report.seconds = round(time.perf_counter() - started, 3)
    written: dict[str, bytes] = {}
    checked: dict[str, PartitionResult] = {}
    with staging(lake, dataset, day) as generation:
        for source in spec.sources:
            metadata = contract_metadata(load_contract(source.name))
            for layer, frame in zip(LAYERS, outputs.pop(source.name), strict=True):
                staged = staged_file(lake, dataset, day, generation, layer, source.name)
                data = parquet_bytes(frame, metadata)
                lake.write_bytes_atomic(staged, data)
                if layer == "clean":
                    written[source.name] = data
            del frame
        for table, data in written.items():  # the contract suite, on what readers will read
            contract = load_contract(table)
            suite = shared.suite(contract)
            checked[table] = check_clean_bytes(data, day, contract, shared.allowed, suite)
        del written
        published = publish_day(lake, spec, report, generation, engine)
    # only a published generation's results: the validate stage finds them by its sha256
    for table, result in checked.items():
        TableCache(lake, dataset, table).write(result)
    return published


def clean_day(
    lake_root: str, dataset: str, day: date, dims_dir: str | None, fingerprint: str | None = None
) -> PartitionReport:
    """Turn one landed day into a new generation (clean + quarantine of every table) and
    publish it; idempotent.

    The generation is staged and checked (`generation.publish_day`) before the manifest
    swap makes it current: a rejected day (`DayRejected`) leaves the previous generation.
    `fingerprint` is the caller's `partition_fingerprint` when it already hashed the
    inputs to decide to come here.
    """
    spec = get_dataset(dataset)
    lake = Lake(lake_root)
    fingerprint = fingerprint or partition_fingerprint(lake, dataset, day, dims_dir)
    shared = SharedInputs.read(lake, spec, dims_dir)
    return _clean_and_publish(lake, spec, day, fingerprint, shared)


def clean_batch(
    lake_root: str,
    dataset: str,
    todo: list[tuple[date, str]],
    dims_dir: str | None,
    engine: Engine = "dask",
) -> list[PartitionReport | DayRejected]:
    """`clean_day` for each (day, fingerprint) of `todo`, in order, with the dimensions read
    once: the published days' reports and the rejected days' `DayRejected`, in order.
    `engine` is the scheduler that ran it, recorded in the manifests (the Spark engine
    runs this same function in its Python workers).

    Each day is its own generation, staged, checked and swapped alone, so a rejected day
    (or a delivery breaking its contract: a `fail`) never keeps the others from being
    published. Any other error (a full disk, a bug) is raised once the batch's other days
    are done; when Dask retries the batch, the days already published with the same
    fingerprint are taken from their manifests instead of being cleaned again.
    """
    spec = get_dataset(dataset)
    lake = Lake(lake_root)
    shared = SharedInputs.read(lake, spec, dims_dir)
    results: list[PartitionReport | DayRejected] = []
    error: Exception | None = None
    for day, fingerprint in todo:
        published = stored_report(lake, dataset, day, fingerprint)
        if published is not None:  # an earlier attempt of this batch got this far
            published.skipped = False
            results.append(published)
            continue
        try:
            results.append(_clean_and_publish(lake, spec, day, fingerprint, shared, engine))
        except DayRejected as rejected:
            results.append(rejected)
        except ContractViolation as violation:
            results.append(DayRejected(str(violation), day.isoformat()))
        except Exception as failure:  # re-raised below, once the other days are done
            logger.error("ingest: date=%s failed: %s", day.isoformat(), failure)
            error = error or failure
    if error is not None:
        raise error
    return results


def clean_days_dask(
    client: distributed.Client,
    lake_root: str,
    dataset: str,
    todo: list[tuple[date, str]],
    dims_dir: str | None,
    log: logging.Logger | logging.LoggerAdapter = logger,
) -> tuple[list[PartitionReport], list[DayRejected]]:
    """Clean the days `todo` (day, fingerprint) on the Dask cluster, a batch of days per task.

    Batches are consecutive days of at most `ingest_batch_bytes` of input, at least one
    per worker thread (`plan.plan_batches`). Returns the published days' reports and the
    rejected days (`DayRejected`, or any `ContractViolation` of a delivery, as a `fail`);
    every day is tried, so one bad day never keeps the good ones from being published.
    Other errors are raised after the remaining batches finished.
    """
    if not todo:
        return [], []
    import distributed  # 0.4 s of imports the engine's cleaning functions do not need

    from tasks.ops.cluster import cpu_work_options

    settings = get_settings()
    lake = Lake(lake_root)
    spec = get_dataset(dataset)
    on_cpu = cpu_work_options(client)  # GPU workers stay free for trials and ranks
    info = client.scheduler_info(n_workers=-1)["workers"]
    used = on_cpu.get("workers") or list(info)
    slots = sum(info[a].get("nthreads", 1) for a in used if a in info) or 1
    sized = [((day, fp), delivered_bytes(lake, spec, day)) for day, fp in todo]
    batches = plan_batches(sized, settings.ingest_batch_bytes, min_batches=slots, slots=slots)
    log.info("ingest: %d day(s) in %d batch(es) on %d thread(s)", len(todo), len(batches), slots)
    futures = [
        client.submit(
            clean_batch, lake_root, dataset, batch, dims_dir, pure=False, retries=1, **on_cpu
        )
        for batch in batches
    ]
    sizes = {future.key: len(batch) for future, batch in zip(futures, batches, strict=True)}
    reports: list[PartitionReport] = []
    rejected: list[DayRejected] = []
    done = 0
    wait_s = settings.dask_wait_timeout_s  # nothing waits forever on a lost worker
    finishing = distributed.as_completed(futures, loop=client.loop, timeout=wait_s)
    for future in finishing:
        try:
            results = future.result(timeout=wait_s)
        except Exception:
            # let the other batches finish first
            with contextlib.suppress(TimeoutError), client.as_current():
                distributed.wait(futures, timeout=wait_s)
            raise
        for result in results:
            if isinstance(result, DayRejected):
                rejected.append(result)
            else:
                reports.append(result)
        done += sizes[future.key]
        log.info("ingest: %d/%d day(s) processed", done, len(todo))
    return reports, rejected
