"""The pandas engine: clean one landed day of a dataset, one Dask task per day.

`clean_day` is a plain function (testable without Prefect or Dask): it reads every source
the dataset delivers for the day, types and checks each row against the source's contract,
drops exact duplicates, joins the side sources and dimensions into the fact rows as the
dataset spec declares, and writes clean + quarantine partitions and the day's manifest.
`ingest_days` fans the changed days out to a Dask cluster and reuses the unchanged ones.
"""

from __future__ import annotations

import contextlib
import logging
import time
from datetime import date

import distributed
import numpy as np
import pandas as pd

from data_contracts import Contract, load_contract
from tasks.core.lake import Lake
from tasks.core.settings import get_settings
from tasks.datasets import get_dataset
from tasks.datasets.spec import DatasetSpec, Join, Source
from tasks.ingest.dialect import read_delivery_table
from tasks.ingest.generation import LAYERS, DayRejected, publish_day, staged_file, staging
from tasks.ingest.plan import (
    PartitionReport,
    SourceCounts,
    check_accounting,
    contract_metadata,
    landing_file,
    partition_fingerprint,
)
from tasks.ingest.reader import require_columns
from tasks.ops.cluster import cpu_work_options
from tasks.quality.dimensions import allowed_sets
from tasks.quality.pandas_rules import floats, to_date, typed_frame_and_violations
from tasks.quality.rules import DATE_MATCHES_PARTITION, KEY_UNIQUE, ContractViolation

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


def split_rows(
    raw: pd.DataFrame, contract: Contract, source: Source, day: date, path: str, allowed: dict
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Typed clean rows and quarantined raw rows of one delivered file."""
    require_columns(list(raw.columns), contract, source, path)
    typed, reasons = typed_frame_and_violations(raw, contract, allowed)
    wrong_day = row_dates(raw, source) != day
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
    started = time.perf_counter()
    spec = get_dataset(dataset)
    lake = Lake(lake_root)
    fingerprint = fingerprint or partition_fingerprint(lake, dataset, day, dims_dir)
    report = PartitionReport(day=day.isoformat(), fingerprint=fingerprint, fact=spec.fact.name)
    allowed = allowed_sets(lake, spec, dims_dir)
    outputs: dict[str, tuple[pd.DataFrame, pd.DataFrame]] = {}
    for source in spec.sources:
        contract = load_contract(source.name)
        path = landing_file(lake, dataset, day, source.name)
        raw = read_raw_csv(lake, path)
        counts = SourceCounts(raw_rows=len(raw))
        raw, counts.duplicates_dropped = _drop_exact_duplicates(raw)
        clean, quarantine = split_rows(raw, contract, source, day, path, allowed)
        counts.clean_rows, counts.quarantined_rows = len(clean), len(quarantine)
        report.sources[source.name] = counts
        outputs[source.name] = (clean, quarantine)

    daily = {s.name: outputs[s.name][0] for s in spec.side_sources}
    dimensions = {
        j.table: read_dimension(lake, str(dims_dir), j) for j in spec.joins if j.table not in daily
    }
    fact_clean, fact_quarantine = outputs[spec.fact.name]
    outputs[spec.fact.name] = (join_tables(fact_clean, spec, daily, dimensions), fact_quarantine)
    check_accounting(report, lake.landing_day(dataset, day))

    report.seconds = round(time.perf_counter() - started, 3)
    with staging(lake, dataset, day) as generation:
        for source in spec.sources:
            metadata = contract_metadata(load_contract(source.name))
            for layer, frame in zip(LAYERS, outputs[source.name], strict=True):
                staged = staged_file(lake, dataset, day, generation, layer, source.name)
                lake.write_parquet_atomic(staged, frame, metadata)
        return publish_day(lake, spec, report, generation, "dask")


def clean_days_dask(
    client: distributed.Client,
    lake_root: str,
    dataset: str,
    todo: list[tuple[date, str]],
    dims_dir: str | None,
    log: logging.Logger | logging.LoggerAdapter = logger,
) -> tuple[list[PartitionReport], list[DayRejected]]:
    """Clean the days `todo` (day, fingerprint) on the Dask cluster, one task per day.

    Returns the published days' reports and the rejected days (`DayRejected`, or any
    `ContractViolation` of a delivery, as a `fail`); every day is tried, so one bad day
    never keeps the good ones from being published. Other errors are raised after the
    remaining days finished.
    """
    on_cpu = cpu_work_options(client)  # GPU workers stay free for trials and ranks
    futures = [
        client.submit(
            clean_day,
            lake_root,
            dataset,
            day,
            dims_dir,
            fingerprint,
            pure=False,
            retries=1,
            **on_cpu,
        )
        for day, fingerprint in todo
    ]
    reports: list[PartitionReport] = []
    rejected: list[DayRejected] = []
    days = {future.key: day for future, (day, _) in zip(futures, todo, strict=True)}
    step = max(1, len(futures) // 10)
    wait_s = get_settings().dask_wait_timeout_s  # nothing waits forever on a lost worker
    finishing = distributed.as_completed(futures, loop=client.loop, timeout=wait_s)
    for done, future in enumerate(finishing, start=1):
        try:
            reports.append(future.result(timeout=wait_s))
        except DayRejected as error:
            rejected.append(error)
        except ContractViolation as error:
            rejected.append(DayRejected(str(error), days[future.key].isoformat()))
        except Exception:
            # let the other partitions finish first
            with contextlib.suppress(TimeoutError), client.as_current():
                distributed.wait(futures, timeout=wait_s)
            raise
        if done % step == 0 or done == len(futures):
            log.info("ingest: %d/%d day(s) processed", done, len(futures))
    return reports, rejected
