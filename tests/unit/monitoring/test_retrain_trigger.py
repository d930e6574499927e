"""The nightly deployment's event trigger, as built (its behaviour on a real server is in
tests/integration/test_event_retraining.py)."""

from datetime import timedelta


def test_nightly_deployment_retrains_on_its_datasets_events_debounced(tmp_path):
    from flows.deployments import build_deployments
    from tasks.core.settings import Settings

    settings = Settings(home=tmp_path, retrain_debounce_s=120)
    nightly, backfill = build_deployments(
        settings, nightly_parameters={"params": {"dataset": "hotels", "holdout_days": 14}}
    )
    [trigger] = nightly.triggers
    assert trigger.expect == {"nightshift.model.decayed", "nightshift.data.drifted"}
    assert trigger.match.model_dump() == {"prefect.resource.id": "nightshift.dataset.hotels"}
    assert (trigger.posture, trigger.threshold) == ("Reactive", 1)
    assert trigger.within == timedelta(seconds=120)
    # only as_of: the deployment's own params (dataset hotels, 14 holdout days) stay
    assert trigger.parameters == {"as_of": "{{ event.payload.as_of }}"}
    assert nightly.parameters["params"] == {"dataset": "hotels", "holdout_days": 14}
    assert backfill.triggers == []

    default, _ = build_deployments(Settings(home=tmp_path))
    assert default.triggers[0].match.model_dump() == {
        "prefect.resource.id": "nightshift.dataset.flights"
    }
    assert default.triggers[0].within == timedelta(seconds=3600)
