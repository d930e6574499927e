"""Unit: the incremental night's mode decision, and a fine-tune starting from given weights."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest
import torch

from tasks.training.checkpoint import checkpoint_fingerprint
from tasks.training.config import FitSample, TrainConfig
from tasks.training.incremental import (
    FINE_TUNE,
    FULL,
    ChampionFacts,
    decide_mode,
    train_config_from_params,
)
from tasks.training.loop import Shard, TrainingData, fit_network
from tasks.training.model import member_loss

AS_OF = date(2013, 12, 31)


def champion(last_full: date | None = date(2013, 12, 30), mismatch: str | None = None):
    return ChampionFacts(version="3", last_full_retrain_as_of=last_full, mismatch=mismatch)


def test_no_champion_retrains_in_full():
    decision = decide_mode(None, AS_OF, every_days=7)
    assert decision.mode == FULL
    assert decision.parent_version is None
    assert decision.last_full_retrain_as_of == AS_OF
    assert "no @champion" in decision.reason


def test_architecture_mismatch_retrains_in_full_and_says_why():
    decision = decide_mode(champion(mismatch="the declared features changed"), AS_OF, 7)
    assert decision.mode == FULL
    assert "v3" in decision.reason and "the declared features changed" in decision.reason
    assert decision.last_full_retrain_as_of == AS_OF


def test_full_retrain_is_due_after_the_configured_days():
    due = decide_mode(champion(last_full=date(2013, 12, 24)), AS_OF, every_days=7)
    assert due.mode == FULL
    assert "2013-12-24" in due.reason and "7 day(s) old" in due.reason
    # one day younger: still a fine-tune, and the lineage keeps the old full retrain's date
    young = decide_mode(champion(last_full=date(2013, 12, 25)), AS_OF, every_days=7)
    assert young.mode == FINE_TUNE
    assert young.last_full_retrain_as_of == date(2013, 12, 25)


def test_a_young_matching_champion_is_fine_tuned():
    decision = decide_mode(champion(), AS_OF, every_days=7)
    assert decision.mode == FINE_TUNE
    assert decision.parent_version == "3"
    assert decision.last_full_retrain_as_of == date(2013, 12, 30)


def test_zero_days_and_unknown_lineage_always_retrain_in_full():
    assert decide_mode(champion(), AS_OF, every_days=0).mode == FULL
    unknown = decide_mode(champion(last_full=None), AS_OF, every_days=7)
    assert unknown.mode == FULL and "last_full_retrain_as_of" in unknown.reason


def test_train_config_is_read_back_from_mlflow_params():
    logged = {k: str(v) for k, v in TrainConfig(hidden=[64, 32], epochs=5).model_dump().items()}
    logged["hidden"] = "[64, 32]"
    logged["unrelated"] = "x"
    config = train_config_from_params(logged)
    assert config.hidden == [64, 32] and config.epochs == 5
    with pytest.raises(ValueError):
        train_config_from_params({"epochs": "zero"})


def _data(seed: int = 0, rows: int = 512) -> TrainingData:
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 5, size=(rows, 2)).astype(np.int64)
    numeric = rng.normal(size=(rows, 3)).astype(np.float32)
    labels = (numeric[:, 0] + (codes[:, 0] == 2) + rng.normal(size=rows) > 0.5).astype(np.float32)
    shard = Shard(0, torch.from_numpy(codes), torch.from_numpy(numeric), torch.from_numpy(labels))
    return TrainingData(
        shards=[shard],
        world_size=1,
        fit_rows=rows,
        smallest_shard_rows=rows,
        val_codes=codes[:128],
        val_numeric=numeric[:128],
        val_labels=labels[:128],
        cardinalities=[5, 5],
        n_numeric=3,
    )


def test_fine_tune_starts_from_the_given_weights():
    """With a vanishing learning rate the kept weights are the starting ones: the champion's
    when given (so the first step's loss is the champion's on that batch), a fresh
    initialisation otherwise (trained with another seed, so they differ)."""
    data = _data()
    config = TrainConfig(epochs=2, batch_size=128, members=2, hidden=[16], keep="last")
    champion_state = fit_network(data, config, seed=7).kept_state
    frozen = config.model_copy(update={"learning_rate": 1e-12, "epochs": 1})

    tuned = fit_network(data, frozen, seed=42, initial_state=champion_state).kept_state
    fresh = fit_network(data, frozen, seed=42).kept_state

    for name, value in champion_state.items():
        torch.testing.assert_close(tuned[name], value, rtol=0, atol=1e-6)
    assert any(not torch.allclose(fresh[n], v, atol=1e-3) for n, v in champion_state.items())


def test_a_fine_tune_that_scores_below_its_start_keeps_the_starting_weights():
    """The starting weights are epoch 0 of a fine-tune's early stopping: a destructive
    fine-tune (peak rate 1.0) keeps the champion's weights, a useful one (from an
    untrained start) keeps its epoch."""
    data = _data(seed=3, rows=1024)
    config = TrainConfig(epochs=3, batch_size=128, members=2, hidden=[16], keep="last")
    champion = fit_network(data, config, seed=7)
    wrecking = TrainConfig(epochs=1, batch_size=128, members=2, hidden=[16], learning_rate=1.0)
    kept = fit_network(data, wrecking, seed=42, initial_state=champion.kept_state)
    assert kept.kept_epoch == 0 and kept.history[0]["val_auc"] < kept.kept_auc
    for name, value in champion.kept_state.items():
        torch.testing.assert_close(kept.kept_state[name], value, rtol=0, atol=0)

    untrained = fit_network(data, config.model_copy(update={"learning_rate": 1e-12}), seed=7)
    useful = TrainConfig(epochs=1, batch_size=128, members=2, hidden=[16])
    improved = fit_network(data, useful, seed=42, initial_state=untrained.kept_state)
    assert improved.kept_epoch == 1 and improved.kept_auc > untrained.kept_auc


def test_fine_tune_loss_at_step_zero_is_the_champions(tmp_path):
    data = _data(seed=1)
    config = TrainConfig(epochs=1, batch_size=128, members=2, hidden=[16], keep="last")
    champion = fit_network(data, config, seed=7)
    shard = data.shards[0]
    champion.net.eval()  # no dropout: the loss the champion's weights give this batch
    with torch.no_grad():
        expected = member_loss(champion.net(shard.codes, shard.numeric), shard.labels)
    frozen = config.model_copy(update={"learning_rate": 1e-12, "dropout": 0.0})
    start = fit_network(data, frozen, seed=3, initial_state=champion.kept_state)
    start.net.eval()
    with torch.no_grad():
        got = member_loss(start.net(shard.codes, shard.numeric), shard.labels)
    assert float(got) == pytest.approx(float(expected), abs=1e-5)


def test_checkpoints_of_a_fine_tune_are_not_those_of_a_full_retrain(tmp_path):
    """A fine-tune never resumes a full retrain's checkpoint (or another champion's)."""
    train, pre = tmp_path / "train.parquet", tmp_path / "pre.json"
    train.write_bytes(b"rows")
    pre.write_bytes(b"{}")
    weights_a, weights_b = tmp_path / "a.pt", tmp_path / "b.pt"
    weights_a.write_bytes(b"a")
    weights_b.write_bytes(b"b")
    config = TrainConfig()
    full = checkpoint_fingerprint(config, 42, str(train), str(pre))
    from_a = checkpoint_fingerprint(config, 42, str(train), str(pre), str(weights_a))
    from_b = checkpoint_fingerprint(config, 42, str(train), str(pre), str(weights_b))
    assert "initial weights" not in full
    assert from_a != full and from_a != from_b
    # nor one that fitted other rows of the window (another replay fraction or new day)
    sampled = FitSample("2013-12-16", 0.25, 42)
    from_a_sampled = checkpoint_fingerprint(
        config, 42, str(train), str(pre), str(weights_a), sampled
    )
    other = checkpoint_fingerprint(
        config, 42, str(train), str(pre), str(weights_a), FitSample("2013-12-16", 0.5, 42)
    )
    assert len({str(from_a), str(from_a_sampled), str(other)}) == 3


def test_a_fine_tune_fits_every_new_row_and_a_seeded_fraction_of_the_older_ones():
    """The mask keeps all fitting rows after the champion's last fitting day, about the
    replay fraction of the older fitting rows, never a validation row; the same seed draws
    the same rows, another seed others."""
    import pandas as pd

    rng = np.random.default_rng(0)
    dates = pd.Series(
        pd.to_datetime("2013-01-01") + pd.to_timedelta(rng.integers(0, 60, 20_000), "D")
    )
    fitting = (dates < pd.Timestamp("2013-02-20")).to_numpy()  # the last 10 days validate
    new = (dates > pd.Timestamp("2013-02-17")).to_numpy() & fitting
    sample = FitSample("2013-02-17", 0.25, 42)
    kept = sample.keep(dates, fitting)

    assert not (kept & ~fitting).any()
    assert (kept[new]).all() and new.sum() > 0
    older = fitting & ~new
    assert abs(kept[older].mean() - 0.25) < 0.02
    assert (FitSample("2013-02-17", 0.25, 42).keep(dates, fitting) == kept).all()
    assert (FitSample("2013-02-17", 0.25, 7).keep(dates, fitting) != kept).any()
    assert "2013-02-17" in sample.describe() and "25%" in sample.describe()


def _registry_with_champion(tmp_path, params: dict[str, str], tags: dict[str, str]):
    """A real MLflow SQLite registry whose @champion's run logged `params`."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("t", artifact_location=(tmp_path / "a").as_uri())
    run = client.create_run(experiment)
    for key, value in params.items():
        client.log_param(run.info.run_id, key, value)
    client.create_registered_model("m")
    version = client.create_model_version("m", "unused", run_id=run.info.run_id, tags=tags)
    client.set_registered_model_alias("m", "champion", version.version)
    return uri


