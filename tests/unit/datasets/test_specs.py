"""Code + data tests of the dataset specs: every declared dataset is whole and leak-free.

Each spec is checked on a sample of its own real rows (typed by its own contract), so a new
dataset gets these checks by being declared.
"""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from data_contracts import load_contract
from tasks.datasets import DATASETS, get_dataset
from tasks.datasets.spec import day_key
from tasks.quality.pandas_rules import typed_frame_and_violations
from tasks.quality.rules import row_rules


def _typed_sample(name: str, rows: int = 400) -> pd.DataFrame:
    """Real fact rows as clean/ holds them (typed, dated), without the joins."""
    spec = get_dataset(name)
    raw = spec.read_source(spec.fact.name).head(rows)
    contract = load_contract(spec.fact.name)
    allowed = {c.allowed_values_from: None for c in contract.columns if c.allowed_values_from}
    # allowed sets from dimensions are not the point here: accept every delivered value
    sets = {
        ref: raw[ref.split(".")[1]].unique().tolist() if ref.split(".")[1] in raw else []
        for ref in allowed
    }
    typed, _ = typed_frame_and_violations(raw, contract, sets)
    typed.insert(0, "date", pd.to_datetime(day_key(raw, spec.fact)).dt.date)
    return typed


def _with_join_columns(name: str, frame: pd.DataFrame) -> pd.DataFrame:
    """Add the columns joins would bring (as missing values), so features can be derived."""
    spec = get_dataset(name)
    for column in spec.input_columns:
        if column not in frame:
            frame[column] = float("nan")
    return frame


@pytest.mark.parametrize("name", DATASETS)
def test_spec_declares_a_whole_dataset(name):
    spec = get_dataset(name)
    assert spec.name == name and spec.fact in spec.sources
    for table in spec.tables:
        assert load_contract(table).dataset == table
        assert load_contract(table, "landing").dataset == table
    assert not set(spec.leakage) & {*spec.categorical, *spec.numeric, *spec.input_columns}
    assert spec.first_day < spec.last_day and spec.model_name and spec.output != spec.decision


@pytest.mark.parametrize("name", DATASETS)
def test_features_never_read_leakage_columns_on_real_rows(name):
    spec = get_dataset(name)
    rows = _with_join_columns(name, _typed_sample(name))
    features = spec.feature_frame(rows)
    assert list(features.columns) == [*spec.categorical, *spec.numeric]
    scrambled = rows.copy()
    for column in spec.leakage:
        if column in scrambled:
            scrambled[column] = scrambled[column].sample(frac=1, random_state=1).to_numpy()
    pd.testing.assert_frame_equal(features, spec.feature_frame(scrambled))
    # and serving needs nothing but the input columns
    pd.testing.assert_frame_equal(features, spec.feature_frame(rows[list(spec.input_columns)]))


@pytest.mark.parametrize("name", DATASETS)
def test_label_is_binary_and_slices_cover_every_row(name):
    spec = get_dataset(name)
    rows = _with_join_columns(name, _typed_sample(name))
    label = spec.label(rows).dropna()
    assert set(label.unique()) <= {0.0, 1.0} and 0 < label.mean() < 1
    slices = spec.slice_frame(rows)
    assert list(slices.columns) == list(spec.slices) and slices.notna().all().all()


def test_every_rule_of_every_contract_has_a_unique_name():
    for name in DATASETS:
        for table in get_dataset(name).tables:
            contract = load_contract(table)
            sets = {c.allowed_values_from: [] for c in contract.columns if c.allowed_values_from}
            names = [r.name for r in row_rules(contract, sets, include_derived=True)]
            assert len(names) == len(set(names)), table


def test_an_unknown_dataset_is_a_clear_error():
    with pytest.raises(KeyError, match="known datasets: flights, hotels"):
        get_dataset("trains")
    assert get_dataset("flights").first_day == date(2013, 1, 1)
