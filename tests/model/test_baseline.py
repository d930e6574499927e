"""The in-run LightGBM baseline: the bar the network is measured against every night."""

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
    # rounds were chosen by early stopping on the training window's last days
    assert first.validation_auc is not None and 1 <= first.rounds < 3000


@pytest.mark.slow
def test_baseline_on_shuffled_labels_is_no_better_than_chance(window):
    pre, train, holdout = window
    shuffled = train.copy()
    shuffled["label"] = np.random.default_rng(0).permutation(shuffled["label"].to_numpy())
    proba = fit_baseline(FLIGHTS, shuffled, pre, seed=0).predict_proba(holdout)
    assert abs(roc_auc_score(holdout["label"], proba) - 0.5) < 0.04


@pytest.mark.slow
def test_a_tiny_window_skips_the_early_stop_and_says_so(window, caplog):
    pre, train, holdout = window
    tiny = train.sort_values("date").tail(600)
    with caplog.at_level("INFO", logger="nightshift.evaluate"):
        baseline = fit_baseline(FLIGHTS, tiny, pre, seed=0, validation_days=1)
    assert baseline.validation_auc is None and baseline.rounds == 200
    assert "no early stop" in caplog.text
    assert baseline.predict_proba(holdout).shape == (len(holdout),)
