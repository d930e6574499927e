"""Validate: check the clean partitions against their data contract.

Every partition of the run's days is checked natively against the contract's suite (the
rule catalogue that drove the row-level quarantine, plus key uniqueness and the row
count; `native_checks`), one partition at a time, and its result cached by content
(`validation_cache`): a partition whose clean file and suite are unchanged since it was
last checked is read back, never re-checked, so a night costs what its new data costs and
memory stays one partition: the native checks are the gate. The pandas ingest checks each
partition it publishes on the bytes it writes and leaves the result in the cache, so after
an ingest (Dask or Spark: both run that function) the native checks re-read nothing.
Great Expectations re-checks the night's changed partitions
(the newest, up to `validation_gx_max_rows` rows) and writes the suite results and Data
Docs people read, by default in a detached process (`validation_gx_background`; its
import alone costs more than a new day's native checks) whose results, or failure, join
the report when done. The contract's quarantine threshold is checked per day from the
manifests. A broken contract fails the run with the rule and the partitions named; no
model is trained on that data. Reports land in `reports/validation/<dataset>/<as_of>/`.
"""

from __future__ import annotations

import json
import logging
import posixpath
import uuid
from dataclasses import asdict, dataclass, field
from datetime import date

import pandas as pd

from data_contracts import Contract, load_contract
from tasks.core.context import RunContext
from tasks.core.lake import Lake
from tasks.core.settings import get_settings
from tasks.quality.dimensions import allowed_sets, dimensions_dir
from tasks.quality.gx_docs import disagreements, docs_lock, gx_run, start_background
from tasks.quality.gx_docs import write_docs_index as write_docs_index_of
from tasks.quality.gx_suite import RuleFailure
from tasks.quality.native_checks import as_validated, check_partition, suite_fingerprint
from tasks.quality.rules import ROW_COUNT, quarantine_fraction_rule
from tasks.quality.validation_cache import (
    PartitionResult,
    TableCache,
    content_key,
)

logger = logging.getLogger("nightshift.validate")


class ContractBroken(RuntimeError):
    """The clean batch breaks its data contract: the run must stop before training."""


@dataclass
class ValidationReport:
    """What validation concluded about one table's clean partitions."""

    dataset: str
    contract: str
    success: bool
    rows: int
    expectations: int
    failures: list[RuleFailure]
    docs_index: str | None
    report_path: str
    as_of: str = ""
    gx_docs: str | None = None
    # native results over every partition, one row per rule (cached and re-checked ones)
    results: list[dict] = field(default_factory=list)
    partitions: int = 0
    # the days checked tonight (new or changed content, or a changed suite), here or by the
    # ingest that published them; the others were read back from the cache
    rechecked: list[str] = field(default_factory=list)
    # the days GX re-checked tonight (the newest changed ones, row-capped), and its results
    gx_partitions: list[str] = field(default_factory=list)
    gx_rows: int = 0
    gx_results: list[dict] = field(default_factory=list)
    # none (no changed partition), done, or pending (a background GX process will add its
    # results); rules GX broke that the native checks passed (never expected: an engine bug)
    gx_status: str = "none"
    gx_disagrees: list[str] = field(default_factory=list)
    run_id: str = ""


def quarantine_threshold_failures(
    lake: Lake,
    dataset: str,
    contract: Contract,
    days: list[date],
    manifests: dict[date, dict] | None = None,
) -> list[RuleFailure]:
    """Days whose quarantined share of raw rows is above the contract's threshold
    (`manifests`: the days' manifests when the caller already read them)."""
    limit = contract.thresholds.max_quarantine_fraction
    over: list[str] = []
    worst = 0.0
    for day in days:
        manifest = (manifests or {}).get(day) or lake.read_json(lake.manifest(dataset, day))
        counts = manifest["sources"][contract.dataset]
        raw, quarantined = counts["raw_rows"], counts["quarantined_rows"]
        fraction = quarantined / raw if raw else 0.0
        worst = max(worst, fraction)
        if fraction > limit:
            over.append(day.isoformat())
    if not over:
        return []
    return [
        RuleFailure(
            rule=quarantine_fraction_rule(limit),
            column=None,
            unexpected_count=len(over),
            partitions=over,
            observed=f"{worst:.4f}",
        )
    ]


def write_docs_index(ctx: RunContext) -> str:
    """Rewrite the night's validation page from every table's report written so far."""
    return write_docs_index_of(ctx.lake, ctx.dataset, ctx.as_of, list(ctx.spec.tables))


