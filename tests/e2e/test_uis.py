"""The screens people read after a night, in a real browser (Debian Chromium, headless).

On the session's nightly run (`nightly_run`): the MLflow UI opens the experiment on its
model-training view with the run's description (the model card) and the version's
description; the Prefect UI lists the artifacts under the flow run and shows the summary's
verdict; the validation page, served by `nightshift docs` with every other address blocked,
shows both contracts. Screenshots go to the test's temporary folder.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import AS_OF
from tests.e2e.test_stack import CHROMIUM, CHROMIUM_ARGS

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="Debian chromium is not installed (/usr/bin/chromium; `.ci/run` installs it)",
    ),
]

BIN = Path(sys.executable).parent
UI_TIMEOUT_MS = 90_000  # a cold MLflow UI on a busy 2-core box takes its time


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def _server(command: list[str], health: str, env: dict[str, str], cwd: Path, log: Path):
    """Start a server in its own process group; yield once `health` answers; stop the group."""
    with log.open("w") as out:
        process = subprocess.Popen(
            command, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(health, timeout=5)
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"{command[0]} did not start:\n{log.read_text()[-3000:]}")
                time.sleep(1)
        yield
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    return {**env, **extra}


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@contextmanager
def _page(browser, screenshot: Path):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        yield page
    finally:
        page.screenshot(path=str(screenshot), full_page=True)
        page.close()


def test_mlflow_opens_on_training_with_the_run_card_and_the_version_description(
    nightly_run, settings, browser, tmp_path
):
    from mlflow.tracking import MlflowClient
    from playwright.sync_api import expect

    from tasks.reporting.links import mlflow_experiment_url, mlflow_run_url, model_version_url

    client = MlflowClient(settings.tracking_uri)
    experiment = client.get_experiment_by_name(settings.mlflow_experiment)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    port = _free_port()
    ui = f"http://127.0.0.1:{port}"
    command = [str(BIN / "mlflow"), "server", "--backend-store-uri", settings.tracking_uri]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    with (
        _server(command, f"{ui}/health", _clean_env(), tmp_path, tmp_path / "mlflow.log"),
        _page(browser, tmp_path / "mlflow-experiment.png") as page,
    ):
        # the experiment link of the nightly-links artifact: the runs table, not GenAI
        page.goto(mlflow_experiment_url(ui, experiment.experiment_id))
        expect(page.get_by_text(f"nightly-{AS_OF}").first).to_be_visible(timeout=UI_TIMEOUT_MS)
        expect(page.get_by_text("Model training").first).to_be_visible()
        assert "/overview" not in page.url and "workflowType=genai" not in page.url
        page.screenshot(path=str(tmp_path / "mlflow-runs.png"))

        page.goto(mlflow_run_url(ui, experiment.experiment_id, nightly_run.mlflow_run_id))
        expect(page.get_by_text("Decision:").first).to_be_visible(timeout=UI_TIMEOUT_MS)
        expect(page.get_by_text(f"tune-{AS_OF}").first).to_be_visible()  # a child run
        page.screenshot(path=str(tmp_path / "mlflow-run.png"))

        page.goto(model_version_url(ui, nightly_run.model_name, nightly_run.version))
        expect(page.get_by_text(re.compile(r"judged on the holdout \d{4}-")).first).to_be_visible(
            timeout=UI_TIMEOUT_MS
        )


def test_prefect_lists_the_artifacts_under_the_flow_run_and_shows_the_verdict(
    nightly_run, settings, browser, tmp_path
):
    from mlflow.tracking import MlflowClient
    from playwright.sync_api import expect
    from prefect.settings import get_current_settings

    version = MlflowClient(settings.tracking_uri).get_model_version(
        nightly_run.model_name, nightly_run.version
    )
    flow_run_id = version.tags["prefect_flow_run_id"]
    database = get_current_settings().server.database.connection_url
    database = getattr(database, "get_secret_value", lambda: database)()
    port = _free_port()
    ui = f"http://127.0.0.1:{port}"
    env = _clean_env(
        PREFECT_HOME=str(tmp_path / "prefect"),
        PREFECT_SERVER_DATABASE_CONNECTION_URL=str(database),  # the session's API database
        PREFECT_SERVER_API_HOST="127.0.0.1",
        PREFECT_SERVER_API_PORT=str(port),
        PREFECT_UI_ENABLED="true",
    )
    command = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--no-services"]
    with (
        _server(command, f"{ui}/api/health", env, tmp_path, tmp_path / "prefect.log"),
        _page(browser, tmp_path / "prefect-summary.png") as page,
    ):
        page.goto(f"{ui}/runs/flow-run/{flow_run_id}")
        expect(page.get_by_text(f"as_of:{AS_OF}").first).to_be_visible(timeout=UI_TIMEOUT_MS)
        expect(page.get_by_text(f"version:{nightly_run.version}").first).to_be_visible()
        page.get_by_text("Artifacts", exact=True).first.click()
        # listed under the flow run itself, not under the task that published them
        expect(page.get_by_text("Flow run", exact=True).first).to_be_visible(timeout=30_000)
        summary = page.get_by_text("nightly-summary", exact=True).first
        expect(summary).to_be_visible()
        page.screenshot(path=str(tmp_path / "prefect-artifacts.png"), full_page=True)
        summary.click()
        # the summary's first line: "**PROMOTED**: <model> v<n> is now @champion (...)"
        verdict = page.get_by_text(re.compile(r"^(PROMOTED|KEPT): ")).first
        expect(verdict).to_be_visible(timeout=30_000)
        expect(page.get_by_text(f"nightly-{AS_OF}").first).to_be_visible()  # its flow run


def test_validation_page_served_offline_shows_both_contracts(nightly_run, browser, tmp_path):
    from playwright.sync_api import expect

    from tasks.reporting.docs_server import make_server
    from tasks.reporting.links import data_docs_url

    page_path = Path(nightly_run.data_docs)
    reports = page_path.parents[4]  # <lake>/reports/validation/<dataset>/<as_of>/docs/
    assert reports.name == "reports"
    server = make_server(reports, 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    blocked: list[str] = []

    def only_the_docs_server(route):
        if route.request.url.startswith(base):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    try:
        with _page(browser, tmp_path / "data-docs.png") as page:
            page.route("**/*", only_the_docs_server)
            page.goto(data_docs_url(str(page_path), base))
            for contract in nightly_run.contracts:
                expect(page.get_by_text(contract).first).to_be_visible(timeout=30_000)
            expect(
                page.get_by_role("heading", name=re.compile(r"^flights: passed"))
            ).to_be_visible()
            expect(
                page.get_by_role("heading", name=re.compile(r"^weather: passed"))
            ).to_be_visible()
            assert page.locator("section#flights tr").count() > 20  # every expectation's row
    finally:
        server.shutdown()
        server.server_close()
    assert blocked == [], f"the page asked the network for {blocked}"
