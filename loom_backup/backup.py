"""`python -m loom_backup backup TARGET`: a backup of a running stack into a folder or a `.tar`.

1. Creates a hidden staging folder beside TARGET (`.NAME.partial-XXXX`).
2. Asks content_service (BackupService.CreateBackup) to write its half into
   `staging/content`: the database copy, then the media blobs that copy refers to.
3. As soon as content_service reports its database copy complete, asks vector_service
   (VectorBackupService.CreateVectorBackup) to write its tables into `staging/vector`, so the
   vector side is never older than the relational side (reconcile after a restore repairs
   what it is newer by).
4. Checks that the files on disk are exactly the files reported, re-reads and hashes every one
   of them, writes `manifest.json` (last, atomically), and renames the staging folder to
   TARGET (or packs it into TARGET.tar, written to a temp name and renamed).

An interrupted or failed backup cancels both RPCs (each service removes what it wrote) and
removes the staging folder; nothing named TARGET ever appears, and a folder without a
manifest is never taken for a backup by `restore`.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tarfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import grpc
from loom.content.v1 import backup_pb2 as content_backup_pb2
from loom.content.v1 import backup_pb2_grpc as content_backup_grpc
from loom.vector.v1 import backup_pb2 as vector_backup_pb2
from loom.vector.v1 import backup_pb2_grpc as vector_backup_grpc
from loom.vector.v1 import vector_pb2

from loom_backup import manifest as mf
from loom_backup.errors import BackupError
from loom_backup.progress import Printer, size
from loom_backup.settings import BackupSettings
from servicekit.backupfiles import FileEntry, fsync_dir, fsync_file, hash_file
from servicekit.clients import open_channel

PHASE_NAMES = {
    content_backup_pb2.BackupProgress.PHASE_PIN_MEDIA: "pinning media",
    content_backup_pb2.BackupProgress.PHASE_DATABASE: "database",
    content_backup_pb2.BackupProgress.PHASE_MEDIA: "media",
}


@dataclass
class BackupOutcome:
    target: Path
    manifest: mf.Manifest
    seconds: float
    files: int
    bytes: int
    archive_bytes: int


@contextmanager
def service_channel(settings: BackupSettings, address: str, what: str) -> Iterator[grpc.Channel]:
    """A servicekit.clients channel to `what` at `address`, once it answers (BackupError when
    it does not within BACKUP_CONNECT_TIMEOUT_SECONDS). Every call carries the service token
    and a deadline: BACKUP_TIMEOUT_SECONDS unless the call sets its own."""
    channel = open_channel(address, settings.token(), timeout=settings.timeout_seconds)
    try:
        try:
            grpc.channel_ready_future(channel).result(timeout=settings.connect_timeout_seconds)
        except grpc.FutureTimeoutError:
            raise BackupError(
                f"{what} at {address} is not reachable (is the stack running? `make run`)"
            ) from None
        yield channel
    finally:
        channel.close()


def rpc_failure(what: str, exc: grpc.RpcError) -> BackupError:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    name = code.name if code is not None else "ERROR"
    return BackupError(f"{what} failed: {name}: {details}")


@dataclass
class _VectorHalf:
    """vector_service's half, consumed in a thread once the database copy is complete."""

    call: Any = None
    tables: list[vector_backup_pb2.VectorTableSnapshot] = field(default_factory=list)
    files: list[FileEntry] = field(default_factory=list)
    summary: vector_backup_pb2.VectorBackupSummary | None = None
    error: BaseException | None = None
    thread: threading.Thread | None = None

    def consume(self, printer: Printer) -> None:
        try:
            for message in self.call:
                kind = message.WhichOneof("event")
                if kind == "progress":
                    p = message.progress
                    if p.message:
                        printer.line(f"vector: {p.message}")
                    elif p.total_bytes:
                        printer.status(
                            f"vector: {p.table_name} {size(p.done_bytes)} / "
                            f"{size(p.total_bytes)} ({p.done_tables}/{p.total_tables} tables)"
                        )
                elif kind == "table":
                    self.tables.append(message.table)
                elif kind == "files":
                    self.files.extend(
                        FileEntry(f"{mf.VECTOR_PREFIX}/{f.path}", f.size_bytes, f.sha256)
                        for f in message.files.files
                    )
                elif kind == "summary":
                    self.summary = message.summary
        except grpc.RpcError as exc:
            self.error = rpc_failure("vector_service's backup", exc)
        except Exception as exc:  # noqa: BLE001 (handed to the main thread, which raises it)
            self.error = exc


