"""The preprocessing fitted on the training window: vocabularies, imputation, scaling.

Serving needs it (the registered model applies it to raw rows), so it imports only
pandas and numpy.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

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

        Works on numpy arrays column by column: a served request of one row pays for a few
        array operations per column, not for a pandas Series each (the model service's
        batch-1 latency is mostly this function).
        """
        if not self.vocab:
            raise RuntimeError("TabularPreprocessor.transform called before fit")
        n = len(features)
        codes = np.zeros((n, len(self.categorical)), dtype=np.int64)
        for i, column in enumerate(self.categorical):
            values = features[column].astype("string").to_numpy(dtype=object, na_value=None)
            codes[:, i] = self._codes(column, values)  # unknown and missing: 0
        numeric = np.empty((n, self.n_numeric), dtype=np.float32)
        for i, column in enumerate(self.numeric):
            values = features[column].to_numpy(dtype=np.float64, na_value=np.nan)
            filled = np.where(np.isnan(values), self.medians[column], values)
            numeric[:, i] = (filled - self.means[column]) / self.stds[column]
        for j, column in enumerate(self.missing_indicators, start=len(self.numeric)):
            numeric[:, j] = features[column].isna().to_numpy(dtype=np.float32)
        return codes, numeric

    def _codes(self, column: str, values: np.ndarray) -> np.ndarray:
        """1-based vocabulary positions of string values; 0 for unknown or missing ones."""
        cache = self.__dict__.setdefault("_lookups", {})
        if column not in cache:  # built once per column (not part of the fitted state)
            vocab = self.vocab[column]
            cache[column] = (pd.Index(vocab), {v: i + 1 for i, v in enumerate(vocab)})
        index, lookup = cache[column]
        if len(values) <= 1024:  # a served request: a dict lookup per value
            return np.fromiter((lookup.get(v, 0) for v in values), np.int64, len(values))
        positions = index.get_indexer(pd.Index(values, dtype=object).fillna("\x00"))
        return positions + 1  # -1 (unknown) becomes 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> TabularPreprocessor:
        return cls(**json.loads(text))
