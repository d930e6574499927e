"""Native results of clean partitions, kept by content so an unchanged partition is never
re-checked.

One entry per partition: `<lake>/validation/<dataset>/<table>/date=<day>.json`, holding the
key it was computed under (the clean file's sha256 from the day's manifest, the suite's
fingerprint: compiled rules, dimension sets, key, row-count floor, contract, code version)
and the per-rule results. A lookup under another key is a miss: the partition is checked
again and its entry replaced (atomically), so the cache holds one small file per partition
whatever the history of generations and contracts.

The pandas ingest writes the entry of each clean partition it publishes (`check_clean_batch`,
on the very bytes it writes, so nothing is read back), marked `fresh`: the validate stage
takes it as checked tonight (reported as such, handed to Great Expectations) without
re-reading the partition, and clears the mark.
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from datetime import date

import numpy as np
import pandas as pd

from data_contracts import Contract
from tasks.core.lake import Lake
from tasks.quality.native_checks import (
    RuleResult,
    as_validated,
    check_partition,
    check_partitions,
)


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
    # checked by the ingest that published the partition, not yet reported by a
    # validation: new tonight, although its result is already here (stored)
    fresh: bool = False

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
            fresh=bool(stored.get("fresh", False)),
        )

    def write(self, result: PartitionResult) -> None:
        """Replace a partition's entry in one atomic write (compact: one row per rule)."""
        payload = {
            "day": result.day,
            "rows": result.rows,
            "key": asdict(result.key),
            "fields": FIELDS,
            "results": [[getattr(r, name) for name in FIELDS] for r in result.results],
            "fresh": result.fresh,
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


def check_clean_batch(
    datas: list[bytes],
    days: list[date],
    contract: Contract,
    allowed_sets: Mapping[str, Iterable[str]],
    suite: str,
) -> list[PartitionResult]:
    """The native results of several days' clean partitions of one table, from the Parquet
    bytes their writer is about to publish, keyed as the validate stage will look them up
    (each bytes' sha256 is the one the manifest will hold) and marked `fresh`.

    Why the bytes and not the writer's frame: the checks must see what a reader of the file
    sees (dtypes included, as `Lake.read_partition` decodes them), so each verdict is the
    one the validate stage would reach by reading the partition back. `suite` is
    `native_checks.suite_fingerprint(contract, allowed_sets)`, computed once per batch.
    The rules run once over the decoded days together (`native_checks.check_partitions`):
    each day's result is its own. Days whose decoded columns or dtypes differ from the
    first's (a column all missing on one day reads back as another type) are checked alone.
    """
    frames = [as_validated(pd.read_parquet(io.BytesIO(data))) for data in datas]
    first = frames[0] if frames else None
    alike = [
        i
        for i, frame in enumerate(frames)
        if list(frame.columns) == list(first.columns) and frame.dtypes.equals(first.dtypes)
    ]
    results: list[PartitionResult | None] = [None] * len(datas)
    if alike:
        together = (  # one day: its own frame, not a copy
            frames[alike[0]]
            if len(alike) == 1
            else pd.concat([frames[i] for i in alike], ignore_index=True)
        )
        day_of_row = np.repeat(np.arange(len(alike)), [len(frames[i]) for i in alike])
        checked = check_partitions(together, day_of_row, len(alike), contract, allowed_sets)
        for i, rules in zip(alike, checked, strict=True):
            results[i] = _fresh(datas[i], days[i], len(frames[i]), rules, suite)
    for i, frame in enumerate(frames):
        if results[i] is None:
            rules = check_partition(frame, contract, allowed_sets)
            results[i] = _fresh(datas[i], days[i], len(frame), rules, suite)
    return [r for r in results if r is not None]


def _fresh(data: bytes, day: date, rows: int, results: list[RuleResult], suite: str):
    return PartitionResult(
        day=day.isoformat(),
        rows=rows,
        results=results,
        key=CacheKey(hashlib.sha256(data).hexdigest(), suite),
        fresh=True,
    )
