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

import json
import posixpath
from dataclasses import asdict, dataclass, fields
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


FIELDS = [f.name for f in fields(RuleResult)]  # an entry's row layout, checked on read


def entry_path(lake: Lake, dataset: str, table: str, day: date) -> str:
    """Where the cached result of a table's partition lives."""
    return TableCache(lake, dataset, table).path(day)


class TableCache:
    """One table's cache entries, its folder and filesystem resolved once.

    Why not `Lake.read_json` per entry: resolving the lake's URL costs more than reading a
    small entry, and a night reads one entry per partition of the whole history.
    """

    def __init__(self, lake: Lake, dataset: str, table: str) -> None:
        self.lake, self.fs = lake, lake.fs
        self.folder = lake.path("validation", dataset, table)

    def path(self, day: date) -> str:
        return posixpath.join(self.folder, f"date={day.isoformat()}.json")

    def read(self, day: date, key: CacheKey) -> PartitionResult | None:
        """The cached result when it was computed under `key`, else None (a miss)."""
        try:
            with self.fs.open(self.path(day), "rb") as handle:
                stored = json.load(handle)
        except FileNotFoundError:
            return None
        stored_key = stored.get("key") or {}
        if (
            stored_key.get("content_sha256") != key.content_sha256
            or stored_key.get("suite") != key.suite
            or stored.get("fields") != FIELDS
        ):
            return None  # another content or suite, or an older entry format: re-check
        return PartitionResult(
            day=stored["day"],
            rows=stored["rows"],
            results=[RuleResult(*row) for row in stored["results"]],
            key=key,
        )

    def write(self, result: PartitionResult) -> None:
        """Replace a partition's entry in one atomic write (compact: one row per rule)."""
        payload = {
            "day": result.day,
            "rows": result.rows,
            "key": asdict(result.key),
            "fields": FIELDS,
            "results": [[getattr(r, name) for name in FIELDS] for r in result.results],
        }
        data = json.dumps(payload, separators=(",", ":"), default=str).encode()
        self.lake.write_bytes_atomic(self.path(date.fromisoformat(result.day)), data)


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
