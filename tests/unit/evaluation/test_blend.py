"""The blend's arithmetic and its choice on validation rows (synthetic data, real LightGBM)."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from tasks.evaluation.blend import WEIGHT_GRID, ReusedTree, choose_blend, choose_weight
from tasks.evaluation.evaluate import blend_on_validation
from tasks.release.pyfunc import blend_proba, load_tree, tree_proba


def _signals(n: int, seed: int):
    """Labels from two independent signals; each model sees one, plus noise."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=n), rng.normal(size=n)
    labels = (a + b + rng.normal(scale=1.0, size=n) > 0).astype(int)
    sigmoid = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    return labels, sigmoid(a), sigmoid(b)


def test_the_weight_ends_are_the_two_models_alone():
    rng = np.random.default_rng(0)
    network, tree = rng.uniform(0.01, 0.99, 50), rng.uniform(0.01, 0.99, 50)
    np.testing.assert_allclose(blend_proba(network, tree, 1.0), network, rtol=1e-9)
    np.testing.assert_allclose(blend_proba(network, tree, 0.0), tree, rtol=1e-9)
    assert WEIGHT_GRID[0] == 0.0 and WEIGHT_GRID[-1] == 1.0


def test_two_complementary_models_get_an_inner_weight_that_beats_both():
    labels, network, tree = _signals(20_000, 1)
    weight, aucs = choose_weight(labels, network, tree)
    assert 0.2 < weight < 0.8
    assert aucs[weight] > max(aucs[0.0], aucs[1.0]) + 0.02


def test_a_tree_that_knows_nothing_gets_no_weight():
    labels, network, _ = _signals(20_000, 2)
    constant = np.full(len(labels), 0.3)
    weight, _ = choose_weight(labels, network, constant)
    assert weight == 1.0  # ties (the constant adds nothing anywhere) go to the network


