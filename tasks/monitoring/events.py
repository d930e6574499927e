"""The monitoring events: Prefect custom events a deployment trigger can react to.

    nightshift.model.decayed   the @champion scored below the floor on the days labelled
                               since its as_of (continuous evaluation)
    nightshift.data.drifted    a drift check found tonight's data too far from the
                               training data (the drift stage calls `emit_drift_breach`)

Both concern the resource `nightshift.dataset.<dataset>` (label `nightshift.dataset`), so
one trigger per dataset matches them (`flows.deployments.retrain_trigger`), and their
payload carries `dataset` and `as_of`: what a retraining run needs. Emitted inside a flow
run, Prefect relates the event to that run, its flow and its deployment.

This module is Prefect's events client and nothing else: the decisions live in the plain
modules (`continuous.decay_decision`, the drift stage's own).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from prefect.events import Event, emit_event

from tasks.monitoring.continuous import DecayPoint

MODEL_DECAYED = "nightshift.model.decayed"
DATA_DRIFTED = "nightshift.data.drifted"
RETRAIN_EVENTS = (MODEL_DECAYED, DATA_DRIFTED)


def dataset_resource_id(dataset: str) -> str:
    """The Prefect resource id the monitoring events of `dataset` are about."""
    return f"nightshift.dataset.{dataset}"


def dataset_resource(dataset: str) -> dict[str, str]:
    return {
        "prefect.resource.id": dataset_resource_id(dataset),
        "prefect.resource.name": dataset,
        "nightshift.dataset": dataset,
    }


def _model_resource(model_name: str, version: str | None = None) -> dict[str, str]:
    resource = {
        "prefect.resource.id": f"mlflow.registered-model.{model_name}",
        "prefect.resource.role": "model",
        "prefect.resource.name": model_name,
    }
    if version is not None:
        resource["mlflow.model-version"] = str(version)
    return resource


def emit_model_decayed(point: DecayPoint) -> Event | None:
    """`nightshift.model.decayed` for tonight's decay point (payload: the whole point)."""
    return emit_event(
        MODEL_DECAYED,
        resource=dataset_resource(point.dataset),
        related=[_model_resource(point.model_name, point.champion_version)],
        payload=asdict(point),
    )


def emit_drift_breach(
    dataset: str, as_of: str, details: Mapping[str, Any] | None = None
) -> Event | None:
    """`nightshift.data.drifted` for `dataset` on `as_of`; `details` (the drifted columns,
    their statistics, the thresholds) join the payload and must be JSON-serialisable."""
    return emit_event(
        DATA_DRIFTED,
        resource=dataset_resource(dataset),
        payload={**dict(details or {}), "dataset": dataset, "as_of": str(as_of)},
    )
