"""The evaluate stage's trees: the thread cap (NIGHTSHIFT_TREE_THREADS) and fitting the
baseline beside the blend's tree change their speed, never their models; the blend serves
the baseline's own tree."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import tasks.evaluation.trees as trees_module
from tasks.core.lake import Lake
from tasks.datasets import get_dataset
from tasks.evaluation.baseline import fit_baseline
from tasks.evaluation.blend import concurrent_tree_fits
from tasks.evaluation.evaluate import fit_trees
from tasks.evaluation.trees import BASELINE_TREE_FILE, PendingTrees, fit_night_trees
from tasks.features.build import preprocessor_for, read_clean
from tasks.release.pyfunc import load_tree, tree_proba
from tasks.training.model import NetConfig, TabularNet
from tests.conftest import clean_real_days


@pytest.fixture(scope="module")
def window(tmp_path_factory):
    """Real cleaned flights of 6 days: the first 4 to fit on, the last 2 to score."""
    spec = get_dataset("flights")
    lake = Lake(str(tmp_path_factory.mktemp("baseline-threads") / "lake"))
    days = clean_real_days(lake, spec.name, 6)
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


def test_the_blend_serves_the_baseline_tree_fitted_beside_its_own(window, monkeypatch, tmp_path):
    spec, train, holdout, pre = window
    torch.manual_seed(0)  # an untrained network: the tree beats it, so the blend wins
    net = TabularNet(NetConfig(pre.cardinalities, pre.n_numeric, hidden=[8], members=1))
    trained = SimpleNamespace(validation_days=1)
    codes, numeric = pre.transform(spec.feature_frame(holdout))
    runs = {}
    # one thread per tree: the two fits run at once on a 2-core box; two threads: one
    # after the other (two fits of two threads would oversubscribe it)
    for threads in ("1", "2"):
        monkeypatch.setenv("NIGHTSHIFT_TREE_THREADS", threads)
        out = tmp_path / threads
        baseline, choice = fit_trees(spec, train, pre, net, trained, str(out), seed=3)
        runs[threads] = (concurrent_tree_fits(), baseline, choice, out)
    if len(os.sched_getaffinity(0)) >= 2:
        assert runs["1"][0] == 2 and runs["2"][0] == 1

    for _, baseline, choice, out in runs.values():
        assert choice is not None and choice.is_blend
        # the served tree is the baseline's (the window), not the fitting-days tree
        assert Path(choice.tree_path).read_bytes() == (out / "baseline_tree.txt").read_bytes()
        assert choice.validation_tree_path == str(out / "blend_tree.txt")
        fitting_days = tree_proba(load_tree(choice.validation_tree_path), codes, numeric)
        assert not np.array_equal(fitting_days, tree_proba(baseline, codes, numeric))
    # side by side or one after the other: the same trees, the same choice
    (_, one, choice_one, out_one), (_, two, choice_two, out_two) = runs.values()
    np.testing.assert_array_equal(tree_proba(one, codes, numeric), tree_proba(two, codes, numeric))
    assert one.dump_model()["tree_info"] == two.dump_model()["tree_info"]
    assert choice_one.weight == choice_two.weight
    assert choice_one.blend_validation_auc == choice_two.blend_validation_auc
    fitted = [load_tree(str(out / "blend_tree.txt")) for out in (out_one, out_two)]
    assert fitted[0].dump_model()["tree_info"] == fitted[1].dump_model()["tree_info"]


def test_trees_fitted_before_the_network_are_the_ones_evaluate_would_fit(window, tmp_path):
    """The night fits its trees while the network trains (`fit_night_trees`, in a thread
    at the lowest priority); evaluate then fits none and decides exactly as when it fits
    them itself."""
    spec, train, holdout, pre = window
    torch.manual_seed(0)
    net = TabularNet(NetConfig(pre.cardinalities, pre.n_numeric, hidden=[8], members=1))
    trained = SimpleNamespace(validation_days=1)
    features = SimpleNamespace(
        train_path=str(tmp_path / "train.parquet"),
        preprocessor_path=str(tmp_path / "preprocessor.json"),
    )
    train.to_parquet(features.train_path)
    Path(features.preprocessor_path).write_text(pre.to_json())

    priorities = []

    def fit_in_a_thread_of_its_own(out_dir: str):
        real_fit = trees_module.fit_tree

        def observed(*fit):  # the thread each fit runs in, and its nice value
            priorities.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
            return real_fit(*fit)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(trees_module, "fit_tree", observed)
            with ThreadPoolExecutor(max_workers=1) as pool:
                return pool.submit(fit_night_trees, spec, features, 1, out_dir, 3).result(
                    timeout=300
                )

    own_nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    prefit = fit_in_a_thread_of_its_own(str(tmp_path / "early"))
    assert priorities == [19, 19]  # both fits: the weighing tree and the baseline
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == own_nice
    assert prefit.weighing is not None and prefit.weighing.fit_until < str(train["date"].max())

    early = fit_trees(spec, train, pre, net, trained, str(tmp_path / "early"), 3, prefit=prefit)
    inline = fit_trees(spec, train, pre, net, trained, str(tmp_path / "inline"), 3)
    (base_early, choice_early), (base_inline, choice_inline) = early, inline
    assert base_early.dump_model()["tree_info"] == base_inline.dump_model()["tree_info"]
    assert choice_early.weight == choice_inline.weight
    assert choice_early.blend_validation_auc == choice_inline.blend_validation_auc
    assert choice_early.validation_tree_source == choice_inline.validation_tree_source
    assert choice_early.validation_tree_fit_until == choice_inline.validation_tree_fit_until
    for choice in (choice_early, choice_inline):
        served = Path(choice.tree_path)  # the window's tree: the baseline's
        assert served.read_bytes() == (served.parent / BASELINE_TREE_FILE).read_bytes()
    assert Path(choice_early.validation_tree_path).read_bytes() == (
        Path(choice_inline.validation_tree_path).read_bytes()
    )

    # still being fitted when evaluate needs them: waited for, the same trees; a failed
    # fit fails evaluate with the fit's own error
    early_dir, failed_dir = str(tmp_path / "early"), str(tmp_path / "failed")
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = PendingTrees(pool.submit(lambda: prefit))
        _, waited = fit_trees(spec, train, pre, net, trained, early_dir, 3, prefit=pending)
        failed = PendingTrees(pool.submit(Path(tmp_path / "no-such-tree.txt").read_text))
        with pytest.raises(FileNotFoundError, match="no-such-tree"):
            fit_trees(spec, train, pre, net, trained, failed_dir, 3, prefit=failed)
    assert (waited.weight, waited.tree_path) == (choice_early.weight, choice_early.tree_path)

    # trained on other validation days than the trees were fitted for: evaluate refits
    other = SimpleNamespace(validation_days=2)
    _, refit = fit_trees(spec, train, pre, net, other, str(tmp_path / "early"), 3, prefit=prefit)
    _, fresh = fit_trees(spec, train, pre, net, other, str(tmp_path / "fresh"), 3)
    assert refit.validation_tree_fit_until == fresh.validation_tree_fit_until
    assert refit.validation_tree_fit_until < choice_inline.validation_tree_fit_until
