"""The run's parameters, declared once: the nightly flow, the backfill and the CLI share them.

A pydantic model, so the Prefect UI shows it as a form with bounds and descriptions and
the server refuses values out of bounds. Bounds go in `Annotated`, descriptions in the
`Field` default, and nested defaults are `Field(default=...)`, never `default_factory`
(Prefect 3.8 hands a default_factory field over unresolved when the caller omits it).
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from tasks.datasets import DATASETS, DEFAULT_DATASET
from tasks.release.config import ReleaseConfig
from tasks.training.config import TrainConfig, TuneConfig

DatasetName = Literal[DATASETS]  # type: ignore[valid-type]


class NightlyParams(BaseModel):
    """Everything a nightly run can be asked to do differently (all optional)."""

    dataset: DatasetName = Field(  # type: ignore[valid-type]
        default=DEFAULT_DATASET, description="Which dataset's spec and contracts to run."
    )
    holdout_days: Annotated[int, Field(ge=1, le=120)] = Field(
        default=31, description="Days up to as_of held out for evaluation."
    )
    first_day: date | None = Field(default=None, description="First day of data; default: all.")
    train: TrainConfig = Field(default=TrainConfig(), description="Network and loop.")
    tune: TuneConfig = Field(default=TuneConfig(), description="Hyperparameter search.")
    world_size: Annotated[int | None, Field(ge=1)] = Field(
        default=None, description="DDP ranks (one per Dask worker); default: all workers."
    )
    release: ReleaseConfig = Field(
        default=ReleaseConfig(), description="Compression, promotion margins and budgets."
    )
    engine: Literal["dask", "spark"] = Field(
        default="dask",
        description="Ingestion engine: who schedules the batches of changed days: Dask (a task "
        "per batch) or Spark (one job, a task per batch); both clean with the same code.",
    )
