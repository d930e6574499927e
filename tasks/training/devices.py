"""Which device each DDP rank trains on: a GPU of its own, or the CPU for every rank.

NCCL refuses two ranks on one GPU ("Duplicate GPU detected"), and a rank that takes
`cuda:0` merely because the process can see a GPU is how that happens: on a plain
LocalCluster every worker sees the machine's GPU. So the plan is made in the dispatching
process, from what each rank's worker reports (its host and the GPUs it sees, the first
being its own, as dask-cuda and the mixed local cluster arrange with
CUDA_VISIBLE_DEVICES), before any rank starts:

- every rank has a GPU and no two ranks share one → NCCL, each rank on its `cuda:0`;
- otherwise → gloo on the CPU for every rank (one backend per process group), and the
  plan says why, naming the workers.

Pure logic, tested on CPU; `probe_devices` is what runs on a worker.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class WorkerDevices:
    """What one worker process can use: its host and the GPUs it sees (its own first)."""

    address: str
    host: str
    gpus: tuple[str, ...]


@dataclass(frozen=True)
class DevicePlan:
    """The process group's backend, each rank's device, and why."""

    backend: Literal["nccl", "gloo"]
    devices: tuple[str, ...]
    reason: str

    @property
    def uses_gpu(self) -> bool:
        return self.backend == "nccl"


def visible_gpus(cuda_visible_devices: str | None, device_count: int) -> tuple[str, ...]:
    """The GPUs a process sees, named as CUDA_VISIBLE_DEVICES names them (indices or UUIDs).

    Unset: every device the driver has, by index. Set but empty (or "-1"): none.
    """
    if cuda_visible_devices is None:
        return tuple(str(i) for i in range(device_count))
    names = [n.strip() for n in cuda_visible_devices.split(",") if n.strip()]
    if not names or names[0] == "-1":
        return ()
    return tuple(names[:device_count])


def probe_devices() -> tuple[str, tuple[str, ...]]:
    """Run on a worker: (its host name, the GPUs torch can use there)."""
    try:
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # a broken CUDA install: this worker has no usable GPU
        count = 0
    return socket.gethostname(), visible_gpus(os.environ.get("CUDA_VISIBLE_DEVICES"), count)


def plan_rank_devices(workers: list[WorkerDevices], nccl_available: bool = True) -> DevicePlan:
    """One device per rank (rank i on workers[i]): NCCL on own GPUs, or gloo on the CPU."""
    if not workers:
        raise ValueError("a DDP job needs at least one rank")
    cpu = DevicePlan("gloo", tuple("cpu" for _ in workers), "")
    without = [w.address for w in workers if not w.gpus]
    if len(without) == len(workers):
        return DevicePlan("gloo", cpu.devices, "no rank's worker has a GPU: gloo on the CPU")
    if without:
        return DevicePlan(
            "gloo",
            cpu.devices,
            f"{len(without)} of {len(workers)} rank(s) have no GPU ({', '.join(without)}): "
            "every rank uses gloo on the CPU, as one process group needs one backend",
        )
    owner: dict[tuple[str, str], str] = {}
    for worker in workers:
        own = (worker.host, worker.gpus[0])
        if own in owner:
            return DevicePlan(
                "gloo",
                cpu.devices,
                f"workers {owner[own]} and {worker.address} would share GPU {own[1]} on "
                f"{own[0]}; a rank uses CUDA only with a GPU of its own (start one worker "
                "per GPU: dask-cuda, or the local cluster's GPU workers), so every rank "
                "uses gloo on the CPU",
            )
        owner[own] = worker.address
    if not nccl_available:
        return DevicePlan(
            "gloo", cpu.devices, "NCCL is not available in this torch build: gloo on the CPU"
        )
    return DevicePlan(
        "nccl",
        tuple("cuda:0" for _ in workers),
        f"{len(workers)} rank(s), each on a GPU of its own: NCCL",
    )
