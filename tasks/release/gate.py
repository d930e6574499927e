"""The promotion gate: what a challenger must pass to become `champion`.

Every new version is registered as `challenger`. It becomes `champion` only if, on the
same holdout rows, its served form (the compressed ONNX) is at least as good as the
champion overall (within `auc_margin`), no slice with enough rows regresses by more than
`slice_margin`, it meets the size and batch-1 latency budgets, and the registered
`models:/<name>/<version>` loads and reproduces the evaluation's predictions.

Two checks hold even when there is no champion yet, so the first model gets no free pass:
the served AUC must clear the absolute floor `min_auc` and come within `baseline_margin`
of the in-run gradient-boosting baseline. And a challenger trained on data older than the
champion's (`as_of` before the champion's, e.g. a backfill of an old night) is never
promoted automatically: a person can still do it with `nightshift promote`.

When the night's drift check ran (`tasks.monitoring`), its verdict is one more check: a
breach under the contract's `on_breach: hold` refuses promotion, naming the breaches; under
`warn` the check passes and its detail still lists them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tasks.release.config import ReleaseConfig

if TYPE_CHECKING:  # the gate reads a Compression; importing it would load torch
    from tasks.monitoring.drift import DriftReport
    from tasks.release.compress import Compression


@dataclass
class GateCheck:
    """One condition of the promotion gate and what was measured."""

    name: str
    passed: bool
    detail: str


def _absolute_checks(served_auc: float, baseline_auc: float, config: ReleaseConfig):
    """The checks that need no champion: the AUC floor and the in-run baseline."""
    floor = baseline_auc - config.baseline_margin
    return [
        GateCheck(
            "floor",
            served_auc >= config.min_auc,
            f"served AUC {served_auc:.4f} {'>=' if served_auc >= config.min_auc else '<'} "
            f"floor min_auc {config.min_auc:g}",
        ),
        GateCheck(
            "baseline",
            served_auc >= floor,
            f"served AUC {served_auc:.4f} {'>=' if served_auc >= floor else '<'} "
            f"baseline {baseline_auc:.4f} - margin {config.baseline_margin:g}",
        ),
    ]


def network_check(network_auc: float, baseline_auc: float, config: ReleaseConfig) -> GateCheck:
    """A served blend's network must pass the absolute checks on its own.

    Otherwise a network that learned nothing (shuffled labels, a broken feature) would ride
    into production on the tree's score, with a blend weight near zero.
    """
    floor = max(config.min_auc, baseline_auc - config.baseline_margin)
    return GateCheck(
        "network",
        network_auc >= floor,
        f"the blend's network alone: AUC {network_auc:.4f} "
        f"{'>=' if network_auc >= floor else '<'} {floor:.4f} "
        f"(max of min_auc {config.min_auc:g} and baseline - margin {config.baseline_margin:g})",
    )


def recency_check(challenger_as_of: str | None, champion_as_of: str | None) -> GateCheck:
    """A challenger from an older night than the champion's never replaces it by itself."""
    if not champion_as_of or not challenger_as_of:
        return GateCheck("recency", True, "no champion as_of to compare with")
    older = challenger_as_of < champion_as_of  # ISO dates compare as strings
    return GateCheck(
        "recency",
        not older,
        f"challenger as_of {challenger_as_of} {'<' if older else '>='} champion as_of "
        f"{champion_as_of}"
        + ("; an older night never replaces a newer champion (promote by hand)" if older else ""),
    )


def drift_check(drift: DriftReport) -> GateCheck:
    """The night's drift verdict as a gate check: only `hold` (a breach under
    `on_breach: hold`) fails it; a `warn` passes and says what drifted."""
    if drift.holds_promotion:
        return GateCheck("drift", False, f"{drift.summary()} (contract on_breach: hold)")
    if drift.status == "warn":
        return GateCheck(
            "drift", True, f"{drift.summary()} (contract on_breach: warn: recorded, not holding)"
        )
    return GateCheck("drift", True, drift.summary())


def gate_checks(
    *,
    served_auc: float,
    baseline_auc: float,
    champion_auc: float | None,
    slices: list[dict],
    compression: Compression,
    smoke: GateCheck,
    config: ReleaseConfig,
    challenger_as_of: str | None = None,
    champion_as_of: str | None = None,
    drift: DriftReport | None = None,
) -> list[GateCheck]:
    """Evaluate every gate condition; all must pass for `champion`.

    `slices` rows carry `served_roc_auc` and (with a champion) `champion_roc_auc`;
    `drift` is the night's drift report when the check ran (then one more check).
    """
    checks = []
    if champion_auc is None:
        checks.append(GateCheck("auc", True, f"no champion yet; served AUC {served_auc:.4f}"))
        checks.append(GateCheck("slices", True, "no champion yet: no slice to compare"))
    else:
        floor = champion_auc - config.auc_margin
        checks.append(
            GateCheck(
                "auc",
                served_auc >= floor,
                f"served AUC {served_auc:.4f} {'>=' if served_auc >= floor else '<'} "
                f"champion {champion_auc:.4f} - margin {config.auc_margin:g}",
            )
        )
        regressed = [
            f"{s['slice']} ({s['rows']} rows): {s['served_roc_auc']:.4f} vs "
            f"{s['champion_roc_auc']:.4f}"
            for s in slices
            if s["served_roc_auc"] < s["champion_roc_auc"] - config.slice_margin
        ]
        checks.append(
            GateCheck(
                "slices",
                not regressed,
                f"{len(regressed)} of {len(slices)} slices with >= {config.slice_min_rows} rows "
                f"regress by more than {config.slice_margin:g}"
                + (": " + "; ".join(regressed) if regressed else ""),
            )
        )
    checks += _absolute_checks(served_auc, baseline_auc, config)
    if compression.served_candidate == "blend":
        checks.append(network_check(compression.chosen_variant.roc_auc, baseline_auc, config))
    checks.append(recency_check(challenger_as_of, champion_as_of))
    chosen = compression.chosen_variant
    served_name = chosen.name + (" + tree" if compression.served_candidate == "blend" else "")
    checks.append(
        GateCheck(
            "size",
            chosen.size_bytes <= config.max_size_bytes,
            f"{chosen.name} {chosen.size_bytes:,} bytes (budget {config.max_size_bytes:,})",
        )
    )
    checks.append(
        GateCheck(
            "latency",
            compression.served_latency_ms <= config.max_latency_ms_batch1,
            f"{served_name} {compression.served_latency_ms:.3f} ms at batch 1 "
            f"(budget {config.max_latency_ms_batch1:g} ms)",
        )
    )
    checks.append(smoke)
    if drift is not None:
        checks.append(drift_check(drift))
    return checks


def serving_smoke_test(model_uri: str, rows, expected: np.ndarray, atol: float = 1e-5) -> GateCheck:
    """Load the registered pyfunc in-process and check it reproduces the evaluation's scores."""
    from tasks.evaluation.champion import load_in_process

    try:
        model = load_in_process(model_uri)
        served = model.predict(rows).iloc[:, 0].to_numpy()  # the probability column
    except Exception as error:  # any failure to load or predict fails the gate, with its cause
        return GateCheck("serving", False, f"{model_uri} failed to serve: {error}")
    worst = float(np.max(np.abs(served - expected))) if len(expected) else 0.0
    return GateCheck(
        "serving",
        worst <= atol,
        f"{model_uri} served {len(served)} holdout rows, max abs diff vs evaluation {worst:.2e}",
    )
