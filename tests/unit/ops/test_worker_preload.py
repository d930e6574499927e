"""The local clusters' workers import the ingest engine as they start, in the background."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tasks.core.settings import Settings
from tasks.ops import worker_preload
from tasks.ops.cluster import (
    WORKER_PRELOAD,
    local_cluster_kwargs,
    mixed_worker_spec,
    stage_client,
)

ROOT = Path(__file__).resolve().parents[3]


def _engine_loaded() -> bool:
    return "tasks.ingest.pandas_engine" in sys.modules and "pandas" in sys.modules


def _arrow_pool() -> str:
    import pyarrow

    return pyarrow.default_memory_pool().backend_name


def test_the_local_cluster_preloads_the_engine_on_its_cpu_workers_only():
    kwargs = local_cluster_kwargs(Settings(_env_file=None, dask_address=None, dask_workers=1))
    assert kwargs["preload"] == [WORKER_PRELOAD] == ["tasks.ops.worker_preload"]
    spec = mixed_worker_spec(cpu_workers=1, gpus=1)
    assert spec["cpu-0"]["options"]["preload"] == [WORKER_PRELOAD]
    assert spec["gpu-0"]["options"]["preload"] == []  # GPU workers never ingest


def test_a_cluster_that_does_not_start_with_the_ingest_preloads_nothing():
    """`nightshift tune` / `train` run alone: no engine import beside the trials and ranks."""
    settings = Settings(_env_file=None, dask_address=None, dask_workers=1)
    assert local_cluster_kwargs(settings, preload=False)["preload"] == []
    spec = mixed_worker_spec(cpu_workers=2, gpus=1, preload=False)
    assert all(worker["options"]["preload"] == [] for worker in spec.values())


def test_a_fresh_worker_has_the_engine_imported_before_its_first_task():
    """The ingest's own cluster (`stage_client(..., preload=True)`) preloads; another
    stage's does not."""
    settings = Settings(
        _env_file=None, dask_address=None, dask_workers=1, dask_dashboard_address=":0"
    )
    with stage_client(None, settings, preload=True) as client:
        seconds = client.run(worker_preload.wait)
        loaded = client.run(_engine_loaded)
        pools = client.run(_arrow_pool)
    assert len(seconds) == 1 and all(s is not None and s > 0 for s in seconds.values())
    assert list(loaded.values()) == [True]
    # the ingest's Arrow buffers come from jemalloc (peak RSS flat with the scale factor)
    assert list(pools.values()) == ["jemalloc"]
    with stage_client(None, settings) as client:
        assert list(client.run(worker_preload.wait).values()) == [None]
        # no preload: pyarrow's own default, as in this process
        assert list(client.run(_arrow_pool).values()) == [_arrow_pool()]


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_wait_without_a_preload_answers_at_once_and_a_failed_import_is_only_logged():
    """A process that never preloaded (a remote cluster's worker) does not block on `wait`;
    a module that fails to import is logged and left to the task that needs it."""
    code = (
        "import time\n"
        "from tasks.ops import worker_preload as p\n"
        "t = time.perf_counter(); assert p.wait(timeout_s=30) is None\n"
        "assert time.perf_counter() - t < 1\n"
        "p.start(('tasks.no_such_module', 'json'))\n"
        "assert p.wait(timeout_s=30) is not None\n"
        "import sys; assert 'json' in sys.modules\n"
    )
    result = _run(code)
    assert result.returncode == 0, result.stderr
    assert "worker preload: import of tasks.no_such_module failed" in result.stderr
