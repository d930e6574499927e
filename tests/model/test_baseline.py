"""The in-run gradient-boosting baseline: the bar the network is measured against."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from tasks.datasets import get_dataset
from tasks.evaluation.baseline import fit_baseline
from tasks.features.preprocessor import TabularPreprocessor
from tests.conftest import AS_OF

FLIGHTS = get_dataset("flights")


@pytest.fixture(scope="module")
def window(nightly_run, landed_lake):
    features = landed_lake.run_dir("flights", AS_OF, "features")
    pre = TabularPreprocessor.from_json(
        landed_lake.fs.cat(f"{features}/preprocessor.json").decode()
    )
    train = landed_lake.read_parquet(f"{features}/train.parquet")
    holdout = landed_lake.read_parquet(f"{features}/holdout.parquet")
    return pre, train, holdout


@pytest.mark.slow
def test_baseline_learns_real_signal_and_is_reproducible(window):
    pre, train, holdout = window
    first = fit_baseline(FLIGHTS, train, pre, seed=7)
    again = fit_baseline(FLIGHTS, train, pre, seed=7)
    proba = first.predict_proba(holdout)
    np.testing.assert_array_equal(proba, again.predict_proba(holdout))
    assert roc_auc_score(holdout["label"], proba) > 0.62


@pytest.mark.slow
def test_baseline_on_shuffled_labels_is_no_better_than_chance(window):
    pre, train, holdout = window
    shuffled = train.copy()
    shuffled["label"] = np.random.default_rng(0).permutation(shuffled["label"].to_numpy())
    proba = fit_baseline(FLIGHTS, shuffled, pre, seed=0).predict_proba(holdout)
    assert abs(roc_auc_score(holdout["label"], proba) - 0.5) < 0.04
