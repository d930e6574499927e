"""Event-driven retraining on a real Prefect server: decay and drift events of a dataset
start exactly one run of the backfill deployment per debounce window, for the event's as_of
(a backfill skips a night already released: the nightly that raised the event is not
retrained twice); another dataset's events start none."""

import time

import pytest

pytestmark = pytest.mark.integration


def _runs_of(client, deployment_id):
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    return client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
    )


def test_decay_and_drift_events_start_one_debounced_retraining_run(prefect_server, tmp_path):
    from dataclasses import replace

    from prefect.client.orchestration import get_client
    from prefect.events.worker import EventsWorker

    from flows.deployments import build_deployments
    from tasks.core.settings import Settings
    from tasks.monitoring.events import emit_drift_breach, emit_model_decayed
    from tests.unit.monitoring.test_continuous import point

    nightly, backfilling = build_deployments(Settings(home=tmp_path, retrain_debounce_s=3600))
    assert not nightly.triggers  # the cron alone: events go to the backfill
    deployment_id = backfilling.apply()
    with get_client(sync_client=True) as client:
        try:
            assert _runs_of(client, deployment_id) == []
            decayed = replace(point("2013-03-06", 0.55, breached=True), dataset="flights")
            emit_model_decayed(decayed)
            emit_drift_breach("flights", "2013-03-07", {"columns": ["dep_time"]})  # same window
            emit_drift_breach("hotels", "2013-03-07")  # not this deployment's dataset
            EventsWorker.drain_all(timeout=30)

            deadline = time.monotonic() + 90
            while not (runs := _runs_of(client, deployment_id)) and time.monotonic() < deadline:
                time.sleep(1)
            assert len(runs) == 1, f"expected one run of the backfill deployment, got {len(runs)}"
            time.sleep(10)  # the drift event would have fired by now without the debounce
            [run] = _runs_of(client, deployment_id)
            # one night, the night of the event the trigger saw first (the server may order
            # the two events of one window either way)
            assert str(run.parameters["start"]) == str(run.parameters["end"])
            assert str(run.parameters["start"]) in ("2013-03-06", "2013-03-07")
            assert run.parameters.get("params", {}) == backfilling.parameters.get("params", {})
            assert run.state.is_scheduled()
        finally:
            for run in _runs_of(client, deployment_id):
                client.delete_flow_run(run.id)  # nothing serves this deployment here
            # later tests' nightly runs emit decay events too: leave no trigger behind
            client.delete_resource_owned_automations(f"prefect.deployment.{deployment_id}")
