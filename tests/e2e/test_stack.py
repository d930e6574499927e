"""Integration, as users work: the real local stack (`infra/stack.sh`: Prefect server +
process worker, MLflow server, Dask scheduler + workers, all on 127.0.0.1), the deployments
registered with `nightshift deploy`, runs triggered through the Prefect API and through the
Prefect UI in headless Chromium, artifacts and registry checked from the outside.

One stack serves the whole module; its processes are stopped at teardown by pid file.
The data window is small (10 days of January 2013, 1 epoch, 1 member) to stay cheap.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv" / "bin"
CHROMIUM = Path("/usr/bin/chromium")
FIRST_DAY, AS_OF = date(2013, 1, 1), date(2013, 1, 10)
TIMEZONE = "America/New_York"
POOL = "stack-test-pool"
NIGHTLY_PARAMETERS = {
    "as_of": str(AS_OF),
    "params": {
        "first_day": str(FIRST_DAY),
        "holdout_days": 3,
        "train": {"epochs": 1, "members": 1, "validation_days": 2},
        "tune": {"enabled": False},
    },
}
# A ceiling, not an expectation: on a 2-core box shared with other test suites one run
# took up to 8 min (idle it should be well under 2).
RUN_TIMEOUT_S = 900
# Debian's Chromium, offline: no sandbox (root in CI), no background downloads.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stack_script(command: str, env: dict[str, str], timeout: int) -> str:
    done = subprocess.run(
        [str(ROOT / "infra" / "stack.sh"), command],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"stack.sh {command} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """`infra/stack.sh up` on free ports in a temporary folder; `down` at teardown."""
    from tasks.core.lake import Lake
    from tasks.datasets import get_dataset
    from tasks.landing.simulator import land_days

    base = tmp_path_factory.mktemp("stack")
    ports = {name: _free_port() for name in ("prefect", "mlflow", "dask")}
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PREFECT_API", "NIGHTSHIFT_"))
    }
    env.update(
        NIGHTSHIFT_STACK_DIR=str(base / "stack"),
        NIGHTSHIFT_HOME=str(base / "home"),
        NIGHTSHIFT_STACK_PREFECT_PORT=str(ports["prefect"]),
        NIGHTSHIFT_STACK_MLFLOW_PORT=str(ports["mlflow"]),
        NIGHTSHIFT_STACK_DASK_PORT=str(ports["dask"]),
        NIGHTSHIFT_STACK_DASK_WORKERS="2",
        NIGHTSHIFT_STACK_DEPLOY="0",
        NIGHTSHIFT_WORK_POOL=POOL,
        NIGHTSHIFT_SCHEDULE_TIMEZONE=TIMEZONE,
        # The scheduler service creates the upcoming nightly runs within seconds.
        PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="2",
    )
    land_days(Lake(str(base / "home" / "lake")), get_dataset("flights"), FIRST_DAY, AS_OF)
    try:
        _stack_script("up", env, timeout=300)
        deploy_env = {**env, "NIGHTSHIFT_PROFILE": str(base / "stack" / "nightshift.env")}
        deployed = subprocess.run(
            [str(BIN / "nightshift"), "deploy", "--parameters", json.dumps(NIGHTLY_PARAMETERS)],
            env=deploy_env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        assert f"deployed nightly-retrain/nightly-retrain to work pool '{POOL}'" in deployed.stdout
        yield {
            "api": f"http://127.0.0.1:{ports['prefect']}/api",
            "ui": f"http://127.0.0.1:{ports['prefect']}",
            "mlflow": f"http://127.0.0.1:{ports['mlflow']}",
            "dir": base / "stack",
        }
    finally:
        stopped = _stack_script("down", env, timeout=120)
        assert "stopped prefect-server" in stopped


def _on(stack):
    """Prefect settings pointing this test process at the stack's server."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    return temporary_settings(updates={PREFECT_API_URL: stack["api"]})


def _artifacts(stack, flow_run_id) -> dict[str, str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with _on(stack), get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key: str(a.data) for a in found if a.key}


def _wait_final(stack, flow_run_id, timeout: float = RUN_TIMEOUT_S):
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    with _on(stack), get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(flow_run_id)
            if run.state and run.state.is_final():
                return run
            if time.monotonic() > deadline:
                pytest.fail(f"flow run {run.name} still {run.state_name} after {timeout} s")
            time.sleep(2)


def _first_run_created_after(stack, moment: datetime):
    """The earliest flow run of the nightly deployment created after `moment`."""
    from prefect.client.orchestration import get_client

    with _on(stack), get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("nightly-retrain/nightly-retrain")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            runs = [
                r
                for r in client.read_flow_runs(limit=50)
                if r.deployment_id == deployment.id and r.created and r.created > moment
            ]
            if runs:
                return min(runs, key=lambda r: r.created).id
            time.sleep(1)
    pytest.fail("the UI's Quick run created no flow run")


