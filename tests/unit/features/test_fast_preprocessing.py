"""The served model's numpy path gives the pandas path's features, bit for bit.

`ServedModel` scores small inputs (and every service request) with the dataset's
`derive_arrays` and `TabularPreprocessor.transform_arrays`, never building a pandas frame;
training, evaluation and large inputs use `derive_features` and `transform`. If the two
ever differed, the service would answer differently from the model that was evaluated.
These tests compare them on real cleaned rows of both datasets, with missing values in
every column, categories the preprocessor never saw, and requests parsed from JSON.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tasks.core.lake import Lake
from tasks.datasets import get_dataset
from tasks.features.build import preprocessor_for, read_clean
from tasks.features.preprocessor import TabularPreprocessor
from tasks.release.pyfunc import frame_arrays
from tasks.serving.schema import Column, RequestError, columns_from_split
from tests.conftest import clean_real_days

DAYS = 4


@pytest.fixture(scope="module", params=["flights", "hotels"])
def real(request, tmp_path_factory):
    """(spec, clean rows of 4 real days, preprocessor fitted on the first 2 days only)."""
    spec = get_dataset(request.param)
    lake = Lake(str(tmp_path_factory.mktemp(f"fast-{spec.name}") / "lake"))
    days = clean_real_days(lake, spec.name, DAYS)
    rows = read_clean(lake, spec.name, spec.fact.name, days)[list(spec.input_columns)]
    first = read_clean(lake, spec.name, spec.fact.name, days[:2])
    pre = preprocessor_for(spec)
    pre.min_count = 3
    pre.fit(spec.feature_frame(first))
    return spec, rows.reset_index(drop=True), pre


def _with_gaps(spec, rows: pd.DataFrame) -> pd.DataFrame:
    """Rows with a missing value in every input column and unseen categories."""
    out = rows.copy()
    for i, column in enumerate(spec.input_columns):
        out.loc[i % len(out), column] = None  # NaN / NA / NaT by the column's dtype
    for i, column in enumerate(c for c in spec.input_columns if c in spec.categorical):
        out.loc[(3 * i + 1 + len(spec.input_columns)) % len(out), column] = "never-seen-level"
    return out


def _pandas_path(spec, pre: TabularPreprocessor, rows: pd.DataFrame):
    return pre.transform(spec.feature_frame(rows.reset_index(drop=True)))


def _numpy_path(spec, pre: TabularPreprocessor, columns: dict):
    return pre.transform_arrays(spec.feature_arrays(columns))


def _assert_identical(expected, actual) -> None:
    (codes_a, numeric_a), (codes_b, numeric_b) = expected, actual
    assert codes_a.dtype == codes_b.dtype == np.int64
    assert numeric_a.dtype == numeric_b.dtype == np.float32
    np.testing.assert_array_equal(codes_a, codes_b)
    assert numeric_a.tobytes() == numeric_b.tobytes()  # bit for bit, not approximately


def _reference_transform(pre: TabularPreprocessor, features: pd.DataFrame):
    """The preprocessing written plainly, one pandas column at a time (the oracle)."""
    codes = np.column_stack(
        [
            features[c]
            .astype("string")
            .map(
                lambda v, c=c: pre.vocab[c].index(v) + 1 if v in pre.vocab[c] else 0,
                na_action="ignore",
            )
            .fillna(0)
            .to_numpy(np.int64)
            for c in pre.categorical
        ]
    )
    numeric = [
        ((features[c].astype("float64").fillna(pre.medians[c]) - pre.means[c]) / pre.stds[c])
        for c in pre.numeric
    ] + [features[c].isna().astype("float64") for c in pre.missing_indicators]
    return codes, np.column_stack(numeric).astype(np.float32)


def test_the_numpy_path_equals_the_pandas_path_on_real_rows_with_gaps(real):
    spec, rows, pre = real
    gappy = _with_gaps(spec, rows)
    assert gappy.isna().any().all()  # every input column has a missing value somewhere
    for frame in (rows, gappy):
        for n in (1, 2, 37, len(frame)):
            picked = frame.head(n)
            expected = _pandas_path(spec, pre, picked)
            _assert_identical(expected, _numpy_path(spec, pre, frame_arrays(picked)))
        # and both equal the plain per-column preprocessing
        _assert_identical(
            _reference_transform(pre, spec.feature_frame(frame)), _pandas_path(spec, pre, frame)
        )
    codes, _ = _pandas_path(spec, pre, gappy)
    assert (codes == 0).any() and (codes > 0).any()  # unknown levels and known ones


def test_a_parsed_json_request_gets_the_same_features_as_its_frame(real):
    """What the service builds from a JSON body (no pandas) equals the frame's features."""
    spec, rows, pre = real
    gappy = _with_gaps(spec, rows).head(64)
    split = json.loads(gappy.to_json(orient="split", date_format="iso", index=False))
    kinds = {c: "string" if gappy[c].dtype.kind in "OSU" else "double" for c in gappy}
    kinds[spec.input_columns[0]] = "datetime"  # both datasets' first input is the date
    schema = [Column(c, kinds[c], True) for c in spec.input_columns]
    columns, n = columns_from_split(split, schema, max_rows=4096)
    assert n == 64 and columns["date"].dtype.kind == "M"
    _assert_identical(_pandas_path(spec, pre, gappy), _numpy_path(spec, pre, columns))
    for i in range(3):  # one row alone: the batch-1 request
        one = {c: values[i : i + 1] for c, values in columns.items()}
        _assert_identical(
            _pandas_path(spec, pre, gappy.iloc[i : i + 1]), _numpy_path(spec, pre, one)
        )


