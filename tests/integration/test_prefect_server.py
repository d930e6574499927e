"""The embedded Prefect server `nightshift run` keeps: started once, reused, stopped.

Real parts: Prefect's server app under uvicorn on loopback, its SQLite database in a
temporary home, the `nightshift prefect-server` command.
"""

from __future__ import annotations

import os

import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.server import embedded_server, healthy, kept_server, state_path, stop_kept_server
from tasks.core.settings import Settings, get_settings

pytestmark = pytest.mark.integration


def test_a_kept_server_is_reused_by_the_next_run_and_stopped_by_the_command(tmp_path, monkeypatch):
    settings = Settings(home=tmp_path)
    monkeypatch.setenv("NIGHTSHIFT_HOME", str(tmp_path))  # for the command
    first = embedded_server(settings, keep=True)
    try:
        assert not first.reused and first.kept
        first.wait_until_healthy(timeout_s=180)
        assert first.api_url.startswith("http://127.0.0.1:")
        assert os.getpgid(first.pid) != os.getpgid(0)  # its own session: Ctrl-C spares it

        second = embedded_server(settings, keep=True)  # the next night
        assert second.reused and (second.pid, second.api_url) == (first.pid, first.api_url)
        second.stop()  # a run ending leaves a kept server running
        assert healthy(first.api_url)

        get_settings.cache_clear()
        status = CliRunner().invoke(app, ["prefect-server", "status"])
        assert status.exit_code == 0 and f"pid {first.pid}" in status.output
        assert "answers" in status.output
        stopped = CliRunner().invoke(app, ["prefect-server", "stop"])
        assert stopped.exit_code == 0 and f"pid {first.pid}" in stopped.output
        assert not healthy(first.api_url) and not state_path(settings).exists()
        assert kept_server(settings) is None
        again = CliRunner().invoke(app, ["prefect-server", "status"])
        assert again.exit_code == 1 and "no kept Prefect server" in again.output
    finally:
        stop_kept_server(settings)
        monkeypatch.undo()
        get_settings.cache_clear()


def test_a_private_server_stops_with_its_run_and_a_stale_record_is_ignored(tmp_path):
    settings = Settings(home=tmp_path)
    settings.prefect_home.mkdir(parents=True)
    # a record left by a server that is gone (a reboot): its pid now names another process
    state_path(settings).write_text(f'{{"pid": {os.getpid()}, "api_url": "http://x/api"}}')
    assert kept_server(settings) is None
    server = embedded_server(settings, keep=False)
    try:
        assert not server.reused and not server.kept
        server.wait_until_healthy(timeout_s=180)
    finally:
        server.stop()
    assert server.process.returncode is not None and not healthy(server.api_url)
