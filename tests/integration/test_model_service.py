"""The model service (`nightshift serve-model`) against a real registry, over real HTTP.

A registry of this module's own (SQLite MLflow store) holds two small networks trained on
10 real days of January 2013 and released with `release_model`, both left `@challenger`
by a gate they cannot pass (a 1-byte size budget); v1 is then promoted by hand. One
service process follows `@champion` (polling every second) for the whole module; each
test moves the alias where it needs it and watches the service follow.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import date
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tasks.datasets import get_dataset
from tasks.evaluation.champion import CHAMPION, champion_scorer, load_in_process
from tasks.evaluation.evaluate import evaluate_models
from tasks.release.compress import compress_network
from tasks.release.config import CompressionConfig, ReleaseConfig
from tasks.release.integrity import DIGEST_TAG, FILES_TAG
from tasks.release.register import release_model
from tasks.release.registry import promote_version
from tasks.training.config import TrainConfig
from tasks.training.loop import train_network
from tasks.training.tune import TuneResult
from tests.conftest import small_flights_run

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MODEL = "serving-test"
FIRST, AS_OF = date(2013, 1, 1), date(2013, 1, 10)
TINY = TrainConfig(epochs=1, members=1, hidden=[16], validation_days=2, batch_size=256)
SWITCH_BOUND_S = 30
FLIGHTS = get_dataset("flights")
INPUTS = list(FLIGHTS.input_columns)


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """Two released versions of MODEL (v1 champion, v2 challenger) and the real holdout."""
    from threadpoolctl import threadpool_limits

    home = tmp_path_factory.mktemp("serving")
    lake, ctx, features = small_flights_run(home, FIRST, AS_OF, MODEL)
    tracking_uri = ctx.tracking_uri
    # one thread for the baseline's OpenMP: on a busy 2-core machine more threads only spin
    with threadpool_limits(limits=1):
        for seed in (1, 2):
            out = home / f"net-{seed}"
            trained = train_network(
                "flights", features.train_path, features.preprocessor_path, str(out), TINY, seed
            )
            compression = compress_network(
                FLIGHTS,
                features,
                trained,
                str(out / "compression"),
                CompressionConfig(prune_sparsity=0, latency_repeats=5),
                seed=seed,
            )
            evaluation = evaluate_models(
                FLIGHTS,
                features,
                trained,
                str(out / "evaluation"),
                seed=seed,
                score_champion=champion_scorer(tracking_uri, MODEL),
            )
            release_model(
                ctx,
                None,
                features,
                TuneResult(config=TINY, enabled=False),
                trained,
                evaluation,
                compression,
                ReleaseConfig(max_size_bytes=1),  # the gate fails: both stay challengers
                lineage={"as_of": str(AS_OF), "data_window": f"{FIRST}..{AS_OF}"},
            )
    client = MlflowClient(tracking_uri)
    promote_version(client, MODEL, "1", "serving test: first champion")
    mlflow.set_tracking_uri(tracking_uri)
    return {
        "home": home,
        "tracking_uri": tracking_uri,
        "client": client,
        "holdout": lake.read_parquet(features.holdout_path),
    }


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(url: str) -> tuple[int, dict, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


def _post(base: str, path: str, body: bytes, content_type="application/json"):
    request = urllib.request.Request(
        base + path, data=body, headers={"Content-Type": content_type}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode()


@pytest.fixture(scope="module")
def service(registry):
    """`nightshift serve-model` in a subprocess on 127.0.0.1, stopped at the end."""
    port = _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),  # this checkout's code, whatever the venv has installed
        "NIGHTSHIFT_HOME": str(registry["home"] / "service-home"),
        "NIGHTSHIFT_MLFLOW_TRACKING_URI": registry["tracking_uri"],
        "NIGHTSHIFT_MODEL_NAME": MODEL,
    }
    log = open(registry["home"] / "service.log", "w+b")  # noqa: SIM115 (closed below)
    server = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "serve-model", "--port", str(port)]
        + ["--poll-seconds", "1", "--max-rows", "1000", "--max-body-mb", "0.5"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                log.seek(0)
                raise AssertionError(f"serve-model exited: {log.read().decode()[-3000:]}")
            try:
                if _get(base + "/ready")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "serve-model not ready after 120 s"
            time.sleep(0.5)
        yield {"base": base, "log": log}
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def _split_body(rows: pd.DataFrame) -> bytes:
    split = json.loads(rows.to_json(orient="split", date_format="iso", index=False))
    return json.dumps({"dataframe_split": split}).encode()


def _served_version(base: str) -> str | None:
    return _get(base + "/health")[2]["version"]


def _move_champion_and_wait(registry, service, version: str) -> float:
    """Point @champion at `version` (if it is not there) and wait until the service serves it."""
    client = registry["client"]
    if str(client.get_model_version_by_alias(MODEL, CHAMPION).version) != version:
        promote_version(client, MODEL, version, "serving test")
    return _wait_for_version(service["base"], version)


def _wait_for_version(base: str, version: str, bound: float = SWITCH_BOUND_S) -> float:
    started = time.monotonic()
    while _served_version(base) != version:
        assert time.monotonic() - started < bound, f"still not serving v{version} after {bound} s"
        time.sleep(0.2)
    return time.monotonic() - started


class _Client(threading.Thread):
    """Sends one-row requests back to back over one keep-alive connection until stopped."""

    def __init__(self, base: str, body: bytes) -> None:
        super().__init__(daemon=True)
        self.host, self.port = base.removeprefix("http://").split(":")
        self.body = body
        self.answers: list[tuple[int, str]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        conn = http.client.HTTPConnection(self.host, int(self.port), timeout=30)
        try:
            while not self.halt.is_set():
                conn.request(
                    "POST", "/invocations", self.body, {"Content-Type": "application/json"}
                )
                response = conn.getresponse()
                response.read()
                self.answers.append((response.status, response.getheader("X-Model-Version")))
        finally:
            conn.close()


def _versions_in_order(answers: list[tuple[int, str]]) -> list[str]:
    seen: list[str] = []
    for _, version in answers:
        if not seen or seen[-1] != version:
            seen.append(version)
    return seen


# ----------------------------------------------------------------------------- answers


def test_answers_equal_the_in_process_pyfunc_on_real_holdout_rows(registry, service):
    _move_champion_and_wait(registry, service, "1")
    rows = registry["holdout"][INPUTS].sample(200, random_state=1).reset_index(drop=True)
    model = load_in_process(f"models:/{MODEL}/1")
    expected = model.predict(rows)
    # the same 20 rows alone: the int8 network quantizes activations per call, so a row's
    # score depends on the rows scored with it (the service never mixes requests)
    expected_20 = model.predict(rows.head(20))

    status, headers, text = _post(service["base"], "/invocations", _split_body(rows))
    assert status == 200, text
    assert headers["x-model-version"] == "1" and headers["x-model-name"] == MODEL
    answer = pd.DataFrame(json.loads(text)["predictions"])
    np.testing.assert_allclose(
        answer["probability_late"], expected["probability_late"], rtol=0, atol=1e-6
    )
    assert answer["predicted_late"].tolist() == expected["predicted_late"].tolist()

    records = json.loads(rows.head(20).to_json(orient="records", date_format="iso"))
    status, _, text = _post(
        service["base"], "/invocations", json.dumps({"dataframe_records": records}).encode()
    )
    assert status == 200, text
    by_records = [p["probability_late"] for p in json.loads(text)["predictions"]]
    np.testing.assert_allclose(by_records, expected_20["probability_late"], atol=1e-6)

    # Open Inference Protocol v2: one tensor per column, the same numbers
    columns = json.loads(rows.head(20).to_json(orient="split", date_format="iso", index=False))
    tensors = [
        {"name": name, "shape": [20], "datatype": "BYTES", "data": [r[i] for r in columns["data"]]}
        for i, name in enumerate(columns["columns"])
    ]
    status, headers, text = _post(
        service["base"], f"/v2/models/{MODEL}/infer", json.dumps({"inputs": tensors}).encode()
    )
    assert status == 200, text
    outputs = {o["name"]: o for o in json.loads(text)["outputs"]}
    np.testing.assert_allclose(
        outputs["probability_late"]["data"], expected_20["probability_late"], atol=1e-6
    )
    assert outputs["predicted_late"]["datatype"] == "BOOL"
    assert _get(service["base"] + "/v2/health/ready")[0] == 200
    assert _get(service["base"] + f"/v2/models/{MODEL}/ready")[0] == 200


# ----------------------------------------------------------------------------- following


def test_promotion_and_rollback_switch_versions_with_no_failed_request(
    registry, service, monkeypatch
):
    from typer.testing import CliRunner

    from flows.cli import app
    from tasks.core.settings import get_settings

    _move_champion_and_wait(registry, service, "1")
    client = _Client(service["base"], _split_body(registry["holdout"][INPUTS].head(1)))
    monkeypatch.setenv("NIGHTSHIFT_MLFLOW_TRACKING_URI", registry["tracking_uri"])
    monkeypatch.setenv("NIGHTSHIFT_MODEL_NAME", MODEL)
    get_settings.cache_clear()
    runner = CliRunner()
    client.start()
    try:
        time.sleep(1)
        promoted = runner.invoke(app, ["promote", "--version", "2", "--reason", "serving test"])
        assert promoted.exit_code == 0, promoted.output
        to_new = _wait_for_version(service["base"], "2")
        time.sleep(1)
        rolled = runner.invoke(app, ["rollback"])
        assert rolled.exit_code == 0, rolled.output
        to_old = _wait_for_version(service["base"], "1")
        time.sleep(1)
    finally:
        client.halt.set()
        client.join(timeout=30)
        monkeypatch.undo()
        get_settings.cache_clear()

    statuses = {status for status, _ in client.answers}
    assert statuses == {200}, [a for a in client.answers if a[0] != 200][:5]
    assert _versions_in_order(client.answers) == ["1", "2", "1"]
    assert len(client.answers) > 20
    assert to_new < SWITCH_BOUND_S and to_old < SWITCH_BOUND_S
    health = _get(service["base"] + "/health")[2]
    assert [(s["from_version"], s["to_version"]) for s in health["swaps"]][-2:] == [
        ("1", "2"),
        ("2", "1"),
    ]


def test_a_tampered_version_is_refused_and_the_old_one_keeps_serving(registry, service, tmp_path):
    client = registry["client"]
    _move_champion_and_wait(registry, service, "2")
    copy = Path(
        mlflow.artifacts.download_artifacts(f"models:/{MODEL}/2", dst_path=str(tmp_path / "m"))
    )
    [onnx] = list(copy.rglob("*.onnx"))
    with open(onnx, "r+b") as handle:  # flip one byte of the network
        handle.seek(onnx.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0xFF]))
    tampered = str(client.create_model_version(MODEL, str(copy)).version)
    # the registry vouches for v2's files (its digest tags); these files are not those
    for key in (DIGEST_TAG, FILES_TAG):
        value = client.get_model_version(MODEL, "2").tags[key]
        client.set_model_version_tag(MODEL, tampered, key, value)
    body = _split_body(registry["holdout"][INPUTS].head(3))
    try:
        promote_version(client, MODEL, tampered, "serving test: tampered")
        deadline = time.monotonic() + SWITCH_BOUND_S
        while tampered not in _get(service["base"] + "/health")[2]["refused"]:
            assert time.monotonic() < deadline, "the tampered version was not refused"
            status, headers, _ = _post(service["base"], "/invocations", body)
            assert status == 200 and headers["x-model-version"] == "2"
            time.sleep(0.2)
        health = _get(service["base"] + "/health")[2]
        assert "integrity check failed" in health["refused"][tampered]
        assert ".onnx' of model version" in health["refused"][tampered]
        status, headers, _ = _post(service["base"], "/invocations", body)
        assert status == 200 and headers["x-model-version"] == "2"
        assert _get(service["base"] + "/ready")[0] == 200
    finally:
        promote_version(client, MODEL, "2", "serving test: back from the tampered version")
        shutil.rmtree(copy, ignore_errors=True)


# ----------------------------------------------------------------------------- bad requests


def _error(service, path: str, body: bytes, content_type="application/json"):
    status, headers, text = _post(service["base"], path, body, content_type)
    assert "Traceback" not in text
    return status, json.loads(text)["message"], headers


def test_malformed_requests_get_a_4xx_naming_the_field(registry, service):
    rows = registry["holdout"][INPUTS].head(2)
    good = json.loads(_split_body(rows))

    renamed = json.loads(json.dumps(good))
    renamed["dataframe_split"]["columns"][1] = "airline"
    status, message, headers = _error(service, "/invocations", json.dumps(renamed).encode())
    assert status == 422 and "'carrier'" in message and "missing" in message
    assert headers["x-model-version"]  # the version is named on errors too

    wrong_type = json.loads(json.dumps(good))
    wrong_type["dataframe_split"]["data"][1][INPUTS.index("distance")] = "far"
    status, message, _ = _error(service, "/invocations", json.dumps(wrong_type).encode())
    assert status == 422 and "'distance', row 1" in message and "'far'" in message

    wrong_type["dataframe_split"]["data"][1][INPUTS.index("distance")] = 100.0
    wrong_type["dataframe_split"]["data"][0][INPUTS.index("carrier")] = 42
    status, message, _ = _error(service, "/invocations", json.dumps(wrong_type).encode())
    assert status == 422 and "'carrier', row 0" in message and "string" in message

    bad_date = json.loads(json.dumps(good))
    bad_date["dataframe_split"]["data"][0][INPUTS.index("date")] = "yesterday"
    status, message, _ = _error(service, "/invocations", json.dumps(bad_date).encode())
    assert status == 422 and "'date', row 0" in message

    status, message, _ = _error(service, "/invocations", b"")
    assert status == 400 and "empty request body" in message
    status, message, _ = _error(service, "/invocations", b"{not json")
    assert status == 400 and "not valid JSON" in message
    status, message, _ = _error(service, "/invocations", b'{"rows": []}')
    assert status == 422 and "dataframe_split" in message
    status, message, _ = _error(service, "/invocations", b"a,b\n1,2", "text/csv")
    assert status == 415 and "application/json" in message

    many = json.loads(json.dumps(good))
    many["dataframe_split"]["data"] = many["dataframe_split"]["data"][:1] * 1001
    status, message, _ = _error(service, "/invocations", json.dumps(many).encode())
    assert status == 413 and "1001 rows" in message
    # a body over --max-body-mb 0.5 is refused from its Content-Length, before it is read
    host, port = service["base"].removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.putrequest("POST", "/invocations")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(600_000))
        conn.endheaders()
        conn.send(b'{"dataframe_split": ')
        response = conn.getresponse()
        status, text = response.status, response.read().decode()
    finally:
        conn.close()
    assert status == 413 and "600000 bytes exceeds 524288" in text

    status, message, _ = _error(service, "/v2/models/other-model/infer", b'{"inputs": []}')
    assert status == 404 and "other-model" in message
    status, message, _ = _error(service, f"/v2/models/{MODEL}/infer", b'{"inputs": [{"x": 1}]}')
    assert status == 422 and "inputs[0]" in message

    # after all that, the service still answers
    status, _, text = _post(service["base"], "/invocations", json.dumps(good).encode())
    assert status == 200 and len(json.loads(text)["predictions"]) == 2
