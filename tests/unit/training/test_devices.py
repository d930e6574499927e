"""Code tests of the rank → device plan: a rank uses CUDA only with a GPU of its own."""

from __future__ import annotations

import pytest

from tasks.training.devices import WorkerDevices, plan_rank_devices, visible_gpus


@pytest.mark.parametrize(
    ("env", "count", "expected"),
    [
        (None, 0, ()),  # a CPU machine
        (None, 2, ("0", "1")),  # nothing set: every GPU of the machine
        ("", 2, ()),  # the mixed cluster's CPU workers
        ("-1", 1, ()),
        ("1,0", 2, ("1", "0")),  # dask-cuda's rotation: this worker's own GPU first
        ("GPU-8f2a,GPU-11c0", 2, ("GPU-8f2a", "GPU-11c0")),
        ("0,1,2,3", 2, ("0", "1")),  # more names than devices torch can open
    ],
)
def test_visible_gpus_follow_cuda_visible_devices(env, count, expected):
    assert visible_gpus(env, count) == expected


def _w(address: str, *gpus: str, host: str = "node-a") -> WorkerDevices:
    return WorkerDevices(address, host, tuple(gpus))


def test_a_cpu_cluster_trains_on_gloo():
    plan = plan_rank_devices([_w("w0"), _w("w1")])
    assert (plan.backend, plan.devices) == ("gloo", ("cpu", "cpu"))
    assert "no rank's worker has a GPU" in plan.reason


def test_two_workers_that_both_see_the_one_gpu_never_share_it():
    """A plain LocalCluster on a 1-GPU workstation: every worker sees GPU 0 (the
    'Duplicate GPU detected' crash). Both ranks go to the CPU, and the plan says why."""
    plan = plan_rank_devices([_w("w0", "0"), _w("w1", "0")])
    assert plan.backend == "gloo" and set(plan.devices) == {"cpu"}
    assert "w0 and w1 would share GPU 0 on node-a" in plan.reason


def test_one_worker_per_gpu_gets_nccl_each_on_its_own_gpu():
    plan = plan_rank_devices([_w("w0", "0", "1"), _w("w1", "1", "0")])
    assert (plan.backend, plan.devices) == ("nccl", ("cuda:0", "cuda:0"))
    assert plan.uses_gpu


def test_the_same_gpu_index_on_two_hosts_is_two_gpus():
    plan = plan_rank_devices([_w("w0", "0", host="a"), _w("w1", "0", host="b")])
    assert plan.backend == "nccl"


def test_more_ranks_than_gpus_puts_every_rank_on_the_cpu():
    plan = plan_rank_devices([_w("gpu0", "0"), _w("cpu0")])
    assert plan.backend == "gloo" and plan.devices == ("cpu", "cpu")
    assert "1 of 2 rank(s) have no GPU (cpu0)" in plan.reason


def test_a_torch_without_nccl_uses_gloo_even_with_gpus():
    plan = plan_rank_devices([_w("w0", "0")], nccl_available=False)
    assert plan.backend == "gloo" and "NCCL is not available" in plan.reason


def test_no_rank_is_an_error():
    with pytest.raises(ValueError, match="at least one rank"):
        plan_rank_devices([])
