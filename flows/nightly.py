"""The nightly retraining flow: a table of contents, one task per stage.

ingest → validate → features → tune (Dask workers) → train (DDP on Dask workers) →
evaluate → compress → register (gated) → summary
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from prefect import flow
from pydantic import Field

from tasks.cluster import dask_task_runner, flow_scheduler_address
from tasks.compress import compress_network_task
from tasks.distributed_train import train_model_distributed
from tasks.evaluate import evaluate_on_holdout
from tasks.features import build_features_task
from tasks.ingest import ingest_flights
from tasks.lake import Lake
from tasks.promote import ReleaseConfig
from tasks.registry import configure_mlflow, register_model_task
from tasks.report import RunSummary, publish_summary
from tasks.schedule import nightly_run_name, resolve_as_of
from tasks.settings import get_settings
from tasks.train import TrainConfig
from tasks.tune import TuneConfig, tune_task
from tasks.validate import validate_contract


@flow(
    name="nightly-retrain",
    flow_run_name=nightly_run_name,  # nightly-<as_of>, also when the schedule sets the date
    task_runner=dask_task_runner(get_settings()),
    log_prints=True,
)
def nightly_retrain(
    as_of: date | None = Field(
        default=None,
        description="Last day of data to use. Empty: the date the run was scheduled for "
        "(in NIGHTSHIFT_SCHEDULE_TIMEZONE), so the nightly schedule needs no parameter.",
    ),
    # Bounds go in Annotated, the description in the default: Prefect's parameter schema
    # (the UI form) drops bounds given in a Field default and descriptions in Annotated.
    holdout_days: Annotated[int, Field(ge=1, le=120)] = Field(
        default=31, description="Days before as_of held out."
    ),
    first_day: date | None = Field(default=None, description="First day of data; default: all."),
    # Field(default=...), never default_factory: Prefect 3.8.8 hands a default_factory
    # field over unresolved when the caller leaves the parameter out.
    train: TrainConfig = Field(default=TrainConfig(), description="Network and loop."),
    tune: TuneConfig = Field(default=TuneConfig(), description="Hyperparameter search."),
    world_size: Annotated[int | None, Field(ge=1)] = Field(
        default=None, description="DDP ranks (one per Dask worker); default: all workers."
    ),
    release: ReleaseConfig = Field(
        default=ReleaseConfig(), description="Compression, promotion margins and budgets."
    ),
    engine: Literal["dask", "spark"] = Field(
        default="dask", description="Ingestion engine: Dask (per day) or Spark (one job)."
    ),
) -> RunSummary:
    """Retrain the flight-delay model on data up to `as_of` and register it in MLflow."""
    settings = get_settings()
    as_of = resolve_as_of(as_of, settings.schedule_timezone)
    lake = Lake(settings.lake_url)

    # Ingest: landing → clean/ + quarantine/ on the Dask cluster or on Spark
    ingested = ingest_flights(
        settings.lake_url,
        as_of,
        first_day or date.min,
        flow_scheduler_address(),
        engine,
        settings.spark_master,
    )

    # Validate: the data contracts, with Great Expectations; a breach stops the run here
    weather_report = validate_contract(settings.lake_url, "weather", ingested.days, as_of)
    flights_report = validate_contract(settings.lake_url, "flights", ingested.days, as_of)

    # Features: time split and preprocessing fitted on the training window
    features = build_features_task(settings.lake_url, ingested.days, as_of, holdout_days)

    # Tune: Optuna trials on the Dask workers, each a nested MLflow run
    experiment_id = configure_mlflow(
        settings.tracking_uri, settings.mlflow_experiment, settings.artifact_root
    )
    tuned = tune_task(
        flow_scheduler_address(),
        settings.lake_url,
        as_of,
        features.train_path,
        features.preprocessor_path,
        train,
        tune,
        settings.seed,
        settings.tracking_uri,
        experiment_id,
    )

    # Train: torch DDP, one rank per Dask worker, dispatched from the flow process
    trained = train_model_distributed(
        flow_scheduler_address(),
        features.train_path,
        features.preprocessor_path,
        lake.run_dir(as_of, "model"),
        tuned.config,
        settings.seed,
        world_size,
    )

    # Evaluate: new model vs baseline vs champion, same holdout
    evaluation = evaluate_on_holdout(
        features,
        trained,
        lake.run_dir(as_of, "evaluation"),
        settings.seed,
        settings.tracking_uri,
        settings.model_name,
        release.slice_min_rows,
    )

    # Compress: int8 / pruned / low-rank ONNX variants; keep the smallest within budget
    compression = compress_network_task(
        features, trained, lake.run_dir(as_of, "compression"), release.compression, settings.seed
    )

    # Register: MLflow run, ONNX pyfunc as @challenger; @champion only through the gate
    registration = register_model_task(
        model_name=settings.model_name,
        tracking_uri=settings.tracking_uri,
        experiment_id=experiment_id,
        as_of=as_of,
        ingested=ingested,
        features=features,
        train_config=tuned.config,
        trained=trained,
        evaluation=evaluation,
        compression=compression,
        release=release,
        seed=settings.seed,
    )

    # Report: what an operator reads in the Prefect UI
    return publish_summary(
        as_of,
        ingested,
        [weather_report, flights_report],
        features,
        evaluation,
        registration,
        settings.tracking_uri,
        compression,
    )
