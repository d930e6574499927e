"""The last nights, from the model registry: one row per night, a table and a text chart.

Every version carries `as_of`, `holdout_roc_auc`, `baseline_roc_auc`, `served_roc_auc` and
`alias_decision` tags, so the registry alone tells how the nights went, whatever ran them.
"""

from __future__ import annotations

BAR_WIDTH = 30


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def trend_rows(versions: list, limit: int = 10) -> list[dict]:
    """One row per night (the newest version of each `as_of`), oldest first, the last `limit`.

    `versions` are MLflow ModelVersion objects (anything with `.version` and `.tags`).
    """
    newest: dict[str, object] = {}
    for version in versions:
        as_of = version.tags.get("as_of")
        if not as_of:
            continue
        kept = newest.get(as_of)
        if kept is None or int(version.version) > int(kept.version):
            newest[as_of] = version
    rows = []
    for as_of in sorted(newest)[-limit:]:
        version = newest[as_of]
        tags = version.tags
        rows.append(
            {
                "as_of": as_of,
                "version": str(version.version),
                "model_roc_auc": _float(tags.get("holdout_roc_auc")),
                "served_roc_auc": _float(tags.get("served_roc_auc")),
                "baseline_roc_auc": _float(tags.get("baseline_roc_auc")),
                "alias_decision": tags.get("alias_decision", "pending"),
            }
        )
    return rows


def registry_trend(tracking_uri: str, model_name: str, limit: int = 10) -> list[dict]:
    """The last `limit` nights of `model_name`, read from the MLflow registry."""
    from mlflow.tracking import MlflowClient

    versions = MlflowClient(tracking_uri).search_model_versions(f"name='{model_name}'")
    return trend_rows(list(versions), limit)


def _bar(value: float | None, low: float, high: float) -> str:
    if value is None:
        return ""
    share = (value - low) / (high - low) if high > low else 1.0
    return "█" * max(1, round(share * BAR_WIDTH))


def trend_markdown(rows: list[dict]) -> str:
    """A table of the nights and a text chart of the served AUC against the baseline's."""
    fmt = lambda v: f"{v:.4f}" if v is not None else "–"  # noqa: E731
    table = [
        "| as_of | version | model AUC | served AUC | baseline AUC | Δ vs baseline | decision |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        served = r["served_roc_auc"] if r["served_roc_auc"] is not None else r["model_roc_auc"]
        delta = (
            f"{served - r['baseline_roc_auc']:+.4f}"
            if served is not None and r["baseline_roc_auc"] is not None
            else "–"
        )
        table.append(
            f"| {r['as_of']} | v{r['version']} | {fmt(r['model_roc_auc'])} | "
            f"{fmt(r['served_roc_auc'])} | {fmt(r['baseline_roc_auc'])} | {delta} | "
            f"@{r['alias_decision']} |"
        )
    values = [
        v
        for r in rows
        for v in (r["served_roc_auc"], r["baseline_roc_auc"], r["model_roc_auc"])
        if v is not None
    ]
    if not values:
        return "\n".join(table)
    low = min(values) - 0.01
    high = max(values)
    chart = [f"served AUC (S) vs baseline (B), bars from {low:.3f}"]
    for r in rows:
        served = r["served_roc_auc"] if r["served_roc_auc"] is not None else r["model_roc_auc"]
        chart.append(f"{r['as_of']} S {_bar(served, low, high):<{BAR_WIDTH}} {fmt(served)}")
        chart.append(
            f"{'':10} B {_bar(r['baseline_roc_auc'], low, high):<{BAR_WIDTH}} "
            f"{fmt(r['baseline_roc_auc'])}"
        )
    return "\n".join([*table, "", "```", *chart, "```"])
