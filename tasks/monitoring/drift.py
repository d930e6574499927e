"""Drift: how far the newest days moved from the training window, feature by feature.

A model is only as good as the match between the rows it learned from and the rows it
will score. Each night compares the training window (reference) with the newest days
(current: the holdout, the days after the window) for every declared feature and for the
label rate, with the limits of the dataset's data contract (`drift:` section):

- numeric features: PSI over quantile bins of the reference (missing values are a bin of
  their own, so a feed that starts sending nulls drifts too) and the two-sample KS
  statistic (`scipy.stats.ks_2samp`) on the present values;
- categorical features: the Jensen-Shannon distance, base 2 (`scipy.spatial.distance`),
  over the union of the categories seen on either side, missing as a category;
- the label: the absolute difference of the positive rates.

Pure: frames in, a `DriftReport` out. No lake, no MLflow, no Prefect (see `check.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
from scipy.spatial.distance import jensenshannon
from scipy.special import rel_entr
from scipy.stats import ks_2samp

from data_contracts import DriftThresholds, FeatureDriftLimits
from tasks.datasets.spec import DatasetSpec

# Floor for an empty bin's share: PSI's log would be infinite otherwise. 1e-4 is the usual
# choice; it caps one empty bin's contribution near 0.1 * ln(1000) for a 10% bin.
PSI_FLOOR = 1e-4
MISSING = "<missing>"
OTHER = "<other>"
LABEL = "label"

DriftStatus = Literal["ok", "warn", "hold", "unchecked"]


class DriftConfigError(ValueError):
    """A drift section that names something the dataset does not have."""


@dataclass
class FeatureDrift:
    """One compared quantity: a feature (or the label), what was measured, the verdict."""

    feature: str
    kind: Literal["numeric", "categorical", "label"]
    statistic: Literal["psi", "js", "label_rate_diff"]
    value: float
    limit: float | None
    breached: bool
    ks: float | None = None
    ks_limit: float | None = None
    reference_missing: float = 0.0
    current_missing: float = 0.0
    detail: str = ""


@dataclass
class DriftReport:
    """The night's drift verdict: one row per feature, the breaches and what they do."""

    dataset: str
    contract: str
    reference_days: tuple[str, str]
    current_days: tuple[str, str]
    reference_rows: int
    current_rows: int
    on_breach: Literal["warn", "hold"]
    status: DriftStatus
    rows: list[FeatureDrift] = field(default_factory=list)
    breaches: list[str] = field(default_factory=list)
    note: str = ""
    mlflow_run_id: str = ""

    @property
    def holds_promotion(self) -> bool:
        """True when a breach must keep the model from `champion` (`on_breach: hold`)."""
        return self.status == "hold"

    def summary(self) -> str:
        """One line for logs, gate checks and version tags."""
        if self.status == "unchecked":
            return f"drift unchecked: {self.note}"
        if not self.breaches:
            return (
                f"no drift: {len(self.rows)} quantities within limits "
                f"({self.current_days[0]}..{self.current_days[1]} vs "
                f"{self.reference_days[0]}..{self.reference_days[1]})"
            )
        return f"drift {self.status}: {len(self.breaches)} breach(es): " + "; ".join(self.breaches)


def psi(reference: np.ndarray, current: np.ndarray, bins: int) -> float:
    """Population stability index of `current` against `reference` (float arrays, NaN = missing).

    Bin edges are the reference's quantiles (duplicates merged, so a discrete feature gets
    one bin per value it takes); missing values form one more bin on both sides.
    """
    present = reference[~np.isnan(reference)]
    edges = (
        np.unique(np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1])) if len(present) else []
    )

    def shares(values: np.ndarray) -> np.ndarray:
        missing = np.isnan(values)
        counts = np.bincount(
            np.searchsorted(edges, values[~missing], side="right"), minlength=len(edges) + 1
        )
        counts = np.append(counts, missing.sum()).astype(float)
        return np.maximum(counts / max(len(values), 1), PSI_FLOOR)

    ref, cur = shares(reference), shares(current)
    # PSI = sum (c - r) ln(c / r) = KL(c || r) + KL(r || c)
    return float(np.sum(rel_entr(cur, ref) + rel_entr(ref, cur)))


