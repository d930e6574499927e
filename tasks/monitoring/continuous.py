"""Continuous evaluation: how the current `@champion` does on the days labelled since it
was trained, night after night, before tonight's retraining replaces it or not.

A model is judged at release on its own holdout; after that, nobody looks at it again
unless something does. Every night this stage takes the `@champion` version, reads its
`as_of` tag, scores it on the clean, labelled rows of the days after that `as_of` up to
tonight's (at most `max_days` of the newest), and appends one point per night to a decay
history:

- `<lake>/monitoring/<dataset>/decay.json`, the queryable history (one entry per night;
  a re-run of the same night replaces its entry, so the history stays one point a night);
- an MLflow run `decay-<model name>` in the run's experiment, whose metrics
  `decay/champion_roc_auc`, `decay/champion_brier`, ... are logged at step = days since
  1970-01-01, so MLflow's chart of them is the decay chart (one point per night); the
  registered model and the champion version carry `decay_*` tags pointing at it.

The decision (`decay_decision`) is pure: below an absolute AUC floor, or trailing the
champion's own release AUC by more than a margin, is a breach, which the Prefect task turns
into a `nightshift.model.decayed` event (`tasks.monitoring.events`).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import date

import numpy as np
import pandas as pd

from tasks.core.context import RunContext
from tasks.core.lake import Lake
from tasks.core.results import write_result
from tasks.core.tracking import with_experiment
from tasks.evaluation.champion import CHAMPION, load_in_process
from tasks.features.build import read_clean
from tasks.ingest.plan import IngestSummary

logger = logging.getLogger("nightshift.monitoring")

EPOCH_DAY = date(1970, 1, 1)
DECAY_RUN_TAG = "nightshift.monitoring"  # value "decay": the run holding the decay history
DECAY_METRICS = ("roc_auc", "brier", "rows", "positive_rate", "auc_drop")
BAR_WIDTH = 30


@dataclass(frozen=True)
class ChampionRef:
    """The registered `@champion` version and what continuous evaluation needs of it."""

    model_name: str
    version: str
    as_of: date | None
    release_auc: float | None  # its served AUC on its own holdout, at release


@dataclass
class DecayPoint:
    """One night's score of the champion on the days labelled since its `as_of`."""

    as_of: str
    dataset: str
    model_name: str
    champion_version: str
    champion_as_of: str
    first_day: str
    last_day: str
    days: int
    rows: int
    positive_rate: float
    roc_auc: float | None  # None when the rows hold one class only
    brier: float
    release_auc: float | None
    auc_drop: float | None  # release_auc - roc_auc: how much it lost since release
    floor_auc: float
    max_auc_drop: float
    breached: bool
    reason: str


@dataclass
class ContinuousEvaluation:
    """The stage's result: tonight's point, or why there is none (then `point` is None)."""

    dataset: str
    as_of: str
    point: DecayPoint | None
    skipped: str | None
    history_path: str
    history_points: int
    mlflow_run_id: str | None = None


