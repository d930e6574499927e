"""The flow's local Dask cluster listens on loopback only: dashboard, scheduler and workers.

Real parts: the task runner `flows.runtime.dask_task_runner` builds for a flow without a
scheduler address, its LocalCluster started for real, and the sockets the kernel reports.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import urllib.request
from urllib.parse import urlparse

import psutil
import pytest
from distributed import LocalCluster

from flows.runtime import dask_task_runner
from tasks.core.settings import Settings

pytestmark = pytest.mark.integration


def _listening(pids: set[int]) -> list[tuple[int, str, int]]:
    return [
        (c.pid, c.laddr.ip, c.laddr.port)
        for c in psutil.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.pid in pids
    ]


def _outside_addresses() -> list[str]:
    """This machine's addresses other than loopback (where a remote client would connect)."""
    found = []
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if (
                address.family == socket.AF_INET
                and not ipaddress.ip_address(address.address).is_loopback
            ):
                found.append(address.address)
    return found


def test_the_flows_local_cluster_listens_on_loopback_only():
    runner = dask_task_runner(Settings(_env_file=None, dask_address=None, dask_workers=1))
    assert runner.cluster_class in ("distributed.LocalCluster", LocalCluster)
    me = psutil.Process(os.getpid())
    before = {p.pid for p in me.children(recursive=True)}  # other fixtures' servers
    with LocalCluster(**runner.cluster_kwargs) as cluster:
        dashboard = urlparse(cluster.dashboard_link)
        assert dashboard.hostname == "127.0.0.1", cluster.dashboard_link
        with urllib.request.urlopen(f"http://127.0.0.1:{dashboard.port}/health", timeout=10) as r:
            assert r.status == 200  # the dashboard is up, on loopback
        workers = {p.pid for p in me.children(recursive=True)} - before
        scheduler_port = urlparse(cluster.scheduler_address).port
        sockets = _listening({me.pid} | workers)
        assert any(port == dashboard.port for _, _, port in sockets), sockets
        ours = [s for s in sockets if s[0] in workers or s[2] in (dashboard.port, scheduler_port)]
        assert len(ours) >= 3, sockets  # dashboard, scheduler, at least the worker
        exposed = [s for s in ours if not ipaddress.ip_address(s[1]).is_loopback]
        assert not exposed, f"listening beyond loopback: {exposed}"
        for address in _outside_addresses():
            with pytest.raises(OSError), socket.create_connection((address, dashboard.port), 3):
                pass
