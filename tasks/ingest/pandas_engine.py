"""The pandas engine: clean landed days of a dataset, a batch of days per Dask task.

`clean_day` is a plain function (testable without Prefect or Dask): it reads every source
the dataset delivers for the day, types and checks each row against the source's contract,
drops exact duplicates, joins the side sources and dimensions into the fact rows as the
dataset spec declares, and writes clean + quarantine partitions and the day's manifest;
each published clean partition's contract-suite result goes to the validation cache
(`validation_cache.check_clean_batch`), so the validate stage need not read it back.
`clean_batch` does the same for several days, with the dimensions read once and
consecutive days typed, checked and joined as one frame per source (`split_days`), and
`clean_days_dask` fans the changed days out to a Dask cluster in batches sized by their
input bytes (`plan.plan_batches`). Each day is still its own generation, checked and
published alone: a day rejected in a batch does not stop the others.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from data_contracts import Contract, load_contract
from tasks.core.lake import Lake, parquet_bytes
from tasks.core.settings import get_settings
from tasks.datasets import get_dataset
from tasks.datasets.spec import DatasetSpec, Join, Source
from tasks.ingest.dialect import LINE_COLUMN, read_delivery_table
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
from tasks.quality.validation_cache import PartitionResult, TableCache, check_clean_batch

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


def _empty_quarantine(raw: pd.DataFrame) -> pd.DataFrame:
    """The quarantine frame of a file with no quarantined row (most days), from the column
    names alone: the same columns, dtypes and Parquet bytes as an empty selection of the
    typed quarantine rows, without its per-column `astype` (a few ms per file, BENCHMARKS
    "Dask ingest's fixed cost")."""
    empty = {c: pd.array([], dtype="string") for c in [*raw.columns, "_rules", "_source_file"]}
    empty[LINE_COLUMN] = raw[LINE_COLUMN].iloc[:0]
    return pd.DataFrame(empty)


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
    by: str | None = None,
) -> pd.DataFrame:
    """Left-join the day's side sources and the dimensions into the fact rows, as declared.

    With `by` (a column of the fact and of each side source naming the row's day), the
    frames hold several days and a side source's rows join only the fact rows of their
    own day, as when each day is joined alone.
    """
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
            side = daily[join.table]
            right = side.drop(columns=[c for c in ("date", by) if c in side.columns])
            kept = [c for c in right.columns if c not in right_on]
            right = right[[*right_on, *kept]].rename(columns=join.columns)
            if by is not None:  # the same day's rows only
                right[by] = side[by]
                left_on.append(by)
                right_on.append(by)
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


# A row's day within a frame of several days (its index in the frame's days): a key of the
# per-day rules and joins, never published.
BATCH_DAY = "_batch_day"


@dataclass
class _Delivered:
    """One day's delivered files, read and their headers checked, waiting to be cleaned
    with the other days of its frame."""

    day: date
    fingerprint: str
    paths: dict[str, str]
    raws: dict[str, pd.DataFrame]

    def layout(self) -> list[list[str]]:
        """Each file's columns: days are cleaned as one frame only when these agree."""
        return [list(raw.columns) for raw in self.raws.values()]


def _read_day(lake: Lake, spec: DatasetSpec, day: date, fingerprint: str) -> _Delivered:
    """Read a day's files and check their headers, source by source: a file that cannot be
    read, or lacks a column, fails its day (with the file, line, column and rule) before
    the day joins a frame."""
    paths: dict[str, str] = {}
    raws: dict[str, pd.DataFrame] = {}
    for source in spec.sources:
        path = landing_file(lake, spec.name, day, source.name)
        raw = read_raw_csv(lake, path)
        require_columns(list(raw.columns), load_contract(source.name), source, path)
        paths[source.name], raws[source.name] = path, raw
    return _Delivered(day, fingerprint, paths, raws)


def _off_days(raw: pd.DataFrame, source: Source, days: list[date], code: np.ndarray) -> pd.Series:
    """`row_dates(raw, source) != days[code]`: the rows dated on another day than their
    file's (row i's file is of `days[code[i]]`), or on none.

    Rows whose date parts are exactly their day's numbers are on it whatever else holds,
    so only the others (few or none on most days) go through `row_dates`, whose date
    objects per row were a tenth of a small day's cleaning.
    """
    on = np.array(days, dtype=object)[code]
    if not source.date_parts:
        return row_dates(raw, source) != pd.Series(on, index=raw.index)
    year, month, dom = (floats(raw[p]) for p in source.date_parts)
    numbers = np.array([(d.year, d.month, d.day) for d in days], dtype="float64")[code]
    same = (year == numbers[:, 0]) & (month == numbers[:, 1]) & (dom == numbers[:, 2])
    wrong = pd.Series(~same, raw.index)
    if wrong.any():
        mask = wrong.to_numpy()
        rows = raw.loc[mask]
        wrong[wrong] = (row_dates(rows, source) != pd.Series(on[mask], index=rows.index)).to_numpy()
    return wrong


def _bounds(code: np.ndarray, days: int) -> np.ndarray:
    """Where each day's rows start and end in rows sorted by day."""
    return np.searchsorted(code, np.arange(days + 1))


def split_days(
    raws: list[pd.DataFrame],
    days: list[date],
    paths: list[str],
    contract: Contract,
    source: Source,
    allowed: dict,
) -> tuple[pd.DataFrame, list[pd.DataFrame], list[SourceCounts]]:
    """Typed clean rows and quarantined raw rows of one source's files of several days
    (with the same columns), cleaned as one frame: exact duplicates dropped (counted),
    every value typed and checked against the contract's row rules, rows dated on another
    day and key duplicates quarantined.

    Why one frame: a day's cleaning was dozens of pandas operations on a few thousand
    rows, so their fixed cost was most of it (BENCHMARKS "Dask ingest's fixed cost"); here
    each runs once for the frame. Every rule is per row or keyed by the row's day (exact duplicates, the
    key, the row's date), so each day's rows, reasons and order are those of its file
    cleaned alone (`clean_day` is a frame of one day).
    Returns the clean typed rows of every day in day order with `BATCH_DAY` (no `date`),
    each day's quarantine frame and its counts. `raws` is emptied: the rows are held once.
    """
    count = len(days)
    code = np.repeat(np.arange(count), [len(r) for r in raws])
    # a frame of one day (a large day at x30) is that day's own frame: no copy
    raw = raws[0] if count == 1 else pd.concat(raws, ignore_index=True)
    raws.clear()  # the days' own frames end here: one copy of the rows at a time
    data_columns = [c for c in raw.columns if c != LINE_COLUMN]
    keyed = raw.assign(**{BATCH_DAY: code})  # no copy of the rows (copy-on-write)
    duplicated = keyed.duplicated(subset=[*data_columns, BATCH_DAY], keep="first").to_numpy()
    del keyed
    if duplicated.any():
        raw = raw.loc[~duplicated]
    kept_code = code[~duplicated]
    typed, reasons = typed_frame_and_violations(raw, contract, allowed)
    wrong_day = _off_days(raw, source, days, kept_code)
    if wrong_day.any():  # no reason starts with ";" but those joined here to an empty one
        reasons = reasons.where(~wrong_day, reasons + ";" + DATE_MATCHES_PARTITION)
        reasons = reasons.str.lstrip(";")
    typed[BATCH_DAY] = kept_code
    key = [BATCH_DAY if c == "date" else c for c in contract.key]
    key += [] if BATCH_DAY in key else [BATCH_DAY]  # a key is unique within its day
    key_duplicate = typed.duplicated(subset=key, keep="first") & (reasons == "")
    reasons = reasons.where(~key_duplicate, KEY_UNIQUE)
    bad = (reasons != "").to_numpy()
    clean = typed.loc[~bad] if bad.any() else typed
    for column in contract.source_columns:
        if column.type == "int" and not column.nullable:  # no nulls left: plain int64
            clean[column.name] = clean[column.name].astype("int64")
    raw_rows = np.bincount(code, minlength=count)
    dropped = np.bincount(code[duplicated], minlength=count)
    clean_rows = np.bincount(kept_code[~bad], minlength=count)
    quarantined = np.bincount(kept_code[bad], minlength=count)
    quarantines = [_empty_quarantine(raw)] * count  # never written to: one frame will do
    if bad.any():
        out = raw.loc[bad].copy()
        out["_rules"] = reasons.loc[bad].astype(str)
        out["_source_file"] = np.array(paths, dtype=object)[kept_code[bad]]
        out = out.astype({c: "string" for c in out.columns if c != LINE_COLUMN})
        bounds = _bounds(kept_code[bad], count)
        for i in np.flatnonzero(quarantined):
            quarantines[i] = out.iloc[bounds[i] : bounds[i + 1]]
    counts = [
        SourceCounts(int(r), int(c), int(q), int(d))
        for r, c, q, d in zip(raw_rows, clean_rows, quarantined, dropped, strict=True)
    ]
    return clean, quarantines, counts


def _per_day(frame: pd.DataFrame, days: list[date], widened: list[str]) -> list[pd.DataFrame]:
    """A frame of several days' clean rows (in day order, `BATCH_DAY` per row) as each
    day's frame, `date` first. A side source's int columns were
    joined as nullable ints (`widened`): each day gets the dtype its own join gives them
    (int64, or float64 when a fact row found no match)."""
    bounds = _bounds(frame[BATCH_DAY].to_numpy(), len(days))
    body = frame.drop(columns=BATCH_DAY)
    parts = []
    for i, day in enumerate(days):
        part = body.iloc[bounds[i] : bounds[i + 1]]  # shares the frame's rows until written
        part.insert(0, "date", day)
        for column in widened:
            part[column] = part[column].astype("float64" if part[column].hasnans else "int64")
        parts.append(part)
    return parts


def _cleaned_days(
    spec: DatasetSpec, delivered: list[_Delivered], shared: SharedInputs
) -> list[tuple[PartitionReport, dict[str, tuple[pd.DataFrame, pd.DataFrame]]]]:
    """Each day's report and (clean, quarantine) frames of every source, the fact joined
    with the side sources and dimensions; the days are cleaned as one frame per source,
    and each day's frames are equal to what that day cleaned alone gives.
    A function of its own so that its intermediate frames end with it."""
    started = time.perf_counter()
    days = [d.day for d in delivered]
    reports = [
        PartitionReport(day=d.day.isoformat(), fingerprint=d.fingerprint, fact=spec.fact.name)
        for d in delivered
    ]
    clean: dict[str, pd.DataFrame] = {}
    quarantines: dict[str, list[pd.DataFrame]] = {}
    for source in spec.sources:
        raws = [d.raws.pop(source.name) for d in delivered]
        paths = [d.paths[source.name] for d in delivered]
        contract = load_contract(source.name)
        clean[source.name], quarantines[source.name], counts = split_days(
            raws, days, paths, contract, source, shared.allowed
        )
        del raws
        for report, counted in zip(reports, counts, strict=True):
            report.sources[source.name] = counted
    daily: dict[str, pd.DataFrame] = {}
    widened: list[str] = []
    for join in spec.joins:  # int columns joined as nullable ints: see `_per_day`
        side = clean.get(join.table)
        if side is None or join.table == spec.fact.name:
            continue
        keys = {*join.on.values(), BATCH_DAY}
        ints = [c for c in side.columns if c not in keys and side[c].dtype == np.int64]
        daily[join.table] = side.astype({c: "Int64" for c in ints})
        widened += [join.columns.get(c, c) for c in ints]
    fact = spec.fact.name
    joined = join_tables(clean.pop(fact), spec, daily, shared.dimensions, by=BATCH_DAY)
    del daily
    per_day = {fact: _per_day(joined, days, widened)}
    del joined
    for name, frame in clean.items():
        per_day[name] = _per_day(frame, days, [])
    seconds = time.perf_counter() - started
    rows = sum(r.raw_rows for r in reports) or 1
    results = []
    for i, report in enumerate(reports):
        report.seconds = round(seconds * max(report.raw_rows, 1) / rows, 3)
        outputs = {s.name: (per_day[s.name][i], quarantines[s.name][i]) for s in spec.sources}
        results.append((report, outputs))
    return results


# A day's encoded files, by (layer, table): what its generation will hold, byte for byte.
Files = dict[tuple[str, str], bytes]


def _clean_and_publish(
    lake: Lake,
    spec: DatasetSpec,
    day: date,
    fingerprint: str,
    shared: SharedInputs,
    engine: Engine = "dask",
) -> PartitionReport:
    """One day's new generation, staged, checked and published (see `clean_day`): a frame
    of one day."""
    delivered = _read_day(lake, spec, day, fingerprint)
    ((report, files, checked),) = _encoded_and_checked(
        lake, spec, _cleaned_days(spec, [delivered], shared), shared
    )
    return _publish(lake, spec, report, files, checked, engine)


def _encoded_and_checked(
    lake: Lake,
    spec: DatasetSpec,
    cleaned: list[tuple[PartitionReport, dict[str, tuple[pd.DataFrame, pd.DataFrame]]]],
    shared: SharedInputs,
) -> list[tuple[PartitionReport, Files, dict[str, PartitionResult]]]:
    """Each cleaned day's files encoded (its accounting checked first) and its clean
    partitions checked against their tables' contract suites.

    The checks run on the very bytes each day will publish, decoded as a reader decodes
    them (`validation_cache.check_clean_batch`), with the rules run once for the frame's
    days; the results go to the validation cache once the day is published (`_publish`),
    so the validate stage reads a few hundred bytes per partition instead of the
    partition, and the checks ran in parallel on the workers that had the rows. Each
    day's frames are dropped once encoded: a worker holds the frame's files, compressed,
    and its decoded clean partitions, not a second copy of the frame's rows.
    """
    encoded: list[tuple[PartitionReport, Files]] = []
    for report, outputs in cleaned:
        check_accounting(report, lake.landing_day(spec.name, date.fromisoformat(report.day)))
        files: Files = {}
        for source in spec.sources:
            metadata = contract_metadata(load_contract(source.name))
            for layer, frame in zip(LAYERS, outputs.pop(source.name), strict=True):
                files[layer, source.name] = parquet_bytes(frame, metadata)
            del frame
        encoded.append((report, files))
    cleaned.clear()
    days = [date.fromisoformat(report.day) for report, _ in encoded]
    checked: list[dict[str, PartitionResult]] = [{} for _ in encoded]
    for source in spec.sources:  # the contract suite, on what readers will read
        contract = load_contract(source.name)
        datas = [files["clean", source.name] for _, files in encoded]
        results = check_clean_batch(datas, days, contract, shared.allowed, shared.suite(contract))
        for by_table, result in zip(checked, results, strict=True):
            by_table[source.name] = result
    return [(r, f, c) for (r, f), c in zip(encoded, checked, strict=True)]


def _publish(
    lake: Lake,
    spec: DatasetSpec,
    report: PartitionReport,
    files: Files,
    checked: dict[str, PartitionResult],
    engine: Engine = "dask",
) -> PartitionReport:
    """Stage a day's encoded files as a generation and publish it (`publish_day` checks
    it first, and the manifest names `engine`); then leave its clean partitions' contract
    results in the validation cache."""
    dataset = spec.name
    day = date.fromisoformat(report.day)
    with staging(lake, dataset, day) as generation:
        for (layer, table), data in files.items():
            lake.write_bytes_atomic(staged_file(lake, dataset, day, generation, layer, table), data)
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


@dataclass
class _Outcomes:
    """A batch's outcome per day, in order: its report or its `DayRejected`. Any other
    error (a full disk, a bug) is kept and raised once the batch's other days are done."""

    results: list[PartitionReport | DayRejected | None]
    errors: list[Exception] = field(default_factory=list)

    def attempt(self, index: int, day: date, work: Callable[[], object]) -> object | None:
        """Run one day's `work`; its value, or None when the day was rejected or failed."""
        try:
            outcome = work()
            if isinstance(outcome, PartitionReport):
                self.results[index] = outcome
        except DayRejected as rejected:
            self.results[index] = rejected
        except ContractViolation as violation:
            self.results[index] = DayRejected(str(violation), day.isoformat())
        except Exception as failure:  # re-raised by `finished`, once the other days are done
            logger.error("ingest: date=%s failed: %s", day.isoformat(), failure)
            self.errors.append(failure)
        else:
            return outcome
        return None

    def finished(self) -> list[PartitionReport | DayRejected]:
        if self.errors:
            raise self.errors[0]
        return [r for r in self.results if r is not None]


def clean_batch(
    lake_root: str,
    dataset: str,
    todo: list[tuple[date, str]],
    dims_dir: str | None,
    frame_bytes: int | None = None,
    engine: Engine = "dask",
) -> list[PartitionReport | DayRejected]:
    """`clean_day` for each (day, fingerprint) of `todo`, in order, with the dimensions read
    once: the published days' reports and the rejected days' `DayRejected`, in order.
    `engine` is the scheduler that ran it, recorded in the manifests (the Spark engine
    runs this same function in its Python workers).

    Consecutive days are cleaned as one frame per source (`split_days`), up to
    `frame_bytes` of input (default: the `ingest_frame_bytes` setting), so the per-day
    fixed cost of the pandas operations is paid once per frame; each day's outputs are
    then split off and published as they would be alone.

    Each day is its own generation, staged, checked and swapped alone, so a rejected day
    (or a delivery breaking its contract: a `fail`) never keeps the others from being
    published. Any other error (a full disk, a bug) is raised once the batch's other days
    are done; when Dask retries the batch, the days already published with the same
    fingerprint are taken from their manifests instead of being cleaned again. Should a
    frame of days fail as a whole, its days are cleaned again one by one, so the error
    is the failing day's alone.
    """
    spec = get_dataset(dataset)
    lake = Lake(lake_root)
    shared = SharedInputs.read(lake, spec, dims_dir)
    limit = frame_bytes or get_settings().ingest_frame_bytes
    outcomes = _Outcomes([None] * len(todo))
    results, attempt = outcomes.results, outcomes.attempt
    frame: list[tuple[int, _Delivered]] = []

    def clean_frame() -> None:
        try:
            cleaned = _cleaned_days(spec, [d for _, d in frame], shared)
            staged = _encoded_and_checked(lake, spec, cleaned, shared)
        except Exception as failure:  # each day alone, for the failing day's own error
            logger.warning("ingest: %d day(s) cleaned one by one: %s", len(frame), failure)
            for index, d in frame:
                attempt(
                    index,
                    d.day,
                    partial(_clean_and_publish, lake, spec, d.day, d.fingerprint, shared, engine),
                )
        else:
            for (index, d), (report, files, checked) in zip(frame, staged, strict=True):
                attempt(index, d.day, partial(_publish, lake, spec, report, files, checked, engine))
        frame.clear()

    frame_size = 0
    for index, (day, fingerprint) in enumerate(todo):
        published = stored_report(lake, dataset, day, fingerprint)
        if published is not None:  # an earlier attempt of this batch got this far
            published.skipped = False
            results[index] = published
            continue
        size = delivered_bytes(lake, spec, day)
        if frame and frame_size + size > limit:
            clean_frame()
            frame_size = 0
        delivered = attempt(index, day, partial(_read_day, lake, spec, day, fingerprint))
        if not isinstance(delivered, _Delivered):
            continue
        if frame and delivered.layout() != frame[0][1].layout():
            clean_frame()
            frame_size = 0
        frame.append((index, delivered))
        frame_size += size
    if frame:
        clean_frame()
    return outcomes.finished()


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
