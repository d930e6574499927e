"""Code tests for the `nightshift` command line (typer's runner, real lake)."""

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
