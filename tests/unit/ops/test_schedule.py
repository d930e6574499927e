"""Code tests for the schedule, the deployments' declaration and the backfill plan."""

from datetime import UTC, date, datetime

import pytest
from typer.testing import CliRunner

from tasks.core.settings import Settings
from tasks.ops.schedule import (
    completed_as_of_dates,
    dates_to_run,
    days_between,
    resolve_as_of,
    scheduled_as_of,
)


def test_next_nightly_runs_are_at_two_in_the_time_zone_with_that_date_as_as_of(tmp_path):
    from flows.deployments import next_nightly_runs

    settings = Settings(home=tmp_path, schedule_timezone="America/New_York")
    # 2013-12-30 23:30 in New York is already 2013-12-31 in UTC: the next run is still
    # the New York night of the 31st, and its as_of is the 31st.
    after = datetime(2013, 12, 31, 4, 30, tzinfo=UTC)

    runs = next_nightly_runs(settings, 3, after)

    assert [as_of for _, as_of in runs] == [
        date(2013, 12, 31),
        date(2014, 1, 1),
        date(2014, 1, 2),
    ]
    assert [start.astimezone(UTC).hour for start, _ in runs] == [7, 7, 7]  # 02:00 EST
    assert all(start.hour == 2 for start, _ in runs)


def test_next_runs_cross_daylight_saving_at_local_two_oclock(tmp_path):
    from flows.deployments import next_nightly_runs

    settings = Settings(home=tmp_path, schedule_timezone="America/New_York")
    runs = next_nightly_runs(settings, 2, datetime(2013, 3, 9, 12, tzinfo=UTC))
    # 2013-03-10 is the spring-forward night: 02:00 does not exist locally.
    utc_hours = [start.astimezone(UTC).hour for start, _ in runs]
    assert [as_of for _, as_of in runs][-1] == date(2013, 3, 11)
    assert utc_hours[-1] == 6  # 02:00 EDT


def test_scheduled_as_of_is_the_local_calendar_date():
    late_utc = datetime(2014, 1, 1, 3, 0, tzinfo=UTC)
    assert scheduled_as_of(late_utc, "UTC") == date(2014, 1, 1)
    assert scheduled_as_of(late_utc, "America/New_York") == date(2013, 12, 31)


def test_explicit_as_of_wins_over_the_schedule():
    assert resolve_as_of("2013-05-02", "UTC") == date(2013, 5, 2)
    assert resolve_as_of(date(2013, 5, 2), "America/New_York") == date(2013, 5, 2)
    scheduled = datetime(2014, 1, 1, 3, 0, tzinfo=UTC)
    assert resolve_as_of(None, "America/New_York", scheduled) == date(2013, 12, 31)


def test_unknown_time_zone_is_a_clear_settings_error(tmp_path):
    with pytest.raises(ValueError, match="is not an IANA time zone"):
        Settings(home=tmp_path, schedule_timezone="Mars/Olympus")


def test_backfill_runs_only_dates_not_done_oldest_first():
    done = {date(2013, 1, 2), date(2013, 1, 4), date(2012, 12, 31)}
    assert dates_to_run(date(2013, 1, 1), date(2013, 1, 5), done) == [
        date(2013, 1, 1),
        date(2013, 1, 3),
        date(2013, 1, 5),
    ]
    assert len(dates_to_run(date(2013, 1, 1), date(2013, 1, 5), done, rerun=True)) == 5


def test_backfill_range_must_not_be_reversed():
    with pytest.raises(ValueError, match="end 2013-01-01 is before start 2013-01-05"):
        days_between(date(2013, 1, 5), date(2013, 1, 1))


def test_done_dates_are_the_completed_releases_in_the_registry(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert completed_as_of_dates(uri, "m") == set()  # no model registered yet
    client = MlflowClient(uri)
    client.create_registered_model("m")
    for as_of in ("2013-03-01", "2013-03-03"):
        client.create_model_version(
            "m", source=str(tmp_path), tags={"as_of": as_of, "release_state": "completed"}
        )
    client.create_model_version("m", source=str(tmp_path))  # untagged: not a nightly run
    # a release that died after registering (a crash, the MLflow server gone): not done
    client.create_model_version("m", source=str(tmp_path), tags={"as_of": "2013-03-02"})

    assert completed_as_of_dates(uri, "m") == {date(2013, 3, 1), date(2013, 3, 3)}


def test_deployments_declare_cron_time_zone_and_typed_parameters(tmp_path):
    from flows.deployments import build_deployments

    settings = Settings(home=tmp_path, schedule_timezone="America/New_York")
    nightly, backfill = build_deployments(settings, work_pool="pool-x")

    assert (nightly.flow_name, nightly.name) == ("nightly-retrain", "nightly-retrain")
    [schedule] = nightly.schedules
    assert schedule.schedule.cron == "0 2 * * *"
    assert schedule.schedule.timezone == "America/New_York"
    assert nightly.entrypoint == "flows.nightly.nightly_retrain"
    assert nightly.job_variables["working_dir"]
    assert backfill.schedules in (None, [])
    schema = nightly._parameter_openapi_schema.model_dump()
    train = schema["definitions"]["TrainConfig"]["properties"]
    assert train["epochs"]["minimum"] == 1 and train["epochs"]["maximum"] == 200
    assert "scheduled" in schema["properties"]["as_of"]["description"]
    params = schema["definitions"]["NightlyParams"]["properties"]
    assert params["holdout_days"]["maximum"] == 120
    assert params["holdout_days"]["description"]
    assert set(params["dataset"]["enum"]) == {"flights", "hotels"}
    # A scheduled run passes no parameters, so none may be required.
    assert not schema.get("required")
    assert schema["properties"]["params"]["default"]["train"]["epochs"] == 4
    backfill_schema = backfill._parameter_openapi_schema.model_dump()
    assert set(backfill_schema["required"]) == {"start", "end"}
    # one parameter model for both flows, so they cannot drift apart
    assert backfill_schema["definitions"]["NightlyParams"] == schema["definitions"]["NightlyParams"]


def test_schedule_command_prints_the_next_runs(monkeypatch):
    from flows.cli import app
    from tasks.core.settings import get_settings

    monkeypatch.setenv("NIGHTSHIFT_SCHEDULE_TIMEZONE", "Europe/Berlin")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["schedule", "--count", "2"])
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "as_of=" in line]
    assert len(lines) == 2 and all("T02:00:00+0" in line for line in lines)
    assert "in Europe/Berlin" in result.output


def test_serve_and_deploy_need_a_prefect_server(monkeypatch):
    from flows.cli import app
    from tasks.core.settings import get_settings

    monkeypatch.delenv("NIGHTSHIFT_PREFECT_API_URL", raising=False)
    get_settings.cache_clear()
    try:
        served = CliRunner().invoke(app, ["serve"])
        deployed = CliRunner().invoke(app, ["deploy", "--pool", "p"])
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert served.exit_code == 2 and "NIGHTSHIFT_PREFECT_API_URL is not set" in served.output
    assert deployed.exit_code == 2 and "deploy to which server" in deployed.output
