"""The datasets nightshift knows, by name: one spec module each (see `spec.py`).

To add a dataset, write `tasks/datasets/<name>.py` with a module-level `SPEC` and add
its name to `DATASETS`; its contracts go in `data_contracts/`.
"""

from __future__ import annotations

from importlib import import_module

from tasks.datasets.spec import DatasetSpec

DATASETS = ("flights", "hotels")
DEFAULT_DATASET = "flights"


def get_dataset(name: str) -> DatasetSpec:
    """The spec of dataset `name`; a clear error naming the known ones otherwise."""
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    spec = import_module(f"tasks.datasets.{name}").SPEC
    if spec.name != name:
        raise ValueError(f"tasks/datasets/{name}.py declares dataset {spec.name!r}")
    return spec
