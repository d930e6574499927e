"""Real faults in the release: the MLflow server killed mid-registration, and two runs of
one night at once. Nothing half-made counts as done, nothing wrong is promoted.

Both reuse what the session's nightly run left in the lake (its features, network,
evaluation and compressed model), so no model is trained here: only the release runs.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tasks.core.lake import Lake
from tasks.core.results import read_result
from tasks.core.runlock import lock_path
from tasks.core.tracking import configure_mlflow
from tasks.evaluation.champion import CHALLENGER, CHAMPION
from tasks.evaluation.evaluate import Evaluation
from tasks.features.build import FeatureSet
from tasks.ingest.plan import IngestSummary
from tasks.ops.schedule import completed_as_of_dates
from tasks.release.compress import Compression
from tasks.release.config import ReleaseConfig
from tasks.release.register import gate_challenger, register_challenger, release_model
from tasks.release.registry import current_alias, pending_marker, promote_version
from tasks.release.registry import undo_release_on_failure as undo_on_failure
from tasks.training.loop import TrainResult
from tasks.training.tune import TuneResult
from tests.conftest import AS_OF, context_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.faults]

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class MlflowServer:
    """A real `mlflow server` (SQLite store, local artifacts) on 127.0.0.1 that can be
    SIGKILLed and started again on the same port and store."""

    def __init__(self, home: Path) -> None:
        self.home, self.port, self.process = home, _free_port(), None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120) -> None:
        self.process = subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.port)]
            + ["--backend-store-uri", f"sqlite:///{self.home / 'mlflow.db'}"]
            + ["--artifacts-destination", str(self.home / "artifacts"), "--workers", "1"],
            env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: the kill reaches uvicorn too
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "mlflow server exited while starting"
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2):
                    return
            except OSError:
                time.sleep(0.5)
        raise AssertionError(f"mlflow server not up at {self.url} after {timeout} s")

    def kill(self) -> None:
        """SIGKILL the server and its workers: no shutdown, no goodbye."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


@pytest.fixture
def mlflow_server(tmp_path, monkeypatch):
    # fail at once when the server is gone instead of retrying for minutes
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    server = MlflowServer(tmp_path / "mlflow-server")
    server.start()
    yield server
    if server.process.poll() is None:
        server.kill()


STAGES = ("ingest", "features", "tune", "train", "evaluate", "compress")


def _stage_results(lake: Lake) -> dict:
    """What the session's nightly run recorded: every input the release needs (its tune
    run lives in the session's MLflow store, not in this test's registry: left out).

    The evaluation is taken as one that found no champion, as this test's registry had
    none then: the session's e2e rerun of the night re-evaluates against the session's
    own champion and overwrites the recorded result, and a version number from another
    registry would make the compare-and-set below compare against the wrong thing."""
    ctx = context_for(lake)
    evaluation = read_result(ctx, "evaluate", Evaluation)
    return {
        "ingested": read_result(ctx, "ingest", IngestSummary),
        "features": read_result(ctx, "features", FeatureSet),
        "tuned": replace(read_result(ctx, "tune", TuneResult), parent_run_id=None),
        "trained": read_result(ctx, "train", TrainResult),
        "evaluation": replace(evaluation, champion=None, champion_version=None),
        "compression": read_result(ctx, "compress", Compression),
    }


