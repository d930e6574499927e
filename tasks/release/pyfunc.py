"""The served model: raw clean rows in, the dataset's probability and decision out.

This module is what the registered MLflow model executes, and it ships with only what
serving needs (`SERVING_MODULES`): itself, the preprocessing and the dataset specs. It
imports pandas, numpy, onnxruntime and mlflow, never Prefect, Dask, Spark or torch, so a
serving image needs none of them. Every artifact is checked against the sha256 manifest
written at registration before it is used.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

INPUT_NAMES = ["codes", "numeric"]
OUTPUT_NAME = "probability"
# onnxruntime threads per loaded model: a scoring server runs one model per worker process.
SERVING_THREADS = 1
# Inputs of up to this many rows take the numpy path (the spec's `derive_arrays`, then
# `transform_arrays`); larger ones, and datasets without `derive_arrays`, the pandas path.
# Both give the same features bit for bit (tests/unit/features/test_fast_preprocessing.py).
FAST_PATH_MAX_ROWS = 4096
# The package files the registered model carries (relative to the repository root).
SERVING_MODULES = (
    "tasks/__init__.py",
    "tasks/datasets/*.py",
    "tasks/features/__init__.py",
    "tasks/features/preprocessor.py",
    "tasks/release/__init__.py",
    "tasks/release/pyfunc.py",
)


class TamperedArtifactError(RuntimeError):
    """A model artifact no longer matches the sha256 recorded when it was registered."""


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def session(path: str, threads: int = 1):
    """An onnxruntime CPU session with a fixed thread count (latency is comparable)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def onnx_proba(sess, codes: np.ndarray, numeric: np.ndarray) -> np.ndarray:
    """Probabilities from an exported network, in row order, as float64."""
    (out,) = sess.run(None, {"codes": codes.astype(np.int64), "numeric": numeric})
    return out.astype(np.float64)


def tree_matrix(codes: np.ndarray, numeric: np.ndarray) -> np.ndarray:
    """The blend's tree reads the network's own inputs: codes first, then numerics.

    Median-filled, scaled numerics with missing indicators carry the same information as the
    raw columns for a tree (splits are invariant to monotone scaling), so the served model
    computes one set of inputs for both halves of a blend.
    """
    return np.hstack([codes.astype(np.float64), numeric.astype(np.float64)])


def tree_proba(booster, codes: np.ndarray, numeric: np.ndarray) -> np.ndarray:
    """P(label = 1) from the blend's LightGBM booster, one thread (a serving worker's share)."""
    return np.asarray(booster.predict(tree_matrix(codes, numeric), num_threads=1), np.float64)


def _logit(p: np.ndarray) -> np.ndarray:
    clipped = np.clip(p, 1e-7, 1 - 1e-7)
    return np.log(clipped) - np.log1p(-clipped)


def blend_proba(network: np.ndarray, tree: np.ndarray, weight: float) -> np.ndarray:
    """sigmoid(w · logit(network) + (1 − w) · logit(tree)): w = 1 is the network alone.

    Averaged in logit space, where both models' scores are additive evidence; averaging
    probabilities would squash the confident ends of the better-calibrated model.
    """
    z = weight * _logit(network) + (1.0 - weight) * _logit(tree)
    return 1.0 / (1.0 + np.exp(-z))


def load_tree(path: str):
    """The blend's booster from its LightGBM text model file (no pickle is ever loaded)."""
    import lightgbm

    return lightgbm.Booster(model_file=path)


def verify_artifacts(artifacts: dict[str, str], manifest: dict[str, str]) -> None:
    """Raise TamperedArtifactError naming the artifact whose bytes differ from the manifest."""
    for name, expected in manifest.items():
        if name not in artifacts:
            raise TamperedArtifactError(f"artifact {name!r} listed in the manifest is missing")
        actual = sha256_file(artifacts[name])
        if actual != expected:
            raise TamperedArtifactError(
                f"artifact {name!r} ({artifacts[name]}) has sha256 {actual}, but "
                f"{expected} was recorded at registration; refusing to serve a modified model"
            )


class ServedModel(mlflow.pyfunc.PythonModel):
    """Pyfunc: the dataset's raw clean rows in; its probability and decision columns out.

    Serves the compressed ONNX network (onnxruntime) after the model's own fitted
    preprocessing and the dataset spec's feature derivation; when the release chose the
    blend, the network's score is blended with a LightGBM tree's on the same inputs, with
    the weight and threshold chosen on the validation days (`serving.json`).
    """

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        from tasks.datasets import get_dataset
        from tasks.features.preprocessor import TabularPreprocessor

        artifacts = context.artifacts
        if "manifest" not in artifacts:
            raise TamperedArtifactError("model has no sha256 manifest; refusing to serve it")
        verify_artifacts(artifacts, json.loads(Path(artifacts["manifest"]).read_text()))
        serving = json.loads(Path(artifacts["serving"]).read_text())
        self.spec = get_dataset(serving["dataset"])
        self.threshold = serving["threshold"]
        self.preprocessor = TabularPreprocessor.from_json(
            Path(artifacts["preprocessor"]).read_text()
        )
        self.session = session(artifacts["onnx"], threads=SERVING_THREADS)
        self.tree, self.blend_weight = None, None
        if serving.get("blend_weight") is not None:
            if "tree" not in artifacts:
                raise TamperedArtifactError("serving.json names a blend but the tree is missing")
            self.tree = load_tree(artifacts["tree"])
            self.blend_weight = float(serving["blend_weight"])

    def score(self, codes: np.ndarray, numeric: np.ndarray) -> np.ndarray:
        """The served probability for preprocessed inputs: network, or network + tree."""
        proba = onnx_proba(self.session, codes, numeric)
        if self.tree is not None:
            proba = blend_proba(proba, tree_proba(self.tree, codes, numeric), self.blend_weight)
        return proba

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict | None = None
    ) -> pd.DataFrame:
        rows = model_input.reset_index(drop=True)
        if self.spec.derive_arrays is not None and len(rows) <= FAST_PATH_MAX_ROWS:
            proba, decision = self.predict_columns(frame_arrays(rows))
        else:
            codes, numeric = self.preprocessor.transform(self.spec.feature_frame(rows))
            proba = self.score(codes, numeric)
            decision = proba >= self.threshold
        return pd.DataFrame({self.spec.output: proba, self.spec.decision: decision})

    def predict_columns(self, columns: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(probability float64, decision bool) for one array per input column.

        What `predict` runs on a small frame and what the model service runs on a parsed
        request, so both answer from the same code: no pandas frame is built for a row.
        """
        n = len(next(iter(columns.values())))
        if self.spec.derive_arrays is not None and n <= FAST_PATH_MAX_ROWS:
            codes, numeric = self.preprocessor.transform_arrays(self.spec.feature_arrays(columns))
        else:
            frame = pd.DataFrame(dict(columns))
            codes, numeric = self.preprocessor.transform(self.spec.feature_frame(frame))
        proba = self.score(codes, numeric)
        return proba, proba >= self.threshold


def frame_arrays(rows: pd.DataFrame) -> dict[str, np.ndarray]:
    """One numpy array per column of a frame: pandas' nullable columns with None / NaN."""
    out: dict[str, np.ndarray] = {}
    for name in rows.columns:
        column = rows[name]
        if isinstance(column.dtype, pd.StringDtype):
            out[name] = column.to_numpy(dtype=object, na_value=None)
        elif (
            isinstance(column.dtype, pd.api.extensions.ExtensionDtype)
            and column.dtype.kind in "iuf"
        ):
            out[name] = column.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            out[name] = column.to_numpy()
    return out