def find_champion(tracking_uri: str, model_name: str) -> ChampionRef | None:
    """The `@champion` version of `model_name` with its `as_of` tag (None: no champion)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        version = MlflowClient(tracking_uri).get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException:
        return None
    tags = version.tags or {}
    as_of = tags.get("as_of")
    release = tags.get("served_roc_auc") or tags.get("holdout_roc_auc")
    return ChampionRef(
        model_name=model_name,
        version=str(version.version),
        as_of=date.fromisoformat(as_of) if as_of else None,
        release_auc=float(release) if release else None,
    )


def scoring_window(
    days: list[date], champion_as_of: date, as_of: date, max_days: int
) -> list[date]:
    """The days to score: published days after the champion's as_of, up to tonight's,
    the newest `max_days` of them (in day order)."""
    after = sorted(d for d in set(days) if champion_as_of < d <= as_of)
    return after[-max_days:] if max_days > 0 else []


def decay_decision(
    roc_auc: float | None, release_auc: float | None, floor_auc: float, max_auc_drop: float
) -> tuple[bool, str]:
    """Breached or not, and why: AUC below the floor, or trailing the release AUC by more
    than `max_auc_drop`. An undefined AUC (one class only) is no evidence either way."""
    if roc_auc is None:
        return False, "AUC undefined (the scored rows hold one class only)"
    reasons = []
    if roc_auc < floor_auc:
        reasons.append(f"AUC {roc_auc:.4f} < floor {floor_auc:g}")
    if release_auc is not None and release_auc - roc_auc > max_auc_drop:
        reasons.append(
            f"AUC {roc_auc:.4f} trails its release AUC {release_auc:.4f} by "
            f"{release_auc - roc_auc:.4f} > {max_auc_drop:g}"
        )
    if reasons:
        return True, "; ".join(reasons)
    drop = f", {release_auc - roc_auc:+.4f} below release" if release_auc is not None else ""
    return False, f"AUC {roc_auc:.4f} >= floor {floor_auc:g}{drop}"


def score_labels(y_true: np.ndarray, proba: np.ndarray) -> dict[str, float | int | None]:
    """AUC (None with one class), Brier score, rows and positive rate of one scoring."""
    from sklearn.metrics import brier_score_loss, roc_auc_score

    y_true = y_true.astype(int)
    two_classes = len(np.unique(y_true)) == 2
    return {
        "rows": int(len(y_true)),
        "positive_rate": round(float(y_true.mean()), 4),
        "roc_auc": float(roc_auc_score(y_true, proba)) if two_classes else None,
        "brier": float(brier_score_loss(y_true, proba, pos_label=1)),
    }


def labelled_rows(ctx: RunContext, days: list[date]) -> pd.DataFrame:
    """The clean fact rows of `days` whose outcome is known, with their `label`."""
    spec = ctx.spec
    clean = read_clean(ctx.lake, spec.name, spec.fact.name, days)
    clean["label"] = spec.label(clean)
    return clean.loc[clean["label"].notna()].reset_index(drop=True)


# --- the history -------------------------------------------------------------------------


def history_path(lake: Lake, dataset: str) -> str:
    """`<lake>/monitoring/<dataset>/decay.json`."""
    return lake.path("monitoring", dataset, "decay.json")


def read_history(lake: Lake, dataset: str) -> list[dict]:
    """The decay history of `dataset`, oldest night first (empty when there is none)."""
    path = history_path(lake, dataset)
    return list(lake.read_json(path)) if lake.exists(path) else []


def append_point(history: list[dict], point: dict) -> list[dict]:
    """The history with `point` in it: one entry per night (a re-run of a night replaces
    that night's entry), sorted by `as_of`."""
    kept = [entry for entry in history if entry["as_of"] != point["as_of"]]
    return sorted([*kept, point], key=lambda entry: entry["as_of"])


def record_point(lake: Lake, dataset: str, point: DecayPoint) -> list[dict]:
    """Append tonight's point to the lake's history (atomically); returns the history."""
    history = append_point(read_history(lake, dataset), asdict(point))
    lake.write_json_atomic(history_path(lake, dataset), history)
    return history


def log_decay_to_mlflow(ctx: RunContext, point: DecayPoint) -> str:
    """Log tonight's point on the model's decay run (step = days since 1970-01-01, one
    point per night) and tag the registered model and the champion version with it.

    A re-run of the same night with the same numbers logs nothing new; the lake's history
    is what holds exactly one entry per night.
    """
    import mlflow
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(ctx.tracking_uri)
    experiment_id = with_experiment(ctx).experiment_id  # the stage alone has none yet
    found = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{DECAY_RUN_TAG}` = 'decay' and tags.model_name = '{point.model_name}'",
        max_results=1,
    )
    if found:
        run_id = found[0].info.run_id
    else:
        run = client.create_run(
            experiment_id,
            run_name=f"decay-{point.model_name}",
            tags={DECAY_RUN_TAG: "decay", "model_name": point.model_name, "dataset": ctx.dataset},
        )
        run_id = run.info.run_id
        client.set_terminated(run_id)  # a record, not a live job: no RUNNING forever
    day = (date.fromisoformat(point.as_of) - EPOCH_DAY).days
    values = {name: getattr(point, name) for name in DECAY_METRICS}
    metrics = []
    for name, value in values.items():
        if value is None:
            continue
        key = f"decay/champion_{name}"
        logged = {(m.step, m.value) for m in client.get_metric_history(run_id, key)}
        if (day, float(value)) not in logged:
            metrics.append(Metric(key, float(value), day * 86_400_000, day))
    if metrics:
        client.log_batch(run_id, metrics=metrics)
    summary = f"{point.roc_auc:.4f}" if point.roc_auc is not None else "undefined"
    tags = {
        "decay_run_id": run_id,
        "decay_last_as_of": point.as_of,
        "decay_last_roc_auc": summary,
        "decay_last_breached": str(point.breached).lower(),
    }
    for key, value in tags.items():
        client.set_registered_model_tag(point.model_name, key, value)
        client.set_model_version_tag(point.model_name, point.champion_version, key, value)
    mlflow.set_tracking_uri(ctx.tracking_uri)
    return run_id


def decay_markdown(history: list[dict], limit: int = 30) -> str:
    """The decay chart as text: one row per night (the last `limit`), AUC bars."""
    rows = history[-limit:]
    aucs = [r["roc_auc"] for r in rows if r.get("roc_auc") is not None]
    floors = [r["floor_auc"] for r in rows]
    low = min([*aucs, *floors], default=0.5) - 0.01
    high = max(aucs, default=1.0)

    def bar(value: float | None) -> str:
        if value is None:
            return ""
        share = (value - low) / (high - low) if high > low else 1.0
        return "█" * max(1, round(share * BAR_WIDTH))

    def fmt(value: float | None) -> str:
        return f"{value:.4f}" if value is not None else "–"

    lines = [
        "| night | champion | scored days | rows | AUC | Δ vs release | Brier | floor | | chart |",
        "|---|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        drop = f"{-r['auc_drop']:+.4f}" if r.get("auc_drop") is not None else "–"
        flag = "**decayed**" if r["breached"] else "ok"
        lines.append(
            f"| {r['as_of']} | v{r['champion_version']} (as_of {r['champion_as_of']}) | "
            f"{r['first_day']}..{r['last_day']} ({r['days']}) | {r['rows']:,} | "
            f"{fmt(r['roc_auc'])} | {drop} | {r['brier']:.4f} | {r['floor_auc']:g} | "
            f"{flag} | `{bar(r['roc_auc'])}` |"
        )
    return "\n".join(lines)


# --- the stage ---------------------------------------------------------------------------


def decay_point(
    ctx: RunContext,
    champion: ChampionRef,
    days: list[date],
    scores: dict,
    floor_auc: float,
    max_auc_drop: float,
) -> DecayPoint:
    """Tonight's point: the scores, the window and the decision on them."""
    roc_auc = scores["roc_auc"]
    breached, reason = decay_decision(roc_auc, champion.release_auc, floor_auc, max_auc_drop)
    return DecayPoint(
        as_of=str(ctx.as_of),
        dataset=ctx.dataset,
        model_name=ctx.model_name,
        champion_version=champion.version,
        champion_as_of=str(champion.as_of),
        first_day=str(days[0]),
        last_day=str(days[-1]),
        days=len(days),
        rows=int(scores["rows"]),
        positive_rate=float(scores["positive_rate"]),
        roc_auc=roc_auc,
        brier=float(scores["brier"]),
        release_auc=champion.release_auc,
        auc_drop=(
            round(champion.release_auc - roc_auc, 6)
            if roc_auc is not None and champion.release_auc is not None
            else None
        ),
        floor_auc=floor_auc,
        max_auc_drop=max_auc_drop,
        breached=breached,
        reason=reason,
    )


def evaluate_champion(
    ctx: RunContext,
    ingested: IngestSummary,
    *,
    floor_auc: float,
    max_auc_drop: float,
    max_days: int,
    log: logging.Logger | logging.LoggerAdapter = logger,
) -> ContinuousEvaluation:
    """Score the `@champion` on the days labelled since its as_of; record the point.

    Skipped (point None, `skipped` says why) when there is no champion, when it has no
    `as_of` tag, or when no published day with a known outcome follows its as_of.
    """
    lake = ctx.lake
    path = history_path(lake, ctx.dataset)

    def skip(reason: str) -> ContinuousEvaluation:
        log.info("evaluate-champion: skipped: %s", reason)
        result = ContinuousEvaluation(
            ctx.dataset, str(ctx.as_of), None, reason, path, len(read_history(lake, ctx.dataset))
        )
        return write_result(ctx, "evaluate-champion", result)

    champion = find_champion(ctx.tracking_uri, ctx.model_name)
    if champion is None:
        return skip(f"{ctx.model_name} has no @{CHAMPION} yet")
    if champion.as_of is None:
        return skip(f"{ctx.model_name} v{champion.version} has no as_of tag")
    days = scoring_window(ingested.day_dates, champion.as_of, ctx.as_of, max_days)
    if not days:
        return skip(
            f"no published day after v{champion.version}'s as_of {champion.as_of} up to {ctx.as_of}"
        )
    rows = labelled_rows(ctx, days)
    if rows.empty:
        return skip(f"no labelled row in {days[0]}..{days[-1]}")

    model = load_in_process(f"models:/{ctx.model_name}/{champion.version}", ctx.tracking_uri)
    proba = model.predict(rows[list(ctx.spec.input_columns)]).iloc[:, 0].to_numpy()
    scores = score_labels(rows["label"].to_numpy(), proba)
    point = decay_point(ctx, champion, days, scores, floor_auc, max_auc_drop)
    history = record_point(lake, ctx.dataset, point)
    run_id = log_decay_to_mlflow(ctx, point)
    log.info(
        "evaluate-champion: v%s (as_of %s) on %s..%s, %d rows: %s%s",
        champion.version,
        champion.as_of,
        days[0],
        days[-1],
        point.rows,
        point.reason,
        " -> DECAYED" if point.breached else "",
    )
    result = ContinuousEvaluation(
        ctx.dataset, str(ctx.as_of), point, None, path, len(history), run_id
    )
    return write_result(ctx, "evaluate-champion", result)