def _context(tmp_path, tracking_uri: str, seed: int = 42):
    """Tonight's run context on a lake and artifact store in `tmp_path`."""
    from tasks.core.context import RunContext

    return RunContext(
        as_of=AS_OF,
        dataset="flights",
        lake_root=str(tmp_path / "lake"),
        tracking_uri=tracking_uri,
        experiment="t",
        artifact_root=(tmp_path / "a").as_uri(),
        model_name="m",
        seed=seed,
    )


def _features(holdout: tuple[str, str]):
    from tasks.features.build import FeatureSet

    return FeatureSet(
        dataset="flights",
        train_path="unused",
        holdout_path="unused",
        preprocessor_path="unused",
        train_days=("2013-01-01", "2013-11-30"),
        holdout_days=holdout,
        train_rows=1,
        holdout_rows=1,
        unlabelled_rows=0,
        positive_rate_train=0.2,
        positive_rate_holdout=0.2,
    )


@pytest.mark.parametrize(
    ("train_end", "last_full", "tags", "reason"),
    [
        ("2013-12-01", "2013-12-30", {"fp32_weights_sha256": "x"}, "not before tonight's holdout"),
        ("2013-11-29", "2013-12-20", {"fp32_weights_sha256": "x"}, "full retrain due"),
        ("2013-11-29", "2013-12-30", {}, "no fp32_weights_sha256 tag"),
    ],
)
def test_the_plan_reads_the_champion_from_the_registry(
    tmp_path, train_end, last_full, tags, reason
):
    """Each refusal is read from a real registry and ends in a full retrain, with why."""
    from tasks.training.incremental import plan_training

    params = {
        **{k: str(v) for k, v in TrainConfig().model_dump().items()},
        "hidden": "[256, 128]",
        "train_days": f"('2013-01-01', '{train_end}')",
        "last_full_retrain_as_of": last_full,
    }
    ctx = _context(tmp_path, _registry_with_champion(tmp_path, params, tags))
    plan = plan_training(ctx, _features(("2013-12-01", "2013-12-31")), 7, 2)
    assert plan.mode == FULL, plan.reason
    assert reason in plan.reason
    assert plan.last_full_retrain_as_of == "2013-12-31"
    assert plan.features.preprocessor_path == "unused"  # tonight's own preprocessing


