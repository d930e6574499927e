"""One registered version, loaded for serving: the registered pyfunc's own code and files.

A version is downloaded from the registry into a folder of its own, every file is checked
against the digests the registry holds for the version (`tasks.release.integrity`), then
against the sha256 manifest inside the artifact (`verify_artifacts`, inside
`ServedModel.load_context`), and it answers its own input example before it may serve.
Scoring calls `ServedModel.predict_columns` directly (what `ServedModel.predict` runs on
inputs of up to 4,096 rows): the same preprocessing and onnxruntime session as
`mlflow.pyfunc.load_model(...).predict`, without MLflow's per-call schema enforcement or
a pandas frame (the service validates requests itself, see `schema.py`).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.release.pyfunc import ServedModel, TamperedArtifactError
from tasks.serving.schema import Column, rows_from_split


class VersionRefused(RuntimeError):
    """A version that must not serve: tampered files, a broken artifact or a failed smoke test."""

    def __init__(self, version: str, reason: str) -> None:
        super().__init__(f"v{version} refused: {reason}")
        self.version = version
        self.reason = reason


@dataclass
class LoadedVersion:
    """A registered version ready to answer: its scorer, its input schema and output names."""

    name: str
    version: str
    model: ServedModel
    columns: tuple[Column, ...]
    outputs: tuple[str, str]
    path: str
    loaded_at: float = field(default_factory=time.time)

    def predict(self, rows: pd.DataFrame) -> pd.DataFrame:
        """The model's output frame (probability, decision) for validated input rows."""
        return self.model.predict(None, rows)

    def score(self, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The model's outputs for a request's checked columns, without a pandas frame.

        `ServedModel.predict_columns`: the code `predict` itself runs on small inputs.
        """
        proba, decision = self.model.predict_columns(columns)
        return {self.model.spec.output: proba, self.model.spec.decision: decision}

    def discard(self) -> None:
        """Remove the downloaded files (after the version stopped serving)."""
        shutil.rmtree(self.path, ignore_errors=True)


def _signature_columns(mlmodel: dict) -> tuple[Column, ...]:
    inputs = json.loads(mlmodel["signature"]["inputs"])
    return tuple(Column(c["name"], c["type"], bool(c.get("required", True))) for c in inputs)


def load_from_dir(name: str, version: str, path: str) -> LoadedVersion:
    """Build the scorer of a downloaded model folder; VersionRefused when it must not serve."""
    import mlflow
    import yaml

    root = Path(path)
    try:
        mlmodel = yaml.safe_load((root / "MLmodel").read_text())
        flavor = mlmodel["flavors"]["python_function"]
        artifacts = {k: str(root / v["path"]) for k, v in flavor["artifacts"].items()}
        columns = _signature_columns(mlmodel)
        outputs = tuple(c["name"] for c in json.loads(mlmodel["signature"]["outputs"]))
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError) as error:
        raise VersionRefused(version, f"not a nightshift served model: {error!r}") from None
    model = ServedModel()
    try:
        model.load_context(mlflow.pyfunc.PythonModelContext(artifacts, model_config={}))
    except TamperedArtifactError as error:
        raise VersionRefused(version, f"integrity check failed: {error}") from None
    except Exception as error:  # a broken file must never take the service down
        raise VersionRefused(version, f"could not load: {error!r}") from None
    loaded = LoadedVersion(name, str(version), model, columns, outputs[:2], str(root))
    smoke_test(loaded, root)
    return loaded


def smoke_test(loaded: LoadedVersion, root: Path) -> None:
    """Score the model's own input example: one finite probability in [0, 1] per row."""
    try:
        example = json.loads((root / "serving_input_example.json").read_text())
        rows = rows_from_split(example["dataframe_split"], loaded.columns)
        answer = loaded.predict(rows)
        proba = answer[loaded.outputs[0]].to_numpy(dtype=np.float64)
    except Exception as error:
        raise VersionRefused(loaded.version, f"smoke test failed: {error!r}") from None
    if len(proba) != len(rows) or not np.all(np.isfinite(proba)):
        raise VersionRefused(loaded.version, "smoke test failed: non-finite or missing scores")
    if np.any((proba < 0) | (proba > 1)):
        raise VersionRefused(loaded.version, "smoke test failed: probabilities outside [0, 1]")


def download_and_load(tracking_uri: str, name: str, version: str, cache_dir: str) -> LoadedVersion:
    """Download `models:/<name>/<version>` into a fresh folder of `cache_dir` and load it."""
    import tempfile

    from tasks.release.integrity import download_verified

    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    target = tempfile.mkdtemp(prefix=f"{name}-v{version}-", dir=cache_dir)
    try:
        local = download_verified(tracking_uri, name, str(version), target)
        loaded = load_from_dir(name, str(version), local)
    except VersionRefused:
        shutil.rmtree(target, ignore_errors=True)
        raise
    except TamperedArtifactError as error:
        shutil.rmtree(target, ignore_errors=True)
        raise VersionRefused(str(version), f"integrity check failed: {error}") from None
    except Exception as error:
        shutil.rmtree(target, ignore_errors=True)
        raise VersionRefused(str(version), f"download failed: {error!r}") from None
    loaded.path = target
    return loaded
