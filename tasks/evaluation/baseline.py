"""The in-run baseline: a gradient-boosted tree on the network's own features.

The baseline is the bar every night's network is compared with (summary, card, gate), so it
must be strong, or the comparison flatters the network, and blind to the holdout, or the
comparison is not like with like. sklearn's HistGradientBoosting (300 iterations, its own
early stopping on a random 10 % of the training rows) is both.

LightGBM was measured as a replacement (issue 14, BENCHMARKS.md §8) and is not used yet:
early-stopped on the training window's last 14 days, its number of rounds depends on the
seed (30 rounds and holdout AUC 0.7097 with the default seed 42, 177 rounds and 0.7169
with seed 0), because November's last days are a noisy early-stopping signal for December.

Its OpenMP threads are capped like the blend's tree (`NIGHTSHIFT_TREE_THREADS`, one by
default): on a loaded 2-core box the all-core fit took 197 s (BENCHMARKS.md §20). The
fitted model does not depend on the thread count (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from threadpoolctl import threadpool_limits

from tasks.datasets.spec import DatasetSpec
from tasks.evaluation.blend import tree_threads
from tasks.features.preprocessor import TabularPreprocessor

BASELINE_NAME = "HistGradientBoosting"
MAX_ITER = 300


@dataclass
class Baseline:
    """A fitted baseline and how many boosting rounds it kept."""

    model: HistGradientBoostingClassifier
    preprocessor: TabularPreprocessor
    spec: DatasetSpec
    rounds: int

    def encode(self, rows: pd.DataFrame) -> pd.DataFrame:
        """The network's features, categoricals as the preprocessor's integer codes."""
        return encode_for_trees(self.spec, self.preprocessor, rows)

    def predict_proba(self, rows: pd.DataFrame) -> np.ndarray:
        """P(label = 1) for raw rows."""
        with threadpool_limits(limits=tree_threads(), user_api="openmp"):
            return self.model.predict_proba(self.encode(rows))[:, 1]


def encode_for_trees(
    spec: DatasetSpec, preprocessor: TabularPreprocessor, rows: pd.DataFrame
) -> pd.DataFrame:
    """Same features and vocabularies as the network, so the comparison is like with like."""
    features = spec.feature_frame(rows)
    codes, _ = preprocessor.transform(features)
    encoded = features[preprocessor.numeric].astype("float64").copy()
    for i, column in enumerate(preprocessor.categorical):
        encoded[column] = codes[:, i]
    return encoded


def fit_baseline(
    spec: DatasetSpec, train: pd.DataFrame, preprocessor: TabularPreprocessor, seed: int
) -> Baseline:
    """Fit the baseline on the training window only (the holdout is never passed in)."""
    model = HistGradientBoostingClassifier(
        categorical_features=list(preprocessor.categorical), max_iter=MAX_ITER, random_state=seed
    )
    with threadpool_limits(limits=tree_threads(), user_api="openmp"):
        model.fit(encode_for_trees(spec, preprocessor, train), train["label"].to_numpy())
    return Baseline(model, preprocessor, spec, int(model.n_iter_))