def js_distance(reference: pd.Series, current: pd.Series, min_share: float = 0.0) -> float:
    """Jensen-Shannon distance (base 2) between two categorical columns, missing as a category.

    Categories under `min_share` of the reference (and those it never saw) are pooled into
    one: on a few thousand rows, a hundred rare destinations alone put a random split of
    one period near JS 0.08 (sampling noise), while a rare category taking over still
    moves the pooled share.
    """
    ref = reference.astype(object).where(reference.notna(), MISSING)
    cur = current.astype(object).where(current.notna(), MISSING)
    shares = ref.value_counts(normalize=True)
    common = set(shares.index[shares >= min_share])
    ref = ref.where(ref.isin(common), OTHER).value_counts()
    cur = cur.where(cur.isin(common), OTHER).value_counts()
    categories = ref.index.union(cur.index)
    p = ref.reindex(categories, fill_value=0).to_numpy(float)
    q = cur.reindex(categories, fill_value=0).to_numpy(float)
    if p.sum() == 0 or q.sum() == 0:
        return 0.0
    return float(jensenshannon(p, q, base=2))


def _limits(thresholds: DriftThresholds, feature: str) -> FeatureDriftLimits:
    return thresholds.features.get(feature, FeatureDriftLimits())


def _numeric_row(
    name: str, reference: pd.Series, current: pd.Series, thresholds: DriftThresholds
) -> FeatureDrift:
    ref = pd.to_numeric(reference, errors="coerce").to_numpy(float)
    cur = pd.to_numeric(current, errors="coerce").to_numpy(float)
    own = _limits(thresholds, name)
    psi_limit = own.psi_max or thresholds.psi_max
    ks_limit = own.ks_max or thresholds.ks_max
    value = psi(ref, cur, thresholds.bins)
    ref_present, cur_present = ref[~np.isnan(ref)], cur[~np.isnan(cur)]
    ks = (
        float(ks_2samp(ref_present, cur_present).statistic)
        if len(ref_present) and len(cur_present)
        else None
    )
    over = [f"PSI {value:.3f} > {psi_limit:g}"] if value > psi_limit else []
    if ks is not None and ks_limit is not None and ks > ks_limit:
        over.append(f"KS {ks:.3f} > {ks_limit:g}")
    return FeatureDrift(
        feature=name,
        kind="numeric",
        statistic="psi",
        value=round(value, 6),
        limit=psi_limit,
        breached=bool(over) and not own.ignore,
        ks=None if ks is None else round(ks, 6),
        ks_limit=ks_limit,
        reference_missing=round(float(np.isnan(ref).mean()), 6) if len(ref) else 0.0,
        current_missing=round(float(np.isnan(cur).mean()), 6) if len(cur) else 0.0,
        detail=", ".join(over) + (" (ignored)" if over and own.ignore else ""),
    )


def _categorical_row(
    name: str, reference: pd.Series, current: pd.Series, thresholds: DriftThresholds
) -> FeatureDrift:
    own = _limits(thresholds, name)
    limit = own.js_max or thresholds.js_max
    value = js_distance(reference, current, thresholds.min_category_share)
    over = f"JS {value:.3f} > {limit:g}" if value > limit else ""
    return FeatureDrift(
        feature=name,
        kind="categorical",
        statistic="js",
        value=round(value, 6),
        limit=limit,
        breached=bool(over) and not own.ignore,
        reference_missing=round(float(reference.isna().mean()), 6) if len(reference) else 0.0,
        current_missing=round(float(current.isna().mean()), 6) if len(current) else 0.0,
        detail=over + (" (ignored)" if over and own.ignore else ""),
    )


def _label_row(reference: pd.Series, current: pd.Series, thresholds: DriftThresholds):
    if reference.empty or current.empty:  # no outcome known yet on a side: nothing to judge
        return FeatureDrift(LABEL, "label", "label_rate_diff", 0.0, None, False, detail="no labels")
    ref_rate, cur_rate = float(reference.mean()), float(current.mean())
    value = abs(cur_rate - ref_rate)
    limit = thresholds.label_rate_abs_max
    over = value > limit
    return FeatureDrift(
        feature=LABEL,
        kind="label",
        statistic="label_rate_diff",
        value=round(value, 6),
        limit=limit,
        breached=over,
        detail=f"positive rate {cur_rate:.4f} vs {ref_rate:.4f}"
        + (f": |diff| {value:.4f} > {limit:g}" if over else ""),
    )


