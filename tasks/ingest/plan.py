"""What ingestion does for a dataset, engine-free: which days, which files, what changed,
and the accounting each partition must close (raw = clean + quarantined + duplicates).

Both engines (pandas on Dask, Spark) use these pieces, so they read the same files,
skip the same unchanged days (the content-hash watermark in the manifests) and write the
same manifests.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from typing import Literal, TypeVar

from data_contracts import Contract, load_contract
from tasks.core.lake import Lake
from tasks.datasets import get_dataset
from tasks.datasets.spec import DatasetSpec

logger = logging.getLogger("nightshift.ingest")

# Bump when the cleaning logic changes, so every partition is rebuilt on the next run.
INGEST_CODE_VERSION = "3"  # 3: generations, sha256 per file in the manifest
CONTRACT_METADATA_KEY = "nightshift.contract"

Engine = Literal["dask", "spark"]
T = TypeVar("T")


@dataclass
class SourceCounts:
    """Accounting of one source on one day: raw rows = clean + quarantined + duplicates."""

    raw_rows: int = 0
    clean_rows: int = 0
    quarantined_rows: int = 0
    duplicates_dropped: int = 0

    @property
    def quarantine_fraction(self) -> float:
        return self.quarantined_rows / self.raw_rows if self.raw_rows else 0.0

    def closes(self) -> bool:
        return self.raw_rows == self.clean_rows + self.quarantined_rows + self.duplicates_dropped


@dataclass
class PartitionReport:
    """One day of a dataset: the counts of every source; the fact's are the headline."""

    day: str
    fingerprint: str
    fact: str
    sources: dict[str, SourceCounts] = field(default_factory=dict)
    skipped: bool = False
    seconds: float = 0.0
    # why the day is held (an operator's hold, or a contract's `hold` outcome): the night
    # uses its last good generation, or goes without it when `sources` is empty
    held: str = ""

    @property
    def counts(self) -> SourceCounts:
        return self.sources[self.fact]

    @property
    def raw_rows(self) -> int:
        return self.counts.raw_rows

    @property
    def clean_rows(self) -> int:
        return self.counts.clean_rows

    @property
    def quarantined_rows(self) -> int:
        return self.counts.quarantined_rows

    @property
    def duplicates_dropped(self) -> int:
        return self.counts.duplicates_dropped

    @property
    def quarantine_fraction(self) -> float:
        return self.counts.quarantine_fraction

    @classmethod
    def from_manifest(cls, stored: dict) -> PartitionReport:
        return cls(
            day=stored["day"],
            fingerprint=stored["fingerprint"],
            fact=stored["fact"],
            sources={k: SourceCounts(**v) for k, v in stored["sources"].items()},
            skipped=True,
            seconds=stored.get("seconds", 0.0),
        )


def contract_metadata(contract: Contract) -> dict[str, str]:
    """Parquet key/value metadata naming the contract a partition was cleaned under."""
    return {CONTRACT_METADATA_KEY: contract.tag, "nightshift.ingest_code": INGEST_CODE_VERSION}


def landing_file(lake: Lake, dataset: str, day: date, source: str) -> str:
    """The delivered file of `source` for `day`: `<source>.csv`, or gzipped `<source>.csv.gz`.

    Upstream may compress a delivery; both engines read gzip natively. When neither exists
    the plain name is returned, so the error names the file that was expected.
    """
    folder = lake.landing_day(dataset, day)
    for name in (f"{source}.csv", f"{source}.csv.gz"):
        if lake.exists(f"{folder}/{name}"):
            return f"{folder}/{name}"
    return f"{folder}/{source}.csv"


def dimension_tables(spec: DatasetSpec) -> list[str]:
    """The dimensions a partition's output depends on: joined ones and allowed-value sets."""
    used = {j.table for j in spec.joins if j.table in spec.dimensions}
    for source in spec.sources:
        for column in load_contract(source.name).columns:
            if column.allowed_values_from:
                used.add(column.allowed_values_from.split(".", 1)[0])
    return sorted(used)


def _file_digest(lake: Lake, path: str) -> bytes | None:
    """sha256 of a file's bytes (None when it does not exist)."""
    if not lake.exists(path):
        return None
    with lake.fs.open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).digest()


def dimension_digests(lake: Lake, dataset: str, dims_dir: str | None) -> dict[str, bytes | None]:
    """The dimension files' digests, by path: the same for every day of a run, so a run
    hashes them once (`partition_fingerprint(..., dimensions=...)`) instead of per day."""
    if dims_dir is None:
        return {}
    paths = [f"{dims_dir}/{table}.csv" for table in dimension_tables(get_dataset(dataset))]
    return {path: _file_digest(lake, path) for path in paths}