def test_a_missing_date_does_not_change_the_other_rows_weekday(real):
    spec, rows, _ = real
    weekday = "day_of_week" if spec.name == "flights" else "arrival_weekday"
    alone = spec.feature_frame(rows.head(3))[weekday].tolist()
    gappy = rows.head(3).copy()
    gappy.loc[0, "date"] = None
    together = spec.feature_frame(gappy)[weekday]
    assert together.isna().tolist() == [True, False, False]
    assert together.tolist()[1:] == alone[1:]
    assert all(v in {"0", "1", "2", "3", "4", "5", "6"} for v in alone)


def test_request_dates_parse_like_pandas_and_bad_ones_name_the_row():
    schema = [Column("date", "datetime", True)]
    given = ["2013-01-05", "2013-01-05T13:45:00.000", "2013-01-05 13:45", "2016-02-29T00:00"]
    fast, _ = columns_from_split(
        {"columns": ["date"], "data": [[v] for v in given]}, schema, max_rows=10
    )
    expected = pd.to_datetime(pd.Series(given), format="ISO8601").to_numpy()
    np.testing.assert_array_equal(fast["date"], expected)
    with_missing, _ = columns_from_split(
        {"columns": ["date"], "data": [["2013-01-05"], [None]]}, schema, max_rows=10
    )
    assert np.isnat(with_missing["date"]).tolist() == [False, True]
    with pytest.raises(RequestError) as bad:
        columns_from_split(
            {"columns": ["date"], "data": [["2013-01-05"], ["2013-02-30"]]}, schema, max_rows=10
        )
    assert bad.value.status == 422 and "'date', row 1" in bad.value.message


def test_request_numbers_are_checked_on_the_fast_path_too():
    schema = [Column("n", "long", True), Column("x", "double", True)]
    ok, _ = columns_from_split(
        {"columns": ["n", "x"], "data": [[1, 0.5], [None, None], [3.0, 2]]}, schema, max_rows=10
    )
    assert ok["n"].dtype == np.float64 and np.isnan(ok["n"][1]) and ok["x"][2] == 2.0
    for row, (n, x), wanted in (
        (1, (1.5, 0.0), "an integer"),
        (0, (True, 0.0), "a number"),
        (1, ("7", 0.0), "a number"),
    ):
        data = [[1, 0.5], [1, 0.5]]
        data[row] = [n, x]
        with pytest.raises(RequestError) as bad:
            columns_from_split({"columns": ["n", "x"], "data": data}, schema, max_rows=10)
        assert f"'n', row {row}" in bad.value.message and wanted in bad.value.message
