"""Code tests for the features stage: time split, no leakage, preprocessing fitted on train."""

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from tasks.datasets import get_dataset
from tasks.features.build import preprocessor_for, split_days
from tasks.features.preprocessor import TabularPreprocessor

FLIGHTS = get_dataset("flights")
LEAKAGE = FLIGHTS.leakage
feature_frame = FLIGHTS.feature_frame
label = FLIGHTS.label


def _clean_rows(n: int, carrier: str = "AA", start: date = date(2013, 1, 1)) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "date": [start + timedelta(days=int(i % 20)) for i in range(n)],
            "carrier": carrier,
            "origin": "JFK",
            "dest": "MIA",
            "tailnum": "N1",
            "sched_dep_time": 930,
            "sched_arr_time": 1245,
            "distance": rng.uniform(100, 2000, n),
            "temp": rng.normal(40, 10, n),
            "dewp": 20.0,
            "humid": 50.0,
            "wind_dir": 180.0,
            "wind_speed": 10.0,
            "wind_gust": np.nan,
            "precip": 0.0,
            "pressure": 1010.0,
            "visib": 10.0,
            "plane_year": 2004.0,
            "plane_type": "Fixed wing multi engine",
            "manufacturer": "AIRBUS",
            "engines": 2.0,
            "seats": 180.0,
            "engine": "Turbo-fan",
            "dep_time": 940.0,
            "dep_delay": 10.0,
            "arr_time": 1300.0,
            "arr_delay": rng.normal(10, 30, n),
            "air_time": 160.0,
        }
    )


def test_split_holds_out_the_last_days_up_to_as_of():
    days = [date(2013, 1, 1) + timedelta(days=i) for i in range(60)]
    train, holdout = split_days(days, as_of=date(2013, 2, 28), holdout_days=14)
    assert holdout == [date(2013, 2, 15) + timedelta(days=i) for i in range(14)]
    assert max(train) < min(holdout) and len(train) == 45


def test_split_refuses_a_window_without_training_days():
    with pytest.raises(ValueError, match="holdout_days"):
        split_days([date(2013, 1, 1)], as_of=date(2013, 1, 1), holdout_days=5)


def test_features_never_read_actual_times_or_delays():
    rows = _clean_rows(50)
    baseline = feature_frame(rows)
    scrambled = rows.copy()
    for column in LEAKAGE:
        scrambled[column] = -999.0
    pd.testing.assert_frame_equal(baseline, feature_frame(scrambled))
    assert not set(LEAKAGE) & set(baseline.columns)


def test_label_is_late_by_more_than_15_minutes_and_unknown_when_cancelled():
    rows = _clean_rows(4)
    rows["arr_delay"] = [15.0, 16.0, -3.0, np.nan]
    assert label(rows).tolist()[:3] == [0.0, 1.0, 0.0] and np.isnan(label(rows).iloc[3])


def test_preprocessor_learns_only_from_training_rows():
    train = feature_frame(_clean_rows(200, carrier="AA"))
    later = feature_frame(_clean_rows(50, carrier="ZZ"))  # a carrier first seen after training
    later["temp"] = 500.0
    pre = preprocessor_for(FLIGHTS).fit(train)

    assert pre.vocab["carrier"] == ["AA"]
    assert pre.means["temp"] == pytest.approx(train["temp"].mean())
    codes, numeric = pre.transform(later)
    carrier = pre.categorical.index("carrier")
    assert (codes[:, carrier] == 0).all()  # unseen level -> the unknown slot
    temp = pre.numeric.index("temp")
    assert numeric[0, temp] == pytest.approx((500 - pre.means["temp"]) / pre.stds["temp"], rel=1e-5)


def test_missing_values_are_imputed_with_an_indicator_and_survive_json():
    train = feature_frame(_clean_rows(100))
    train.loc[:9, "temp"] = np.nan
    pre = preprocessor_for(FLIGHTS).fit(train)
    codes, numeric = pre.transform(train)
    assert not np.isnan(numeric).any()
    assert "temp" in pre.missing_indicators
    indicator = len(pre.numeric) + pre.missing_indicators.index("temp")
    assert numeric[:10, indicator].tolist() == [1.0] * 10 and numeric[10:, indicator].sum() == 0

    restored = TabularPreprocessor.from_json(pre.to_json())
    codes2, numeric2 = restored.transform(train)
    np.testing.assert_array_equal(codes, codes2)
    np.testing.assert_array_equal(numeric, numeric2)
