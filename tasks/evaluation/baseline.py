"""The in-run baseline: a gradient-boosted tree on the network's own features.

The baseline is the bar every night's network is compared with (summary, card, gate), so it
must be strong, or the comparison flatters the network, and blind to the holdout, or the
comparison is not like with like. It is the blend's LightGBM tree (`blend.TREE_PARAMS`:
400 fixed rounds at rate 0.05, no early stopping) fitted on the whole training window: the
same features (the preprocessor's codes and scaled numerics), the same split (the
training window; the holdout is never passed in), the same run. When the blend wins on
validation this very tree is the served blend's tree (`evaluate` fits it once for both),
so the gate's `baseline` check asks whether the served model beats its own tree alone.

It replaced sklearn's HistGradientBoosting (300 iterations, its own early stopping on a
random 10 % of the rows; issue 14, item 4) because it is at least as good on the same
split (BENCHMARKS.md §8: ≥ HistGradientBoosting for every seed tried; the one-new-day
section re-measures both nights) and because it is a fit the night makes anyway.
LightGBM early-stopped on the window's last 14 days was not adopted: its rounds depended
on the seed (30 to 177; §8).

Its threads are capped like the blend's other tree (`NIGHTSHIFT_TREE_THREADS`, one by
default); the model does not depend on the thread count (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from tasks.datasets.spec import DatasetSpec
from tasks.evaluation.blend import TREE_ROUNDS, fit_tree
from tasks.features.preprocessor import TabularPreprocessor

BASELINE_NAME = "LightGBM"


@dataclass
class Baseline:
    """A fitted baseline (a LightGBM booster) and how many boosting rounds it has."""

    booster: object
    preprocessor: TabularPreprocessor
    spec: DatasetSpec
    rounds: int

    def predict_proba(self, rows: pd.DataFrame) -> np.ndarray:
        """P(label = 1) for raw rows."""
        from tasks.release.pyfunc import tree_proba

        codes, numeric = self.preprocessor.transform(self.spec.feature_frame(rows))
        return tree_proba(self.booster, codes, numeric)


def fit_baseline(
    spec: DatasetSpec, train: pd.DataFrame, preprocessor: TabularPreprocessor, seed: int
) -> Baseline:
    """Fit the baseline on the training window only (the holdout is never passed in)."""
    codes, numeric = preprocessor.transform(spec.feature_frame(train))
    booster = fit_tree(codes, numeric, train["label"].to_numpy(), seed)
    return Baseline(booster, preprocessor, spec, TREE_ROUNDS)