def create_backup(
    target: Path, settings: BackupSettings, printer: Printer, *, verify: bool = True
) -> BackupOutcome:
    started = time.time()
    clock = time.monotonic()
    target = Path(os.path.abspath(target.expanduser()))
    if target.exists() or target.is_symlink():
        raise BackupError(f"{target} already exists; a backup never overwrites anything")
    as_tar = target.suffix == ".tar"
    target.parent.mkdir(parents=True, exist_ok=True)
    settings.token()  # no token, no backup: say so before anything is written
    staging = target.parent / f".{target.name}.partial-{secrets.token_hex(4)}"
    staging.mkdir()
    vector = _VectorHalf()
    calls: list[Any] = []
    try:
        with (
            service_channel(
                settings, settings.content_address, "content_service"
            ) as content_channel,
            service_channel(settings, settings.vector_address, "vector_service") as vector_channel,
        ):
            printer.line(f"backing up into {target} (staging in {staging.name})")
            content_call = content_backup_grpc.BackupServiceStub(content_channel).CreateBackup(
                content_backup_pb2.CreateBackupRequest(directory=str(staging / mf.CONTENT_PREFIX))
            )
            calls.append(content_call)

            def start_vector() -> None:
                vector.call = vector_backup_grpc.VectorBackupServiceStub(
                    vector_channel
                ).CreateVectorBackup(
                    vector_backup_pb2.CreateVectorBackupRequest(
                        directory=str(staging / mf.VECTOR_PREFIX)
                    )
                )
                calls.append(vector.call)
                vector.thread = threading.Thread(
                    target=vector.consume, args=(printer,), name="vector-backup", daemon=True
                )
                vector.thread.start()

            content_files: list[FileEntry] = []
            summary: content_backup_pb2.ContentBackupSummary | None = None
            try:
                for message in content_call:
                    kind = message.WhichOneof("event")
                    if kind == "progress":
                        _show_content_progress(printer, message.progress)
                    elif kind == "database":
                        db = message.database
                        printer.line(
                            f"content: snapshot of {db.snapshot_time.ToJsonString()}, schema "
                            f"{db.schema_revision}, index outbox {db.outbox.pending_count} "
                            "pending: starting the vector backup"
                        )
                        start_vector()
                    elif kind == "files":
                        content_files.extend(
                            FileEntry(f"{mf.CONTENT_PREFIX}/{f.path}", f.size_bytes, f.sha256)
                            for f in message.files.files
                        )
                    elif kind == "summary":
                        summary = message.summary
            except grpc.RpcError as exc:
                raise rpc_failure("content_service's backup", exc) from None
            if summary is None:
                raise BackupError("content_service ended its backup without a summary")
            if vector.thread is None:
                start_vector()
            assert vector.thread is not None
            while vector.thread.is_alive():
                vector.thread.join(0.2)
            if vector.error is not None:
                raise vector.error
            if vector.summary is None:
                raise BackupError("vector_service ended its backup without a summary")
        files = sorted(content_files + vector.files, key=lambda f: f.path)
        _check_complete(staging, files)
        if verify:
            _verify(staging, files, printer)
        data = _manifest(started, summary, vector.summary, files)
        manifest_bytes = mf.seal(data)
        manifest_path = staging / mf.MANIFEST
        temp = staging / f".{mf.MANIFEST}.tmp"
        temp.write_bytes(manifest_bytes)
        fsync_file(temp)
        os.replace(temp, manifest_path)
        fsync_dir(staging)
        sealed = mf.load(manifest_bytes)
        total = sum(f.size for f in files)
        if as_tar:
            archive = _pack(staging, sealed, target, printer)
            shutil.rmtree(staging)
        else:
            if target.exists():
                raise BackupError(f"{target} appeared while the backup ran; not overwriting it")
            os.rename(staging, target)
            fsync_dir(target.parent)
            archive = total + len(manifest_bytes)
    except BaseException:
        for call in calls:
            call.cancel()
        if vector.thread is not None:
            vector.thread.join(10)
        _remove(staging)
        raise
    return BackupOutcome(
        target=target,
        manifest=sealed,
        seconds=time.monotonic() - clock,
        files=len(files),
        bytes=total,
        archive_bytes=archive,
    )


def _show_content_progress(printer: Printer, progress: content_backup_pb2.BackupProgress) -> None:
    phase = PHASE_NAMES.get(progress.phase, "working")
    if progress.message:
        printer.line(f"content: {progress.message}")
    elif progress.total_items:
        printer.status(
            f"content: {phase} {progress.done_items}/{progress.total_items} files, "
            f"{size(progress.done_bytes)} / {size(progress.total_bytes)}"
        )


