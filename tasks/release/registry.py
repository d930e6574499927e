"""Registry moves: aliases `champion` / `challenger`, the champion's history, rollback, undo.

Promotion uses registry aliases, never the deprecated stages. The champion's history is a
registered-model tag (`champion_history`, a JSON list of versions, oldest first) so
`nightshift rollback` can move the alias back; each version also carries `promoted_at` /
`demoted_at` tags. This module imports only MLflow: `nightshift promote` and `rollback`
load neither torch nor onnxruntime.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tasks.core.context import RunContext
from tasks.evaluation.champion import CHALLENGER, CHAMPION

logger = logging.getLogger("nightshift.registry")

HISTORY_TAG = "champion_history"


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


def pending_marker(ctx: RunContext) -> str:
    """`runs/<dataset>/<as_of>/register/release.json`: the version this run is releasing."""
    return ctx.run_dir("register", "release.json")


def mark_release(ctx: RunContext, version: str, state: str) -> None:
    """Record the run's version as `pending` (registered, not yet decided) or `completed`."""
    ctx.lake.write_json_atomic(pending_marker(ctx), {"version": str(version), "state": state})


@contextmanager
def undo_release_on_failure(ctx: RunContext) -> Iterator[None]:
    """Around register → gate → promote: if any step fails, delete the version this run
    left `pending` and put `champion`, `challenger` and the history back where they were.
    """
    client = MlflowClient(ctx.tracking_uri)
    with registry_transaction(client, ctx.model_name) as created:
        try:
            yield
        except BaseException:
            path = pending_marker(ctx)
            if ctx.lake.exists(path):
                marker = ctx.lake.read_json(path)
                if marker.get("state") == "pending":
                    created.append(marker["version"])
            raise
