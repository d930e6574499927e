"""Run-time plumbing for the CLI: the embedded Prefect server when no API URL is set.

Without `PREFECT_API_URL`, every Dask worker process would start its own ephemeral
Prefect server (and orphan it). So the CLI starts one private server subprocess, exports
its URL to the environment before the Dask cluster starts, and stops it at the end. Its
SQLite database stays under `<home>/prefect`, where `make ui` opens it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from prefect.events.worker import EventsWorker
from prefect.logging.handlers import APILogWorker
from prefect.server.api.server import SubprocessASGIServer
from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings


@contextmanager
def prefect_api() -> Iterator[str]:
    """Yield a Prefect API URL: the configured one, or a private embedded server's."""
    configured = get_current_settings().api.url
    if configured:
        yield configured
        return
    server = SubprocessASGIServer()
    server.start(timeout=120)
    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            yield server.api_url
    finally:
        # Ship the last log lines and events before the server they go to goes away.
        APILogWorker.drain_all(timeout=10)
        EventsWorker.drain_all(timeout=10)
        os.environ.pop("PREFECT_API_URL", None)
        server.stop()
