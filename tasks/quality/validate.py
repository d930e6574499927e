"""Validate: check a clean batch against its data contract with Great Expectations.

The suite is compiled from the contract's rule catalogue (the same rules that drove the
row-level quarantine), plus the batch-level rules: key uniqueness, row counts and the
contract's quarantine threshold per day. A broken contract fails the run with the rule
and the partitions named; no model is trained on that data. Results and GX Data Docs
(HTML) land in `reports/validation/<dataset>/<as_of>/` in the lake.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import date

import pandas as pd

from data_contracts import Contract, load_contract
from tasks.core.context import RunContext
from tasks.core.lake import Lake
from tasks.quality.dimensions import allowed_sets, dimensions_dir
from tasks.quality.docs_index import render_index
from tasks.quality.gx_suite import RuleFailure, run_suite
from tasks.quality.rules import quarantine_fraction_rule

logger = logging.getLogger("nightshift.validate")


class ContractBroken(RuntimeError):
    """The clean batch breaks its data contract: the run must stop before training."""


@dataclass
class ValidationReport:
    """What GX concluded about one table's clean batch."""

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
    results: list[dict] = field(default_factory=list)


def quarantine_threshold_failures(
    lake: Lake, dataset: str, contract: Contract, days: list[date]
) -> list[RuleFailure]:
    """Days whose quarantined share of raw rows is above the contract's threshold."""
    limit = contract.thresholds.max_quarantine_fraction
    over: list[str] = []
    worst = 0.0
    for day in days:
        counts = lake.read_json(lake.manifest(dataset, day))["sources"][contract.dataset]
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
    lake = ctx.lake
    out_dir = lake.validation_dir(ctx.dataset, ctx.as_of)
    reports = [
        lake.read_json(f"{out_dir}/{table}.json")
        for table in ctx.spec.tables
        if lake.exists(f"{out_dir}/{table}.json")
    ]
    index = f"{out_dir}/docs/index.html"
    page = render_index(ctx.dataset, str(ctx.as_of), reports)
    lake.write_bytes_atomic(index, page.encode())
    return index


def validate_table(ctx: RunContext, table: str, days: list[date]) -> ValidationReport:
    """Validate the clean partitions of `days` of one table; writes report + Data Docs.

    The night's page (`docs/index.html`) lists every table validated for this `as_of`;
    each table's own GX site is `docs/gx/<table>/` (local lakes only).
    """
    lake = ctx.lake
    contract = load_contract(table)
    frames = [lake.read_partition(ctx.dataset, "clean", table, d) for d in days]
    frame = pd.concat(frames, ignore_index=True)
    allowed = allowed_sets(lake, ctx.spec, dimensions_dir(lake, ctx.spec, ctx.as_of))
    out_dir = lake.validation_dir(ctx.dataset, ctx.as_of)
    gx_dir = f"{out_dir}/docs/gx/{table}" if lake.is_local else None
    run = run_suite(frame, contract, allowed, gx_dir, run_name=f"{ctx.as_of} {contract.tag}")
    over = quarantine_threshold_failures(lake, ctx.dataset, contract, days)
    failures = run.failures + over
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
        rows=len(frame),
        expectations=run.expectations + 1,
        failures=failures,
        docs_index=f"{out_dir}/docs/index.html",
        report_path=f"{out_dir}/{table}.json",
        as_of=str(ctx.as_of),
        gx_docs=run.docs_index,
        results=[*run.outcomes, threshold],
    )
    lake.write_json_atomic(report.report_path, asdict(report))
    write_docs_index(ctx)
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
