"""Release stage on real data: compression within budget, the promotion gate, registry
moves, serving over HTTP, and the tamper check.

Three small networks are trained on the Jan–Feb 2013 split of the session's nightly run
and released, in order, into a registry of this module's own (SQLite MLflow store):

    v1  trained on shuffled labels             first model, but under the floor and far
                                               behind the baseline -> stays challenger
    v2  trained on the real labels             clears floor and baseline -> champion
    v3  the shuffled-label model again         worse than v2 -> stays challenger
    v4  labels shuffled for origin=EWR only    close overall, broken for EWR -> blocked

The tests below read that history; each builds on the module fixture, none on another test.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from tasks.core.results import read_result
from tasks.core.tracking import configure_mlflow
from tasks.datasets import get_dataset
from tasks.evaluation.champion import CHALLENGER, CHAMPION, champion_scorer, load_in_process
from tasks.evaluation.evaluate import evaluate_models
from tasks.features.build import build_features
from tasks.features.preprocessor import TabularPreprocessor
from tasks.ingest.plan import IngestSummary
from tasks.release.compress import ExportNet, compress_network, integer_ops
from tasks.release.config import CompressionConfig, ReleaseConfig
from tasks.release.pyfunc import TamperedArtifactError, onnx_proba, session, sha256_file
from tasks.release.register import release_model
from tasks.release.registry import champion_history, registry_transaction, rollback_champion
from tasks.training.config import TrainConfig
from tasks.training.loop import load_network, train_network
from tasks.training.model import predict_proba
from tasks.training.tune import TuneResult
from tests.conftest import AS_OF, HOLDOUT_DAYS, context_for

FLIGHTS = get_dataset("flights")
MODEL_INPUT_COLUMNS = list(FLIGHTS.input_columns)
feature_frame = FLIGHTS.feature_frame

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "release-test"
SMALL = TrainConfig(epochs=2, members=2, hidden=[64, 32], validation_days=7)
FAST = CompressionConfig(latency_repeats=30, prune_finetune_epochs=1)


@dataclass
class Released:
    compression: object
    registration: object
    evaluation: object


@pytest.fixture(scope="module")
def release(nightly_run, landed_lake, tmp_path_factory):
    """Train three small models on the real split and release four versions (see above)."""
    home = tmp_path_factory.mktemp("release")
    tracking_uri = f"sqlite:///{home / 'mlflow.db'}"
    experiment_id = configure_mlflow(tracking_uri, "release-test", str(home / "artifacts"))
    ctx = context_for(
        landed_lake,
        tracking_uri=tracking_uri,
        experiment_id=experiment_id,
        model_name=MODEL,
        seed=3,
    )
    # the days the session's nightly run ingested (its recorded ingest result)
    features = build_features(ctx, read_result(ctx, "ingest", IngestSummary), HOLDOUT_DAYS)
    train = landed_lake.read_parquet(features.train_path)
    rng = np.random.default_rng(0)

    def train_on(name: str, frame: pd.DataFrame):
        path = str(home / f"{name}-train.parquet")
        frame.to_parquet(path)
        return train_network(
            "flights", path, features.preprocessor_path, str(home / name), SMALL, seed=3
        )

    shuffled = train.assign(label=rng.permutation(train["label"].to_numpy()))
    ewr = train["origin"] == "EWR"
    broken_ewr = train.copy()
    broken_ewr.loc[ewr, "label"] = rng.permutation(train.loc[ewr, "label"].to_numpy())
    trained = {
        "shuffled": train_on("shuffled", shuffled),
        "good": train_on("good", train),
        "broken_ewr": train_on("broken_ewr", broken_ewr),
    }
    compressions = {
        name: compress_network(
            FLIGHTS,
            features,
            result,
            str(home / f"{name}-compression"),
            FAST if name == "good" else FAST.model_copy(update={"prune_sparsity": 0}),
            seed=3,
        )
        for name, result in trained.items()
    }

    released = []
    for name, config in (
        ("shuffled", ReleaseConfig()),
        ("good", ReleaseConfig()),
        ("shuffled", ReleaseConfig()),
        # a wide overall margin, so only the slice check can stop it
        ("broken_ewr", ReleaseConfig(auc_margin=0.1)),
    ):
        evaluation = evaluate_models(
            FLIGHTS,
            features,
            trained[name],
            str(home / f"evaluation-{len(released) + 1}"),
            seed=3,
            score_champion=champion_scorer(tracking_uri, MODEL),
        )
        registration = release_model(
            ctx,
            None,
            features,
            TuneResult(config=SMALL, enabled=False),
            trained[name],
            evaluation,
            compressions[name],
            config,
            lineage={"as_of": str(AS_OF), "data_window": f"2013-01-01..{AS_OF}"},
        )
        released.append(Released(compressions[name], registration, evaluation))
    mlflow.set_tracking_uri(tracking_uri)
    return {
        "tracking_uri": tracking_uri,
        "client": MlflowClient(tracking_uri),
        "features": features,
        "trained": trained,
        "released": released,
        "holdout": landed_lake.read_parquet(features.holdout_path),
        "home": home,
    }


@pytest.fixture(autouse=True)
def _this_modules_registry(release):
    """Other modules point MLflow's global tracking URI elsewhere; these tests read ours."""
    mlflow.set_tracking_uri(release["tracking_uri"])


