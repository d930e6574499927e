"""Code tests of the start-up path (issue 14, item 5): what `nightshift run` loads before
its first task, and the deferred stage names the nightly flow calls."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

# Seconds of imports each; none of them is needed before the run's first task (the ingest).
HEAVY = [
    "torch",
    "mlflow",
    "great_expectations",
    "pyspark",
    "optuna",
    "lightgbm",
    "sklearn",
    "onnx",
    "onnxruntime",
    "matplotlib",
    "prefect.server.api.server",
]


def _loaded_after(statement: str, modules: list[str] = HEAVY) -> list[str]:
    """Those of `modules` in sys.modules after `statement`, in a fresh interpreter."""
    code = f"{statement}\nimport json, sys\nprint(json.dumps([m for m in {modules!r} if m in sys.modules]))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_cli_and_the_nightly_flow_import_no_heavy_library():
    assert _loaded_after("import flows.cli, flows.nightly, flows.runtime, flows.server") == []


def test_the_api_and_the_cluster_are_set_up_before_prefect_is_imported():
    """`nightshift run` finds (or starts) the server and starts the Dask cluster first:
    Prefect's own import (seconds) then overlaps the cluster's start."""
    statement = (
        "import os; os.environ.pop('PREFECT_API_URL', None)\n"
        "import flows.cli, flows.server, tasks.ops.cluster\n"
        "assert flows.server.configured_api_url() is None"
    )
    assert _loaded_after(statement, ["prefect", "prefect_dask"]) == []


def test_what_a_run_calls_before_its_first_task_imports_no_heavy_library():
    """open_run tags the flow run through the reporting task module; the cluster sizing
    asks for GPUs; the as_of resolution reads the schedule: all before the ingest."""
    statement = (
        "import flows.nightly, tasks.reporting.prefect_tasks, tasks.ops.schedule\n"
        "from tasks.ops.cluster import local_cluster_kwargs\n"
        "from tasks.core.settings import get_settings\n"
        "local_cluster_kwargs(get_settings())"
    )
    assert _loaded_after(statement) == []


def test_every_deferred_name_of_the_nightly_flow_resolves_to_its_object():
    """A renamed task or module fails here, not at 2 a.m. when the flow first calls it."""
    import importlib

    import flows.nightly as nightly
    from flows.runtime import DEFERRED_MODULES, Deferred

    deferred = {k: v for k, v in vars(nightly).items() if isinstance(v, Deferred)}
    assert len(deferred) >= 12
    for name, proxy in deferred.items():
        real = proxy.resolve()
        assert real is getattr(importlib.import_module(proxy.module), name)
        assert proxy.module in DEFERRED_MODULES
    # a Prefect task keeps its own attributes behind the proxy
    assert nightly.tune_hyperparameters_task.name == "tune-hyperparameters"
    assert nightly.publish_failure.__name__ == "publish_failure"  # Prefect names hooks by it


def test_a_bad_option_starts_no_server_and_no_cluster(monkeypatch, tmp_path):
    """Options are checked before the kept server (which would outlive the command) starts."""
    from typer.testing import CliRunner

    from flows.cli import app
    from tasks.core.settings import get_settings

    monkeypatch.setenv("NIGHTSHIFT_HOME", str(tmp_path))
    monkeypatch.setenv("NIGHTSHIFT_PREFECT_SERVER_KEEP", "true")
    get_settings.cache_clear()
    try:
        bad_day = CliRunner().invoke(app, ["run", "--as-of", "2013-02-30"])
        bad_first = CliRunner().invoke(app, ["run", "--first-day", "tomorrow"])
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert bad_day.exit_code == 2 and "is not a date" in bad_day.output
    assert bad_first.exit_code == 2 and "is not a date" in bad_first.output
    assert not (tmp_path / "prefect" / "server.json").exists()
    assert "Prefect API" not in bad_day.output + bad_first.output
