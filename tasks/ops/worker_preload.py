"""A Dask worker preload: the ingest engine's modules, imported in the background at start.

Why: a fresh worker's first ingest task imported pandas, pyarrow and the engine (the
reader, the rules, the native checks) before it cleaned a row: 0.5-0.9 s per worker on
an idle 2-core machine, a third of a 31-day ingest at scale 10 (BENCHMARKS §24, §27).
The local clusters (`tasks.ops.cluster`) name this module as their workers' `preload`,
so each worker starts those imports in a thread as soon as it starts, while the flow is
still creating its run and its first task (or the CLI stage hashing the landed days).

The thread never holds the worker back: the worker registers with the scheduler at
once, so the cluster is ready as soon as before (start-up, issue 14: <= 5 s to the first
task). A task that needs a module still being imported waits for that import through
Python's per-module import lock; nothing is imported twice. A failed import is logged
and left to the task, which then raises it with its own traceback.

The preload also gives the worker's Arrow buffers jemalloc instead of pyarrow's default
(mimalloc), before the engine allocates any. A worker cleaning a year at scale 30 grew
to 325 MiB with mimalloc (the pool kept what it freed, `release_unused()` after each day
did not return it) against 271 MiB with jemalloc, the whole process tree 805 against
703 MiB, and the run was no slower (BENCHMARKS §29): peak RSS has to stay flat with the
scale factor (issue 14). Where the wheel has no jemalloc, the default pool stays.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time

logger = logging.getLogger("nightshift.cluster")

# What the ingest's first task imports; the engine module pulls in pandas, pyarrow, the
# reader (`dialect`), the rules, the native checks and the validation cache.
MODULES = ("tasks.ingest.pandas_engine",)

_done = threading.Event()
_started = False
_seconds: float | None = None


def use_jemalloc() -> str:
    """Make jemalloc this process's default Arrow pool where the wheel has it; the pool's
    backend name, for the record."""
    import pyarrow

    try:
        pyarrow.set_memory_pool(pyarrow.jemalloc_memory_pool())
    except NotImplementedError:  # a build without jemalloc: keep its default
        logger.info("worker preload: no jemalloc in this pyarrow; keeping its default pool")
    return pyarrow.default_memory_pool().backend_name


def _import_all(modules: tuple[str, ...], arrow_pool: bool = True) -> None:
    global _seconds
    started = time.perf_counter()
    try:
        if arrow_pool:
            use_jemalloc()
        for module in modules:
            try:
                importlib.import_module(module)
            except Exception as error:  # the task that needs it raises it again, in context
                logger.warning("worker preload: import of %s failed: %s", module, error)
        _seconds = time.perf_counter() - started
    finally:
        _done.set()


def start(modules: tuple[str, ...] = MODULES, arrow_pool: bool = True) -> threading.Thread:
    """Import `modules` in a daemon thread, after switching Arrow to jemalloc when
    `arrow_pool`; the thread (already started)."""
    global _started
    _started = True
    thread = threading.Thread(
        target=_import_all, args=(modules, arrow_pool), name="nightshift-preload", daemon=True
    )
    thread.start()
    return thread


def wait(timeout_s: float = 120.0) -> float | None:
    """Block until this process's preload is done; its seconds (None if it never ran or
    is still running after `timeout_s`). For `client.run(wait)`, e.g. in benchmarks
    that count the preload in the cluster's start-up."""
    if not _started:
        return None
    _done.wait(timeout_s)
    return _seconds


def dask_setup(worker: object) -> None:  # Dask's preload hook, called as the worker starts
    start()