def test_the_champions_student_is_staged_only_with_the_digest_it_was_released_with(tmp_path):
    """Real MLflow artifacts: the student logged at release is copied into tonight's plan
    folder when its digest matches the version's tag; a changed file or a release without
    the tag is refused with the reason (the student then trains from scratch)."""
    from mlflow.tracking import MlflowClient

    from tasks.release.pyfunc import sha256_file
    from tasks.training.incremental import STUDENT_DIGEST_TAG, _stage_champion_student

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("t", artifact_location=(tmp_path / "a").as_uri())
    run_id = client.create_run(experiment).info.run_id
    files = tmp_path / "student"
    files.mkdir()
    (files / "student_weights.pt").write_bytes(b"weights of the champion's student")
    (files / "student_net_config.json").write_text('{"hidden": [64, 32]}')
    client.log_artifacts(run_id, str(files), artifact_path="student")
    digest = sha256_file(str(files / "student_weights.pt"))
    ctx = _context(tmp_path, uri)

    staged = _stage_champion_student(ctx, run_id, {STUDENT_DIGEST_TAG: digest})
    assert isinstance(staged, tuple), staged
    weights, config = staged
    assert ctx.lake.fs.cat(weights) == b"weights of the champion's student"
    assert ctx.lake.fs.cat(config) == b'{"hidden": [64, 32]}'

    refused = _stage_champion_student(ctx, run_id, {STUDENT_DIGEST_TAG: "0" * 64})
    assert isinstance(refused, str) and "differ from the" in refused
    untagged = _stage_champion_student(ctx, run_id, {})
    assert isinstance(untagged, str) and STUDENT_DIGEST_TAG in untagged


