"""The blend candidate on the real run: chosen on validation days, blind to the holdout."""

import dataclasses

import numpy as np
import pytest

from tasks.core.lake import Lake
from tasks.datasets import get_dataset
from tasks.evaluation.evaluate import evaluate_models
from tasks.features.build import FeatureSet
from tasks.training.loop import TrainResult
from tests.conftest import context_for

FLIGHTS = get_dataset("flights")


@pytest.fixture(scope="module")
def stage_results(nightly_run, landed_lake):
    from tasks.core.results import read_result

    ctx = context_for(landed_lake)
    return read_result(ctx, "features", FeatureSet), read_result(ctx, "train", TrainResult)


@pytest.mark.slow
def test_the_blend_weight_does_not_move_when_the_holdout_labels_are_shuffled(
    stage_results, tmp_path
):
    features, trained = stage_results
    real = evaluate_models(FLIGHTS, features, trained, str(tmp_path / "real"), seed=42)

    lake = Lake.of(features.holdout_path)
    holdout = lake.read_parquet(features.holdout_path)
    holdout["label"] = np.random.default_rng(0).permutation(holdout["label"].to_numpy())
    shuffled_path = str(tmp_path / "shuffled-holdout.parquet")
    Lake.of(shuffled_path).write_parquet_atomic(shuffled_path, holdout)
    shuffled_features = dataclasses.replace(features, holdout_path=shuffled_path)
    shuffled = evaluate_models(
        FLIGHTS, shuffled_features, trained, str(tmp_path / "shuffled"), seed=42
    )

    assert real.blend_choice is not None and shuffled.blend_choice is not None
    for name in ("candidate", "weight", "threshold", "blend_validation_auc"):
        assert getattr(shuffled.blend_choice, name) == getattr(real.blend_choice, name), name
    # the holdout itself did change: on shuffled labels every scorer is near chance
    assert real.blend["roc_auc"] > 0.6
    assert abs(shuffled.blend["roc_auc"] - 0.5) < 0.05


@pytest.mark.slow
def test_the_run_serves_what_won_on_validation(nightly_run, stage_results, landed_lake):
    """The candidate the validation days chose is what the summary says is served."""
    from tasks.core.results import read_result
    from tasks.evaluation.evaluate import Evaluation

    evaluation = read_result(context_for(landed_lake), "evaluate", Evaluation)
    choice = evaluation.blend_choice
    assert choice is not None
    assert nightly_run.candidate == choice.candidate
    if choice.is_blend:
        assert choice.blend_validation_auc > choice.network_validation_auc
        assert "+ LightGBM tree (network weight" in nightly_run.served_variant
    else:
        assert choice.weight == 1.0
