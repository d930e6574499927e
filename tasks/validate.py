"""Validate: check the clean batch against its data contract with Great Expectations.

The suite is compiled from `data_contracts/<dataset>.yaml` (the same file that drove the
row-level quarantine), plus the batch-level rules: key uniqueness, row counts and the
contract's quarantine threshold per day. A broken contract fails the run with the rule
and the partitions named; no model is trained on that data. Results and GX Data Docs
(HTML) land in `reports/validation/<as_of>/` in the lake.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from datetime import date

import pandas as pd
from prefect import get_run_logger, task

from data_contracts import Contract, load_contract
from tasks.lake import Lake

logger = logging.getLogger("nightshift.validate")

GX_TYPES = {
    "string": ["str", "string", "StringDtype", "object"],
    "int": ["int64", "Int64", "int32"],
    "float": ["float64", "float32"],
    "date": ["date", "object", "date32[day][pyarrow]", "datetime64[ns]"],
}


class ContractBroken(RuntimeError):
    """The clean batch breaks its data contract: the run must stop before training."""


@dataclass
class RuleFailure:
    """One broken rule: which, where, how often."""

    rule: str
    column: str | None
    unexpected_count: int
    partitions: list[str] = field(default_factory=list)
    observed: str | None = None

    def describe(self) -> str:
        where = (
            f" in partition(s) date={', date='.join(self.partitions[:5])}"
            if self.partitions
            else ""
        )
        more = f" (+{len(self.partitions) - 5} more)" if len(self.partitions) > 5 else ""
        observed = f", observed {self.observed}" if self.observed is not None else ""
        return (
            f"rule {self.rule}: {self.unexpected_count} unexpected value(s){where}{more}{observed}"
        )


@dataclass
class ValidationReport:
    """What GX concluded about one dataset's clean batch."""

    dataset: str
    contract: str
    success: bool
    rows: int
    expectations: int
    failures: list[RuleFailure]
    docs_index: str | None
    report_path: str


def build_suite(contract: Contract, allowed_sets: dict[str, list[str]]):
    """Compile a contract into a GX ExpectationSuite; each expectation's meta names its rule."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    suite = gx.ExpectationSuite(name=f"{contract.name}@{contract.version}")
    add = suite.add_expectation
    for rule in contract.columns:
        column = rule.name
        add(gxe.ExpectColumnToExist(column=column, meta={"rule": f"{column}:exists"}))
        add(
            gxe.ExpectColumnValuesToBeInTypeList(
                column=column,
                type_list=GX_TYPES[rule.type],
                meta={"rule": f"{column}:type[{rule.type}]"},
            )
        )
        if not rule.nullable:
            add(
                gxe.ExpectColumnValuesToNotBeNull(
                    column=column, meta={"rule": f"{column}:not_null"}
                )
            )
        if rule.min is not None or rule.max is not None:
            add(
                gxe.ExpectColumnValuesToBeBetween(
                    column=column,
                    min_value=rule.min,
                    max_value=rule.max,
                    meta={"rule": f"{column}:between[{rule.min:g},{rule.max:g}]"},
                )
            )
        allowed = rule.allowed_values
        if rule.allowed_values_from is not None:
            allowed = allowed_sets[rule.allowed_values_from]
        if allowed is not None:
            add(
                gxe.ExpectColumnValuesToBeInSet(
                    column=column, value_set=list(allowed), meta={"rule": f"{column}:in_set"}
                )
            )
        if rule.regex is not None:
            add(
                gxe.ExpectColumnValuesToMatchRegex(
                    column=column, regex=rule.regex, meta={"rule": f"{column}:regex"}
                )
            )
    add(
        gxe.ExpectCompoundColumnsToBeUnique(
            column_list=list(contract.key), meta={"rule": "key:unique"}
        )
    )
    add(
        gxe.ExpectTableRowCountToBeBetween(
            min_value=contract.thresholds.min_rows_per_partition, meta={"rule": "table:row_count"}
        )
    )
    return suite


def run_suite(
    frame: pd.DataFrame,
    contract: Contract,
    allowed_sets: dict[str, list[str]],
    docs_dir: str | None,
) -> tuple[bool, int, list[RuleFailure], str | None]:
    """Run the contract's suite on `frame` (a pandas batch with a `date` column)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False}
    if docs_dir is not None:
        context.add_data_docs_site(
            site_name="lake",
            site_config={
                "class_name": "SiteBuilder",
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": docs_dir,
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
    batch = (
        context.data_sources.add_pandas(contract.dataset)
        .add_dataframe_asset(contract.layer)
        .add_batch_definition_whole_dataframe("batch")
    )
    suite = context.suites.add(build_suite(contract, allowed_sets))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=contract.name, data=batch, suite=suite)
    )
    actions = (
        [gx.checkpoint.UpdateDataDocsAction(name="docs", site_names=["lake"])] if docs_dir else []
    )
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name=f"{contract.name}-checkpoint",
            validation_definitions=[definition],
            actions=actions,
            result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["date"]},
        )
    )
    result = checkpoint.run(batch_parameters={"dataframe": frame.reset_index(drop=True)})
    failures: list[RuleFailure] = []
    expectations = 0
    for validation in result.run_results.values():
        for outcome in validation.results:
            expectations += 1
            if outcome.success:
                continue
            details = outcome.result or {}
            partitions = sorted(
                {
                    str(item.get("date"))
                    for item in details.get("unexpected_index_list") or []
                    if isinstance(item, dict) and item.get("date") is not None
                }
            )
            raised = (outcome.exception_info or {}).get("exception_message")
            failures.append(
                RuleFailure(
                    rule=outcome.expectation_config.meta.get(
                        "rule", outcome.expectation_config.type
                    ),
                    column=outcome.expectation_config.kwargs.get("column"),
                    unexpected_count=int(details.get("unexpected_count") or 0),
                    partitions=partitions,
                    observed=str(details.get("observed_value", raised))
                    if "observed_value" in details or raised
                    else None,
                )
            )
    docs_index = f"{docs_dir}/index.html" if docs_dir else None
    return not failures, expectations, failures, docs_index


