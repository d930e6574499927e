"""The backtest's folds and report (pure code: no flow, no model)."""

from datetime import date
from pathlib import Path

import pytest

from tasks.backtest.plan import fold_context, plan_folds
from tasks.backtest.report import BacktestReport, FoldResult
from tests.conftest import context_for


def test_april_to_december_is_nine_monthly_folds_each_trained_on_everything_before():
    folds = plan_folds(date(2013, 4, 1), date(2013, 12, 31), "month")
    assert [f.label for f in folds] == [f"2013-{m:02d}" for m in range(4, 13)]
    april, december = folds[0], folds[-1]
    assert (april.first, april.last, april.cutoff) == (
        date(2013, 4, 1),
        date(2013, 4, 30),
        date(2013, 3, 31),
    )
    assert april.holdout_days == 30 and december.holdout_days == 31
    # consecutive: each fold's cutoff is the day before its period, no gap, no overlap
    for before, after in zip(folds, folds[1:], strict=False):
        assert after.cutoff == before.last


def test_folds_are_clipped_to_the_range_and_weeks_are_iso_weeks():
    [part] = plan_folds(date(2013, 2, 10), date(2013, 2, 20), "month")
    assert (part.first, part.last, part.label) == (date(2013, 2, 10), date(2013, 2, 20), "2013-02")
    weeks = plan_folds(date(2013, 2, 18), date(2013, 2, 28), "week")
    assert [(w.label, w.first, w.last) for w in weeks] == [
        ("2013-W08", date(2013, 2, 18), date(2013, 2, 24)),
        ("2013-W09", date(2013, 2, 25), date(2013, 2, 28)),
    ]


def test_bad_ranges_are_refused_by_name():
    with pytest.raises(ValueError, match="before --from"):
        plan_folds(date(2013, 5, 1), date(2013, 4, 1))
    with pytest.raises(ValueError, match="month or week"):
        plan_folds(date(2013, 4, 1), date(2013, 5, 1), "day")  # type: ignore[arg-type]


def test_a_fold_writes_apart_from_the_nightly_runs_study_and_registry(tmp_lake):
    ctx = context_for(tmp_lake)
    [fold] = plan_folds(date(2013, 2, 1), date(2013, 2, 28))
    fctx = fold_context(ctx, fold, "flights-x")
    assert fctx.as_of == date(2013, 2, 28)
    assert fctx.run_dir("features").endswith("backtests/flights-x/runs/2013-02-28/features")
    assert fctx.studies_dir().endswith("backtests/flights-x/studies")
    assert ctx.studies_dir().endswith("studies/flights")  # the nightly study is elsewhere
    assert fctx.model_name != ctx.model_name and fctx.experiment.endswith("-backtest")


def _fold(label: str, served: float, baseline: float) -> FoldResult:
    return FoldResult(
        label,
        "2013-03-31",
        "2013-04-01",
        "2013-04-30",
        1000,
        100,
        served - 0.01,
        baseline,
        served,
        served,
        "blend",
        0.4,
        1.0,
    )


def test_the_report_counts_wins_and_writes_table_plot_and_json(tmp_path):
    report = BacktestReport(
        "flights-test",
        "flights",
        "month",
        [_fold("2013-04", 0.72, 0.71), _fold("2013-05", 0.70, 0.71), _fold("2013-06", 0.71, 0.71)],
        "HistGradientBoosting",
    )
    assert report.wins == 2  # a tie counts: served >= baseline
    text = report.markdown()
    assert "Served ≥ baseline (HistGradientBoosting) in 2 of 3 folds" in text
    assert "| 2013-05 |" in text and "-0.0100" in text
    report.save(str(tmp_path / "out"))
    for name in ("report.md", "report.json", "auc.png"):
        assert Path(report.report_dir, name).stat().st_size > 0
