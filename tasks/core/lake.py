"""The lake layout, written down once, and atomic writes into it.

Every stage asks this module for paths instead of building strings, so moving the lake
to object storage (any fsspec URL) never touches a stage.

    landing/<dataset>/daily/<YYYY-MM-DD>/<source>.csv         raw, as delivered
    landing/<dataset>/dimensions/<YYYY-MM-DD>/<dimension>.csv dimension snapshots
    clean/<table>/date=<YYYY-MM-DD>/part-<generation>.parquet valid rows
    quarantine/<table>/date=<YYYY-MM-DD>/part-<generation>.parquet invalid rows + reason
    manifests/<dataset>/date=<YYYY-MM-DD>.json                the day's pointer: accounting,
                                                              its generation's files + sha256,
                                                              an operator's hold
    _staging/<dataset>/date=<YYYY-MM-DD>/<generation>/        a generation being checked
    rejected/<dataset>/date=<YYYY-MM-DD>/<generation>/        one that failed them (kept)
    reports/validation/<dataset>/<as_of>/                     GX results + Data Docs
    validation/<dataset>/<table>/date=<YYYY-MM-DD>.json       a partition's cached checks
    runs/<dataset>/<as_of>/<stage>/                           each stage's outputs and result

A dataset's tables (its delivered sources, e.g. flights and weather) have names unique
across datasets, so clean/ and quarantine/ are keyed by table.

A day's clean and quarantine files of every table form one *generation*. Its files have
names of their own, so writing them changes nothing a reader sees: the day's manifest
names the current generation, and replacing the manifest (one atomic rename) swaps the
whole day at once. Readers go through the manifest (`read_partition`), which also checks
each file's sha256, so a half-written or tampered file is refused instead of trained on.
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
import uuid
from dataclasses import dataclass
from datetime import date
from typing import Any

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.core import url_to_fs


class PartitionCorrupt(RuntimeError):
    """A published file does not match its manifest: never read it."""


def parquet_bytes(frame: pd.DataFrame, metadata: dict[str, str] | None = None) -> bytes:
    """A frame as the bytes of a Parquet file, `metadata` joined to the file's key/value
    metadata (the pandas schema metadata `to_parquet` writes stays).

    Why bytes: a writer that also needs the file's sha256, or the frame exactly as a
    reader will see it (the ingest checks its clean partitions on what it publishes),
    gets them from the same encode instead of reading the file back.
    """
    table = pa.Table.from_pandas(frame, preserve_index=False)
    if metadata:
        table = table.replace_schema_metadata(
            {
                **(table.schema.metadata or {}),
                **{k.encode(): v.encode() for k, v in metadata.items()},
            }
        )
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


@dataclass(frozen=True)
class Lake:
    """A handle on the lake root; cheap to create and picklable (workers rebuild it)."""

    root: str

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        return url_to_fs(self.root)[0]

    @property
    def is_local(self) -> bool:
        """True when the lake is on the local filesystem (plain paths, rename is atomic)."""
        return "file" in self.fs.protocol

    @classmethod
    def of(cls, path: str) -> Lake:
        """A handle on the filesystem holding `path`, a path some Lake handed out.

        Stages receive paths, not lakes; this is how they open them on the right
        filesystem, local or remote.
        """
        return cls(path)

    def path(self, *parts: str) -> str:
        """An absolute path inside the lake: plain for a local lake, a full URL otherwise."""
        fs, base = url_to_fs(self.root)
        joined = posixpath.join(base, *parts)
        return joined if self.is_local else fs.unstrip_protocol(joined)

    # --- landing -------------------------------------------------------------------------
    def landing_day(self, dataset: str, day: date) -> str:
        return self.path("landing", dataset, "daily", day.isoformat())

    def landing_dimensions(self, dataset: str, snapshot: date) -> str:
        return self.path("landing", dataset, "dimensions", snapshot.isoformat())

    def landed_days(self, dataset: str) -> list[date]:
        """Days of `dataset` delivered to landing, sorted."""
        base = self.path("landing", dataset, "daily")
        if not self.fs.exists(base):
            return []
        days = []
        for entry in self.fs.ls(base, detail=False):
            name = posixpath.basename(entry.rstrip("/"))
            try:
                days.append(date.fromisoformat(name))
            except ValueError:
                continue  # a stray folder is not a delivery
        return sorted(days)

    def latest_dimension_snapshot(self, dataset: str, as_of: date) -> str:
        """The newest dimension snapshot of `dataset` delivered on or before `as_of`."""
        base = self.path("landing", dataset, "dimensions")
        snapshots = []
        if self.fs.exists(base):
            for entry in self.fs.ls(base, detail=False):
                try:
                    snapshots.append(date.fromisoformat(posixpath.basename(entry.rstrip("/"))))
                except ValueError:
                    continue
        eligible = [s for s in snapshots if s <= as_of]
        if not eligible:
            raise FileNotFoundError(
                f"No dimension snapshot of {dataset} on or before {as_of} under {base}; "
                f"run `nightshift land --dataset {dataset}` first."
            )
        return self.landing_dimensions(dataset, max(eligible))

    # --- layers ---------------------------------------------------------------------------
    def partition(self, layer: str, table: str, day: date) -> str:
        return self.path(layer, table, f"date={day.isoformat()}")

    def partition_file(self, layer: str, table: str, day: date) -> str:
        """The current file of a partition, as the day's manifest names it.

        Callers that know the dataset should prefer `partition_entry`/`read_partition`;
        this looks the table up in every dataset's manifest of the day (a handful). With
        no manifest naming it, the conventional path is returned (which does not exist),
        so `exists()` answers "nothing published".
        """
        base = self.path("manifests")
        if self.fs.exists(base):
            for entry in sorted(self.fs.ls(base, detail=False)):
                dataset = posixpath.basename(entry.rstrip("/"))
                found = self.partition_entry(dataset, layer, table, day)
                if found is not None:
                    return self.path(found["path"])
        return posixpath.join(self.partition(layer, table, day), "part-0.parquet")

    def generation_file(self, layer: str, table: str, day: date, generation: str) -> str:
        """Where a generation's file of a partition lives once published (a unique name)."""
        return posixpath.join(self.partition(layer, table, day), f"part-{generation}.parquet")

    def manifest(self, dataset: str, day: date) -> str:
        return self.path("manifests", dataset, f"date={day.isoformat()}.json")

    def staging(self, dataset: str, day: date, generation: str | None = None) -> str:
        """A day's staging folder, or one generation's inside it (never read by a stage)."""
        folder = self.path("_staging", dataset, f"date={day.isoformat()}")
        return posixpath.join(folder, generation) if generation else folder

    def rejected(self, dataset: str, day: date, generation: str) -> str:
        """Where a generation that failed its checks is kept, for the operator to inspect."""
        return self.path("rejected", dataset, f"date={day.isoformat()}", generation)

    def relative(self, path: str) -> str:
        """`path` relative to the lake root: what manifests store, so the lake can move."""
        return posixpath.relpath(url_to_fs(path)[1], url_to_fs(self.root)[1])

    def read_manifest(self, dataset: str, day: date) -> dict | None:
        path = self.manifest(dataset, day)
        return self.read_json(path) if self.fs.exists(path) else None

    def partition_entry(self, dataset: str, layer: str, table: str, day: date) -> dict | None:
        """The manifest's record of a partition's current file (path, sha256, bytes)."""
        manifest = self.read_manifest(dataset, day)
        if not manifest:
            return None
        return (manifest.get("files") or {}).get(f"{layer}/{table}")

    def read_partition(
        self,
        dataset: str,
        layer: str,
        table: str,
        day: date,
        columns: list[str] | None = None,
    ) -> pd.DataFrame:
        """Read a partition's current file after checking it against the manifest's sha256.

        A reader never trains on a file the manifest does not vouch for: a mismatch (a
        torn write, a file swapped by hand, bit rot) is refused with the file named.
        """
        entry = self.partition_entry(dataset, layer, table, day)
        if entry is None:
            raise FileNotFoundError(
                f"no published {layer} {table} partition for date={day.isoformat()} in "
                f"{self.manifest(dataset, day)}; run `nightshift ingest` for that day"
            )
        path = self.path(entry["path"])
        with self.fs.open(path, "rb") as handle:
            data = handle.read()
        digest = hashlib.sha256(data).hexdigest()
        if digest != entry["sha256"]:
            raise PartitionCorrupt(
                f"{path}: sha256 {digest[:16]}… does not match the manifest's "
                f"{entry['sha256'][:16]}… ({self.manifest(dataset, day)}); refusing to read it "
                "(rule: manifest:sha256)"
            )
        return pd.read_parquet(io.BytesIO(data), columns=columns)

    def run_dir(self, dataset: str, as_of: date, *parts: str) -> str:
        return self.path("runs", dataset, as_of.isoformat(), *parts)

    def validation_dir(self, dataset: str, as_of: date) -> str:
        return self.path("reports", "validation", dataset, as_of.isoformat())

    # --- atomic writes --------------------------------------------------------------------
    def write_bytes_atomic(self, path: str, data: bytes) -> None:
        """Write a file so that readers see the old content or the new, never half of it."""
        fs = self.fs
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        try:
            with fs.open(tmp, "wb") as handle:
                handle.write(data)
            fs.mv(tmp, path)
        except BaseException:  # e.g. ENOSPC: leave no half-written temporary behind
            if fs.exists(tmp):
                fs.rm(tmp)
            raise

    def write_json_atomic(self, path: str, payload: Any) -> None:
        self.write_bytes_atomic(path, json.dumps(payload, indent=2, default=str).encode())

    def read_json(self, path: str) -> Any:
        with self.fs.open(path, "rb") as handle:
            return json.load(handle)

    def write_parquet_atomic(
        self, path: str, frame: pd.DataFrame, metadata: dict[str, str] | None = None
    ) -> None:
        """Write a Parquet file atomically; `metadata` joins the file's key/value metadata.

        The frame is converted once and the metadata merged into that table's schema (the
        pandas schema metadata `to_parquet` writes stays): one encode, not write-read-write.
        """
        self.write_bytes_atomic(path, parquet_bytes(frame, metadata))

    def parquet_metadata(self, path: str) -> dict[str, str]:
        """The key/value metadata of a Parquet file (e.g. the contract it was cleaned under)."""
        with self.fs.open(path, "rb") as handle:
            raw = pq.read_schema(handle).metadata or {}
        return {k.decode(): v.decode() for k, v in raw.items()}

    def read_parquet(self, path: str, columns: list[str] | None = None) -> pd.DataFrame:
        with self.fs.open(path, "rb") as handle:
            return pd.read_parquet(handle, columns=columns)

    def exists(self, path: str) -> bool:
        return self.fs.exists(path)