def test_the_fine_tunes_rows_start_after_the_champions_last_fitting_day(tmp_path):
    """The champion fitted its window less its validation days: every row after that is
    new to its weights. A replay fraction of 1 (or a release without train_days) fits the
    whole window."""
    from tasks.training.incremental import _fit_sample

    ctx = _context(tmp_path, "unused", seed=11)
    params = {"train_days": "('2013-01-01', '2013-12-29')"}
    sample = _fit_sample(ctx, params, TrainConfig(validation_days=14), 0.25)
    assert sample == FitSample("2013-12-15", 0.25, 11)
    assert _fit_sample(ctx, params, TrainConfig(), 1.0) is None
    assert _fit_sample(ctx, {}, TrainConfig(), 0.25) is None


def test_the_loader_keeps_the_same_sampled_rows_for_any_world_size(tmp_path):
    """Real flights rows: with a sample the ranks' shards are the single process's rows
    dealt out in turn (so DDP and one process fit the same rows), the validation days are
    untouched, and only the sampled fitting rows remain."""
    from tasks.training.loop import load_training_data
    from tests.conftest import small_flights_run

    _, _, features = small_flights_run(tmp_path, date(2013, 1, 1), date(2013, 1, 20), "m")
    args = ("flights", features.train_path, features.preprocessor_path, 3)
    sample = FitSample("2013-01-12", 0.3, 5)
    whole = load_training_data(*args)
    one = load_training_data(*args, sample=sample)
    ranks = [load_training_data(*args, 2, shard_ids=[r], sample=sample) for r in (0, 1)]

    assert 0.3 * whole.fit_rows < one.fit_rows < 0.6 * whole.fit_rows
    np.testing.assert_array_equal(one.val_labels, whole.val_labels)
    codes = one.shards[0].codes
    for rank, data in enumerate(ranks):
        assert data.fit_rows == one.fit_rows
        assert torch.equal(data.shards[0].codes, codes[rank::2])


def test_a_sample_too_small_for_the_ranks_fits_the_whole_window(tmp_path):
    """A sample that would leave a rank without rows (no new day, a tiny fraction of a tiny
    window) falls back to every fitting row, not an empty shard."""
    from tasks.training.loop import load_training_data
    from tests.conftest import small_flights_run

    _, _, features = small_flights_run(tmp_path, date(2013, 1, 1), date(2013, 1, 6), "m")
    args = ("flights", features.train_path, features.preprocessor_path, 1)
    whole = load_training_data(*args, 2, shard_ids=[0])
    nothing_new = FitSample("2014-01-01", 1e-9, 5)
    assert load_training_data(*args, 2, shard_ids=[0], sample=nothing_new).fit_rows == (
        whole.fit_rows
    )
