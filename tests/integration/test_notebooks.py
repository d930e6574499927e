"""The notebooks run top to bottom on a real lake, so they never rot."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))

pytestmark = [pytest.mark.integration, pytest.mark.slow]
# What each notebook must print on the session's lake and MLflow store.
EXPECTED = {
    "landing_and_contracts.ipynb": "59 days, 51,955 raw rows",
    "runs_and_registry.ipynb": "as_of 2013-02-28..",
}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_executes_on_the_session_lake(path, nightly_run):
    # The kernel inherits this process's environment: NIGHTSHIFT_HOME is the session home.
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    ).execute()
    outputs = [
        o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])
    ]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "\n".join(
        str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", "")) for o in outputs
    )
    assert EXPECTED[path.name] in text


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no notebook"