def _arrays(n: int, seed: int):
    """Model inputs: 2 code columns and 3 numeric ones; the label depends on a code and x0."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 6, size=(n, 2)).astype(np.int64)
    numeric = rng.normal(size=(n, 3)).astype(np.float32)
    logit = 0.8 * (codes[:, 0] >= 3) + 0.9 * numeric[:, 0] - 0.5
    labels = (rng.uniform(size=n) < 1 / (1 + np.exp(-logit))).astype(int)
    return codes, numeric, labels


def test_choose_blend_fits_a_tree_it_can_reload_and_blends_when_the_tree_helps(tmp_path):
    codes, numeric, labels = _arrays(6_000, 3)
    fit, val = slice(0, 4_000), slice(4_000, None)
    # a network that saw only the numeric signal: the tree adds the categorical one
    network_val = 1 / (1 + np.exp(-(0.9 * numeric[val, 0] - 0.1)))
    choice = choose_blend(
        codes[fit],
        numeric[fit],
        labels[fit],
        codes[val],
        numeric[val],
        labels[val],
        network_val,
        str(tmp_path / "tree.txt"),
        seed=0,
    )
    assert choice.candidate == "blend" and choice.is_blend
    assert choice.blend_validation_auc > choice.network_validation_auc
    assert 0.0 <= choice.weight < 1.0
    assert choice.validation_rows == 2_000
    tree = load_tree(choice.tree_path)  # the text model round-trips, bit for bit
    served = blend_proba(network_val, tree_proba(tree, codes[val], numeric[val]), choice.weight)
    assert roc_auc_score(labels[val], served) == pytest.approx(
        choice.blend_validation_auc, abs=1e-6
    )
    again = choose_blend(
        codes[fit],
        numeric[fit],
        labels[fit],
        codes[val],
        numeric[val],
        labels[val],
        network_val,
        str(tmp_path / "again.txt"),
        seed=0,
    )
    assert again.weight == choice.weight and again.threshold == choice.threshold


def test_a_validation_window_of_one_class_is_refused_by_name(tmp_path):
    codes, numeric, labels = _arrays(500, 4)
    with pytest.raises(ValueError, match="one class only"):
        choose_blend(
            codes,
            numeric,
            labels,
            codes[:20],
            numeric[:20],
            np.zeros(20, int),
            np.full(20, 0.5),
            str(tmp_path / "t.txt"),
            seed=0,
        )


def test_a_reused_tree_weighs_the_blend_as_the_same_tree_fitted_tonight_would(tmp_path):
    """A fine-tune night weighs with the champion's tree: no fit, and, for the same tree,
    the same weight, threshold and AUCs as fitting it again; the choice says where from."""
    codes, numeric, labels = _arrays(6_000, 5)
    fit, val = slice(0, 4_000), slice(4_000, None)
    network_val = 1 / (1 + np.exp(-(0.9 * numeric[val, 0] - 0.1)))
    args = (codes[fit], numeric[fit], labels[fit], codes[val], numeric[val], labels[val])
    fitted = choose_blend(
        *args, network_val, str(tmp_path / "fitted.txt"), seed=0, fit_until="2013-03-04"
    )
    assert fitted.validation_tree_source == "fitted tonight on the fitting days"
    assert fitted.validation_tree_fit_until == "2013-03-04"

    champions = ReusedTree(fitted.tree_path, "2013-03-04", "champion v1's, fitted on days to …")
    # the fitting rows are not looked at: a reused tree is not fitted again
    empty = (codes[:0], numeric[:0], labels[:0])
    reused = choose_blend(
        *empty, *args[3:], network_val, str(tmp_path / "reused.txt"), seed=0, reuse=champions
    )
    assert (reused.weight, reused.threshold, reused.blend_validation_auc) == (
        fitted.weight,
        fitted.threshold,
        fitted.blend_validation_auc,
    )
    assert reused.validation_tree_source == champions.source
    assert reused.validation_tree_fit_until == "2013-03-04"
    # tonight's copy, so the release logs (and the next night stages) the same bytes
    assert (tmp_path / "reused.txt").read_bytes() == (tmp_path / "fitted.txt").read_bytes()


def _window(days: int, rows_per_day: int, seed: int) -> pd.DataFrame:
    codes, numeric, labels = _arrays(days * rows_per_day, seed)
    dates = pd.date_range("2013-03-01", periods=days).repeat(rows_per_day)
    return pd.DataFrame({"date": dates.date.astype(str), "label": labels}), codes, numeric


class _Net(torch.nn.Module):
    """Stands in for the trained network: `predict_proba` needs only its forward."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(1))

    def forward(self, codes: torch.Tensor, numeric: torch.Tensor) -> torch.Tensor:
        return (0.9 * numeric[:, :1] * self.weight).expand(-1, 2)


def test_a_champions_tree_fitted_on_tonights_validation_days_is_not_reused(tmp_path, caplog):
    window, codes, numeric = _window(10, 300, 6)
    trained = SimpleNamespace(validation_days=3)  # validation: 03-08 .. 03-10
    fitted = blend_on_validation(window, codes, numeric, _Net(), trained, str(tmp_path), 0)
    assert fitted.validation_tree_fit_until == "2013-03-07"

    champions = tmp_path / "champion_tree.txt"
    champions.write_bytes((tmp_path / "blend_tree.txt").read_bytes())
    before = ReusedTree(str(champions), "2013-03-07", "champion v1's")
    reused = blend_on_validation(window, codes, numeric, _Net(), trained, str(tmp_path), 0, before)
    assert reused.validation_tree_source == "champion v1's"

    # a tree that saw the first validation day would flatter itself: fitted afresh
    seen = ReusedTree(str(champions), "2013-03-08", "champion v2's")
    with caplog.at_level("WARNING", logger="nightshift.evaluate"):
        refused = blend_on_validation(
            window, codes, numeric, _Net(), trained, str(tmp_path), 0, seen
        )
    assert refused.validation_tree_source == "fitted tonight on the fitting days"
    assert "not before tonight's validation days (from 2013-03-08)" in caplog.text
