"""The nightly retraining flow: a table of contents, one task per stage.

ingest → validate → features → train (Dask worker) → evaluate → register → summary
"""

from __future__ import annotations

from datetime import date
from typing import Annotated

from prefect import flow
from pydantic import Field

from tasks.cluster import dask_task_runner, flow_scheduler_address
from tasks.evaluate import evaluate_on_holdout
from tasks.features import build_features_task
from tasks.ingest import ingest_flights
from tasks.lake import Lake
from tasks.registry import configure_mlflow, register_model_task
from tasks.report import RunSummary, publish_summary
from tasks.schedule import nightly_run_name, resolve_as_of
from tasks.settings import get_settings
from tasks.train import TrainConfig, train_model
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
    train: TrainConfig = Field(default=TrainConfig(), description="Network and loop."),
) -> RunSummary:
    """Retrain the flight-delay model on data up to `as_of` and register it in MLflow."""
    settings = get_settings()
    as_of = resolve_as_of(as_of, settings.schedule_timezone)
    lake = Lake(settings.lake_url)

    # Ingest: landing → clean/ + quarantine/ on the Dask cluster
    ingested = ingest_flights(
        settings.lake_url, as_of, first_day or date.min, flow_scheduler_address()
    )

    # Validate: the data contracts, with Great Expectations; a breach stops the run here
    weather_report = validate_contract(settings.lake_url, "weather", ingested.days, as_of)
    flights_report = validate_contract(settings.lake_url, "flights", ingested.days, as_of)

    # Features: time split and preprocessing fitted on the training window
    features = build_features_task(settings.lake_url, ingested.days, as_of, holdout_days)

    # Train: on a Dask worker
    trained = train_model.submit(
        features.train_path,
        features.preprocessor_path,
        lake.run_dir(as_of, "model"),
        train,
        settings.seed,
    ).result()

    # Evaluate: new model vs baseline vs champion, same holdout
    experiment_id = configure_mlflow(
        settings.tracking_uri, settings.mlflow_experiment, settings.artifact_root
    )
    evaluation = evaluate_on_holdout(
        features,
        trained,
        lake.run_dir(as_of, "evaluation"),
        settings.seed,
        settings.tracking_uri,
        settings.model_name,
    )

    # Register: MLflow run, pyfunc version, tags, alias
    registration = register_model_task(
        model_name=settings.model_name,
        tracking_uri=settings.tracking_uri,
        experiment_id=experiment_id,
        as_of=as_of,
        ingested=ingested,
        features=features,
        train_config=train,
        trained=trained,
        evaluation=evaluation,
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
    )
