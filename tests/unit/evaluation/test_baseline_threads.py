"""The in-run baseline's thread cap (NIGHTSHIFT_TREE_THREADS) changes its speed, never its model."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from tasks.core.lake import Lake
from tasks.datasets import get_dataset
from tasks.evaluation.baseline import fit_baseline
from tasks.features.build import preprocessor_for, read_clean
from tasks.ingest.pandas_engine import clean_day
from tasks.landing.simulator import land_days


@pytest.fixture(scope="module")
def window(tmp_path_factory):
    """Real cleaned flights of 6 days: the first 4 to fit on, the last 2 to score."""
    spec = get_dataset("flights")
    lake = Lake(str(tmp_path_factory.mktemp("baseline-threads") / "lake"))
    days = [spec.first_day + timedelta(days=i) for i in range(6)]
    land_days(lake, spec, days[0], days[-1])
    dims = lake.landing_dimensions(spec.name, days[0])
    for day in days:
        clean_day(lake.root, spec.name, day, dims)
    train = read_clean(lake, spec.name, spec.fact.name, days[:4])
    holdout = read_clean(lake, spec.name, spec.fact.name, days[4:])
    for frame in (train, holdout):
        frame["label"] = spec.label(frame)
    train = train.loc[train["label"].notna()].reset_index(drop=True)
    pre = preprocessor_for(spec)
    pre.min_count = 3
    pre.fit(spec.feature_frame(train))
    return spec, train, holdout, pre


def test_the_baseline_is_the_same_model_on_one_thread_or_two(window, monkeypatch):
    spec, train, holdout, pre = window
    scores = {}
    for threads in ("1", "2"):
        monkeypatch.setenv("NIGHTSHIFT_TREE_THREADS", threads)
        baseline = fit_baseline(spec, train, pre, seed=3)
        scores[threads] = (baseline.rounds, baseline.predict_proba(holdout))
    assert scores["1"][0] == scores["2"][0]
    np.testing.assert_array_equal(scores["1"][1], scores["2"][1])
    assert scores["1"][1].std() > 0  # a model that learned something, not a constant