def _remove(folder: Path) -> None:
    """Removes a staging folder; a service may still be removing its half, so retry a bit."""
    for _ in range(20):
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            return
        time.sleep(0.25)


def _check_complete(staging: Path, files: list[FileEntry]) -> None:
    """The files on disk are exactly the files the services reported."""
    on_disk = {
        p.relative_to(staging).as_posix()
        for p in staging.rglob("*")
        if p.is_file() or p.is_symlink()
    }
    reported = {f.path for f in files}
    if on_disk - reported:
        extra = sorted(on_disk - reported)
        raise BackupError(f"files written but not reported by the services: {extra[:5]}")
    if reported - on_disk:
        missing = sorted(reported - on_disk)
        raise BackupError(f"files reported but not written: {missing[:5]}")


def _verify(staging: Path, files: list[FileEntry], printer: Printer) -> None:
    """Reads back and hashes every file: what is on disk is what the services hashed."""
    total = sum(f.size for f in files)
    done = 0
    for count, entry in enumerate(files, 1):
        got_size, digest = hash_file(staging / entry.path)
        if got_size != entry.size or digest != entry.sha256:
            raise BackupError(f"{entry.path} does not read back as written (size or sha256)")
        done += got_size
        printer.status(f"verifying {count}/{len(files)} files, {size(done)} / {size(total)}")
    printer.line(f"verified {len(files)} files ({size(total)}): every sha256 reads back")


def _manifest(
    started: float,
    content: content_backup_pb2.ContentBackupSummary,
    vector: vector_backup_pb2.VectorBackupSummary,
    files: list[FileEntry],
) -> dict[str, Any]:
    db = content.database
    return {
        "format": mf.FORMAT,
        "format_version": mf.FORMAT_VERSION,
        "loom_version": metadata.version("loom"),
        "started_at": mf.iso(started),
        "completed_at": mf.iso(time.time()),
        "content": {
            "backend": db.backend,
            "server_version": db.server_version,
            "schema_revision": db.schema_revision,
            "snapshot_time": mf.iso(db.snapshot_time.ToNanoseconds() / 1e9),
            "database_file": db.path,
            "tables": {t.table: t.rows for t in db.tables},
            "outbox": {"pending_count": db.outbox.pending_count, "max_id": db.outbox.max_id},
            "media": {
                "files": content.media_file_count,
                "bytes": content.media_bytes,
                "referenced_blobs": db.referenced_blob_count,
            },
            "attempts": db.attempts,
        },
        "vector": {
            "lancedb_version": vector.lancedb_version,
            "tables": [
                {
                    "collection": vector_pb2.Collection.Name(t.collection),
                    "table": t.table_name,
                    "path": f"{mf.VECTOR_PREFIX}/{t.path}",
                    "source_version": t.source_version,
                    "backup_version": t.backup_version,
                    "rows": t.row_count,
                    "provider": t.provider,
                    "model": t.model,
                    "dimensions": t.dimensions,
                    "indexed_columns": list(t.indexed_columns),
                    "snapshot_time": mf.iso(t.snapshot_time.ToNanoseconds() / 1e9),
                }
                for t in vector.tables
            ],
        },
        "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in files],
        "totals": {"files": len(files), "bytes": sum(f.size for f in files)},
    }


def _pack(staging: Path, manifest: mf.Manifest, target: Path, printer: Printer) -> int:
    """Packs the staging folder into TARGET (uncompressed tar, manifest first), written under a
    temp name and renamed."""
    temp = target.parent / f".{target.name}.partial-{secrets.token_hex(4)}"
    files = manifest.files
    try:
        with tarfile.open(temp, "x", format=tarfile.PAX_FORMAT) as tar:
            tar.add(staging / mf.MANIFEST, arcname=mf.MANIFEST, recursive=False)
            for count, entry in enumerate(files, 1):
                tar.add(staging / entry.path, arcname=entry.path, recursive=False)
                printer.status(f"packing {count}/{len(files)} files into {target.name}")
        fsync_file(temp)
        try:
            os.link(temp, target)  # fails, unlike rename, if TARGET appeared meanwhile
        except FileExistsError:
            raise BackupError(
                f"{target} appeared while the backup ran; not overwriting it"
            ) from None
        fsync_dir(target.parent)
    finally:
        temp.unlink(missing_ok=True)
    printer.line(f"packed into {target}")
    return target.stat().st_size
