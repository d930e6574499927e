"""Stage, check, then swap: how a day's new generation replaces the last good one.

A day's output (clean + quarantine files of every table the dataset delivers) is one
*generation*. Both engines write it under `_staging/<dataset>/date=<day>/<generation>/`,
then `publish_day` checks it there (accounting, the contracts' per-day thresholds, empty
deliveries) and only then moves its files to names of their own next to the old ones and
replaces the day's manifest, the one pointer readers follow. That rename is the swap: a
crash at any instant leaves the old generation or the new one, never a mix, and a day
that fails its checks leaves the previous generation and manifest exactly as they were,
and its fingerprint unrecorded, so a corrected re-delivery is picked up by the next run.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import posixpath
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime

from data_contracts import load_contract
from tasks.core.lake import Lake
from tasks.datasets.spec import DatasetSpec
from tasks.ingest.plan import Engine, PartitionReport, landing_file, write_manifest
from tasks.quality.rules import ContractViolation, quarantine_fraction_rule

logger = logging.getLogger("nightshift.ingest")

LAYERS = ("clean", "quarantine")
EMPTY_DAY = "day:not_empty"
MISSING_DAY = "day:delivered"
MIN_ROWS_PER_DAY = "rows:min_per_day"


class DayRejected(ContractViolation):
    """A day's new generation failed a check: it was not published. `outcome` is the
    contract's verdict: `fail` stops the run, `hold` lets the night go on without it."""

    def __init__(self, message: str, day: str, outcome: str = "fail") -> None:
        super().__init__(message)
        self.message, self.day, self.outcome = message, day, outcome

    def __reduce__(self):  # Dask ships exceptions between processes by pickling them
        return (DayRejected, (self.message, self.day, self.outcome))


class StagingFailed(OSError):
    """Writing a generation failed (e.g. the disk is full); the last good one is intact."""


def new_generation() -> str:
    """A generation id that sorts by time and never repeats."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


def staged_file(
    lake: Lake, dataset: str, day: date, generation: str, layer: str, table: str
) -> str:
    """Where an engine writes one table's file of a generation under staging."""
    return posixpath.join(lake.staging(dataset, day, generation), layer, f"{table}.parquet")


@contextmanager
def staging(lake: Lake, dataset: str, day: date) -> Iterator[str]:
    """A fresh generation id and its empty staging folder; the folder is gone afterwards.

    Whatever was left in the day's staging folder is a dead run's (one ingest per dataset
    runs at a time), so it is cleared first. An OS error while staging (ENOSPC above all)
    becomes a `StagingFailed` naming the day; published data is never touched here.
    """
    day_dir = lake.staging(dataset, day)
    if lake.exists(day_dir):
        lake.fs.rm(day_dir, recursive=True)
    generation = new_generation()
    try:
        yield generation
    except OSError as error:
        if isinstance(error, StagingFailed):
            raise
        reason = "no space left on device" if error.errno == errno.ENOSPC else str(error)
        raise StagingFailed(
            error.errno,
            f"date={day.isoformat()}: staging generation {generation} of {dataset} failed "
            f"({reason}); nothing was published, the previous generation is intact "
            f"(staging: {lake.staging(dataset, day, generation)})",
        ) from error
    finally:
        try:
            if lake.exists(day_dir):
                lake.fs.rm(day_dir, recursive=True)
        except OSError:  # cleaning up must not hide the real error
            logger.warning("could not remove staging folder %s", day_dir)