def partition_fingerprint(
    lake: Lake,
    dataset: str,
    day: date,
    dims_dir: str | None,
    dimensions: dict[str, bytes | None] | None = None,
) -> str:
    """Hash of everything a partition's output depends on: inputs, rules and code.

    `dimensions` are `dimension_digests` of `dims_dir` when the caller already hashed
    them; the fingerprint is the same either way.
    """
    spec = get_dataset(dataset)
    digest = hashlib.sha256(INGEST_CODE_VERSION.encode())
    paths = [landing_file(lake, dataset, day, s.name) for s in spec.sources]
    for source in spec.sources:
        for layer in ("landing", "clean"):
            digest.update(load_contract(source.name, layer).fingerprint.encode())
    if dims_dir is not None:
        if dimensions is None:
            dimensions = dimension_digests(lake, dataset, dims_dir)
        paths += list(dimensions)
    for path in paths:
        digest.update(path.rsplit("/", 2)[-2].encode())
        known = dimensions is not None and path in dimensions
        file_digest = dimensions[path] if known else _file_digest(lake, path)
        if file_digest is not None:
            digest.update(file_digest)
    return digest.hexdigest()


def stored_report(lake: Lake, dataset: str, day: date, fingerprint: str) -> PartitionReport | None:
    """The manifest's report when it was built from inputs with this fingerprint."""
    path = lake.manifest(dataset, day)
    if not lake.exists(path):
        return None
    stored = lake.read_json(path)
    if stored.get("fingerprint") != fingerprint or not stored.get("files"):
        return None
    return PartitionReport.from_manifest(stored)


def held_report(lake: Lake, spec: DatasetSpec, day: date, reason: str) -> PartitionReport:
    """A held day as the night sees it: its last good generation's report, or an empty one
    (no sources) when it never had one, so the night goes on without it."""
    stored = lake.read_manifest(spec.name, day) or {}
    if stored.get("files"):
        report = PartitionReport.from_manifest(stored)
    else:
        report = PartitionReport(day=day.isoformat(), fingerprint="", fact=spec.fact.name)
        report.skipped = True
    report.held = reason
    return report


def changed_days(
    lake: Lake, dataset: str, days: list[date], dims_dir: str | None
) -> tuple[dict[str, PartitionReport], list[tuple[date, str]]]:
    """Split `days` into unchanged (their stored reports, by day) and changed ones to
    process (with their new fingerprints): the content-hash watermark both engines share."""
    unchanged: dict[str, PartitionReport] = {}
    todo: list[tuple[date, str]] = []
    spec = get_dataset(dataset)
    dimensions = dimension_digests(lake, dataset, dims_dir)  # once, not once per day
    for day in days:
        hold = (lake.read_manifest(dataset, day) or {}).get("hold")
        if hold:  # an operator's hold: the day keeps its last good generation
            reason = f"held by operator: {hold.get('reason', '')}"
            unchanged[day.isoformat()] = held_report(lake, spec, day, reason)
            continue
        fingerprint = partition_fingerprint(lake, dataset, day, dims_dir, dimensions)
        existing = stored_report(lake, dataset, day, fingerprint)
        if existing is None:
            todo.append((day, fingerprint))
        else:
            unchanged[existing.day] = existing
    return unchanged, todo


def delivered_bytes(lake: Lake, spec: DatasetSpec, day: date) -> int:
    """The size on disk of a day's delivered files (0 for a file not delivered)."""
    total = 0
    for source in spec.sources:
        path = landing_file(lake, spec.name, day, source.name)
        if lake.exists(path):
            total += int(lake.fs.size(path))
    return total


def plan_batches(
    sized: Sequence[tuple[T, int]], max_bytes: int, min_batches: int = 1, slots: int = 1
) -> list[list[T]]:
    """Group work items (days, with their input bytes) into batches for one task each.

    Why: a task per day pays the task's fixed costs (dispatch, imports, dimension reads)
    365 times a year while a day of rows is cleaned in a fraction of a second. A batch is
    a run of consecutive items, in order, of at most `max_bytes` (a single item larger
    than that is a batch alone); there are at least `min_batches` of them when there are
    that many items (so every worker gets work), sized alike by bytes. Every item is in
    exactly one batch.

    With `slots` (the worker threads), the count is rounded up to a multiple of it, so
    every thread cleans as many batches as the others: 3 batches on 2 threads left one
    thread cleaning two while the other idled (31 days at x30: 8.8 s against 6.5 s).
    """
    if max_bytes <= 0:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    if not sized:
        return []
    total = sum(size for _, size in sized)
    count = max(min_batches, math.ceil(total / max_bytes), 1)
    count = min(len(sized), math.ceil(count / max(slots, 1)) * max(slots, 1))
    target = (total or len(sized)) / count  # no bytes at all: spread by item count
    batches: list[list[T]] = []
    current: list[T] = []
    current_bytes, current_slot, before = 0, 0, 0
    for item, size in sized:
        weight = size if total else 1
        # the batch an item belongs to: where its middle falls on the cumulative weight
        slot = min(count - 1, int((before + weight / 2) / target))
        before += weight
        if current and (slot != current_slot or current_bytes + size > max_bytes):
            batches.append(current)
            current, current_bytes = [], 0
        current.append(item)
        current_bytes += size
        current_slot = slot
    batches.append(current)
    return batches


