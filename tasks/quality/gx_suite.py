"""The rule catalogue compiled to a Great Expectations suite, and its run on a clean batch.

GX re-checks the clean batch against the same rules the quarantine applied (compiled
from the same `Rule` objects, so names and bounds agree) plus the batch-level rules: key
uniqueness and the row count. Its Data Docs are what people read after a run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pandas as pd

from data_contracts import Contract
from tasks.quality.rules import KEY_UNIQUE, ROW_COUNT, Rule, column_rules, compile_rules

GX_TYPES = {
    "string": ["str", "string", "StringDtype", "object"],
    "int": ["int64", "Int64", "int32"],
    "float": ["float64", "float32"],
    "date": ["date", "object", "date32[day][pyarrow]", "datetime64[ns]"],
}


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


class GXChecks:
    """The checks as Great Expectations expectations; each one's meta names its rule."""

    def __init__(self) -> None:
        import great_expectations.expectations as gxe

        self.gxe = gxe

    def type(self, rule: Rule):
        return self.gxe.ExpectColumnValuesToBeInTypeList(
            column=rule.column, type_list=GX_TYPES[rule.type], meta={"rule": rule.name}
        )

    def not_null(self, rule: Rule):
        return self.gxe.ExpectColumnValuesToNotBeNull(column=rule.column, meta={"rule": rule.name})

    def between(self, rule: Rule):
        return self.gxe.ExpectColumnValuesToBeBetween(
            column=rule.column, min_value=rule.low, max_value=rule.high, meta={"rule": rule.name}
        )

    def in_set(self, rule: Rule):
        return self.gxe.ExpectColumnValuesToBeInSet(
            column=rule.column, value_set=list(rule.values or ()), meta={"rule": rule.name}
        )

    def regex(self, rule: Rule):
        return self.gxe.ExpectColumnValuesToMatchRegex(
            column=rule.column, regex=rule.pattern, meta={"rule": rule.name}
        )


def build_suite(contract: Contract, allowed_sets: dict[str, list[str]]):
    """Compile a contract's rule catalogue into a GX ExpectationSuite (plus the batch rules)."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    suite = gx.ExpectationSuite(name=f"{contract.name}@{contract.version}")
    checks = GXChecks()
    for column in contract.columns:
        suite.add_expectation(
            gxe.ExpectColumnToExist(column=column.name, meta={"rule": f"{column.name}:exists"})
        )
        for _, expectation in compile_rules(column_rules(contract, column, allowed_sets), checks):
            suite.add_expectation(expectation)
    suite.add_expectation(
        gxe.ExpectCompoundColumnsToBeUnique(
            column_list=list(contract.key), meta={"rule": KEY_UNIQUE}
        )
    )
    suite.add_expectation(
        gxe.ExpectTableRowCountToBeBetween(
            min_value=contract.thresholds.min_rows_per_partition, meta={"rule": ROW_COUNT}
        )
    )
    return suite


@dataclass
class SuiteRun:
    """One run of a contract's suite: the verdict, every expectation's outcome, the docs."""

    success: bool
    expectations: int
    failures: list[RuleFailure]
    docs_index: str | None
    outcomes: list[dict] = field(default_factory=list)


def _outcome_row(outcome) -> dict:
    """One expectation's outcome as a plain row (for the offline report)."""
    config = outcome.expectation_config
    details = outcome.result or {}
    observed = details.get("observed_value")
    return {
        "rule": config.meta.get("rule", config.type),
        "expectation": config.type,
        "column": config.kwargs.get("column"),
        "success": bool(outcome.success),
        "unexpected_count": int(details.get("unexpected_count") or 0),
        "observed": None if observed is None else str(observed)[:200],
    }


def _failure(outcome) -> RuleFailure:
    """A failed expectation as a RuleFailure: the rule, the column, the partitions."""
    details = outcome.result or {}
    partitions = sorted(
        {
            str(item.get("date"))
            for item in details.get("unexpected_index_list") or []
            if isinstance(item, dict) and item.get("date") is not None
        }
    )
    raised = (outcome.exception_info or {}).get("exception_message")
    return RuleFailure(
        rule=outcome.expectation_config.meta.get("rule", outcome.expectation_config.type),
        column=outcome.expectation_config.kwargs.get("column"),
        unexpected_count=int(details.get("unexpected_count") or 0),
        partitions=partitions,
        observed=str(details.get("observed_value", raised))
        if "observed_value" in details or raised
        else None,
    )


def run_suite(
    frame: pd.DataFrame,
    contract: Contract,
    allowed_sets: dict[str, list[str]],
    docs_dir: str | None,
    run_name: str | None = None,
) -> SuiteRun:
    """Run the contract's suite on `frame` (a pandas batch with a `date` column).

    `run_name` (e.g. `2013-02-28 flights/clean@1.0.0+14fefdcb`) is the GX run name the Data
    Docs show; `docs_dir` gets this table's own GX Data Docs site.
    """
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier

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
    result = checkpoint.run(
        batch_parameters={"dataframe": frame.reset_index(drop=True)},
        # GX keys its stored results by run name, and a key must not hold a "/"
        run_id=RunIdentifier(run_name=(run_name or contract.tag).replace("/", ":")),
    )
    failures: list[RuleFailure] = []
    outcomes: list[dict] = []
    for validation in result.run_results.values():
        for outcome in validation.results:
            outcomes.append(_outcome_row(outcome))
            if not outcome.success:
                failures.append(_failure(outcome))
    docs_index = f"{docs_dir}/index.html" if docs_dir else None
    return SuiteRun(not failures, len(outcomes), failures, docs_index, outcomes)
