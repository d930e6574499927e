"""One scheduler, CPU workers and GPU workers: work goes where its resources say, on a real
Dask cluster (the GPU workers here advertise the `GPU` resource and CUDA_VISIBLE_DEVICES of
their own; on this CPU machine torch sees no GPU in them, so ranks still train on gloo)."""

from __future__ import annotations

import os

import distributed
import pytest

from tasks.ops.cluster import (
    CPU,
    GPU,
    cpu_work_options,
    gpu_or_all_workers,
    mixed_local_cluster,
    mixed_worker_spec,
    split_workers,
    workers_by_kind,
)
from tasks.training.devices import WorkerDevices, plan_rank_devices, probe_devices

pytestmark = pytest.mark.integration


def _where() -> tuple[str, str]:
    return distributed.get_worker().address, os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")


def test_the_mixed_spec_has_cpu_workers_without_gpus_and_one_worker_per_gpu():
    spec = mixed_worker_spec(cpu_workers=2, gpus=3)
    assert sorted(spec) == ["cpu-0", "cpu-1", "gpu-0", "gpu-1", "gpu-2"]
    assert spec["cpu-0"]["options"]["env"] == {"CUDA_VISIBLE_DEVICES": ""}
    assert spec["cpu-0"]["options"]["resources"] == {CPU: 1}
    # each GPU worker sees its own GPU first, so its cuda:0 is its own
    assert [spec[f"gpu-{g}"]["options"]["env"]["CUDA_VISIBLE_DEVICES"] for g in range(3)] == [
        "0,1,2",
        "1,2,0",
        "2,0,1",
    ]
    assert all(spec[f"gpu-{g}"]["options"]["resources"] == {GPU: 1} for g in range(3))


def test_split_workers_by_the_resources_they_advertise():
    resources = {"tcp://c:1": {CPU: 1}, "tcp://g:1": {GPU: 1}, "tcp://x:1": {}}
    assert split_workers(resources) == (["tcp://c:1", "tcp://x:1"], ["tcp://g:1"])
    assert split_workers({"a": {}, "b": {}}) == (["a", "b"], [])


def test_cpu_work_stays_off_the_gpu_workers_and_gpu_work_goes_to_them():
    with (
        mixed_local_cluster(cpu_workers=1, gpus=1) as cluster,
        distributed.Client(cluster, set_as_default=False) as client,
    ):
        client.wait_for_workers(2, timeout=120)
        cpu, gpu = workers_by_kind(client)
        assert len(cpu) == 1 and len(gpu) == 1

        options = cpu_work_options(client)
        futures = [client.submit(_where, pure=False, **options) for _ in range(12)]
        assert {address for address, _ in client.gather(futures)} == set(cpu)
        assert {env for _, env in client.gather(futures)} == {""}  # CPU workers see no GPU

        assert gpu_or_all_workers(client) == gpu
        probes = client.run(probe_devices, workers=gpu)
        plan = plan_rank_devices([WorkerDevices(w, *probes[w]) for w in gpu])
        # the GPU worker advertises GPU 0, but this machine has none: gloo, said so
        assert plan.backend == "gloo" and "no rank's worker has a GPU" in plan.reason


def test_a_cluster_without_gpu_workers_runs_everything_anywhere(dask_client):
    assert cpu_work_options(dask_client) == {}
    assert gpu_or_all_workers(dask_client) == sorted(
        dask_client.scheduler_info(n_workers=-1)["workers"]
    )