def check_accounting(report: PartitionReport, where: str) -> None:
    """Refuse to write a partition whose rows do not add up: a bug would silently lose rows."""
    for name, counts in report.sources.items():
        if not counts.closes():
            raise RuntimeError(
                f"{where}: accounting broken for {name}: raw {counts.raw_rows} != "
                f"{counts.clean_rows} clean + {counts.quarantined_rows} quarantined + "
                f"{counts.duplicates_dropped} duplicates"
            )


def write_manifest(
    lake: Lake,
    spec: DatasetSpec,
    report: PartitionReport,
    engine: Engine,
    generation: str,
    files: dict[str, dict],
) -> None:
    """Swap the day to `generation`: one atomic replace of the manifest, written last.

    `files` maps `<layer>/<table>` to the file's lake-relative path, sha256 and size;
    readers verify them. An operator's hold already on the day is kept.
    """
    day = date.fromisoformat(report.day)
    payload = asdict(report)
    payload.pop("skipped")
    payload.pop("held")
    previous = lake.read_manifest(spec.name, day) or {}
    lake.write_json_atomic(
        lake.manifest(spec.name, day),
        {
            **payload,
            "engine": engine,
            "generation": generation,
            "published_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "files": files,
            "hold": previous.get("hold"),
            "contracts": [load_contract(t).tag for t in spec.tables],
            "landing_contracts": [load_contract(t, "landing").tag for t in spec.tables],
        },
    )


def days_to_ingest(
    lake: Lake,
    dataset: str,
    first_day: date,
    as_of: date,
    log: logging.Logger | logging.LoggerAdapter = logger,
) -> list[date]:
    """Landed days in [first_day, as_of]; partitions dated after `as_of` wait for their run.

    A partition dated in the future is not an error (upstream may deliver early), but it is
    never read by an earlier run, and the run says so instead of ignoring it silently.
    """
    landed = lake.landed_days(dataset)
    future = [d for d in landed if d > as_of]
    if future:
        log.warning(
            "ingest: %d landed partition(s) dated after as_of=%s left for a later run: %s",
            len(future),
            as_of,
            ", ".join(d.isoformat() for d in future[:5]) + (" ..." if len(future) > 5 else ""),
        )
    return [d for d in landed if first_day <= d <= as_of]


@dataclass
class IngestSummary:
    """What the rest of the run needs to know about ingestion: partitions and accounting."""

    dataset: str
    days: list[str]
    processed: int
    skipped: int
    raw_rows: int
    clean_rows: int
    quarantined_rows: int
    duplicates_dropped: int
    # quarantined rows of the side sources (e.g. weather readings), by source
    side_quarantined_rows: dict[str, int]
    worst_day: str | None
    worst_quarantine_fraction: float
    engine: str = "dask"
    # days the night does not take as delivered, by day: why (an operator's hold, or a
    # contract's `hold` outcome). A held day with a last good generation stays in `days`.
    held_days: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, spec: DatasetSpec, reports: list[PartitionReport], engine: str) -> IngestSummary:
        held = {r.day: r.held for r in reports if r.held}
        reports = [r for r in reports if r.sources]  # held days that never had a generation
        if not reports:
            raise RuntimeError(
                f"ingest of {spec.name}: every day is held and none has a good generation: "
                f"{', '.join(sorted(held))}"
            )
        worst = max(reports, key=lambda r: r.quarantine_fraction)
        return cls(
            held_days=held,
            dataset=spec.name,
            days=[r.day for r in reports],
            processed=sum(not r.skipped for r in reports),
            skipped=sum(r.skipped for r in reports),
            raw_rows=sum(r.raw_rows for r in reports),
            clean_rows=sum(r.clean_rows for r in reports),
            quarantined_rows=sum(r.quarantined_rows for r in reports),
            duplicates_dropped=sum(r.duplicates_dropped for r in reports),
            side_quarantined_rows={
                s.name: sum(r.sources[s.name].quarantined_rows for r in reports)
                for s in spec.side_sources
            },
            worst_day=worst.day,
            worst_quarantine_fraction=round(worst.quarantine_fraction, 5),
            engine=engine,
        )

    @property
    def day_dates(self) -> list[date]:
        return [date.fromisoformat(d) for d in self.days]
