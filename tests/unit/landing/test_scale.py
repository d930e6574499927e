"""The scale generator: N x the real flights, keys still unique, seeded, dirty rates kept."""

import io
from datetime import date

import numpy as np
import pandas as pd
import pytest

from tasks.core.lake import Lake
from tasks.datasets import get_dataset
from tasks.datasets.flights import scale_copy as perturbed_copy
from tasks.ingest.pandas_engine import clean_day
from tasks.landing.scale import write_scaled_landing

FLIGHTS = get_dataset("flights")

DAY = date(2013, 2, 12)


def test_scaled_day_has_n_copies_with_unique_keys_and_is_deterministic(tmp_path):
    real = Lake(str(tmp_path / "x1"))
    write_scaled_landing(real, FLIGHTS, 1, DAY, DAY)
    scaled = Lake(str(tmp_path / "x3"))
    report = write_scaled_landing(scaled, FLIGHTS, 3, DAY, DAY, seed=7)

    base = clean_day(real.root, "flights", DAY, real.latest_dimension_snapshot("flights", DAY))
    tripled = clean_day(
        scaled.root, "flights", DAY, scaled.latest_dimension_snapshot("flights", DAY)
    )
    assert report.fact_rows == tripled.raw_rows == 3 * base.raw_rows
    # perturbed copies are new flights: no duplicate, no key clash; dirty rows stay dirty
    assert tripled.duplicates_dropped == 0
    assert tripled.quarantined_rows == 3 * base.quarantined_rows
    assert tripled.clean_rows == 3 * base.clean_rows
    assert (
        tripled.sources["weather"].raw_rows == base.sources["weather"].raw_rows
    )  # weather is not multiplied
    clean = scaled.read_parquet(scaled.partition_file("clean", "flights", DAY))
    assert clean["arr_delay"].std() == pytest.approx(
        real.read_parquet(real.partition_file("clean", "flights", DAY))["arr_delay"].std(), rel=0.05
    )

    # seeded: the same copy of the same rows comes out byte for byte the same
    raw = real.fs.cat(f"{real.landing_day('flights', DAY)}/flights.csv")
    frame = pd.read_csv(io.BytesIO(raw), dtype=str, keep_default_na=False)
    first = perturbed_copy(frame, 2, np.random.default_rng(7)).to_csv(index=False)
    assert first == perturbed_copy(frame, 2, np.random.default_rng(7)).to_csv(index=False)
    assert first != perturbed_copy(frame, 2, np.random.default_rng(8)).to_csv(index=False)


def test_scale_factor_out_of_range_is_refused(tmp_path):
    with pytest.raises(ValueError, match="--factor must be between 1 and 60"):
        write_scaled_landing(Lake(str(tmp_path / "lake")), FLIGHTS, 61, DAY, DAY)


def test_scale_and_engine_on_the_command_line(tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    runner = CliRunner()
    lake = tmp_path / "lake"
    result = runner.invoke(
        app,
        ["scale", "--factor", "2", "--from", "2013-06-01", "--through", "2013-06-01"]
        + ["--lake-root", str(lake)],
    )
    assert result.exit_code == 0, result.output
    assert "scale x2:" in result.output
    rows = (
        (lake / "landing" / "flights" / "daily" / "2013-06-01" / "flights.csv")
        .read_text()
        .splitlines()
    )
    assert int(result.output.split("scale x2: ")[1].split(" ")[0].replace(",", "")) == len(rows) - 1

    bad = runner.invoke(app, ["run", "--engine", "flink"])
    assert bad.exit_code == 2 and "flink" in bad.output
