"""The registry stays consistent across failures: compare-and-set alias moves, a
compare-and-set undo, and the next run reconciling a release an earlier run left
unfinished. Real MLflow (a SQLite store), real lake files, real OS file locks."""

from __future__ import annotations

import logging
from datetime import date

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from tasks.core.runlock import RunLocked, is_locked, run_lock
from tasks.evaluation.champion import CHALLENGER, CHAMPION
from tasks.ops.schedule import completed_as_of_dates
from tasks.release.registry import (
    AliasMoved,
    current_alias,
    mark_release,
    promote_version,
    reconcile_releases,
    registry_transaction,
)
from tests.conftest import context_for

NAME = "m"


@pytest.fixture
def registry(tmp_path, tmp_lake):
    ctx = context_for(tmp_lake, tmp_path, model_name=NAME)
    client = MlflowClient(ctx.tracking_uri)
    client.create_registered_model(NAME)
    return ctx, client, tmp_path


def _version(client, source, **tags) -> str:
    return str(client.create_model_version(NAME, str(source), tags=tags).version)


def test_champion_moves_only_if_it_still_points_where_the_run_saw_it(registry):
    _, client, src = registry
    one, two = _version(client, src), _version(client, src)
    promote_version(client, NAME, one, "first")

    with pytest.raises(AliasMoved, match="@champion of m is v1, not v- .*not overwriting"):
        promote_version(client, NAME, two, "saw no champion", expected=None)
    assert current_alias(client, NAME, CHAMPION) == one
    assert promote_version(client, NAME, two, "saw v1", expected=one) == one
    assert current_alias(client, NAME, CHAMPION) == two
    promote_version(client, NAME, one, "by hand")  # no expectation: a person may overrule
    assert current_alias(client, NAME, CHAMPION) == one


def test_undo_leaves_an_alias_another_run_moved(registry):
    _, client, src = registry
    one, two = _version(client, src), _version(client, src)
    promote_version(client, NAME, one, "first")

    with pytest.raises(RuntimeError, match="boom"), registry_transaction(client, NAME) as made:
        three = _version(client, src)
        made.append(three)
        client.set_registered_model_alias(NAME, CHALLENGER, three)
        promote_version(client, NAME, two, "another run, meanwhile")
        raise RuntimeError("boom")

    assert current_alias(client, NAME, CHAMPION) == two  # not put back to v1 blindly
    assert current_alias(client, NAME, CHALLENGER) is None  # ours: put back (to none)
    assert three not in {str(v.version) for v in client.search_model_versions(f"name='{NAME}'")}


def test_the_next_run_reconciles_unfinished_releases_and_says_so(registry, caplog):
    ctx, client, src = registry
    mlflow.set_tracking_uri(ctx.tracking_uri)
    experiment = client.create_experiment("e", artifact_location=(src / "a").as_uri())
    champion = _version(client, src, as_of="2013-03-01")
    promote_version(client, NAME, champion, "first")
    # night 1: promoted, then died before recording completion -> finished
    mark_release(ctx.with_(as_of=date(2013, 3, 1)), champion, "pending")
    # night 2: registered and @challenger, then the server went away -> deleted
    half = _version(client, src, as_of="2013-03-02")
    client.set_registered_model_alias(NAME, CHALLENGER, half)
    mark_release(ctx.with_(as_of=date(2013, 3, 2)), half, "pending")
    # night 3: died inside log_model: the version exists, the marker only knows the run
    run = client.create_run(experiment)
    orphan = str(client.create_model_version(NAME, str(src), run_id=run.info.run_id).version)
    mark_release(ctx.with_(as_of=date(2013, 3, 3)), None, "registering", run.info.run_id)
    # night 4: unfinished, but a live run holds that night's lock -> left alone
    live = _version(client, src, as_of="2013-03-04")
    mark_release(ctx.with_(as_of=date(2013, 3, 4)), live, "pending")
    assert completed_as_of_dates(ctx.tracking_uri, NAME) == set()

    with (
        caplog.at_level(logging.WARNING, "nightshift.registry"),
        run_lock(ctx.lake, "flights", date(2013, 3, 4)),
    ):
        settled = reconcile_releases(ctx.with_(as_of=date(2013, 3, 5)))
        assert is_locked(ctx.lake, "flights", date(2013, 3, 4))  # probing kept the lock

    assert len(settled) == 3 and settled == [r.getMessage() for r in caplog.records]
    assert "2013-03-01" in settled[0] and f"finished v{champion}" in settled[0]
    assert f"deleted half-made v{half}" in settled[1]
    assert f"deleted half-made v{orphan}" in settled[2] and run.info.run_id in settled[2]
    left = {str(v.version) for v in client.search_model_versions(f"name='{NAME}'")}
    assert left == {champion, live}
    assert current_alias(client, NAME, CHAMPION) == champion
    assert current_alias(client, NAME, CHALLENGER) is None
    assert completed_as_of_dates(ctx.tracking_uri, NAME) == {date(2013, 3, 1)}
    # once night 4's run is gone (its lock free), the next run settles it too, once
    again = reconcile_releases(ctx.with_(as_of=date(2013, 3, 5)))
    assert len(again) == 1 and "2013-03-04" in again[0] and f"half-made v{live}" in again[0]
    assert reconcile_releases(ctx.with_(as_of=date(2013, 3, 5))) == []


def test_a_second_run_of_the_same_night_fails_fast_naming_the_holder(tmp_lake):
    with run_lock(tmp_lake, "flights", date(2013, 3, 1), owner="flow run abc"):
        with (
            pytest.raises(RunLocked, match=r"flights 2013-03-01 is in progress.*flow run abc"),
            run_lock(tmp_lake, "flights", date(2013, 3, 1)),
        ):
            pass
        with run_lock(tmp_lake, "flights", date(2013, 3, 2)):  # another night: free
            pass
    with run_lock(tmp_lake, "flights", date(2013, 3, 1)):  # released
        pass
