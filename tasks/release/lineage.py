"""MLflow dataset lineage at the cost of the night's data, not of MLflow's per-value loops.

`mlflow.data.from_pandas` infers the schema by visiting every value in Python and computes
its digest after mapping `type` over every cell (of the whole frame, though it hashes only
the first 10,000 rows): on the year's 300,000 training rows that was 8.5 s of the
register step's 14 s on a loaded box (BENCHMARKS.md, the one-new-day section). Here the
digest hashes every row with pandas' vectorised `hash_pandas_object` (so it changes when
any row does, unlike MLflow's), and the schema is MLflow's own inference on a few rows
that give it the same answer: column types follow the columns' dtypes, and whether a
column is required follows whether it has a missing value, so the first rows plus each
column's first missing value suffice (tested against the full inference on real rows).
"""

from __future__ import annotations

import mlflow.data
import numpy as np
import pandas as pd
from mlflow.data.digest_utils import get_normalized_md5_digest
from mlflow.data.pandas_dataset import PandasDataset

SCHEMA_ROWS = 1000


def content_digest(frame: pd.DataFrame) -> str:
    """An 8-character digest of every row's values, the row count and the column names."""
    return get_normalized_md5_digest(
        [
            pd.util.hash_pandas_object(frame, index=False).to_numpy(),
            np.int64(len(frame)),
            *(str(column).encode() for column in frame.columns),
        ]
    )


def schema_rows(frame: pd.DataFrame, head: int = SCHEMA_ROWS) -> pd.DataFrame:
    """The first `head` rows plus each column's first missing value, in frame order."""
    missing = frame.isna().to_numpy()
    firsts = {int(np.argmax(missing[:, i])) for i in np.flatnonzero(missing.any(axis=0))}
    positions = sorted(set(range(min(head, len(frame)))) | firsts)
    return frame.iloc[positions]


def pandas_dataset(frame: pd.DataFrame, source: str, targets: str, name: str) -> PandasDataset:
    """`mlflow.data.from_pandas(frame, ...)` with the digest and schema computed as above."""
    dataset = mlflow.data.from_pandas(
        frame, source=source, targets=targets, name=name, digest=content_digest(frame)
    )
    sample = mlflow.data.from_pandas(schema_rows(frame), targets=targets, digest="-")
    # PandasDataset.schema is a functools.cached_property: set, it is never inferred again
    dataset.schema = sample.schema
    return dataset
