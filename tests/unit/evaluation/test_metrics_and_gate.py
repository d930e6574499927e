"""Code tests for the evaluation metrics, slices and the promotion gate's decision."""

import numpy as np
import pandas as pd
import pytest

from tasks.datasets.flights import departure_hour_bucket
from tasks.evaluation.diagnostics import calibration_bins, slice_metrics
from tasks.evaluation.evaluate import classification_metrics
from tasks.release.compress import Compression, Variant
from tasks.release.config import ReleaseConfig
from tasks.release.gate import GateCheck, gate_checks


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


def test_brier_and_calibration_of_a_known_case():
    y = np.array([0, 0, 1, 1])
    proba = np.array([0.2, 0.2, 0.8, 0.6])
    metrics = classification_metrics(y, proba, threshold=0.5)
    assert metrics["brier"] == pytest.approx((0.04 + 0.04 + 0.04 + 0.16) / 4)
    bins = calibration_bins(y, proba, bins=5)
    # 0.2 -> bin 0.2-0.4 (observed 0), 0.6 -> 0.6-0.8, 0.8 -> 0.8-1.0 (observed 1)
    assert [b["rows"] for b in bins] == [2, 1, 1]
    assert [b["observed_rate"] for b in bins] == [0.0, 1.0, 1.0]
    assert metrics["calibration_error"] == pytest.approx((2 * 0.2 + 0.4 + 0.2) / 4)


def test_slices_skip_small_or_single_class_groups_and_score_each_scorer():
    y = np.array([0, 1, 0, 1, 0, 1, 1])
    slices = pd.DataFrame({"carrier": ["AA", "AA", "AA", "AA", "UA", "UA", "B6"]})
    model = np.array([0.1, 0.9, 0.2, 0.8, 0.3, 0.7, 0.5])
    rows = slice_metrics(y, {"model": model, "champion": 1 - model}, slices, min_rows=2)
    # B6 has 1 row; UA has both classes and 2 rows; AA has 4
    assert [r["slice"] for r in rows] == ["carrier=AA", "carrier=UA"]
    assert rows[0]["model_roc_auc"] == 1.0 and rows[0]["champion_roc_auc"] == 0.0
    assert rows[0]["rows"] == 4 and rows[0]["late_rate"] == 0.5


def test_departure_hours_are_bucketed_by_four_hours():
    buckets = departure_hour_bucket(pd.DataFrame({"sched_dep_time": [530, 759, 800, 2359, None]}))
    assert buckets.tolist() == ["04-07", "04-07", "08-11", "20-23", "unknown"]


def _compression(size: int, ms: float) -> Compression:
    variant = Variant("int8", "x.onnx", size, ms, 1.0, 0.7, 0.001, {}, True)
    return Compression(
        [variant], "int8", "x.onnx", "0" * 64, 4 * size, 3 * ms, 3.0, 0.701, 0.002, "", ""
    )


SERVES = GateCheck("serving", True, "ok")


@pytest.mark.parametrize(
    ("served", "champion", "slice_auc", "size", "ms", "failed"),
    [
        (0.70, None, None, 1000, 0.1, set()),  # first model: nothing to compare with
        (0.71, 0.70, 0.70, 1000, 0.1, set()),
        (0.70, 0.70, 0.69, 1000, 0.1, set()),  # equal overall, slice within 0.02
        (0.69, 0.70, 0.70, 1000, 0.1, {"auc"}),
        (0.71, 0.70, 0.65, 1000, 0.1, {"slices"}),
        (0.71, 0.70, 0.70, 10**9, 0.1, {"size"}),
        (0.71, 0.70, 0.70, 1000, 50.0, {"latency"}),
    ],
)
def test_gate_fails_exactly_the_broken_conditions(served, champion, slice_auc, size, ms, failed):
    slices = (
        []
        if champion is None
        else [
            {
                "slice": "origin=EWR",
                "rows": 500,
                "served_roc_auc": slice_auc,
                "champion_roc_auc": 0.70,
            }
        ]
    )
    checks = gate_checks(
        served_auc=served,
        baseline_auc=0.70,
        champion_auc=champion,
        slices=slices,
        compression=_compression(size, ms),
        smoke=SERVES,
        config=ReleaseConfig(),
    )
    assert {c.name for c in checks if not c.passed} == failed
    assert all(c.detail for c in checks)


