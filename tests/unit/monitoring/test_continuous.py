"""Continuous evaluation's plain parts: which days are scored, the decision, the history."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import date, timedelta

import numpy as np
import pytest

from tasks.core.lake import Lake
from tasks.monitoring.continuous import (
    DecayPoint,
    append_point,
    decay_decision,
    decay_markdown,
    history_path,
    read_history,
    record_point,
    score_labels,
    scoring_window,
)

MARCH = [date(2013, 3, 1) + timedelta(days=i) for i in range(10)]  # 03-01 .. 03-10


def point(as_of: str, auc: float | None = 0.7, breached: bool = False, **changes) -> DecayPoint:
    values = dict(
        as_of=as_of,
        dataset="flights",
        model_name="nycflights-delay",
        champion_version="1",
        champion_as_of="2013-03-04",
        first_day="2013-03-05",
        last_day=as_of,
        days=2,
        rows=1800,
        positive_rate=0.21,
        roc_auc=auc,
        brier=0.16,
        release_auc=0.71,
        auc_drop=None if auc is None else round(0.71 - auc, 6),
        floor_auc=0.6,
        max_auc_drop=0.05,
        breached=breached,
        reason="test",
    )
    return DecayPoint(**(values | changes))


def test_window_is_the_days_after_the_champions_as_of_up_to_tonight():
    window = scoring_window(MARCH, date(2013, 3, 4), date(2013, 3, 7), max_days=31)
    assert window == [date(2013, 3, 5), date(2013, 3, 6), date(2013, 3, 7)]


def test_window_keeps_the_newest_days_when_the_champion_is_stale():
    shuffled = [MARCH[i] for i in (9, 0, 5, 3, 7, 1, 8, 2, 6, 4)]
    window = scoring_window(shuffled, date(2013, 2, 1), date(2013, 3, 10), max_days=3)
    assert window == [date(2013, 3, 8), date(2013, 3, 9), date(2013, 3, 10)]


def test_window_is_empty_when_nothing_follows_the_champion():
    assert scoring_window(MARCH, date(2013, 3, 10), date(2013, 3, 10), max_days=31) == []
    # a backfill of a night older than the champion scores nothing either
    assert scoring_window(MARCH, date(2013, 3, 8), date(2013, 3, 6), max_days=31) == []


@pytest.mark.parametrize(
    ("auc", "release", "breached", "says"),
    [
        (0.70, 0.71, False, "AUC 0.7000 >= floor 0.6"),
        (0.59, None, True, "AUC 0.5900 < floor 0.6"),
        (0.64, 0.71, True, "trails its release AUC 0.7100 by 0.0700 > 0.05"),
        (0.66, 0.71, False, ">= floor"),  # a drop of exactly 0.05 is allowed
        (None, 0.71, False, "one class only"),
    ],
)
def test_decay_decision_floor_and_drop_from_release(auc, release, breached, says):
    got, reason = decay_decision(auc, release, floor_auc=0.6, max_auc_drop=0.05)
    assert got is breached
    assert says in reason


def test_below_floor_and_dropped_names_both_reasons():
    breached, reason = decay_decision(0.55, 0.71, floor_auc=0.6, max_auc_drop=0.05)
    assert breached and "< floor" in reason and "trails" in reason


def test_score_labels_auc_undefined_with_one_class():
    y = np.array([0, 0, 1, 1])
    scores = score_labels(y, np.array([0.1, 0.2, 0.8, 0.9]))
    assert scores["roc_auc"] == 1.0 and scores["rows"] == 4 and scores["positive_rate"] == 0.5
    assert scores["brier"] == pytest.approx((0.01 + 0.04 + 0.04 + 0.01) / 4)
    assert score_labels(np.zeros(3), np.array([0.1, 0.2, 0.3]))["roc_auc"] is None


def test_history_grows_one_entry_per_night_and_a_rerun_replaces_its_night():
    history: list[dict] = []
    history = append_point(history, asdict(point("2013-03-06", 0.70)))
    history = append_point(history, asdict(point("2013-03-05", 0.72)))  # out of order
    assert [h["as_of"] for h in history] == ["2013-03-05", "2013-03-06"]
    history = append_point(history, asdict(point("2013-03-06", 0.65)))  # same night again
    assert [h["as_of"] for h in history] == ["2013-03-05", "2013-03-06"]
    assert history[-1]["roc_auc"] == 0.65


def test_record_point_writes_the_lake_history_idempotently(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    assert read_history(lake, "flights") == []
    record_point(lake, "flights", point("2013-03-05"))
    record_point(lake, "flights", point("2013-03-06"))
    record_point(lake, "flights", point("2013-03-06"))  # the night re-run
    path = history_path(lake, "flights")
    assert path == str(tmp_path / "lake" / "monitoring" / "flights" / "decay.json")
    on_disk = json.loads((tmp_path / "lake" / "monitoring" / "flights" / "decay.json").read_text())
    assert [h["as_of"] for h in on_disk] == ["2013-03-05", "2013-03-06"]
    assert read_history(lake, "hotels") == []  # one history per dataset


def test_decay_chart_has_a_row_per_night_and_flags_decay():
    history = [
        asdict(point("2013-03-05", 0.70)),
        asdict(point("2013-03-06", 0.58, breached=True)),
        asdict(point("2013-03-07", None)),
    ]
    chart = decay_markdown(history)
    rows = [line for line in chart.splitlines() if line.startswith("| 2013-")]
    assert [r.split(" | ")[0] for r in rows] == ["| 2013-03-05", "| 2013-03-06", "| 2013-03-07"]
    assert "**decayed**" in rows[1] and "**decayed**" not in rows[0]
    # the bar of the better night is longer; an undefined AUC has none
    bars = [r.rsplit("`", 2)[-2] if "`" in r else "" for r in rows]
    assert len(bars[0]) > len(bars[1]) > 0 and bars[2] == ""
    assert "-0.1300" in rows[1]  # Δ vs release


def test_stage_alone_skips_cleanly_without_a_champion(monkeypatch, tmp_path):
    """`nightshift evaluate-champion` on a real lake and MLflow store with no model yet."""
    from typer.testing import CliRunner

    from flows.cli import app
    from tasks.core.context import RunContext
    from tasks.core.results import write_result
    from tasks.core.settings import get_settings
    from tasks.ingest.plan import IngestSummary

    monkeypatch.setenv("NIGHTSHIFT_HOME", str(tmp_path))
    get_settings.cache_clear()
    try:
        ctx = RunContext.from_settings(get_settings(), date(2013, 3, 6), "flights")
        days = ["2013-03-05", "2013-03-06"]
        write_result(
            ctx, "ingest", IngestSummary("flights", days, 2, 0, 10, 10, 0, 0, {}, None, 0.0)
        )
        result = CliRunner().invoke(app, ["evaluate-champion", "--as-of", "2013-03-06", "--json"])
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["point"] is None and payload["history_points"] == 0
    assert payload["skipped"] == "nycflights-delay has no @champion yet"
    assert payload["history_path"].endswith("lake/monitoring/flights/decay.json")