# ----------------------------------------------------------------------------- compression


def test_export_graph_computes_the_same_function_as_the_trained_network(release, tmp_path):
    features, trained = release["features"], release["trained"]["good"]
    pre = TabularPreprocessor.from_json(Path(features.preprocessor_path).read_text())
    codes, numeric = pre.transform(feature_frame(release["holdout"].head(2000)))
    net = load_network(trained.weights_path, trained.net_config_path)
    fp32 = release["released"][1].compression.variants[0]
    assert fp32.name == "fp32"

    with torch.no_grad():
        exported = ExportNet(net)(torch.from_numpy(codes), torch.from_numpy(numeric)).numpy()
    np.testing.assert_allclose(exported, predict_proba(net, codes, numeric), atol=1e-6)
    np.testing.assert_allclose(
        onnx_proba(session(fp32.onnx_path), codes, numeric), exported, atol=1e-5
    )


def test_compression_keeps_auc_within_budget_on_real_data(release):
    compression = release["released"][1].compression  # the model trained on real labels
    by_name = {v.name: v for v in compression.variants}
    chosen = compression.chosen_variant

    assert set(by_name) >= {
        "fp32",
        "int8",
        "pruned-int8",
        "lowrank-fp32",
        "lowrank-int8",
        "distilled-fp32",
        "distilled-int8",
    }
    # the student is one narrow member: smaller than the teacher in the same precision
    assert by_name["distilled-fp32"].size_bytes < by_name["fp32"].size_bytes
    assert by_name["distilled-int8"].integer_ops.get("MatMulInteger", 0) >= 2
    assert chosen.auc_drop <= compression.auc_drop_budget == 0.002
    # the int8 graph really runs integer matmuls (not an fp32 Einsum left untouched)
    assert by_name["int8"].integer_ops.get("MatMulInteger", 0) >= 3
    # this small test network is 40% embeddings, which stay fp32; the default network's
    # ratio is in BENCHMARKS.md
    assert by_name["int8"].size_bytes < 0.7 * by_name["fp32"].size_bytes
    # the kept variant is the smallest of those within budget
    within = [v for v in compression.variants if v.auc_drop <= 0.002]
    assert chosen.size_bytes == min(v.size_bytes for v in within)
    assert compression.size_ratio() > 1
    assert json.loads(Path(compression.table_path).read_text())["chosen"] == chosen.name


# ----------------------------------------------------------------------------- the gate


def test_a_first_model_on_shuffled_labels_is_not_champion(release):
    first = release["released"][0].registration
    client = release["client"]
    version = client.get_model_version(MODEL, first.version)
    checks = {c["name"]: c for c in first.gate}

    # no champion yet is no free pass: the floor and the in-run baseline still gate
    assert first.version == "1" and first.alias == CHALLENGER
    assert checks["auc"]["passed"] and checks["serving"]["passed"]
    assert not checks["floor"]["passed"] and not checks["baseline"]["passed"]
    assert champion_history(client, MODEL)[0] == "2"  # v1 never held @champion
    tags = version.tags
    compression = release["released"][0].compression
    assert tags["compression_variant"] == compression.chosen
    assert tags["artifact_sha256"] == sha256_file(compression.chosen_onnx_path)
    assert int(tags["artifact_size_bytes"]) == compression.chosen_variant.size_bytes
    assert float(tags["latency_ms_batch1"]) > 0 and tags["gate_passed"] == "false"
    assert tags["gate_baseline"].startswith("FAIL") and tags["gate_floor"].startswith("FAIL")
    assert tags["as_of"] == str(AS_OF) and tags["release_state"] == "completed"


