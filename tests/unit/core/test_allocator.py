"""steady_heap: a tensor-sized allocation loop stops page-faulting inside a Dask-style
process, and the memory goes back to the OS when the block ends.

Each case runs in a fresh interpreter, because glibc reads MALLOC_TRIM_THRESHOLD_ at
start-up (a Dask nanny sets it for every worker: the condition under test).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

PROBE = r"""
import json, resource, sys
import numpy as np
from tasks.core.allocator import steady_heap

def faults(loop):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    loop()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

def step_like():  # a training step's activations: 4 MiB buffers allocated and freed
    for _ in range(200):
        a = np.ones(512 * 1024)
        b = a * 2.0
        del a, b

def rss_kib():
    with open("/proc/self/status") as status:
        return next(int(l.split()[1]) for l in status if l.startswith("VmRSS:"))

out = {"plain": faults(step_like)}
with steady_heap() as applied:
    out["applied"] = applied
    step_like()  # warm: the heap grows once
    out["steady"] = faults(step_like)
    base = rss_kib()
    chunks = [np.ones(128 * 1024) for _ in range(256)]  # 256 MiB on the heap
    del chunks
    out["held_mib"] = (rss_kib() - base) / 1024
out["after_mib"] = (rss_kib() - base) / 1024
print(json.dumps(out))
"""


def _probe(env_extra: dict[str, str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **env_extra}
    env.pop("MALLOC_TRIM_THRESHOLD_", None)
    env.update(env_extra)
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_a_dask_worker_environment_stops_faulting_and_gives_memory_back():
    out = _probe({"MALLOC_TRIM_THRESHOLD_": "65536"})  # what a Dask nanny sets
    assert out["applied"] is True
    # frozen mmap threshold: every 4 MiB buffer is a fresh mmap, ~1,000 faults each
    assert out["plain"] > 100_000, out
    assert out["steady"] < out["plain"] / 20, out
    # inside the block freed memory stays in the process; after it, it is returned
    assert out["held_mib"] > 128, out
    assert out["after_mib"] < 32, out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_a_plain_process_is_left_to_glibc():
    out = _probe({})
    assert out["applied"] is False
