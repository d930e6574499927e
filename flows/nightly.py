"""The nightly retraining flow: a table of contents, one task per stage.

ingest → validate → features → train (Dask worker) → evaluate → register → summary
"""

from __future__ import annotations

from datetime import date

from prefect import flow
from prefect.runtime import flow_run
from pydantic import Field

from data_contracts import load_contract
from tasks.cluster import dask_task_runner, flow_scheduler_address
from tasks.evaluate import evaluate_on_holdout
from tasks.features import build_features_task
from tasks.ingest import ingest_flights
from tasks.lake import Lake
from tasks.registry import configure_mlflow, git_commit, register_model_task
from tasks.report import RunSummary, publish_summary
from tasks.settings import get_settings
from tasks.train import TrainConfig, train_model
from tasks.validate import validate_contract


@flow(
    name="nightly-retrain",
    flow_run_name="nightly-{as_of}",
    task_runner=dask_task_runner(get_settings()),
    log_prints=True,
)
def nightly_retrain(
    as_of: date = Field(description="Last day of data to use (the scheduled date)."),
    holdout_days: int = Field(default=31, ge=1, le=120, description="Days before as_of held out."),
    first_day: date | None = Field(default=None, description="First day of data; default: all."),
    train: TrainConfig = Field(default_factory=TrainConfig, description="Network and loop."),
) -> RunSummary:
    """Retrain the flight-delay model on data up to `as_of` and register it in MLflow."""
    settings = get_settings()
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

    # Register: MLflow run, pyfunc version, alias
    contracts = [load_contract("flights").tag, load_contract("weather").tag]
    registration = register_model_task(
        model_name=settings.model_name,
        tracking_uri=settings.tracking_uri,
        experiment_id=experiment_id,
        run_name=f"nightly-{as_of}",
        params={
            "as_of": as_of,
            "holdout_days": holdout_days,
            "seed": settings.seed,
            **train.model_dump(),
            "train_days": features.train_days,
            "holdout_days_range": features.holdout_days,
            "best_epoch": trained.best_epoch,
        },
        evaluation=evaluation,
        trained=trained,
        features=features,
        tags={
            "as_of": str(as_of),
            "data_window": f"{ingested.days[0]}..{as_of}",
            "train_rows": str(features.train_rows),
            "holdout_rows": str(features.holdout_rows),
            "clean_rows": str(ingested.clean_rows),
            "quarantined_rows": str(ingested.quarantined_rows),
            "contracts": ",".join(contracts),
            "git_commit": git_commit(),
            "prefect_flow_run_id": str(flow_run.get_id()),
        },
    )

    return publish_summary(
        RunSummary(
            as_of=str(as_of),
            days=len(ingested.days),
            raw_rows=ingested.raw_rows,
            clean_rows=ingested.clean_rows,
            quarantined_rows=ingested.quarantined_rows,
            duplicates_dropped=ingested.duplicates_dropped,
            weather_quarantined_rows=ingested.weather_quarantined_rows,
            contracts=contracts,
            train_rows=features.train_rows,
            holdout_rows=features.holdout_rows,
            holdout_days=features.holdout_days,
            model_auc=evaluation.model["roc_auc"],
            baseline_auc=evaluation.baseline["roc_auc"],
            champion_auc=evaluation.champion["roc_auc"] if evaluation.champion else None,
            model_name=settings.model_name,
            version=registration.version,
            alias=registration.alias,
            alias_reason=registration.reason,
            mlflow_run_id=registration.run_id,
            tracking_uri=settings.tracking_uri,
            data_docs=flights_report.docs_index or weather_report.docs_index,
        )
    )
