"""The preprocessing fitted on the training window: vocabularies, imputation, scaling.

Serving needs it (the registered model applies it to raw rows), so it imports only
pandas and numpy.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from itertools import repeat

import numpy as np
import pandas as pd


@dataclass
class TabularPreprocessor:
    """Categorical vocabularies, imputation and scaling, fitted on the training window."""

    categorical: list[str] = field(default_factory=list)
    numeric: list[str] = field(default_factory=list)
    min_count: int = 20
    vocab: dict[str, list[str]] = field(default_factory=dict)
    medians: dict[str, float] = field(default_factory=dict)
    means: dict[str, float] = field(default_factory=dict)
    stds: dict[str, float] = field(default_factory=dict)
    missing_indicators: list[str] = field(default_factory=list)

    def fit(self, features: pd.DataFrame) -> TabularPreprocessor:
        for column in self.categorical:
            counts = features[column].value_counts(dropna=True)
            # Rare levels share the unknown slot (index 0) with unseen and missing ones.
            self.vocab[column] = sorted(str(v) for v in counts[counts >= self.min_count].index)
        self.missing_indicators = [c for c in self.numeric if features[c].isna().any()]
        for column in self.numeric:
            values = features[column].astype("float64")
            median = float(values.median()) if values.notna().any() else 0.0
            filled = values.fillna(median)
            self.medians[column] = median
            self.means[column] = float(filled.mean())
            self.stds[column] = float(filled.std()) or 1.0
        return self

    @property
    def cardinalities(self) -> list[int]:
        """Embedding table sizes: the vocabulary plus the unknown slot."""
        return [len(self.vocab[c]) + 1 for c in self.categorical]

    @property
    def n_numeric(self) -> int:
        return len(self.numeric) + len(self.missing_indicators)

    def transform(self, features: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(categorical codes int64 [n, n_cat], numeric float32 [n, n_numeric]).

        Training, evaluation and large scoring calls come here with a feature frame; it is
        reduced to one numpy array per column and handed to `transform_arrays`, the code
        the served model also runs, so there is one transformation, not two.
        """
        columns: dict[str, np.ndarray] = {}
        for column in self.categorical:
            columns[column] = features[column].astype("string").to_numpy(object, na_value=None)
        for column in self.numeric:
            columns[column] = features[column].to_numpy(dtype=np.float64, na_value=np.nan)
        return self.transform_arrays(columns)

    def transform_arrays(self, columns: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """`transform` on one array per feature, without pandas.

        Categorical arrays hold `str` or None (missing); numeric ones are float64 with NaN
        for missing. A served request of one row pays for a few array operations per
        column, not for a pandas Series each (batch-1 latency is mostly preprocessing).
        """
        if not self.vocab:
            raise RuntimeError("TabularPreprocessor.transform called before fit")
        first = self.categorical[0] if self.categorical else self.numeric[0]
        n = len(columns[first])
        codes = np.zeros((n, len(self.categorical)), dtype=np.int64)
        for i, column in enumerate(self.categorical):
            codes[:, i] = self._codes(column, columns[column])  # unknown and missing: 0
        numeric = np.empty((n, self.n_numeric), dtype=np.float32)
        if self.numeric:  # all columns at once, element by element as one column would be
            medians, means, stds = self._scaling()
            values = np.column_stack([columns[column] for column in self.numeric])
            filled = np.where(np.isnan(values), medians, values)
            numeric[:, : len(self.numeric)] = (filled - means) / stds
        for j, column in enumerate(self.missing_indicators, start=len(self.numeric)):
            numeric[:, j] = np.isnan(columns[column])
        return codes, numeric

    def _scaling(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Medians, means and stds as float64 vectors in `numeric` order (built once)."""
        cached = self.__dict__.get("_scaling_vectors")
        if cached is None:
            cached = tuple(
                np.array([table[c] for c in self.numeric], dtype=np.float64)
                for table in (self.medians, self.means, self.stds)
            )
            self.__dict__["_scaling_vectors"] = cached
        return cached

    def _codes(self, column: str, values: np.ndarray) -> np.ndarray:
        """1-based vocabulary positions of string values; 0 for unknown or missing ones."""
        cache = self.__dict__.setdefault("_lookups", {})
        if column not in cache:  # built once per column (not part of the fitted state)
            vocab = self.vocab[column]
            cache[column] = (pd.Index(vocab), {v: i + 1 for i, v in enumerate(vocab)})
        index, lookup = cache[column]
        if len(values) <= 1024:  # a served request: a dict lookup per value
            return np.fromiter(map(lookup.get, values, repeat(0)), np.int64, len(values))
        positions = index.get_indexer(pd.Index(values, dtype=object).fillna("\x00"))
        return positions + 1  # -1 (unknown) becomes 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> TabularPreprocessor:
        return cls(**json.loads(text))