def test_a_model_that_clears_floor_and_baseline_becomes_the_first_champion(release):
    good = release["released"][1]
    client = release["client"]
    checks = {c["name"]: c for c in good.registration.gate}

    assert good.registration.alias == CHAMPION, good.registration.reason
    assert good.evaluation.champion_version is None  # v1 never became champion
    assert checks["floor"]["passed"] and checks["baseline"]["passed"]
    served = good.compression.chosen_variant.roc_auc
    assert served >= good.evaluation.baseline["roc_auc"] - ReleaseConfig().baseline_margin
    assert good.registration.previous_champion is None
    assert "previous_champion" not in client.get_model_version(MODEL, "2").tags


def test_worse_challenger_trained_on_shuffled_labels_is_not_promoted(release):
    worse = release["released"][2]
    client = release["client"]
    checks = {c["name"]: c for c in worse.registration.gate}

    assert worse.registration.alias == CHALLENGER
    assert not checks["auc"]["passed"] and checks["serving"]["passed"]
    assert worse.evaluation.champion_version == "2"
    tags = client.get_model_version(MODEL, worse.registration.version).tags
    assert tags["gate_passed"] == "false" and tags["gate_auc"].startswith("FAIL")
    assert "gate failed" in tags["alias_reason"]


def test_slice_regression_blocks_promotion(release):
    broken = release["released"][3]
    checks = {c["name"]: c for c in broken.registration.gate}

    assert checks["auc"]["passed"], checks["auc"]  # within the wide overall margin...
    assert not checks["slices"]["passed"]  # ...but EWR got worse than the champion
    assert "origin=EWR" in checks["slices"]["detail"]
    assert broken.registration.alias == CHALLENGER
    client = release["client"]
    assert str(client.get_model_version_by_alias(MODEL, CHALLENGER).version) == "4"


# ----------------------------------------------------------------------------- registry


def test_rollback_and_promote_commands_move_champion_and_keep_history(release, monkeypatch):
    from typer.testing import CliRunner

    from flows.cli import app
    from tasks.core.settings import get_settings

    client = release["client"]
    assert str(client.get_model_version_by_alias(MODEL, CHAMPION).version) == "2"
    assert champion_history(client, MODEL) == ["2"]
    monkeypatch.setenv("NIGHTSHIFT_MLFLOW_TRACKING_URI", release["tracking_uri"])
    monkeypatch.setenv("NIGHTSHIFT_MODEL_NAME", MODEL)
    get_settings.cache_clear()
    runner = CliRunner()
    try:
        # by hand, a person may promote what the gate refused (v3: shuffled labels)
        promoted = runner.invoke(app, ["promote", "--version", "3"])
        after_promote = str(client.get_model_version_by_alias(MODEL, CHAMPION).version)
        rolled = runner.invoke(app, ["rollback"])
        after_rollback = str(client.get_model_version_by_alias(MODEL, CHAMPION).version)
        missing = runner.invoke(app, ["promote", "--version", "99"])
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()

    assert promoted.exit_code == 0, promoted.output
    assert after_promote == "3" and "v2 -> v3" in promoted.output
    assert rolled.exit_code == 0, rolled.output
    assert after_rollback == "2" and "v3 -> v2" in rolled.output
    assert client.get_model_version(MODEL, "3").tags["demoted_at"]
    assert champion_history(client, MODEL) == ["2"]
    assert missing.exit_code == 1 and "v99" in missing.output


def test_rollback_without_a_previous_champion_is_refused(tmp_path):
    from mlflow.exceptions import MlflowException

    client = MlflowClient(f"sqlite:///{tmp_path / 'empty.db'}")
    client.create_registered_model("lonely")
    with pytest.raises(ValueError, match="no @champion"):
        rollback_champion(client, "lonely")
    with pytest.raises(MlflowException):
        client.get_model_version_by_alias("lonely", CHAMPION)


def test_a_failure_mid_release_leaves_the_registry_as_it_was(release):
    client = release["client"]
    before = {
        a: str(client.get_model_version_by_alias(MODEL, a).version) for a in (CHAMPION, CHALLENGER)
    }
    source = client.get_model_version(MODEL, "2").source

    with (
        pytest.raises(RuntimeError, match="between register and alias"),
        registry_transaction(client, MODEL) as created,
    ):
        made = client.create_model_version(MODEL, source)
        created.append(str(made.version))
        client.set_registered_model_alias(MODEL, CHALLENGER, made.version)
        client.set_registered_model_alias(MODEL, CHAMPION, made.version)
        raise RuntimeError("simulated crash between register and alias")

    after = {
        a: str(client.get_model_version_by_alias(MODEL, a).version) for a in (CHAMPION, CHALLENGER)
    }
    assert after == before
    versions = {str(v.version) for v in client.search_model_versions(f"name='{MODEL}'")}
    assert str(made.version) not in versions


