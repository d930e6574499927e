"""Code tests of what people open: the links artifact, the model card, the validation page."""

from __future__ import annotations

import pytest

from tasks.quality.docs_index import render_index
from tasks.release.card import ModelCard, registered_model_description
from tasks.reporting.links import data_docs_url, run_links_markdown


def _links(tracking_uri: str, docs_index: str | None) -> str:
    return run_links_markdown(
        as_of="2013-01-10",
        dataset="flights",
        tracking_uri=tracking_uri,
        experiment_id="3",
        run_id="abc",
        model_name="nycflights-delay",
        version="7",
        alias="champion",
        alias_reason="gate passed: max |diff| ok",
        docs_index=docs_index,
    )


def test_links_point_at_the_mlflow_server_and_the_served_data_docs():
    text = _links("http://127.0.0.1:5000/", "/h/lake/reports/validation/flights/d/docs/index.html")
    assert "(http://127.0.0.1:5000/#/experiments/3/runs/abc?workflowType=machine_learning)" in text
    assert "(http://127.0.0.1:5000/#/experiments/3/runs?workflowType=machine_learning)" in text
    assert "(http://127.0.0.1:5000/#/models/nycflights-delay/versions/7)" in text
    assert "(http://127.0.0.1:8765/validation/flights/d/docs/index.html)" in text
    assert "`nightshift docs`" in text and "file://" not in text
    assert "| promotion | @champion: gate passed: max \\|diff\\| ok |" in text


def test_an_embedded_store_still_gets_mlflow_links_and_the_command_that_opens_them():
    text = _links("sqlite:////x/mlflow.db", None)
    assert "(http://127.0.0.1:5000/#/experiments/3/runs/abc?workflowType=machine_learning)" in text
    assert (
        "make ui-mlflow" in text and "mlflow ui --backend-store-uri sqlite:////x/mlflow.db" in text
    )
    assert "- Data Docs: none" in text


@pytest.mark.parametrize(
    ("index", "url"),
    [
        (
            "s3://lake/reports/validation/f/d/docs/index.html",
            "s3://lake/reports/validation/f/d/docs/index.html",
        ),
        ("/a/reports/x/reports/validation/i.html", "http://127.0.0.1:8765/validation/i.html"),
        ("file:///a/reports/v/i.html", "http://127.0.0.1:8765/v/i.html"),
    ],
)
def test_data_docs_urls(index, url):
    assert data_docs_url(index) == url


def _card(**changes) -> ModelCard:
    values = dict(
        model_name="nycflights-delay",
        dataset="flights",
        as_of="2013-12-31",
        data_window="2013-01-01..2013-12-31",
        train_days=("2013-01-01", "2013-11-30"),
        holdout_days=("2013-12-01", "2013-12-31"),
        train_rows=300_000,
        holdout_rows=27_020,
        contracts=["flights/clean@1.0.0+14fefdcb"],
        model_auc=0.7034,
        baseline_auc=0.7134,
        champion_auc=0.7000,
        champion_version="1",
        served_variant="lowrank-int8",
        served_auc=0.7032,
        served_size_bytes=120_000,
        served_latency_ms=0.2,
        version="2",
        git_commit="abc123",
    )
    values.update(changes)
    return ModelCard(**values)


def test_model_card_says_window_contracts_scores_decision_and_served_form():
    pending = _card().run_markdown()
    assert "gate pending" in pending
    card = _card(
        gate_passed=True,
        gate_reason="gate passed: served AUC 0.7032 >= champion 0.7000 - margin 0",
        gate_checks=[{"name": "auc", "passed": True, "detail": "a | b"}],
    )
    text = card.run_markdown()
    assert text.startswith("## nycflights-delay v2 — flights, as_of 2013-12-31")
    assert "**Decision:** `@champion`: gate passed" in text
    assert "**Warning:** the model trails the baseline by 0.010 AUC." in text
    assert "| holdout days | 2013-12-01..2013-12-31 (27,020 rows) |" in text
    assert "`flights/clean@1.0.0+14fefdcb`" in text and "| auc | pass | a \\| b |" in text
    assert "lowrank-int8 ONNX, AUC 0.7032" in text
    description = card.version_description()
    assert "holdout 2013-12-01..2013-12-31" in description
    assert "champion v1 0.7000" in description and "Alias `@champion`: gate passed" in description
    assert "nightly" in registered_model_description("m", "flights late > 15 min")


def _report(table: str, success: bool = True) -> dict:
    return {
        "dataset": table,
        "contract": f"{table}/clean@1.0.0+0123abcd",
        "as_of": "2013-02-28",
        "success": success,
        "rows": 1000,
        "expectations": 2,
        "failures": []
        if success
        else [
            {
                "rule": "distance:between[1,6000]",
                "unexpected_count": 3,
                "partitions": ["2013-02-01"],
            }
        ],
        "gx_docs": f"/x/{table}/index.html",
        "results": [
            {
                "rule": f"{table}:key_unique",
                "column": None,
                "success": True,
                "unexpected_count": 0,
                "observed": None,
            },
            {
                "rule": "distance:between[1,6000]",
                "column": "distance",
                "success": success,
                "unexpected_count": 0 if success else 3,
                "observed": None,
            },
        ],
    }


def test_validation_page_lists_every_contract_with_its_run_identifiers_and_needs_no_network():
    page = render_index("flights", "2013-02-28", [_report("weather"), _report("flights", False)])
    assert page.index('id="flights"') < page.index('id="weather"')
    assert "flights/clean@1.0.0+0123abcd" in page and "weather/clean@1.0.0+0123abcd" in page
    assert "as_of 2013-02-28" in page and "FAILED" in page and "date=2013-02-01" in page
    assert 'href="gx/weather/index.html"' in page
    assert "<script" not in page and "http://" not in page and "https://" not in page