def read_manifests(lake: Lake, dataset: str, days: list[date]) -> dict[date, dict]:
    """The days' manifests (empty for a day without one), through one filesystem handle:
    a night reads one per day of the whole history, and resolving the lake's URL per read
    cost more than the read."""
    fs = lake.fs
    manifests: dict[date, dict] = {}
    folder = posixpath.dirname(lake.manifest(dataset, days[0])) if days else ""
    for day in days:
        path = posixpath.join(folder, f"date={day.isoformat()}.json")
        if day == days[0] and path != lake.manifest(dataset, day):  # the layout moved
            raise RuntimeError(f"manifest layout changed: {lake.manifest(dataset, day)}")
        try:
            with fs.open(path, "rb") as handle:
                manifests[day] = json.load(handle)
        except FileNotFoundError:
            manifests[day] = {}
    return manifests


def _aggregate(
    partitions: list[PartitionResult], min_rows: int
) -> tuple[list[dict], list[RuleFailure]]:
    """Per rule, over every partition: one report row, and a failure naming the days.

    The row count is the window's, as GX judged it when it ran over the whole batch
    (`min_rows_per_partition` clean rows in all): a single day's shortfall is the ingest's
    per-day rule
    `rows:min_per_day`, whose outcome (fail, hold, warn: weather's empty 12-31) the
    contract decides there.
    """
    rows: list[dict] = []
    failures: list[RuleFailure] = []
    if not partitions:
        return rows, failures
    for i, first in enumerate(partitions[0].results):
        per_day = [(p.day, p.results[i]) for p in partitions]
        broken = [(day, r) for day, r in per_day if not r.success]
        count = sum(r.unexpected_count for _, r in per_day)
        observed = broken[0][1].observed if broken else None
        if first.rule == ROW_COUNT:  # the window's rows, not one day's
            total = sum(p.rows for p in partitions)
            broken = [] if total >= min_rows else per_day
            observed = str(total)
        rows.append(
            {
                "rule": first.rule,
                "expectation": first.expectation,
                "column": first.column,
                "success": not broken,
                "unexpected_count": count,
                "observed": observed,
                "failed_partitions": len(broken),
            }
        )
        if broken:
            failures.append(
                RuleFailure(
                    rule=first.rule,
                    column=first.column,
                    unexpected_count=count,
                    partitions=[day for day, _ in broken],
                    observed=observed,
                )
            )
    return rows, failures


def check_partitions(
    ctx: RunContext,
    table: str,
    days: list[date],
    contract: Contract,
    allowed: dict,
    manifests: dict[date, dict],
    keep_frames: bool = True,
) -> tuple[list[PartitionResult], list[tuple[str, pd.DataFrame | None]]]:
    """Each day's native result, from the cache or checked now (newest first), and the
    frames of the changed days Great Expectations re-checks (newest first, row-capped).

    A changed day is one checked now (a miss) or one whose entry the ingest wrote when it
    published the partition (`fresh`): that result is taken as it is, and the partition is
    read only when GX runs inline on it.

    Only the frames kept for GX stay in memory (none with `keep_frames=False`: a GX process
    of its own reads them back); every other partition is dropped once its result is
    written.
    """
    lake = ctx.lake
    suite = suite_fingerprint(contract, allowed)
    cap = get_settings().validation_gx_max_rows
    cache = TableCache(lake, ctx.dataset, table)
    results: list[PartitionResult] = []
    for_gx: list[tuple[str, pd.DataFrame | None]] = []
    gx_rows = 0
    for day in sorted(days, reverse=True):
        key = content_key(lake, ctx.dataset, table, day, suite, manifests[day])
        result = cache.read(day, key)
        frame: pd.DataFrame | None = None
        if result is None:
            frame = as_validated(lake.read_partition(ctx.dataset, "clean", table, day))
            result = PartitionResult(
                day.isoformat(), len(frame), check_partition(frame, contract, allowed), key
            )
            cache.write(result)
        elif result.fresh:  # the ingest checked what it published: new tonight, not re-read
            result.fresh = False
            cache.write(result)
        else:
            results.append(result)
            continue
        result.rechecked = True
        if cap and (not for_gx or gx_rows + result.rows <= cap):
            if keep_frames and frame is None:
                frame = as_validated(lake.read_partition(ctx.dataset, "clean", table, day))
            for_gx.append((day.isoformat(), frame if keep_frames else None))
            gx_rows += result.rows
        results.append(result)
    return sorted(results, key=lambda r: r.day), for_gx