def day_problems(lake: Lake, spec: DatasetSpec, report: PartitionReport) -> list[DayRejected]:
    """The contracts' per-day rules on a staged generation's counts, each with its outcome.

    Per day and per table: a header-only delivery (`day:not_empty`, outcome from the
    contract), fewer clean rows than `min_rows_per_partition` (`rows:min_per_day`), and a
    quarantined share above `max_quarantine_fraction`.
    """
    day = date.fromisoformat(report.day)
    problems: list[DayRejected] = []
    for source in spec.sources:
        limits = load_contract(source.name).thresholds
        counts = report.sources[source.name]
        path = landing_file(lake, spec.name, day, source.name)
        where = f"{path}: date={report.day}: {source.name}"
        if counts.raw_rows == 0:
            problem = DayRejected(
                f"{where}: header-only delivery, no rows (rule: {EMPTY_DAY}, outcome: "
                f"{limits.on_empty_day})",
                report.day,
                limits.on_empty_day,
            )
            problems.append(problem)
            continue
        if counts.clean_rows < limits.min_rows_per_partition:
            problems.append(
                DayRejected(
                    f"{where}: {counts.clean_rows} clean row(s) < {limits.min_rows_per_partition} "
                    f"(rule: {MIN_ROWS_PER_DAY}>={limits.min_rows_per_partition})",
                    report.day,
                )
            )
        if counts.quarantine_fraction > limits.max_quarantine_fraction:
            rule = quarantine_fraction_rule(limits.max_quarantine_fraction)
            problems.append(
                DayRejected(
                    f"{where}: {counts.quarantined_rows} of {counts.raw_rows} rows quarantined "
                    f"({counts.quarantine_fraction:.4f}; rule: {rule})",
                    report.day,
                )
            )
    return problems


def _verdict(problems: list[DayRejected]) -> DayRejected | None:
    """One error for the day: `fail` wins over `hold`; `warn`s are only logged."""
    blocking = [p for p in problems if p.outcome != "warn"]
    for problem in problems:
        if problem.outcome == "warn":
            logger.warning("ingest: %s", problem.message)
    if not blocking:
        return None
    outcome = "fail" if any(p.outcome == "fail" for p in blocking) else "hold"
    message = "; ".join(p.message for p in blocking)
    return DayRejected(
        f"date={blocking[0].day}: new generation rejected, the previous one is kept: {message}",
        blocking[0].day,
        outcome,
    )


def _sha256(lake: Lake, path: str) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with lake.fs.open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def publish_day(
    lake: Lake, spec: DatasetSpec, report: PartitionReport, generation: str, engine: Engine
) -> PartitionReport:
    """Check a staged generation; if it passes, make it the day's current one in one step.

    Raises `DayRejected` (nothing published) when a per-day rule blocks it. The staged
    files move to unique names beside the old generation (invisible: no manifest names
    them yet), the manifest is replaced atomically (the swap), and only then are the old
    generation's files, and any orphan a crash left, removed.
    """
    day = date.fromisoformat(report.day)
    rejected = _verdict(day_problems(lake, spec, report))
    if rejected is not None:  # keep the evidence (its quarantine says why), publish nothing
        kept = lake.rejected(spec.name, day, generation)
        if lake.exists(posixpath.dirname(kept)):  # keep only the latest rejection of a day
            lake.fs.rm(posixpath.dirname(kept), recursive=True)
        lake.fs.makedirs(posixpath.dirname(kept), exist_ok=True)
        lake.fs.mv(lake.staging(spec.name, day, generation), kept, recursive=True)
        raise DayRejected(
            f"{rejected.message}; rejected generation kept in {kept}",
            rejected.day,
            rejected.outcome,
        )
    files: dict[str, dict] = {}
    for source in spec.sources:
        for layer in LAYERS:
            staged = staged_file(lake, spec.name, day, generation, layer, source.name)
            sha256, size = _sha256(lake, staged)
            final = lake.generation_file(layer, source.name, day, generation)
            lake.fs.makedirs(posixpath.dirname(final), exist_ok=True)
            lake.fs.mv(staged, final)
            files[f"{layer}/{source.name}"] = {
                "path": lake.relative(final),
                "sha256": sha256,
                "bytes": size,
            }
    write_manifest(lake, spec, report, engine, generation, files)
    remove_unreferenced(lake, spec, day, files)
    return report


def remove_unreferenced(lake: Lake, spec: DatasetSpec, day: date, files: dict[str, dict]) -> None:
    """Delete a day's partition files the manifest does not name: the replaced generation
    and orphans of a run killed between moving files and swapping the manifest."""
    keep = {lake.path(entry["path"]) for entry in files.values()}
    for source in spec.sources:
        for layer in LAYERS:
            folder = lake.partition(layer, source.name, day)
            if not lake.exists(folder):
                continue
            for path in lake.fs.ls(folder, detail=False):
                if lake.path(lake.relative(path)) not in keep:
                    lake.fs.rm(path)
