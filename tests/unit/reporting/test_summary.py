"""Code tests of the run summary: the verdict, the warnings, hyperparameters, slices, trend."""

from __future__ import annotations

from types import SimpleNamespace

from tasks.reporting.summary import (
    RunSummary,
    failed_markdown,
    hyperparameter_rows,
    slice_deltas,
)
from tasks.reporting.trend import trend_markdown, trend_rows

GATE = [{"name": "serving", "passed": True, "detail": "max |diff| 1e-7 <= 1e-5"}]


def _summary(**changes) -> RunSummary:
    values = dict(
        dataset="flights",
        as_of="2013-12-31",
        days=365,
        raw_rows=336_776,
        clean_rows=336_776,
        quarantined_rows=0,
        duplicates_dropped=0,
        side_quarantined_rows={"weather": 4},
        contracts=["flights/clean@1.0.0+14fefdcb", "weather/clean@1.0.0+7c8bee5f"],
        train_rows=300_000,
        holdout_rows=27_020,
        holdout_days=("2013-12-01", "2013-12-31"),
        model_auc=0.7034,
        baseline_auc=0.7134,
        champion_auc=None,
        model_name="nycflights-delay",
        version="1",
        alias="champion",
        alias_reason="gate passed: no champion yet; served AUC 0.7032",
        mlflow_run_id="abc",
        tracking_uri="sqlite:///x.db",
        data_docs="/lake/reports/validation/flights/2013-12-31/docs/index.html",
        served_variant="lowrank-int8",
        served_auc=0.7032,
        size_ratio=4.0,
        speedup_batch1=3.1,
        gate=GATE,
    )
    values.update(changes)
    return RunSummary(**values)


def test_verdict_says_promoted_and_warns_that_the_model_trails_the_baseline():
    text = _summary().markdown()
    lines = text.splitlines()
    assert lines[2].startswith("**PROMOTED**: nycflights-delay v1 is now @champion")
    assert "> ⚠️ The new model trails the baseline by 0.010 AUC (0.7034 vs 0.7134)." in text
    # ids stay code (no mailto links) and a `|` inside a gate detail stays inside its cell
    assert "`flights/clean@1.0.0+14fefdcb`" in text
    assert "max \\|diff\\| 1e-7" in text


def test_verdict_says_kept_and_warns_when_the_served_model_trails_the_champion():
    summary = _summary(
        version="5",
        alias="challenger",
        alias_reason="gate failed: auc: served AUC 0.7000 < champion 0.7100 - margin 0",
        champion_auc=0.71,
        champion_version="4",
        model_auc=0.72,
        served_auc=0.70,
    )
    assert summary.verdict().startswith("**KEPT**: v4 stays @champion; v5 is @challenger")
    assert summary.warnings() == [
        "The served model trails the champion by 0.010 AUC (0.7000 vs 0.7100)."
    ]


def test_failed_run_summary_says_failed_and_why():
    text = failed_markdown("nightly-2013-03-06", "clean flights broke contract ...")
    assert "**FAILED**" in text and "broke contract" in text


def test_hyperparameters_show_the_input_next_to_what_trained_the_model():
    rows = hyperparameter_rows(
        {"learning_rate": 0.002, "hidden": [256, 128], "epochs": 4},
        {"learning_rate": 0.0005, "hidden": [256, 128], "epochs": 4},
    )
    assert [r["hyperparameter"] for r in rows if r["tuned"]] == ["learning_rate"]
    text = _summary(hyperparameters=rows, tuning="Optuna: best of 6 trial(s)").markdown()
    assert "## Hyperparameters (Optuna: best of 6 trial(s))" in text
    assert "| learning_rate | 0.002 | **0.0005** |" in text
    assert "| epochs | 4 | 4 |" in text


def test_slices_get_deltas_and_regressions_come_first():
    slices = slice_deltas(
        [
            {
                "slice": "origin=JFK",
                "rows": 900,
                "model_roc_auc": 0.70,
                "baseline_roc_auc": 0.69,
                "champion_roc_auc": 0.70,
            },
            {
                "slice": "origin=EWR",
                "rows": 800,
                "model_roc_auc": 0.66,
                "baseline_roc_auc": 0.70,
                "champion_roc_auc": 0.67,
            },
        ],
        margin=0.02,
    )
    assert [s["slice"] for s in slices] == ["origin=EWR", "origin=JFK"]
    assert slices[0]["regression"] and not slices[1]["regression"]
    assert slices[0]["delta_vs_baseline"] == -0.04 and slices[0]["delta_vs_champion"] == -0.01
    summary = _summary(slices=slices)
    text = summary.markdown()
    assert "| slice | rows | model AUC | Δ vs baseline | Δ vs champion | |" in text
    assert "| origin=EWR | 800 | 0.6600 | -0.0400 | -0.0100 | ⚠️ regression |" in text
    assert any("1 slice(s) trail" in w for w in summary.warnings())


def _version(number, as_of, auc, decision="champion"):
    return SimpleNamespace(
        version=str(number),
        tags={
            "as_of": as_of,
            "holdout_roc_auc": str(auc),
            "served_roc_auc": str(auc - 0.001),
            "baseline_roc_auc": "0.70",
            "alias_decision": decision,
        },
    )


def test_trend_keeps_the_newest_version_of_each_night_oldest_first():
    versions = [
        _version(1, "2013-12-01", 0.69),
        _version(3, "2013-12-02", 0.71, "challenger"),
        _version(2, "2013-12-02", 0.70),
        _version(4, "2013-12-03", 0.72),
        SimpleNamespace(version="5", tags={}),  # a version without lineage is skipped
    ]
    rows = trend_rows(versions, limit=2)
    assert [(r["as_of"], r["version"]) for r in rows] == [("2013-12-02", "3"), ("2013-12-03", "4")]
    text = trend_markdown(rows)
    assert "| 2013-12-02 | v3 | 0.7100 | 0.7090 | 0.7000 | +0.0090 | @challenger |" in text
    assert "```" in text and "2013-12-03 S █" in text
    assert "## Last nights" in _summary(trend=rows).markdown()


def test_a_served_blend_is_named_and_only_the_network_alone_is_said_to_trail():
    summary = _summary(
        candidate="blend",
        served_variant="lowrank-int8 + LightGBM tree (network weight 0.40)",
        served_auc=0.7189,
        blend_auc=0.7188,
        blend_weight=0.4,
    )
    warnings = summary.warnings()
    assert "The network alone trails the baseline by 0.010 AUC (0.7034 vs 0.7134)." in warnings
    assert not any("served blend trails" in w for w in warnings)
    text = summary.markdown()
    assert "**lowrank-int8 ONNX + LightGBM tree (network weight 0.40)**" in text
    assert (
        "| network + tree blend, network weight 0.40 (chosen on validation days) | 0.7188 |" in text
    )
    behind = _summary(candidate="blend", served_auc=0.70, blend_auc=0.70, blend_weight=0.4)
    assert any("The served blend trails the baseline by 0.013" in w for w in behind.warnings())


def test_data_docs_say_when_great_expectations_still_runs_in_the_background():
    done = _summary()
    assert done.data_docs_note() == done.data_docs
    assert "still running" not in done.markdown()
    pending = _summary(gx_pending=["flights", "weather"])
    note = pending.data_docs_note()
    assert note.startswith(pending.data_docs)
    assert "Great Expectations on flights, weather still running in the background" in note
    assert "on flights, weather still running in the background" in pending.markdown()
