"""The MLflow datasets the release logs: MLflow's schema and profile, a digest of every row."""

from __future__ import annotations

import mlflow.data
import numpy as np
import pytest

from tasks.core.lake import Lake
from tasks.datasets import get_dataset
from tasks.features.build import read_clean
from tasks.release.lineage import pandas_dataset, schema_rows
from tests.conftest import clean_real_days


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    """Real cleaned flights of 3 days (with missing weather and plane values), as the
    register step logs them: the model's inputs and the label."""
    spec = get_dataset("flights")
    lake = Lake(str(tmp_path_factory.mktemp("lineage") / "lake"))
    days = clean_real_days(lake, spec.name, 3)
    frame = read_clean(lake, spec.name, spec.fact.name, days)
    frame["label"] = spec.label(frame)
    frame = frame.loc[frame["label"].notna(), [*spec.input_columns, "label"]]
    frame = frame.reset_index(drop=True)
    # a column whose only missing value comes long after the first rows
    frame.loc[len(frame) - 1, "distance"] = np.nan
    assert len(frame) > 1000 and frame["distance"].isna().sum() == 1
    return frame


def test_the_dataset_has_mlflows_own_schema_and_profile(rows):
    ours = pandas_dataset(rows, source="/lake/train.parquet", targets="label", name="training")
    theirs = mlflow.data.from_pandas(rows, source="/lake/train.parquet", targets="label")
    assert len(schema_rows(rows)) < len(rows) / 2  # the point: not every row
    assert ours.schema == theirs.schema
    distance = next(c for c in ours.schema.inputs if c.name == "distance")
    assert distance.required is False  # its one missing value is the last row
    assert ours.profile == theirs.profile
    assert ours.to_dict()["schema"] == theirs.to_dict()["schema"]
    assert (ours.name, ours.targets) == ("training", "label")


def test_the_digest_covers_every_row(rows):
    digest = pandas_dataset(rows, source="s", targets="label", name="n").digest
    assert digest == pandas_dataset(rows.copy(), source="s", targets="label", name="n").digest
    changed = rows.copy()
    changed.loc[len(changed) - 1, "temp"] = 1000.0  # the last row, past MLflow's first 10,000
    assert pandas_dataset(changed, source="s", targets="label", name="n").digest != digest