def check_overrides(spec: DatasetSpec, thresholds: DriftThresholds, source: str) -> None:
    """Refuse per-feature limits for features the dataset does not declare (a typo would
    otherwise silently leave the feature on the defaults)."""
    known = {*spec.categorical, *spec.numeric}
    unknown = sorted(set(thresholds.features) - known)
    if unknown:
        raise DriftConfigError(
            f"{source}: key drift.features names {unknown}, not features of dataset "
            f"{spec.name} (rule: drift.features keys are declared features: {sorted(known)})"
        )


def _days(frame: pd.DataFrame) -> tuple[str, str]:
    if "date" not in frame or frame.empty:
        return ("", "")
    days = pd.to_datetime(frame["date"])
    return (days.min().date().isoformat(), days.max().date().isoformat())


def compare_windows(
    spec: DatasetSpec,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    thresholds: DriftThresholds | None,
    *,
    contract: str = "",
) -> DriftReport:
    """Compare the current window's clean rows with the reference window's, per feature.

    Both frames are clean rows (the spec derives the features from them); a `label` column
    is used when present, else the spec's label is computed. Rows without a label count
    for the features but not for the label rate. Without thresholds (no `drift:` section)
    or with too few rows on a side, the report is `unchecked` and says why.
    """
    base = DriftReport(
        dataset=spec.name,
        contract=contract,
        reference_days=_days(reference),
        current_days=_days(current),
        reference_rows=len(reference),
        current_rows=len(current),
        on_breach=thresholds.on_breach if thresholds else "warn",
        status="unchecked",
    )
    if thresholds is None:
        base.note = f"contract {contract or spec.name} declares no drift section"
        return base
    if min(len(reference), len(current)) < thresholds.min_rows:
        base.note = (
            f"{len(reference)} reference / {len(current)} current rows, fewer than "
            f"drift.min_rows {thresholds.min_rows}"
        )
        return base
    ref_features, cur_features = spec.feature_frame(reference), spec.feature_frame(current)
    rows = [
        _categorical_row(name, ref_features[name], cur_features[name], thresholds)
        for name in spec.categorical
    ] + [
        _numeric_row(name, ref_features[name], cur_features[name], thresholds)
        for name in spec.numeric
    ]
    ref_label = reference[LABEL] if LABEL in reference else spec.label(reference)
    cur_label = current[LABEL] if LABEL in current else spec.label(current)
    rows.append(_label_row(ref_label.dropna(), cur_label.dropna(), thresholds))
    base.rows = rows
    base.breaches = [f"{r.feature}: {r.detail}" for r in rows if r.breached]
    base.status = ("hold" if thresholds.on_breach == "hold" else "warn") if base.breaches else "ok"
    return base


def report_markdown(report: DriftReport) -> str:
    """The report as a person reads it in the Prefect UI: verdict first, then every row."""
    lines = [
        f"# Drift: {report.dataset}",
        "",
        f"**{report.status.upper()}**: {report.summary()}",
        "",
        f"Current {report.current_days[0]}..{report.current_days[1]} "
        f"({report.current_rows:,} rows) vs reference (training window) "
        f"{report.reference_days[0]}..{report.reference_days[1]} "
        f"({report.reference_rows:,} rows). Limits: contract `{report.contract}`, section "
        f"`drift:`; on breach: `{report.on_breach}`.",
    ]
    if report.rows:
        lines += [
            "",
            "| feature | kind | statistic | value | limit | KS | missing ref → cur | verdict |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in sorted(report.rows, key=lambda r: (not r.breached, r.feature)):
            ks = "" if r.ks is None else f"{r.ks:.3f}"
            limit = "" if r.limit is None else f"{r.limit:g}"
            ignored = r.detail.endswith("(ignored)")
            verdict = "**BREACH**" if r.breached else ("ignored" if ignored else "ok")
            lines.append(
                f"| {r.feature} | {r.kind} | {r.statistic} | {r.value:.4f} | {limit} | {ks} "
                f"| {r.reference_missing:.1%} → {r.current_missing:.1%} | {verdict} |"
            )
    return "\n".join(lines) + "\n"


def drift_metrics(report: DriftReport) -> dict[str, float]:
    """Metric name → value for MLflow: `drift/<statistic>/<feature>`, KS, breach count."""
    values: dict[str, float] = {}
    for r in report.rows:
        values[f"drift/{r.statistic}/{r.feature}"] = r.value
        if r.ks is not None:
            values[f"drift/ks/{r.feature}"] = r.ks
    if report.status != "unchecked":
        values["drift/breaches"] = float(len(report.breaches))
    return values
