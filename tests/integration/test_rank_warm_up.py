"""The rank warm-up: every worker that can hold a DDP rank imports torch and torch._dynamo
in the background, on a real Dask process cluster (integration: worker processes start)."""

from __future__ import annotations

import sys
import time

import pytest
from distributed import Client, LocalCluster

from tasks.training.ddp import RANK_MODULES, warm_up_ranks
from tests.conftest import context_for

pytestmark = pytest.mark.integration


def _imported(modules: tuple[str, ...]) -> bool:
    return all(module in sys.modules for module in modules)


def test_every_worker_imports_what_a_rank_needs_after_the_call_returned(tmp_lake):
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        # fresh worker processes: nothing of the trainer loaded yet
        assert not any(client.run(_imported, RANK_MODULES).values())

        # fire and forget: it returns at once, and the client it used is gone by then
        warm_up_ranks(context_for(tmp_lake, dask_address=cluster.scheduler_address))

        deadline = time.monotonic() + 120
        while not all(client.run(_imported, RANK_MODULES).values()):
            assert time.monotonic() < deadline, "the workers never imported the rank modules"
            time.sleep(0.5)