def test_mlflow_killed_mid_release_leaves_nothing_counted_done_and_the_next_run_settles_it(
    nightly_run, landed_lake, tmp_lake, mlflow_server, caplog
):
    url, name = mlflow_server.url, "faults-test"
    inputs = _stage_results(landed_lake)
    experiment_id = configure_mlflow(url, "faults-test", "")
    base = context_for(tmp_lake, tracking_uri=url, experiment_id=experiment_id, model_name=name)
    earlier, night = base.with_(as_of=date(2013, 2, 27)), base.with_(as_of=AS_OF)
    client = MlflowClient(url)
    first = release_model(earlier, **inputs, release=ReleaseConfig())
    promote_version(client, name, first.version, "test setup: a champion to protect")

    # the fault: the server is SIGKILLed after the version is registered, before the gate
    with pytest.raises(MlflowException, match="127.0.0.1"), undo_on_failure(night):
        half = register_challenger(night, **inputs, release=ReleaseConfig())
        mlflow_server.kill()
        gate_challenger(
            night,
            half,
            inputs["features"],
            inputs["evaluation"],
            inputs["compression"],
            ReleaseConfig(),
        )
    # the undo could not reach the server: the version is left, but only as "pending"
    assert night.lake.read_json(pending_marker(night))["state"] == "pending"

    mlflow_server.start()
    assert client.get_model_version(name, half.version).tags["as_of"] == str(AS_OF)
    assert current_alias(client, name, CHALLENGER) == half.version
    assert completed_as_of_dates(url, name) == {date(2013, 2, 27)}  # not done: backfill reruns it

    with caplog.at_level(logging.WARNING, "nightshift.registry"):
        rerun = release_model(night, **inputs, release=ReleaseConfig())

    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("reconcile")]
    assert len(said) == 1 and f"deleted half-made v{half.version}" in said[0], said
    versions = {str(v.version) for v in client.search_model_versions(f"name='{name}'")}
    assert versions == {first.version, rerun.version} and half.version not in versions
    assert completed_as_of_dates(url, name) == {date(2013, 2, 27), AS_OF}
    # the rerun compared against no champion (the recorded evaluation), but v1 holds it now:
    # compare-and-set refuses to overwrite it, and says so
    assert current_alias(client, name, CHAMPION) == first.version
    assert rerun.alias == CHALLENGER
    assert night.lake.read_json(pending_marker(night))["state"] == "completed"


WAIT_THEN_REGISTER = """
import os, sys, time
from flows.cli import app
import tasks.release.register  # the heavy imports first: reach the lock the moment it is taken
holder = sys.argv[1]
while not os.path.exists(holder):
    time.sleep(0.05)
started = time.monotonic()
try:
    app(["register", "--as-of", sys.argv[2]], prog_name="nightshift")
finally:
    print(f"second run ended {time.monotonic() - started:.2f} s after the lock was taken")
"""


def test_two_runs_of_one_night_one_proceeds_the_other_fails_fast(
    nightly_run, landed_lake, tmp_lake, tmp_path
):
    # a lake of its own holding the session night's stage results (their data files stay
    # where they are), and a registry of its own: the session's are left as they were
    for stage in STAGES:
        result = landed_lake.read_json(context_for(landed_lake).run_dir(stage, "result.json"))
        if stage == "tune":
            result["parent_run_id"] = None  # that run is in the session's MLflow store
        tmp_lake.write_json_atomic(context_for(tmp_lake).run_dir(stage, "result.json"), result)
    lock = lock_path(tmp_lake, "flights", AS_OF)
    holder = lock.with_suffix(".holder.json")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "NIGHTSHIFT_LAKE_ROOT": tmp_lake.root,
        "NIGHTSHIFT_MLFLOW_TRACKING_URI": uri,
        "NIGHTSHIFT_MODEL_NAME": "concurrent-test",
    }
    second = subprocess.Popen(
        [sys.executable, "-c", WAIT_THEN_REGISTER, str(holder), str(AS_OF)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(2)  # let the second one start importing first
    first = subprocess.Popen(
        [sys.executable, "-c", "from flows.cli import app; app()", "register"]
        + ["--as-of", str(AS_OF)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    second_out, second_err = second.communicate(timeout=300)
    first_out, first_err = first.communicate(timeout=300)

    assert first.returncode == 0, first_err[-3000:]
    assert second.returncode == 1, second_out + second_err[-3000:]
    assert (
        "nightshift register flights 2013-02-28: FAILED: another run of flights 2013-02-28 "
        f"is in progress and holds {lock}: pid {first.pid}" in second_err
    ), second_err[-3000:]
    elapsed = float(second_out.split("ended ")[1].split(" s")[0])
    assert elapsed < 10, second_out  # fails fast, it does not wait for the first
    client = MlflowClient(uri)
    versions = client.search_model_versions("name='concurrent-test'")
    assert [v.tags.get("release_state") for v in versions] == ["completed"]
    marker = json.loads(Path(pending_marker(context_for(tmp_lake))).read_text())
    assert marker["state"] == "completed" and marker["model_name"] == "concurrent-test"
    assert completed_as_of_dates(uri, "concurrent-test") == {AS_OF}