def validate_table(ctx: RunContext, table: str, days: list[date]) -> ValidationReport:
    """Validate the clean partitions of `days` of one table; writes report + Data Docs.

    The night's page (`docs/index.html`) lists every table validated for this `as_of`:
    the native results over all partitions (cached and re-checked) and, for the changed
    ones, the GX run; each table's own GX site is `docs/gx/<table>/` (local lakes only).
    """
    lake = ctx.lake
    contract = load_contract(table)
    allowed = allowed_sets(lake, ctx.spec, dimensions_dir(lake, ctx.spec, ctx.as_of))
    background = lake.is_local and get_settings().validation_gx_background
    # each day's manifest, read once: the clean file's sha256 (the cache key) and the counts
    manifests = read_manifests(lake, ctx.dataset, days)
    partitions, for_gx = check_partitions(
        ctx, table, days, contract, allowed, manifests, not background
    )
    rechecked = [p.day for p in partitions if p.rechecked]
    by_day = {p.day: p.rows for p in partitions}
    results, failures = _aggregate(partitions, contract.thresholds.min_rows_per_partition)
    out_dir = lake.validation_dir(ctx.dataset, ctx.as_of)
    gx_days = sorted(day for day, _ in for_gx)
    background = background and bool(gx_days)
    gx_docs: str | None = None
    gx_results: list[dict] = []
    gx_disagrees: list[str] = []
    if for_gx and not background:
        frames = [frame for _, frame in reversed(for_gx) if frame is not None]
        run = gx_run(lake, ctx.dataset, ctx.as_of, table, contract, allowed, frames)
        gx_docs, gx_results = run.docs_index, run.outcomes
        native_broken = {f.rule for f in failures}
        gx_disagrees = disagreements(run, native_broken)
        for failure in run.failures:  # GX and the native checks disagree: trust the failure
            if failure.describe() in gx_disagrees:
                logger.error("validate: GX breaks %s where the native checks did not", failure)
                failures.append(failure)
    del for_gx
    over = quarantine_threshold_failures(lake, ctx.dataset, contract, days, manifests)
    failures += over
    threshold = {  # checked outside GX, listed with its expectations on the night's page
        "rule": quarantine_fraction_rule(contract.thresholds.max_quarantine_fraction),
        "expectation": "quarantine threshold per day",
        "column": None,
        "success": not over,
        "unexpected_count": sum(f.unexpected_count for f in over),
        "observed": over[0].observed if over else None,
    }
    report = ValidationReport(
        dataset=table,
        contract=contract.tag,
        success=not failures,
        rows=sum(p.rows for p in partitions),
        expectations=len(results) + 1,
        failures=failures,
        docs_index=f"{out_dir}/docs/index.html",
        report_path=f"{out_dir}/{table}.json",
        as_of=str(ctx.as_of),
        gx_docs=gx_docs,
        results=[*results, threshold],
        partitions=len(partitions),
        rechecked=rechecked,
        gx_partitions=gx_days,
        gx_rows=sum(by_day[day] for day in gx_days),
        gx_results=gx_results,
        gx_status="pending" if background else "done" if gx_days else "none",
        gx_disagrees=gx_disagrees,
        run_id=uuid.uuid4().hex,
    )
    with docs_lock(lake, out_dir):
        lake.write_json_atomic(report.report_path, asdict(report))
        write_docs_index(ctx)
    if background:
        start_background(lake, ctx.dataset, ctx.as_of, table, report.run_id, gx_days)
    return report


def validate(ctx: RunContext, table: str, days: list[date]) -> ValidationReport:
    """The validate stage for one table: raises ContractBroken naming rules and partitions."""
    report = validate_table(ctx, table, days)
    if not report.success:
        lines = "\n".join(f"  - {failure.describe()}" for failure in report.failures)
        raise ContractBroken(
            f"clean {table} broke contract {report.contract} ({len(report.failures)} rule(s)):\n"
            f"{lines}\nreport: {report.report_path}; Data Docs: {report.docs_index}"
        )
    logger.info(
        "validate: %s passed %d expectations on %d rows (contract %s)",
        table,
        report.expectations,
        report.rows,
        report.contract,
    )
    return report
