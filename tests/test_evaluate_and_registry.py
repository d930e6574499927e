"""Code tests for the evaluation metrics and the alias decision."""

import numpy as np
import pytest

from tasks.evaluate import classification_metrics
from tasks.registry import CHALLENGER, CHAMPION, choose_alias


def test_metrics_of_a_known_case():
    y = np.array([0, 0, 1, 1, 1, 0])
    proba = np.array([0.1, 0.6, 0.7, 0.8, 0.4, 0.2])
    metrics = classification_metrics(y, proba, threshold=0.5)
    # predicted late: rows 1, 2, 3 -> tp=2 (rows 2, 3), fp=1 (row 1), fn=1 (row 4), tn=2
    assert (metrics["true_positives"], metrics["false_positives"]) == (2, 1)
    assert (metrics["false_negatives"], metrics["true_negatives"]) == (1, 2)
    assert metrics["precision"] == pytest.approx(2 / 3)
    assert metrics["recall"] == pytest.approx(2 / 3)
    # positives 0.7 and 0.8 outrank all 3 negatives, 0.4 outranks 0.1 and 0.2: 8 of 9 pairs
    assert metrics["roc_auc"] == pytest.approx(8 / 9)
    assert metrics["rows"] == 6 and 0 < metrics["log_loss"] < 1


def test_perfect_ranking_has_auc_one_and_constant_scores_half():
    y = np.array([0, 1, 0, 1])
    assert classification_metrics(y, np.array([0.1, 0.9, 0.2, 0.8]), 0.5)["roc_auc"] == 1.0
    assert classification_metrics(y, np.full(4, 0.3), 0.5)["roc_auc"] == 0.5


@pytest.mark.parametrize(
    ("model", "champion", "alias"),
    [
        (0.70, None, CHAMPION),
        (0.71, 0.70, CHAMPION),
        (0.70, 0.70, CHAMPION),
        (0.69, 0.70, CHALLENGER),
    ],
)
def test_champion_only_when_at_least_as_good_on_the_same_holdout(model, champion, alias):
    chosen, reason = choose_alias(model, champion)
    assert chosen == alias
    assert reason
