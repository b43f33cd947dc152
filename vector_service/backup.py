"""Online backup of the LanceDB tables, and the VectorBackupService that streams it.

A Lance table is a folder of immutable files (data fragments, deletion files, index files,
one manifest per version) plus a small "latest version" hint that is rewritten. A version is
consistent as long as the files its manifest names exist, and only two things ever remove
files: compaction leaves old ones behind, and pruning (optimize's cleanup) deletes those of
versions older than 30 minutes. Both run under the collection's lock in VectorStore, the same
lock every write takes.

So each collection's current table is backed up like this:

1. Under the collection lock (a write to that collection waits for this step only, a few
   milliseconds; searches never wait): record the version and row count, and pin every file
   of the table folder with a hard link into a staging folder beside the tables (same file
   system). Immutable files are linked, the rewritten hint is copied. From then on a prune
   of the live table cannot take the pinned files away: a link keeps the bytes.
2. Outside the lock, on the pinned copy (its own dataset, which nothing else opens): check it
   is at the recorded version with the recorded rows, and trim it to that one version
   (optimize with cleanup of every older version), which drops the history a live table
   keeps for 30 minutes (often most of its bytes).
3. Copy the trimmed table into the backup folder, hashing every file, then remove the pin.

The catalog table is not copied: a restored vector_service that finds tables without catalog
rows adopts them (store.tables), and a running reindex's half-built table is left out.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import lancedb
from google.protobuf.timestamp_pb2 import Timestamp
from loom.vector.v1 import backup_pb2, backup_pb2_grpc, vector_pb2

from servicekit.auth import current_principal, require_service
from servicekit.backupfiles import (
    FileEntry,
    copy_hashed,
    link_or_copy,
    pinned_run,
    sync_filesystem,
)
from servicekit.backupfiles import prepare_directory as prepare_backup_directory
from servicekit.errors import Aborted, FailedPrecondition, ServiceError
from servicekit.server import Service
from vector_service.store import Collection, VectorStore

log = logging.getLogger(__name__)

# Pins live in the LanceDB folder (same file system as the tables, so links always work). Not
# a `*.lance` name, so LanceDB never lists it as a table.
PIN_PREFIX = ".loom-backup-"
# Files of a Lance table that are written once and never changed: safe to pin with a link.
IMMUTABLE_FOLDERS = frozenset({"data", "_indices", "_deletions", "_transactions"})
LANCEDB_FOLDER = "lancedb"
FILE_BATCH = 500
PROGRESS_EVERY_SECONDS = 0.5
# Trims the pinned copy to its latest version. Not 0, which LanceDB warns about (rightly, for
# a live table; the pinned copy has no other reader): 1 ms is older than any pinned version.
TRIM_OLDER_THAN = timedelta(milliseconds=1)


@dataclass
class Progress:
    table_name: str
    done_tables: int
    total_tables: int
    done_bytes: int = 0
    total_bytes: int = 0
    message: str = ""


@dataclass
class TableSnapshot:
    collection: Collection
    table_name: str
    source_version: int
    backup_version: int
    row_count: int
    provider: str
    model: str
    dimensions: int
    indexed_columns: list[str]
    snapshot_time: float
    path: str


@dataclass
class Summary:
    tables: list[TableSnapshot]
    files: int
    bytes: int


Event = Progress | TableSnapshot | list[FileEntry] | Summary


def local_root(uri: str) -> Path:
    """The LanceDB folder, or FAILED_PRECONDITION for an object-store URI."""
    if uri.startswith("file://"):
        uri = uri.removeprefix("file://")
    if "://" in uri:
        raise FailedPrecondition(
            f"backups need LanceDB in a local folder; {uri.split('://')[0]}:// URIs are backed "
            "up with the object store's own tools",
            reason="BACKUP_UNSUPPORTED_STORE",
        )
    return Path(uri).resolve()


def _immutable(relative: Path) -> bool:
    parts = relative.parts
    if parts[0] in IMMUTABLE_FOLDERS:
        return True
    return parts[0] == "_versions" and relative.suffix == ".manifest"


def pin_table(source: Path, target: Path) -> int:
    """Pins every file of a table folder under target (links, or copies for the files that
    are rewritten). Returns the number of files."""
    count = 0
    for current, _dirs, names in os.walk(source):
        for name in names:
            path = Path(current) / name
            relative = path.relative_to(source)
            destination = target / relative
            if _immutable(relative):
                pinned = link_or_copy(path, destination)
            else:
                destination.parent.mkdir(parents=True, exist_ok=True)
                try:
                    shutil.copy2(path, destination)
                    pinned = True
                except FileNotFoundError:
                    pinned = False
            count += pinned
    return count


def sweep_pins(root: Path) -> int:
    """Removes pin folders left by an interrupted backup. One vector_service per LanceDB
    folder, so at start every pin is stale."""
    removed = 0
    if root.is_dir():
        for entry in root.iterdir():
            if entry.name.startswith(PIN_PREFIX) and entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
    return removed


class VectorBackup:
    """One backup run. Not thread-safe; the servicer runs one at a time."""

    def __init__(self, store: VectorStore, *, cancelled: Callable[[], bool] = lambda: False):
        self.store = store
        self.root = local_root(store.uri)
        self._cancelled = cancelled

    def _check_cancelled(self) -> None:
        if self._cancelled():
            raise Aborted("the backup was cancelled")

    def run(self, directory: Path) -> Iterator[Event]:
        """Fills `directory`; on any failure, or when the caller stops iterating, removes it."""
        pins = self.root / f"{PIN_PREFIX}{secrets.token_hex(8)}"
        return pinned_run(directory, pins, self._run(directory, pins))

    def _run(self, directory: Path, pins: Path) -> Iterator[Event]:
        collections = list(Collection)
        tables: list[TableSnapshot] = []
        files = total_bytes = 0
        (directory / LANCEDB_FOLDER).mkdir()
        for done, collection in enumerate(collections):
            self._check_cancelled()
            result = yield from self._table(collection, directory, pins, done, len(collections))
            if result is not None:
                tables.append(result[0])
                files += result[1]
                total_bytes += result[2]
        sync_filesystem(directory)
        yield Progress("", len(collections), len(collections), message="vector tables copied")
        yield Summary(tables, files, total_bytes)

    def _table(
        self, collection: Collection, directory: Path, pins: Path, done: int, total: int
    ) -> Generator[Event, None, tuple[TableSnapshot, int, int] | None]:
        """Backs up one collection's table; returns (snapshot, files, bytes), or None when
        the collection has no table yet."""
        # The store's collection lock: the one every write, compaction, prune and reindex swap
        # of this collection takes (vector_service.store). Held only while pinning.
        with self.store.locked_active(collection) as handle:
            if handle is None:
                return None
            name = handle.name
            source = self.root / f"{name}.lance"
            pinned = pins / f"{name}.lance"
            if not source.is_dir():
                raise FailedPrecondition(
                    f"table {name} has no folder at {source}", reason="BACKUP_TABLE_MISSING"
                )
            version = int(handle.table.version)
            rows = int(handle.table.count_rows())
            space = handle.space
            pinned_at = time.time()
            started = time.monotonic()
            pinned_files = pin_table(source, pinned)
            locked_ms = (time.monotonic() - started) * 1000
        log.info(
            "backup: pinned %s at version %d (%d rows, %d files; lock held %.1f ms)",
            name,
            version,
            rows,
            pinned_files,
            locked_ms,
        )
        yield Progress(name, done, total, message=f"{name}: pinned version {version}")
        self._check_cancelled()
        copy: Any = lancedb.connect(str(pins)).open_table(name)
        if int(copy.version) != version:
            raise ServiceError(
                f"the pinned copy of {name} is at version {copy.version}, not {version}",
                reason="BACKUP_INCONSISTENT",
            )
        # Compaction and index updates may commit versions after the prune of the same pass;
        # the next pass has nothing left to compact and prunes them.
        for _ in range(3):
            copy.optimize(cleanup_older_than=TRIM_OLDER_THAN, delete_unverified=True)
            if len(copy.list_versions()) == 1:
                break
        copied_rows = int(copy.count_rows())
        if copied_rows != rows:
            raise ServiceError(
                f"the pinned copy of {name} has {copied_rows} rows, the table had {rows}",
                reason="BACKUP_INCONSISTENT",
            )
        backup_version = int(copy.version)
        indexed = sorted(",".join(index.columns) for index in copy.list_indices())
        del copy
        relative = f"{LANCEDB_FOLDER}/{name}.lance"
        source_files = sorted(p for p in pinned.rglob("*") if p.is_file())
        want = sum(p.stat().st_size for p in source_files)
        batch: list[FileEntry] = []
        copied = 0
        count = 0
        last = time.monotonic()
        for path in source_files:
            self._check_cancelled()
            rel = f"{relative}/{path.relative_to(pinned).as_posix()}"
            size, digest = copy_hashed(path, directory / rel, durable=False)
            batch.append(FileEntry(rel, size, digest))
            copied += size
            count += 1
            if len(batch) >= FILE_BATCH:
                yield batch
                batch = []
            if time.monotonic() - last >= PROGRESS_EVERY_SECONDS:
                last = time.monotonic()
                yield Progress(name, done, total, copied, want)
        if batch:
            yield batch
        shutil.rmtree(pinned, ignore_errors=True)
        snapshot = TableSnapshot(
            collection=collection,
            table_name=name,
            source_version=version,
            backup_version=backup_version,
            row_count=rows,
            provider=space.provider,
            model=space.model,
            dimensions=space.dimensions,
            indexed_columns=indexed,
            snapshot_time=pinned_at,
            path=relative,
        )
        yield Progress(
            name, done + 1, total, copied, want, message=f"{name}: {rows} rows, {copied} bytes"
        )
        yield snapshot
        return snapshot, count, copied


# ----------------------------------------------------------------------------- the RPC


def _timestamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def table_proto(table: TableSnapshot) -> backup_pb2.VectorTableSnapshot:
    return backup_pb2.VectorTableSnapshot(
        collection=vector_pb2.Collection.Value(table.collection.api_name),
        table_name=table.table_name,
        source_version=table.source_version,
        backup_version=table.backup_version,
        row_count=table.row_count,
        provider=table.provider,
        model=table.model,
        dimensions=table.dimensions,
        indexed_columns=table.indexed_columns,
        snapshot_time=_timestamp(table.snapshot_time),
        path=table.path,
    )


def event_proto(event: Event) -> backup_pb2.CreateVectorBackupResponse:
    if isinstance(event, Progress):
        return backup_pb2.CreateVectorBackupResponse(
            progress=backup_pb2.VectorBackupProgress(
                table_name=event.table_name,
                done_tables=event.done_tables,
                total_tables=event.total_tables,
                done_bytes=event.done_bytes,
                total_bytes=event.total_bytes,
                message=event.message,
            )
        )
    if isinstance(event, TableSnapshot):
        return backup_pb2.CreateVectorBackupResponse(table=table_proto(event))
    if isinstance(event, Summary):
        return backup_pb2.CreateVectorBackupResponse(
            summary=backup_pb2.VectorBackupSummary(
                tables=[table_proto(t) for t in event.tables],
                lancedb_version=str(lancedb.__version__),
                file_count=event.files,
                total_bytes=event.bytes,
            )
        )
    return backup_pb2.CreateVectorBackupResponse(
        files=backup_pb2.VectorBackupFiles(
            files=[
                backup_pb2.VectorBackupFile(path=f.path, size_bytes=f.size, sha256=f.sha256)
                for f in event
            ]
        )
    )


class VectorBackupServicer(backup_pb2_grpc.VectorBackupServiceServicer):
    def __init__(self, store: VectorStore, backup_roots: list[Path]) -> None:
        self._store = store
        self._backup_roots = backup_roots
        self._running = threading.Lock()
        with contextlib.suppress(FailedPrecondition):
            removed = sweep_pins(local_root(store.uri))
            if removed:
                log.info("removed %d pin folder(s) left by an interrupted backup", removed)

    def CreateVectorBackup(
        self, request: backup_pb2.CreateVectorBackupRequest, context: grpc.ServicerContext
    ) -> Iterator[backup_pb2.CreateVectorBackupResponse]:
        require_service(current_principal())
        if not self._running.acquire(blocking=False):
            raise FailedPrecondition(
                "a backup of this vector_service is already running", reason="BACKUP_RUNNING"
            )
        try:
            root = local_root(self._store.uri)
            directory = prepare_backup_directory(
                request.directory, self._backup_roots, [(root, "LanceDB folder")]
            )
            log.info("vector backup into %s started", directory)
            cancelled = threading.Event()
            context.add_callback(cancelled.set)
            for event in VectorBackup(self._store, cancelled=cancelled.is_set).run(directory):
                if isinstance(event, Summary):
                    log.info(
                        "vector backup into %s complete: %d tables, %d files, %d bytes",
                        directory,
                        len(event.tables),
                        event.files,
                        event.bytes,
                    )
                yield event_proto(event)
        finally:
            self._running.release()


def backup_service(store: VectorStore, backup_roots: list[Path]) -> Service:
    """`backup_roots`: where backup folders may be created (LOOM_BACKUP_ROOTS)."""
    return Service.of(
        backup_pb2,
        backup_pb2_grpc,
        "VectorBackupService",
        VectorBackupServicer(store, backup_roots),
    )