def test_a_failed_serving_smoke_test_blocks_the_gate():
    checks = gate_checks(
        served_auc=0.8,
        baseline_auc=0.75,
        champion_auc=None,
        slices=[],
        compression=_compression(1000, 0.1),
        smoke=GateCheck("serving", False, "models:/x/1 failed to serve: boom"),
        config=ReleaseConfig(),
    )
    assert [c.name for c in checks if not c.passed] == ["serving"]


@pytest.mark.parametrize(
    ("served", "baseline", "failed"),
    [
        (0.70, 0.71, set()),  # trails the baseline within the default margin 0.02
        (0.68, 0.71, {"baseline"}),  # trails it by more
        (0.52, 0.53, {"floor"}),  # beats a useless baseline, but under the floor 0.55
        (0.50, 0.71, {"floor", "baseline"}),  # learned nothing (shuffled labels)
    ],
)
def test_the_first_model_gets_no_free_pass(served, baseline, failed):
    checks = gate_checks(
        served_auc=served,
        baseline_auc=baseline,
        champion_auc=None,
        slices=[],
        compression=_compression(1000, 0.1),
        smoke=SERVES,
        config=ReleaseConfig(),
    )
    assert {c.name for c in checks if not c.passed} == failed
    details = {c.name: c.detail for c in checks}
    assert "min_auc 0.55" in details["floor"] and "margin 0.02" in details["baseline"]


def test_an_older_night_never_replaces_a_newer_champion():
    def failed(challenger_as_of, champion_as_of):
        checks = gate_checks(
            served_auc=0.9,
            baseline_auc=0.7,
            champion_auc=0.7,
            slices=[],
            compression=_compression(1000, 0.1),
            smoke=SERVES,
            config=ReleaseConfig(),
            challenger_as_of=challenger_as_of,
            champion_as_of=champion_as_of,
        )
        return {c.name: c.detail for c in checks if not c.passed}

    older = failed("2013-11-30", "2013-12-31")
    assert list(older) == ["recency"]
    assert "2013-11-30 < champion as_of 2013-12-31" in older["recency"]
    assert "promote by hand" in older["recency"]
    assert failed("2013-12-31", "2013-12-31") == {}  # a rerun of the champion's night
    assert failed("2014-01-01", "2013-12-31") == {}


def _blend(network_auc: float, served_ms: float) -> Compression:
    """A served blend: the int8 network (AUC `network_auc`) plus the tree, measured as served."""
    variant = Variant("int8", "x.onnx", 1000, 0.1, 1.0, network_auc, 0.001, {}, True)
    return Compression(
        [variant],
        "int8",
        "x.onnx",
        "0" * 64,
        4000,
        0.3,
        3.0,
        0.701,
        0.002,
        "",
        "",
        served_candidate="blend",
        served_roc_auc=0.72,
        served_latency_ms_batch1=served_ms,
        blend_weight=0.4,
        blend_threshold=0.3,
        tree_path="tree.txt",
        tree_size_bytes=10_000,
    )


@pytest.mark.parametrize(
    ("network_auc", "served_ms", "failed"),
    [
        (0.70, 0.5, set()),  # a real network, blended: passes like any model
        (0.50, 0.5, {"network"}),  # a network that learned nothing rides on the tree: refused
        (0.70, 5.0, {"latency"}),  # the blend as served (network + tree) is over budget
    ],
)
def test_a_served_blend_is_judged_as_served_and_its_network_on_its_own(
    network_auc, served_ms, failed
):
    compression = _blend(network_auc, served_ms)
    checks = gate_checks(
        served_auc=compression.served_auc,
        baseline_auc=0.71,
        champion_auc=None,
        slices=[],
        compression=compression,
        smoke=SERVES,
        config=ReleaseConfig(),
    )
    assert {c.name for c in checks if not c.passed} == failed
    details = {c.name: c.detail for c in checks}
    assert "int8 + tree" in details["latency"] and "network alone" in details["network"]
