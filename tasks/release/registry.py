"""Registry moves: aliases `champion` / `challenger`, the champion's history, rollback, undo.

Promotion uses registry aliases, never the deprecated stages. The champion's history is a
registered-model tag (`champion_history`, a JSON list of versions, oldest first) so
`nightshift rollback` can move the alias back; each version also carries `promoted_at` /
`demoted_at` tags. This module imports only MLflow: `nightshift promote` and `rollback`
load neither torch nor onnxruntime.

The registry has no transactions, so a release is made consistent by three things:

* a marker, `runs/<dataset>/<as_of>/register/release.json`, written before the model is
  logged (`registering`, with the MLflow run id), once the version exists (`pending`) and
  when the release is done (`completed`). A run that dies, or loses the MLflow server,
  leaves it `registering`/`pending`; the next release reconciles it (`reconcile_releases`).
* the version tag `release_state=completed`, set last: only such versions count as a
  finished night for the backfill (`tasks.ops.schedule.completed_as_of_dates`).
* compare-and-set alias moves: `champion` moves only if it still points where it pointed
  when the run compared against it; an undo puts an alias back only if it still points at
  a version this run made. MLflow has no atomic compare-and-set, so the check is a re-read
  right before the move; the per-night lock (`tasks.core.runlock`) and the deployments'
  concurrency limit keep the remaining window to runs of different nights.
"""

from __future__ import annotations

import json
import logging
import posixpath
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tasks.core.context import RunContext
from tasks.core.runlock import is_locked
from tasks.evaluation.champion import CHALLENGER, CHAMPION

logger = logging.getLogger("nightshift.registry")

HISTORY_TAG = "champion_history"
RELEASE_STATE_TAG = "release_state"
COMPLETED = "completed"
UNFINISHED = ("registering", "pending")
# "the alias is not there" (as opposed to "the server did not answer")
_MISSING = ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST")


class _Unchecked:
    def __repr__(self) -> str:
        return "UNCHECKED"


UNCHECKED = _Unchecked()  # promote_version(expected=UNCHECKED): a manual, forced move


