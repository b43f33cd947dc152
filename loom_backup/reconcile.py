"""Bringing the vector side level with the content side, and proving it: zero drift.

A restored content database and restored vector tables are never exactly in step: the vector
tables were copied a little after the database, so they may hold documents of content
written after the database copy (orphans, or newer text), and the database may hold outbox
rows that were still pending. So, with content_service (and its index dispatcher) and
vector_service running on the restored data:

1. wait until the index outbox is drained (IndexingService.GetIndexingStatus, pending 0);
2. ReconcileIndex with repair: compares every team's content with vector_service's documents
   and queues the fixes (missing, orphaned, stale) in the outbox;
3. wait until the outbox is drained again;
4. ReconcileIndex without repair: the drift must be zero (a few rounds are allowed for
   changes racing the comparison; only image documents cannot be repaired from the content,
   the image worker writes them).

`level()` does this against any running content_service; `restored_stack()` runs
content_service and vector_service in this process on the restored data folder (loopback,
free ports), which is what `restore` does before it hands the folder over.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
from loom.content.v1 import indexing_pb2, indexing_pb2_grpc

from loom_backup.errors import BackupError
from loom_backup.progress import Printer
from servicekit.clients import bearer

MAX_ROUNDS = 3
CALL_TIMEOUT = 300.0


@dataclass
class LevelReport:
    found: indexing_pb2.ReconcileIndexResponse
    final: indexing_pb2.ReconcileIndexResponse
    rounds: int
    seconds: float

    @property
    def drift(self) -> int:
        return int(self.final.drift_count)


def describe(response: indexing_pb2.ReconcileIndexResponse) -> str:
    parts = []
    for c in response.collections:
        if c.missing_count or c.orphaned_count or c.stale_count:
            parts.append(
                f"{c.collection}: {c.missing_count} missing, {c.orphaned_count} orphaned, "
                f"{c.stale_count} stale"
            )
    counts = "; ".join(parts) if parts else "none"
    expected = sum(c.expected_count for c in response.collections)
    return f"drift {response.drift_count} ({counts}) over {expected} expected documents"


def _wait_drained(
    stub: indexing_pb2_grpc.IndexingServiceStub,
    auth: tuple[tuple[str, str], ...],
    printer: Printer,
    deadline: float,
) -> None:
    while True:
        status = stub.GetIndexingStatus(
            indexing_pb2.GetIndexingStatusRequest(), metadata=auth, timeout=30
        )
        if not status.dispatcher_enabled:
            raise BackupError(
                "content_service has no vector_service address (CONTENT_VECTOR_ADDRESS), so "
                "nothing delivers its index outbox; set it and start it again"
            )
        if status.pending_count == 0:
            return
        if time.monotonic() > deadline:
            raise BackupError(
                f"the index outbox still has {status.pending_count} pending change(s) after the "
                f"time allowed (last error: {status.last_error or 'none'}); is vector_service up?"
            )
        printer.status(
            f"index outbox: {status.pending_count} pending"
            + (f", last error: {status.last_error[:80]}" if status.last_error else "")
        )
        time.sleep(0.2)


def level(channel: grpc.Channel, token: str, printer: Printer, timeout: float) -> LevelReport:
    """Drains the outbox, repairs the drift, and checks it is gone (see the module doc)."""
    clock = time.monotonic()
    deadline = clock + timeout
    # Sent on each call: `channel` may be any channel (the tests' plain ones too).
    auth = bearer(token)
    stub = indexing_pb2_grpc.IndexingServiceStub(channel)

    def reconcile(repair: bool) -> indexing_pb2.ReconcileIndexResponse:
        request = indexing_pb2.ReconcileIndexRequest(repair=repair)
        answer: indexing_pb2.ReconcileIndexResponse = stub.ReconcileIndex(
            request, metadata=auth, timeout=CALL_TIMEOUT
        )
        return answer

    try:
        _wait_drained(stub, auth, printer, deadline)
        printer.line("index outbox drained")
        found = reconcile(repair=True)
        printer.line(f"reconcile (repair): {describe(found)}; queued {found.queued_count} fix(es)")
        rounds = 1
        while True:
            _wait_drained(stub, auth, printer, deadline)
            final = reconcile(repair=False)
            printer.line(f"reconcile (check): {describe(final)}")
            if final.drift_count == 0 or rounds == MAX_ROUNDS:
                break
            # Changes that raced the comparison: repair what is left.
            rounds += 1
            again = reconcile(repair=True)
            printer.line(f"reconcile (repair): queued {again.queued_count} more fix(es)")
    except grpc.RpcError as exc:
        raise BackupError(
            f"content_service's IndexingService failed: {exc.code().name}: {exc.details()}"
        ) from None
    return LevelReport(found, final, rounds, time.monotonic() - clock)


@contextmanager
def restored_stack(
    data_dir: Path, database_url: str, printer: Printer
) -> Iterator[tuple[str, str]]:
    """content_service and vector_service, in this process, on the restored data folder: the
    same servers `make run` starts (configured from the same environment), bound to loopback
    on free ports, content_service's outbox pointed at this vector_service. Migrates the
    database first, as `make run` does. Yields (content address, service token)."""
    from content_service.db.migrate import upgrade
    from content_service.server import create_server as create_content_server
    from content_service.server import open_database
    from content_service.settings import ContentSettings
    from vector_service.server import create_server as create_vector_server
    from vector_service.server import loaded_embedder
    from vector_service.settings import VectorSettings

    local = {"data_dir": data_dir, "host": "127.0.0.1", "port": 0}
    vector_settings = VectorSettings().model_copy(update={**local, "lancedb_uri": ""})
    printer.line(
        f"starting vector_service on the restored data ({vector_settings.provider} embedder)"
    )
    vector = create_vector_server(vector_settings, embedder=loaded_embedder(vector_settings))
    vector.server.start()
    try:
        content_settings = ContentSettings().model_copy(
            update={
                **local,
                "database_url_override": database_url,
                "media_dir_override": "",
                "media_http_port": 0,
                "vector_address": f"127.0.0.1:{vector.port}",
            }
        )
        db = open_database(content_settings)
        try:
            upgrade(db)
            printer.line("starting content_service on the restored data (schema current)")
            content = create_content_server(content_settings, database=db)
            content.server.start()
            try:
                yield f"127.0.0.1:{content.port}", vector_settings.token()
            finally:
                content.stop(grace=5)
        finally:
            db.dispose()
    finally:
        vector.stop(grace=5)
