"""Promote: the gate a challenger must pass to become `champion`, and the registry moves.

Every new version is registered as `challenger`. It becomes `champion` only if, on the
same holdout rows, its served form (the compressed ONNX) is at least as good as the
champion overall (within `auc_margin`), no slice with enough rows regresses by more than
`slice_margin`, it meets the size and batch-1 latency budgets, and the registered
`models:/<name>/<version>` loads and reproduces the evaluation's predictions.

The champion's history is a registered-model tag (`champion_history`, a JSON list of
versions, oldest first) so `nightshift rollback` can move the alias back; each version
also carries `promoted_at` / `demoted_at` tags.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from pydantic import BaseModel, Field

from tasks.compress import Compression, CompressionConfig

logger = logging.getLogger("nightshift.promote")

CHAMPION, CHALLENGER = "champion", "challenger"
HISTORY_TAG = "champion_history"


class ReleaseConfig(BaseModel):
    """Margins and budgets of the release stage (a form in the Prefect UI)."""

    auc_margin: float = Field(
        default=0.0, ge=0, le=0.1, description="Challenger AUC may trail the champion by this."
    )
    slice_margin: float = Field(
        default=0.02, ge=0, le=0.5, description="Largest AUC drop allowed in any slice."
    )
    slice_min_rows: int = Field(
        default=300, ge=10, description="Slices with fewer holdout rows are not judged."
    )
    max_size_bytes: int = Field(
        default=2 * 1024 * 1024, ge=1, description="Largest served network artifact (bytes)."
    )
    max_latency_ms_batch1: float = Field(
        default=2.0, gt=0, description="Largest batch-1 CPU latency of the served network (ms)."
    )
    compression: CompressionConfig = Field(default_factory=CompressionConfig)


@dataclass
class GateCheck:
    """One condition of the promotion gate and what was measured."""

    name: str
    passed: bool
    detail: str


def gate_checks(
    *,
    served_auc: float,
    champion_auc: float | None,
    slices: list[dict],
    compression: Compression,
    smoke: GateCheck,
    config: ReleaseConfig,
) -> list[GateCheck]:
    """Evaluate every gate condition; all must pass for `champion`.

    `slices` rows carry `served_roc_auc` and (with a champion) `champion_roc_auc`.
    """
    checks = []
    if champion_auc is None:
        checks.append(GateCheck("auc", True, f"no champion yet; served AUC {served_auc:.4f}"))
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
    chosen = compression.chosen_variant
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
            chosen.latency_ms_batch1 <= config.max_latency_ms_batch1,
            f"{chosen.name} {chosen.latency_ms_batch1:.3f} ms at batch 1 "
            f"(budget {config.max_latency_ms_batch1:g} ms)",
        )
    )
    checks.append(smoke)
    return checks


def serving_smoke_test(model_uri: str, rows, expected: np.ndarray, atol: float = 1e-5) -> GateCheck:
    """Load the registered pyfunc in-process and check it reproduces the evaluation's scores."""
    import mlflow

    try:
        model = mlflow.pyfunc.load_model(model_uri)
        served = model.predict(rows)["probability_late"].to_numpy()
    except Exception as error:  # any failure to load or predict fails the gate, with its cause
        return GateCheck("serving", False, f"{model_uri} failed to serve: {error}")
    worst = float(np.max(np.abs(served - expected))) if len(expected) else 0.0
    return GateCheck(
        "serving",
        worst <= atol,
        f"{model_uri} served {len(served)} holdout rows, max |diff| vs evaluation {worst:.2e}",
    )


# ----------------------------------------------------------------------------- registry moves


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def champion_history(client: MlflowClient, name: str) -> list[str]:
    """Versions that held `champion`, oldest first (the current one last)."""
    raw = client.get_registered_model(name).tags.get(HISTORY_TAG)
    return json.loads(raw) if raw else []


def current_alias(client: MlflowClient, name: str, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def promote_version(client: MlflowClient, name: str, version: str, reason: str) -> str | None:
    """Move `champion` to `version`; record it in the history. Returns the previous champion."""
    version = str(version)
    client.get_model_version(name, version)  # fails clearly if there is no such version
    previous = current_alias(client, name, CHAMPION)
    if previous == version:
        return previous
    client.set_registered_model_alias(name, CHAMPION, version)
    history = [v for v in champion_history(client, name) if v != version] + [version]
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
    client.set_model_version_tag(name, version, "promoted_at", _now())
    client.set_model_version_tag(name, version, "promotion_reason", reason)
    if previous is not None:
        client.set_model_version_tag(name, version, "previous_champion", previous)
        client.set_model_version_tag(name, previous, "demoted_at", _now())
    if current_alias(client, name, CHALLENGER) == version:
        client.delete_registered_model_alias(name, CHALLENGER)
    return previous


def rollback_champion(client: MlflowClient, name: str) -> tuple[str, str]:
    """Move `champion` back to the version that held it before; returns (from, to)."""
    history = champion_history(client, name)
    current = current_alias(client, name, CHAMPION)
    if current is None:
        raise ValueError(f"rollback: model {name!r} has no @champion to roll back")
    if current in history:
        history = history[: history.index(current)]
    if not history:
        raise ValueError(
            f"rollback: {name} v{current} is the first champion; there is no previous one"
        )
    target = history[-1]
    client.set_registered_model_alias(name, CHAMPION, target)
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
    client.set_model_version_tag(name, current, "demoted_at", _now())
    client.set_model_version_tag(name, current, "demotion_reason", "rollback")
    client.set_model_version_tag(name, target, "promoted_at", _now())
    client.set_model_version_tag(name, target, "promotion_reason", f"rollback from v{current}")
    return current, target


@contextmanager
def registry_transaction(client: MlflowClient, name: str) -> Iterator[list[str]]:
    """Undo a half-made release if anything fails inside: delete the versions it created
    (append them to the yielded list) and put `champion`, `challenger` and the history tag
    back where they were. Compensating actions, because the registry has no transactions.
    """
    try:
        model = client.get_registered_model(name)
        aliases = {a: current_alias(client, name, a) for a in (CHAMPION, CHALLENGER)}
        history = model.tags.get(HISTORY_TAG)
    except MlflowException:  # first release: the model itself is created inside
        aliases, history = {CHAMPION: None, CHALLENGER: None}, None
    created: list[str] = []
    try:
        yield created
    except BaseException:
        logger.error("release failed; undoing versions %s of %s", created, name)
        for version in created:
            try:
                client.delete_model_version(name, version)
            except MlflowException as error:
                logger.error("could not delete %s v%s: %s", name, version, error)
        for alias, version in aliases.items():
            try:
                if version is None:
                    if current_alias(client, name, alias) is not None:
                        client.delete_registered_model_alias(name, alias)
                else:
                    client.set_registered_model_alias(name, alias, version)
            except MlflowException as error:
                logger.error("could not restore @%s of %s: %s", alias, name, error)
        if history is not None:
            client.set_registered_model_tag(name, HISTORY_TAG, history)
        raise


def checks_as_dicts(checks: list[GateCheck]) -> list[dict]:
    return [asdict(c) for c in checks]
