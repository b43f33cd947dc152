"""BackupService: an online backup of the database and media, streamed as progress events
(content_service.backup does the work)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from loom.content.v1 import backup_pb2, backup_pb2_grpc

from content_service.backup import (
    ContentBackup,
    DatabaseSnapshot,
    Event,
    Progress,
    Summary,
    sweep_stale_pins,
)
from content_service.db.engine import Database
from content_service.settings import ContentSettings
from servicekit.auth import current_principal, require_service
from servicekit.backupfiles import prepare_directory
from servicekit.errors import FailedPrecondition

log = logging.getLogger(__name__)

PHASES = {
    "pin_media": backup_pb2.BackupProgress.PHASE_PIN_MEDIA,
    "database": backup_pb2.BackupProgress.PHASE_DATABASE,
    "media": backup_pb2.BackupProgress.PHASE_MEDIA,
}


def _timestamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def snapshot_proto(snapshot: DatabaseSnapshot) -> backup_pb2.BackupDatabaseSnapshot:
    return backup_pb2.BackupDatabaseSnapshot(
        backend=snapshot.backend,
        server_version=snapshot.server_version,
        schema_revision=snapshot.schema_revision,
        snapshot_time=_timestamp(snapshot.snapshot_time),
        tables=[
            backup_pb2.BackupTableRows(table=name, rows=rows)
            for name, rows in sorted(snapshot.tables.items())
        ],
        outbox=backup_pb2.BackupOutboxPosition(
            pending_count=snapshot.outbox_pending, max_id=snapshot.outbox_max_id
        ),
        referenced_blob_count=len(snapshot.referenced),
        attempts=snapshot.attempts,
        path=snapshot.path,
    )


def event_proto(event: Event) -> backup_pb2.CreateBackupResponse:
    if isinstance(event, Progress):
        return backup_pb2.CreateBackupResponse(
            progress=backup_pb2.BackupProgress(
                phase=PHASES[event.phase],
                done_items=event.done_items,
                total_items=event.total_items,
                done_bytes=event.done_bytes,
                total_bytes=event.total_bytes,
                message=event.message,
            )
        )
    if isinstance(event, DatabaseSnapshot):
        return backup_pb2.CreateBackupResponse(database=snapshot_proto(event))
    if isinstance(event, Summary):
        return backup_pb2.CreateBackupResponse(
            summary=backup_pb2.ContentBackupSummary(
                database=snapshot_proto(event.database),
                media_file_count=event.media_files,
                media_bytes=event.media_bytes,
                file_count=event.files,
                total_bytes=event.bytes,
            )
        )
    return backup_pb2.CreateBackupResponse(
        files=backup_pb2.BackupFiles(
            files=[
                backup_pb2.BackupFile(path=f.path, size_bytes=f.size, sha256=f.sha256)
                for f in event
            ]
        )
    )


class BackupServicer(backup_pb2_grpc.BackupServiceServicer):
    def __init__(self, db: Database, settings: ContentSettings) -> None:
        self._db = db
        self._media_root = settings.media_dir.resolve()
        self._backup_roots = settings.backup_root_paths()
        self._busy_timeout_ms = settings.sqlite_busy_timeout_ms
        self._running = threading.Lock()
        removed = sweep_stale_pins(self._media_root)
        if removed:
            log.info("removed %d media pin folder(s) left by an interrupted backup", removed)

    def CreateBackup(
        self, request: backup_pb2.CreateBackupRequest, context: grpc.ServicerContext
    ) -> Iterator[backup_pb2.CreateBackupResponse]:
        require_service(current_principal())
        if not self._running.acquire(blocking=False):
            raise FailedPrecondition(
                "a backup of this content_service is already running", reason="BACKUP_RUNNING"
            )
        try:
            directory = prepare_directory(
                request.directory, self._backup_roots, [(self._media_root, "media folder")]
            )
            log.info("backup into %s started", directory)
            cancelled = threading.Event()
            context.add_callback(cancelled.set)
            backup = ContentBackup(
                self._db,
                self._media_root,
                cancelled=cancelled.is_set,
                sqlite_busy_timeout_ms=self._busy_timeout_ms,
            )
            for event in backup.run(directory):
                if isinstance(event, Summary):
                    log.info(
                        "backup into %s complete: %d files, %d bytes",
                        directory,
                        event.files,
                        event.bytes,
                    )
                yield event_proto(event)
        finally:
            self._running.release()
