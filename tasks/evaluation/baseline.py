"""The in-run baseline: a gradient-boosted tree on the network's own features.

The baseline is the bar every night's network is compared with (summary, card, gate), so it
must be (a) strong, or the comparison flatters the network, (b) cheap, or it dominates the
evaluate stage, and (c) blind to the holdout, or the comparison is not like with like.

LightGBM with early stopping on the last `validation_days` of the training window (the
same days the network early-stops on) meets all three. Measured side by side on the
December 2013 holdout (BENCHMARKS.md §8), it scores a little higher than the
HistGradientBoosting baseline it replaced (0.7172 vs 0.7157 over 3 seeds, with a quarter of
its spread) in about the same time. After early stopping it is refit on the whole training
window with the chosen number of rounds, so the most recent days, which matter most for
the next month, are not thrown away.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from tasks.datasets.spec import DatasetSpec
from tasks.features.preprocessor import TabularPreprocessor

if TYPE_CHECKING:
    import lightgbm as lgb

logger = logging.getLogger("nightshift.evaluate")

BASELINE_NAME = "LightGBM"

# Engineering defaults, fixed once from the side-by-side runs of benchmarks/baseline.py
# (BENCHMARKS.md §8): learning rate 0.05 gained +0.0007 AUC for twice the time, 0.2 lost
# 0.006. Per run only the number of rounds is chosen, on the validation days.
PARAMS = {
    "learning_rate": 0.1,
    "num_leaves": 31,
    "min_child_samples": 50,
    "max_rounds": 3000,
    "patience": 50,
}


@dataclass
class Baseline:
    """A fitted baseline and how it was fitted (rounds chosen on the validation days)."""

    model: lgb.LGBMClassifier  # noqa: F821 (imported lazily: reports only need the name)
    preprocessor: TabularPreprocessor
    spec: DatasetSpec
    rounds: int
    validation_auc: float | None

    def encode(self, rows: pd.DataFrame) -> pd.DataFrame:
        """The network's features, categoricals as the preprocessor's integer codes."""
        return encode_for_trees(self.spec, self.preprocessor, rows)

    def predict_proba(self, rows: pd.DataFrame) -> np.ndarray:
        """P(label = 1) for raw rows."""
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


def _validation_mask(rows: pd.DataFrame, validation_days: int) -> np.ndarray:
    dates = pd.to_datetime(rows["date"])
    return (dates >= dates.max() - timedelta(days=validation_days - 1)).to_numpy()


def fit_baseline(
    spec: DatasetSpec,
    train: pd.DataFrame,
    preprocessor: TabularPreprocessor,
    seed: int,
    validation_days: int = 14,
    threads: int | None = None,
) -> Baseline:
    """Early-stop on the last `validation_days` of `train`, then refit on all of it.

    With too few rows outside the validation days (a tiny test window) the early stop is
    skipped and a fixed, small number of rounds is used instead, and the log says so.
    """
    import lightgbm as lgb

    x, y = encode_for_trees(spec, preprocessor, train), train["label"].to_numpy().astype(int)
    categorical = list(preprocessor.categorical)
    params = {
        "learning_rate": PARAMS["learning_rate"],
        "num_leaves": PARAMS["num_leaves"],
        "min_child_samples": PARAMS["min_child_samples"],
        "random_state": seed,
        "n_jobs": threads or 0,
        "verbose": -1,
    }
    is_validation = _validation_mask(train, validation_days)
    fit_rows, validation_rows = ~is_validation, is_validation
    rounds, validation_auc = 200, None
    if fit_rows.sum() >= 1000 and len(np.unique(y[validation_rows])) == 2:
        stopper = lgb.LGBMClassifier(n_estimators=PARAMS["max_rounds"], **params)
        stopper.fit(
            x[fit_rows],
            y[fit_rows],
            eval_X=(x[validation_rows],),
            eval_y=(y[validation_rows],),
            eval_metric="auc",
            categorical_feature=categorical,
            callbacks=[lgb.early_stopping(PARAMS["patience"], verbose=False)],
        )
        rounds = max(int(stopper.best_iteration_ or PARAMS["max_rounds"]), 1)
        validation_auc = float(stopper.best_score_["valid_0"]["auc"])
    else:
        logger.info(
            "baseline: %d rows before the last %d day(s); no early stop, %d rounds",
            int(fit_rows.sum()),
            validation_days,
            rounds,
        )
    model = lgb.LGBMClassifier(n_estimators=rounds, **params)
    model.fit(x, y, categorical_feature=categorical)
    return Baseline(model, preprocessor, spec, rounds, validation_auc)
