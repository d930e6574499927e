"""Code tests for the `nightshift` command line (typer's runner, real lake)."""

from datetime import date

from typer.testing import CliRunner

from flows.cli import app

runner = CliRunner()


def test_settings_shows_environment_overrides(monkeypatch):
    from tasks.core.settings import get_settings

    monkeypatch.setenv("NIGHTSHIFT_MODEL_NAME", "delay-test")
    get_settings.cache_clear()
    try:
        result = runner.invoke(app, ["settings"])
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert result.exit_code == 0
    assert "NIGHTSHIFT_MODEL_NAME" in result.output and "delay-test" in result.output


def test_land_reports_what_it_delivered(monkeypatch, tmp_path):
    from tasks.core.settings import get_settings

    monkeypatch.setenv("NIGHTSHIFT_LAKE_ROOT", str(tmp_path / "lake"))
    get_settings.cache_clear()
    try:
        result = runner.invoke(app, ["land", "--from", "2013-06-01", "--through", "2013-06-02"])
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "2 days written" in result.output
    assert (
        tmp_path / "lake" / "landing" / "flights" / "daily" / "2013-06-02" / "flights.csv"
    ).exists()


def test_an_unknown_dataset_is_a_usage_error_naming_the_known_ones():
    result = runner.invoke(app, ["land", "--dataset", "trains"])
    assert result.exit_code == 2
    assert "known datasets: flights, hotels" in result.output


def test_a_stage_without_its_inputs_fails_naming_the_command_to_run(monkeypatch, tmp_path):
    from tasks.core.settings import get_settings

    monkeypatch.setenv("NIGHTSHIFT_HOME", str(tmp_path))
    get_settings.cache_clear()
    try:
        result = runner.invoke(app, ["features", "--as-of", "2013-02-28"])
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert result.exit_code == 1
    assert "no ingest result for dataset flights as_of 2013-02-28" in result.output
    assert "nightshift ingest --as-of 2013-02-28 --dataset flights" in result.output


def test_bad_date_is_a_usage_error_not_a_traceback():
    result = runner.invoke(app, ["run", "--as-of", "2013-13-45"])
    assert result.exit_code == 2
    assert "is not a date (YYYY-MM-DD)" in result.output


def test_prefect_api_reuses_a_configured_server(prefect_server):
    from prefect.settings import get_current_settings

    from flows.runtime import prefect_api

    with prefect_api() as url:
        assert url == get_current_settings().api.url


def test_hold_holds_and_release_hold_round_trip_through_the_manifest(monkeypatch, tmp_path):
    from tasks.core.lake import Lake
    from tasks.core.settings import get_settings

    monkeypatch.setenv("NIGHTSHIFT_LAKE_ROOT", str(tmp_path / "lake"))
    get_settings.cache_clear()
    try:
        held = runner.invoke(app, ["hold", "--day", "2013-03-04", "--reason", "bad re-send"])
        listed = runner.invoke(app, ["holds"])
        no_reason = runner.invoke(app, ["hold", "--day", "2013-03-05", "--reason", " "])
        released = runner.invoke(app, ["release-hold", "--day", "2013-03-04"])
        again = runner.invoke(app, ["release-hold", "--day", "2013-03-04"])
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert held.exit_code == 0, held.output
    assert "2013-03-04" in listed.output and "bad re-send" in listed.output
    assert no_reason.exit_code == 2 and "needs a reason" in no_reason.output
    assert released.exit_code == 0 and "hold released" in released.output
    assert again.exit_code == 1 and "not held" in again.output
    lake = Lake(str(tmp_path / "lake"))
    assert not lake.exists(lake.manifest("flights", date(2013, 3, 4)))  # nothing left behind