def quarantine_threshold_failures(
    lake: Lake, contract: Contract, days: list[date]
) -> list[RuleFailure]:
    """Days whose quarantined share of raw rows is above the contract's threshold."""
    limit = contract.thresholds.max_quarantine_fraction
    over: list[str] = []
    worst = 0.0
    for day in days:
        manifest = lake.read_json(lake.manifest("flights", day))
        raw = (
            manifest["raw_rows"] if contract.dataset == "flights" else manifest["weather_raw_rows"]
        )
        quarantined = (
            manifest["quarantined_rows"]
            if contract.dataset == "flights"
            else manifest["weather_quarantined_rows"]
        )
        fraction = quarantined / raw if raw else 0.0
        worst = max(worst, fraction)
        if fraction > limit:
            over.append(day.isoformat())
    if not over:
        return []
    return [
        RuleFailure(
            rule=f"quarantine_fraction<={limit:g}",
            column=None,
            unexpected_count=len(over),
            partitions=over,
            observed=f"{worst:.4f}",
        )
    ]


def validate_clean_batch(
    lake_root: str, dataset: str, days: list[date], as_of: date
) -> ValidationReport:
    """Validate the clean partitions of `days` for `dataset`; writes report + Data Docs."""
    lake = Lake(lake_root)
    contract = load_contract(dataset)
    frames = [lake.read_parquet(lake.partition_file("clean", dataset, d)) for d in days]
    frame = pd.concat(frames, ignore_index=True)
    dims_dir = lake.latest_dimension_snapshot(as_of)
    airlines = pd.read_csv(lake.fs.open(f"{dims_dir}/airlines.csv"), dtype=str)
    allowed_sets = {"airlines.carrier": airlines["carrier"].dropna().tolist()}
    out_dir = lake.validation_dir(as_of)
    local_docs = f"{out_dir}/docs" if lake.is_local else None
    success, expectations, failures, docs_index = run_suite(
        frame, contract, allowed_sets, local_docs
    )
    failures += quarantine_threshold_failures(lake, contract, days)
    report = ValidationReport(
        dataset=dataset,
        contract=contract.tag,
        success=not failures,
        rows=len(frame),
        expectations=expectations + 1,
        failures=failures,
        docs_index=docs_index,
        report_path=f"{out_dir}/{dataset}.json",
    )
    lake.write_json_atomic(report.report_path, asdict(report))
    return report


@task(name="validate-contract")
def validate_contract(
    lake_root: str, dataset: str, days: list[str], as_of: date
) -> ValidationReport:
    """Prefect task: GX validation of the clean batch; raises ContractBroken on failure."""
    log = get_run_logger()
    report = validate_clean_batch(lake_root, dataset, [date.fromisoformat(d) for d in days], as_of)
    if not report.success:
        lines = "\n".join(f"  - {failure.describe()}" for failure in report.failures)
        raise ContractBroken(
            f"clean {dataset} broke contract {report.contract} ({len(report.failures)} rule(s)):\n"
            f"{lines}\nreport: {report.report_path}; Data Docs: {report.docs_index}"
        )
    log.info(
        "validate: %s passed %d expectations on %d rows (contract %s); Data Docs: %s",
        dataset,
        report.expectations,
        report.rows,
        report.contract,
        report.docs_index,
    )
    return report