def test_schedule_on_the_server_creates_nightly_runs_at_two_local_time(stack):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    with _on(stack), get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("nightly-retrain/nightly-retrain")
        [schedule] = deployment.schedules
        assert (schedule.schedule.cron, schedule.schedule.timezone) == ("0 2 * * *", TIMEZONE)
        deadline = time.monotonic() + 60
        while True:
            upcoming = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(
                        type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])
                    )
                ),
            )
            if len(upcoming) >= 3 or time.monotonic() > deadline:
                break
            time.sleep(2)
    assert len(upcoming) >= 3, "the scheduler service created no upcoming runs"
    starts = sorted(r.expected_start_time for r in upcoming)[:3]
    local = [s.astimezone(ZoneInfo(TIMEZONE)) for s in starts]
    assert all((t.hour, t.minute) == (2, 0) for t in local)
    assert [b.date() - a.date() for a, b in zip(local, local[1:], strict=False)] == [
        timedelta(days=1)
    ] * 2
    now_local = datetime.now(UTC).astimezone(ZoneInfo(TIMEZONE))
    assert local[0] - now_local <= timedelta(days=1)


def test_run_triggered_through_the_api_completes_with_artifacts_and_a_registered_version(stack):
    from mlflow.tracking import MlflowClient
    from prefect.deployments import run_deployment

    with _on(stack):
        flow_run = run_deployment(
            "nightly-retrain/nightly-retrain", timeout=0, tags=["api-trigger"]
        )
    finished = _wait_final(stack, flow_run.id)
    assert finished.state.is_completed(), (
        f"{finished.name}: {finished.state_name}: {finished.state.message}\n"
        f"worker log: {(stack['dir'] / 'prefect-worker.log').read_text()[-3000:]}"
    )
    assert finished.name == f"nightly-{AS_OF}"

    artifacts = _artifacts(stack, flow_run.id)
    assert {"nightly-summary", "holdout-metrics", "nightly-links"} <= set(artifacts)
    assert f"# nightly-retrain {AS_OF}" in artifacts["nightly-summary"]
    assert f"({stack['mlflow']}/#/experiments/" in artifacts["nightly-links"]
    # a local lake's Data Docs are served by `nightshift docs` (a browser opens no file:// link)
    assert "Data Docs: [http://127.0.0.1:8765/validation/flights/" in artifacts["nightly-links"]

    client = MlflowClient(stack["mlflow"])
    versions = client.search_model_versions("name='nycflights-delay'")
    mine = [v for v in versions if v.tags.get("prefect_flow_run_id") == str(flow_run.id)]
    assert len(mine) == 1 and mine[0].tags["as_of"] == str(AS_OF)
    run = client.get_run(mine[0].tags["mlflow_run_id"])
    # 7 training days make a weak model; what matters is that the run, the version and
    # the Prefect artifacts tell the same story.
    assert float(mine[0].tags["holdout_roc_auc"]) == pytest.approx(
        run.data.metrics["holdout_roc_auc"], abs=1e-5
    )
    assert f"/runs/{run.info.run_id}" in artifacts["nightly-links"]


@pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Debian chromium is not installed (/usr/bin/chromium; `.ci/run` installs it)",
)
def test_run_started_from_the_prefect_ui_completes_with_its_artifacts(stack, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        try:
            page.goto(f"{stack['ui']}/deployments")
            # The first link is the deployment, the second its flow.
            page.get_by_role("link", name="nightly-retrain", exact=True).first.click()
            page.get_by_role("button", name="Run", exact=True).click()
            started_after = datetime.now(UTC)
            page.get_by_role("button", name="Quick run", exact=True).click()
            # The UI confirms with a toast; toasts animate and stack, so open the new run's
            # page by its id rather than by clicking the toast.
            expect(page.get_by_text("scheduled to start").first).to_be_visible(timeout=30_000)
            flow_run_id = _first_run_created_after(stack, started_after)
            page.goto(f"{stack['ui']}/runs/flow-run/{flow_run_id}")
            finished = _wait_final(stack, flow_run_id)
            assert finished.state.is_completed(), f"{finished.state_name}: {finished.state.message}"
            page.reload()
            expect(page.get_by_text(f"nightly-{AS_OF}").first).to_be_visible(timeout=30_000)
            expect(page.get_by_text("Completed").first).to_be_visible(timeout=30_000)
            page.get_by_text("Artifacts", exact=True).first.click()
            expect(page.get_by_text("nightly-summary").first).to_be_visible(timeout=30_000)
            expect(page.get_by_text("nightly-links").first).to_be_visible()
        finally:
            page.screenshot(path=str(tmp_path / "prefect-ui.png"))
            browser.close()