class AliasMoved(RuntimeError):
    """An alias no longer points where this run saw it; the run refuses to overwrite it."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def champion_history(client: MlflowClient, name: str) -> list[str]:
    """Versions that held `champion`, oldest first (the current one last)."""
    raw = client.get_registered_model(name).tags.get(HISTORY_TAG)
    return json.loads(raw) if raw else []


def current_alias(client: MlflowClient, name: str, alias: str) -> str | None:
    """The version `alias` points at; None only when the registry says there is none.

    An unreachable server raises: treating "no answer" as "no alias" would let an undo
    or a compare-and-set act on a guess.
    """
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as error:
        if error.error_code in _MISSING:
            return None
        raise


def promote_version(
    client: MlflowClient,
    name: str,
    version: str,
    reason: str,
    expected: str | None | _Unchecked = UNCHECKED,
) -> str | None:
    """Move `champion` to `version`; record it in the history. Returns the previous champion.

    With `expected` (the champion the run compared against, None for "no champion") the
    move is compare-and-set: if `champion` moved meanwhile, `AliasMoved` is raised and
    nothing changes. `nightshift promote` passes nothing: a person may overrule.
    """
    version = str(version)
    client.get_model_version(name, version)  # fails clearly if there is no such version
    previous = current_alias(client, name, CHAMPION)
    if expected is not UNCHECKED and previous != (None if expected is None else str(expected)):
        raise AliasMoved(
            f"@{CHAMPION} of {name} is v{previous or '-'}, not v{expected or '-'} as when this "
            f"run compared v{version} against it: another run moved it; not overwriting"
        )
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


def _restore_aliases(
    client: MlflowClient,
    name: str,
    before: dict[str, str | None],
    history: str | None,
    ours: set[str],
) -> None:
    """Put each alias back, compare-and-set: only where it still points at one of `ours`."""
    for alias, old in before.items():
        now = current_alias(client, name, alias)
        if now == old:
            continue
        if now not in ours:
            logger.warning(
                "undo: @%s of %s now points at v%s, moved by another run; left as it is",
                alias,
                name,
                now,
            )
            continue
        if old is None:
            client.delete_registered_model_alias(name, alias)
        else:
            client.set_registered_model_alias(name, alias, old)
        if alias == CHAMPION and history is not None:
            client.set_registered_model_tag(name, HISTORY_TAG, history)


@contextmanager
def registry_transaction(client: MlflowClient, name: str) -> Iterator[list[str]]:
    """Undo a half-made release if anything fails inside: delete the versions it created
    (append them to the yielded list) and put `champion`, `challenger` and the history tag
    back, compare-and-set (an alias another run moved meanwhile is left alone).
    Compensating actions, because the registry has no transactions; if the server is gone
    the undo fails too, and the release marker is what the next run reconciles.
    """
    try:
        model = client.get_registered_model(name)
        aliases = {a: current_alias(client, name, a) for a in (CHAMPION, CHALLENGER)}
        history = model.tags.get(HISTORY_TAG)
    except MlflowException as error:
        if error.error_code not in _MISSING:
            raise
        aliases, history = {CHAMPION: None, CHALLENGER: None}, None  # first release
    created: list[str] = []
    try:
        yield created
    except BaseException:
        logger.error("release failed; undoing versions %s of %s", created, name)
        try:
            _restore_aliases(client, name, aliases, history, set(created))
        except Exception as error:  # the server may be the thing that failed
            logger.error("undo: could not restore the aliases of %s: %s", name, error)
        for version in created:
            try:
                client.delete_model_version(name, version)
            except Exception as error:
                logger.error("undo: could not delete %s v%s: %s", name, version, error)
        raise


# ----------------------------------------------------------------------------- the marker


def pending_marker(ctx: RunContext) -> str:
    """`runs/<dataset>/<as_of>/register/release.json`: the version this run is releasing."""
    return ctx.run_dir("register", "release.json")


def mark_release(
    ctx: RunContext, version: str | None, state: str, run_id: str | None = None, **extra: str
) -> None:
    """Record the release's state: `registering` (model being logged under MLflow run
    `run_id`), `pending` (version registered, not yet decided), `completed`, or how a
    later run reconciled it. The registry it belongs to is recorded too."""
    ctx.lake.write_json_atomic(
        pending_marker(ctx),
        {
            "version": None if version is None else str(version),
            "state": state,
            "run_id": run_id,
            "tracking_uri": ctx.tracking_uri,
            "model_name": ctx.model_name,
            "flow_run_id": ctx.flow_run_id,
            "updated_at": _now(),
            **extra,
        },
    )


def _marker_versions(client: MlflowClient, name: str, marker: dict) -> list[str]:
    """The versions a marker's release made: the one it names, and any registered by its
    MLflow run (a version created inside a `log_model` that then failed)."""
    found = {marker["version"]} if marker.get("version") else set()
    if marker.get("run_id"):
        for version in client.search_model_versions(
            f"name='{name}' and run_id='{marker['run_id']}'"
        ):
            found.add(str(version.version))
    return sorted(found, key=int)


def _reconcile_one(client: MlflowClient, name: str, marker: dict) -> list[str]:
    """Finish (it holds `champion`) or delete each version of an unfinished release."""
    notes = []
    champion = current_alias(client, name, CHAMPION)
    for version in _marker_versions(client, name, marker):
        try:
            tags = client.get_model_version(name, version).tags
        except MlflowException as error:
            if error.error_code not in _MISSING:
                raise
            notes.append(f"v{version} was already gone (undone)")
            continue
        if tags.get(RELEASE_STATE_TAG) == COMPLETED:
            notes.append(f"v{version} had completed")
        elif version == champion:  # promoted; only the bookkeeping was lost
            client.set_model_version_tag(name, version, RELEASE_STATE_TAG, COMPLETED)
            notes.append(f"finished v{version} (it holds @{CHAMPION})")
        else:
            if current_alias(client, name, CHALLENGER) == version:
                client.delete_registered_model_alias(name, CHALLENGER)
            client.delete_model_version(name, version)
            notes.append(f"deleted half-made v{version}")
    return notes or ["no version had been registered"]


def reconcile_releases(ctx: RunContext, client: MlflowClient | None = None) -> list[str]:
    """Settle every unfinished release of this dataset and registry left by earlier runs.

    Markers of other nights whose lock is held belong to a live run and are left alone.
    Returns (and logs) one line per settled marker.
    """
    client = client or MlflowClient(ctx.tracking_uri)
    lake = ctx.lake
    pattern = lake.path("runs", ctx.dataset, "*", "register", "release.json")
    settled = []
    for path in sorted(lake.fs.glob(pattern)):
        path = path if lake.is_local else lake.fs.unstrip_protocol(path)
        marker = lake.read_json(path)
        if marker.get("state") not in UNFINISHED:
            continue
        if (marker.get("tracking_uri"), marker.get("model_name")) != (
            ctx.tracking_uri,
            ctx.model_name,
        ):
            continue  # another registry's release
        night = date.fromisoformat(posixpath.basename(posixpath.dirname(posixpath.dirname(path))))
        if night != ctx.as_of and is_locked(lake, ctx.dataset, night):
            continue  # a live run of that night
        notes = _reconcile_one(client, ctx.model_name, marker)
        lake.write_json_atomic(
            path, {**marker, "state": "reconciled", "reconciled": notes, "updated_at": _now()}
        )
        line = (
            f"reconcile: the {marker['state']} release of {ctx.dataset} {night} "
            f"({ctx.model_name}, MLflow run {marker.get('run_id')}): " + "; ".join(notes)
        )
        logger.warning(line)
        settled.append(line)
    return settled


@contextmanager
def undo_release_on_failure(ctx: RunContext) -> Iterator[None]:
    """Around register → gate → promote: first settle releases earlier runs left
    unfinished; then, if any step fails, delete the versions this run made and put
    `champion`, `challenger` and the history back (compare-and-set). If the undo itself
    fails (the server is down) the marker stays unfinished for the next run.
    """
    client = MlflowClient(ctx.tracking_uri)
    reconcile_releases(ctx, client)
    with registry_transaction(client, ctx.model_name) as created:
        try:
            yield
        except BaseException:
            path = pending_marker(ctx)
            if ctx.lake.exists(path):
                marker = ctx.lake.read_json(path)
                if marker.get("state") in UNFINISHED:
                    try:
                        created.extend(_marker_versions(client, ctx.model_name, marker))
                    except Exception as error:
                        logger.error("undo: could not look up the run's versions: %s", error)
                        if marker.get("version"):
                            created.append(marker["version"])
            raise
