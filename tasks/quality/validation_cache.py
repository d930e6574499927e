"""Native results of clean partitions, kept by content so an unchanged partition is never
re-checked.

One entry per partition: `<lake>/validation/<dataset>/<table>/date=<day>.json`, holding the
key it was computed under (the clean file's sha256 from the day's manifest, the suite's
fingerprint: compiled rules, dimension sets, key, row-count floor, contract, code version)
and the per-rule results. A lookup under another key is a miss: the partition is checked
again and its entry replaced (atomically), so the cache holds one small file per partition
whatever the history of generations and contracts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date

from tasks.core.lake import Lake
from tasks.quality.native_checks import RuleResult


@dataclass(frozen=True)
class CacheKey:
    """What a partition's result depends on: its content and the suite it was checked by."""

    content_sha256: str
    suite: str


@dataclass
class PartitionResult:
    """The native results of one clean partition (one day), as cached."""

    day: str
    rows: int
    results: list[RuleResult]
    key: CacheKey
    # checked in this process (a miss), not read back from the cache; never stored
    rechecked: bool = False

    @property
    def success(self) -> bool:
        return all(r.success for r in self.results)


def entry_path(lake: Lake, dataset: str, table: str, day: date) -> str:
    """Where the cached result of a table's partition lives."""
    return lake.path("validation", dataset, table, f"date={day.isoformat()}.json")


def content_key(
    lake: Lake, dataset: str, table: str, day: date, suite: str, manifest: dict | None
) -> CacheKey:
    """The key of a partition's current generation: its file's sha256 from the day's
    `manifest` (the reader verifies the bytes against it, so equal keys mean equal rows)."""
    entry = ((manifest or {}).get("files") or {}).get(f"clean/{table}")
    if entry is None:
        raise FileNotFoundError(
            f"no published clean {table} partition for date={day.isoformat()} in "
            f"{lake.manifest(dataset, day)}; run `nightshift ingest` for that day"
        )
    return CacheKey(entry["sha256"], suite)


def read_cached(
    lake: Lake, dataset: str, table: str, day: date, key: CacheKey
) -> PartitionResult | None:
    """The cached result when it was computed under `key`, else None (a miss)."""
    path = entry_path(lake, dataset, table, day)
    if not lake.exists(path):
        return None
    stored = lake.read_json(path)
    if stored.get("key") != asdict(key):
        return None
    return PartitionResult(
        day=stored["day"],
        rows=stored["rows"],
        results=[RuleResult(**r) for r in stored["results"]],
        key=key,
    )


def write_cached(lake: Lake, dataset: str, table: str, result: PartitionResult) -> None:
    """Replace a partition's entry in one atomic write."""
    path = entry_path(lake, dataset, table, date.fromisoformat(result.day))
    payload = asdict(result)
    payload.pop("rechecked")
    lake.write_json_atomic(path, payload)