# ----------------------------------------------------------------------------- serving


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_mlflow_models_serve_answers_like_the_in_process_model(release):
    rows = release["holdout"][MODEL_INPUT_COLUMNS].sample(200, random_state=1)
    uri = f"models:/{MODEL}@{CHAMPION}"
    expected = load_in_process(uri).predict(rows)
    port = _free_port()
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",  # the server runs `uvicorn`
        "MLFLOW_TRACKING_URI": release["tracking_uri"],
    }
    server = subprocess.Popen(
        [f"{bin_dir}/mlflow", "models", "serve", "-m", uri, "--env-manager", "local"]
        + ["-h", "127.0.0.1", "-p", str(port), "--workers", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_until_up(f"http://127.0.0.1:{port}/ping", server, timeout=120)
        body = json.dumps(
            {"dataframe_split": json.loads(rows.to_json(orient="split", date_format="iso"))}
        )
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=body.encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = pd.DataFrame(json.loads(response.read())["predictions"])
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()

    np.testing.assert_allclose(
        answer["probability_late"].to_numpy(),
        expected["probability_late"].to_numpy(),
        atol=1e-6,
    )
    assert answer["predicted_late"].tolist() == expected["predicted_late"].tolist()


SERVE_WITHOUT_PREFECT = """
import json, sys
import pandas as pd
# a serving image without the orchestrator: importing any of these fails
for name in ("prefect", "prefect_dask", "distributed", "pyspark", "torch", "great_expectations", "optuna"):
    sys.modules[name] = None
import mlflow
model = mlflow.pyfunc.load_model(sys.argv[1])
rows = pd.read_parquet(sys.argv[2])
answer = model.predict(rows)
import tasks
print(json.dumps({"tasks": tasks.__file__, "proba": answer.iloc[:, 0].tolist()}))
"""


def test_the_registered_model_serves_in_a_process_without_the_orchestrator(release, tmp_path):
    local = mlflow.artifacts.download_artifacts(f"models:/{MODEL}/2", dst_path=str(tmp_path / "m"))
    rows = release["holdout"][MODEL_INPUT_COLUMNS].sample(100, random_state=2)
    before = list(sys.path)
    expected = load_in_process(f"models:/{MODEL}/2").predict(rows)
    # loading in the pipeline's process leaves its import path as it was: processes it
    # starts later (Dask workers) must import the project, not the model's minimal copy
    assert sys.path == before
    rows_path = tmp_path / "rows.parquet"
    rows.to_parquet(rows_path)
    done = subprocess.run(
        [sys.executable, "-c", SERVE_WITHOUT_PREFECT, local, str(rows_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,  # not the repository: the code must come from the artifact
        env={**os.environ, "MLFLOW_TRACKING_URI": release["tracking_uri"]},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["tasks"].startswith(str(local)), answer["tasks"]  # shipped with the model
    np.testing.assert_allclose(answer["proba"], expected["probability_late"], atol=1e-6)
    shipped = sorted(p.relative_to(local).as_posix() for p in Path(local).rglob("*.py"))
    assert not [p for p in shipped if "/training/" in p or "/ingest/" in p or "prefect" in p]
    requirements = (Path(local) / "requirements.txt").read_text()
    assert "onnxruntime==" in requirements
    assert not {"prefect", "torch", "dask", "pyspark"} & {
        line.split("==")[0] for line in requirements.splitlines()
    }


def _wait_until_up(url: str, server: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"mlflow models serve exited: {server.stdout.read().decode()}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"mlflow models serve not up at {url} after {timeout} s")


def test_tampered_artifact_is_refused_with_a_clear_error(release, tmp_path):
    local = Path(
        mlflow.artifacts.download_artifacts(f"models:/{MODEL}/2", dst_path=str(tmp_path / "m"))
    )
    onnx_files = list(local.rglob("*.onnx"))
    assert len(onnx_files) == 1
    intact = load_in_process(str(local))  # loads before tampering
    assert intact is not None
    with open(onnx_files[0], "r+b") as handle:  # flip one byte of the network
        handle.seek(os.path.getsize(onnx_files[0]) // 2)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0xFF]))

    with pytest.raises(TamperedArtifactError, match="'onnx'.*sha256.*refusing to serve"):
        load_in_process(str(local))
    shutil.rmtree(local)


def test_integer_ops_counts_only_integer_kernels(release):
    fp32 = release["released"][1].compression.variants[0]
    assert integer_ops(fp32.onnx_path) == {}
