"""The event trigger, as built: on the backfill deployment, so a triggered retraining never
trains a night already released (its behaviour on a real server is in
tests/integration/test_event_retraining.py)."""

from datetime import timedelta


def test_the_backfill_retrains_on_the_datasets_events_debounced(tmp_path):
    from flows.deployments import build_deployments
    from tasks.core.settings import Settings

    settings = Settings(home=tmp_path, retrain_debounce_s=120)
    nightly, backfill = build_deployments(
        settings, nightly_parameters={"params": {"dataset": "hotels", "holdout_days": 14}}
    )
    assert nightly.triggers == []  # the cron alone
    [trigger] = backfill.triggers
    assert trigger.expect == {"nightshift.model.decayed", "nightshift.data.drifted"}
    assert trigger.match.model_dump() == {"prefect.resource.id": "nightshift.dataset.hotels"}
    assert (trigger.posture, trigger.threshold) == ("Reactive", 1)
    assert trigger.within == timedelta(seconds=120)
    # one night, the event's; the nights run with the nightly's params (hotels, 14 days)
    assert trigger.parameters == {
        "start": "{{ event.payload.as_of }}",
        "end": "{{ event.payload.as_of }}",
    }
    assert backfill.parameters["params"] == {"dataset": "hotels", "holdout_days": 14}
    assert nightly.parameters["params"] == {"dataset": "hotels", "holdout_days": 14}

    _, default = build_deployments(Settings(home=tmp_path))
    assert default.triggers[0].match.model_dump() == {
        "prefect.resource.id": "nightshift.dataset.flights"
    }
    assert default.triggers[0].within == timedelta(seconds=3600)
