"""Operator holds: waive a day, so later nights keep its last good generation.

A hold is written into the day's manifest (`"hold": {"reason", "at"}`), the same file
readers already follow, so it travels with the day. While a day is held, ingestion does
not touch it (a new delivery waits), the run's ingest result lists it under `held_days`,
and the registered model carries the list as its `held_days` tag. Releasing the hold lets
the next run ingest whatever is landed for the day.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from tasks.core.lake import Lake


def hold_day(lake: Lake, dataset: str, day: date, reason: str) -> dict:
    """Hold `day` of `dataset` with a reason (required: the model's tags will carry it)."""
    if not reason.strip():
        raise ValueError("a hold needs a reason (it is recorded with the day and the model)")
    manifest = lake.read_manifest(dataset, day) or {"day": day.isoformat(), "files": {}}
    manifest["hold"] = {"reason": reason.strip(), "at": datetime.now(UTC).isoformat()}
    lake.write_json_atomic(lake.manifest(dataset, day), manifest)
    return manifest["hold"]


def release_hold(lake: Lake, dataset: str, day: date) -> bool:
    """Lift the hold on `day`; False when it was not held. A day with no published
    generation loses its placeholder manifest altogether."""
    manifest = lake.read_manifest(dataset, day)
    if not manifest or not manifest.get("hold"):
        return False
    if not manifest.get("files"):
        lake.fs.rm(lake.manifest(dataset, day))
        return True
    manifest["hold"] = None
    lake.write_json_atomic(lake.manifest(dataset, day), manifest)
    return True


def held_days(lake: Lake, dataset: str) -> dict[str, dict]:
    """Every held day of `dataset`: ISO day -> its hold record."""
    base = lake.path("manifests", dataset)
    if not lake.exists(base):
        return {}
    out = {}
    for path in sorted(lake.fs.glob(f"{base}/date=*.json")):
        hold = (lake.read_json(path) or {}).get("hold")
        if hold:
            out[path.rsplit("date=", 1)[1][:10]] = hold
    return out
