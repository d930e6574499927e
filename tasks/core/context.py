"""The run context: what every stage of one run needs to know, built once by the flow.

A stage takes the context plus the typed results of the stages it depends on, never a
long list of loose arguments. The context is small and picklable (strings and a date),
so it travels to Dask workers; the dataset spec is looked up by name where it is used.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date

from tasks.core.lake import Lake
from tasks.core.settings import Settings
from tasks.datasets import get_dataset
from tasks.datasets.spec import DatasetSpec


@dataclass(frozen=True)
class RunContext:
    """One run of one dataset for one `as_of` date, and where everything lives."""

    as_of: date
    dataset: str
    lake_root: str
    tracking_uri: str
    experiment: str
    artifact_root: str
    model_name: str
    seed: int
    spark_master: str = "local[*]"
    dask_address: str | None = None
    experiment_id: str | None = None
    flow_run_id: str | None = None
    # Where the run's stages and its tuning study live: "" for the nightly runs
    # (`runs/...`, `studies/...`); a backtest sets `backtests/<name>` so its folds never
    # touch a night's outputs or the nightly study.
    run_root: str = ""

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        as_of: date,
        dataset: str,
        *,
        dask_address: str | None = None,
        flow_run_id: str | None = None,
    ) -> RunContext:
        """The context for `dataset` on `as_of`, from the settings object."""
        spec = get_dataset(dataset)
        return cls(
            as_of=as_of,
            dataset=dataset,
            lake_root=settings.lake_url,
            tracking_uri=settings.tracking_uri,
            experiment=settings.mlflow_experiment,
            artifact_root=settings.artifact_root,
            model_name=settings.model_name or spec.model_name,
            seed=settings.seed,
            spark_master=settings.spark_master,
            dask_address=dask_address or settings.dask_address,
            flow_run_id=flow_run_id,
        )

    def with_(self, **changes: object) -> RunContext:
        """A copy with some fields changed (e.g. the experiment id once MLflow is set up)."""
        return replace(self, **changes)

    @property
    def lake(self) -> Lake:
        return Lake(self.lake_root)

    @property
    def spec(self) -> DatasetSpec:
        return get_dataset(self.dataset)

    def run_dir(self, *parts: str) -> str:
        """`runs/<dataset>/<as_of>/...`: where this run's stages write."""
        if self.run_root:
            return self.lake.path(self.run_root, "runs", self.as_of.isoformat(), *parts)
        return self.lake.run_dir(self.dataset, self.as_of, *parts)

    def studies_dir(self) -> str:
        """`studies/<dataset>`: where the dataset's cross-night tuning study lives."""
        if self.run_root:
            return self.lake.path(self.run_root, "studies")
        return self.lake.path("studies", self.dataset)
