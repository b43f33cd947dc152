"""Delivers the index outbox to vector_service.

A background thread in content_service. Each round reads the due outbox rows (oldest first),
builds the documents from the sources' current state in one read transaction, sends them,
and deletes exactly the rows it read. A failed round keeps its rows with a later
`next_attempt_at` (exponential backoff with jitter) and the error, so vector_service being
down or restarted costs only time: content writes never wait for it and nothing is lost.
Deliveries are idempotent (upserts by id, deletes of what is gone), so a row delivered twice
(a crash between the send and the delete) is harmless; unchanged text costs no model call
(vector_service compares sha256 by id).

Each round is a span (with tracing on) continuing the trace of the write that queued its rows
(or linked to each, when a round joins several), and each delivery is counted and timed in the
loom_outbox_* metrics (content_service.metrics)."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

import grpc
from sqlalchemy import delete, select, update

from content_service.db.engine import Database
from content_service.db.models import IndexOutbox, PageSection, SectionEntry
from content_service.db.values import now
from content_service.indexing import documents as vd
from content_service.indexing.dispatch_lock import dispatch_lock
from content_service.indexing.outbox import OUTBOX, Kind
from content_service.indexing.vector_client import VectorClient
from content_service.metrics import (
    OUTBOX_DELIVERED_ROWS,
    OUTBOX_DELIVERY_ATTEMPTS,
    OUTBOX_DELIVERY_FAILURES,
    OUTBOX_DELIVERY_SECONDS,
    OUTBOX_EMBEDDED_TEXTS,
)
from servicekit import tracing
from servicekit.clients import TRANSIENT

log = logging.getLogger(__name__)

# Failures that say nothing about any one source, so the batch is retried as it is: the
# transient ones (servicekit.clients.TRANSIENT), CANCELLED (our own shutdown closed the
# channel under the call) and UNAUTHENTICATED (vector_service refuses our token, whatever
# the documents). Anything else (a document vector_service refuses) is retried one source at
# a time, so one bad source cannot hold back the others.
WHOLE_BATCH = TRANSIENT | {grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAUTHENTICATED}
MAX_ERROR_CHARS = 2000


@dataclass(frozen=True)
class Row:
    id: int
    kind: str
    source_id: str
    scope: vd.Scope
    attempts: int
    traceparent: str | None = None


@dataclass
class DispatcherStats:
    delivered: int = 0
    embedded: int = 0
    last_delivery_at: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    holds_lock: bool = False


@dataclass
class _Plan:
    upserts: dict[str, list[vd.VectorDocument]] = field(default_factory=lambda: defaultdict(list))
    # (collection, scope, ids, source_id, all_in_scope)
    deletes: list[tuple[str, vd.Scope, tuple[str, ...], str, bool]] = field(default_factory=list)


BACKOFF_BASE_SECONDS = 1.0  # the first retry's delay; it doubles per failure up to the cap


def backoff_seconds(attempts: int, base: float, cap: float) -> int:
    """Delay before the next try after `attempts` failures: exponential, capped, with up to
    25% jitter so many rows failed together do not all come back at once."""
    delay = min(cap, base * 2 ** min(attempts - 1, 30))
    return max(1, int(delay * random.uniform(0.75, 1.0) + 0.5))  # noqa: S311 - not security


def _rows(session_rows: list[IndexOutbox]) -> list[Row]:
    return [
        Row(
            r.id,
            r.kind,
            r.source_id,
            vd.Scope(r.team_id, r.site_id, r.environment_id),
            r.attempts,
            r.traceparent,
        )
        for r in session_rows
    ]


def _by_scope(rows: list[Row]) -> dict[vd.Scope, list[str]]:
    out: dict[vd.Scope, list[str]] = defaultdict(list)
    for r in rows:
        out[r.scope].append(r.source_id)
    return out


class Dispatcher:
    def __init__(
        self,
        db: Database,
        client: VectorClient,
        *,
        batch_size: int = 200,
        poll_seconds: float = 0.5,
        backoff_cap_seconds: float = 300.0,
    ) -> None:
        self.db = db
        self.client = client
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self.backoff_cap = backoff_cap_seconds
        self.lock = dispatch_lock(db)
        self.stats = DispatcherStats()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    # -------------------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="index-dispatcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        # Closing the channel cancels a call in flight: shutdown does not wait for a slow
        # vector_service (the rows stay and are delivered after the restart).
        self.client.close()
        if self._thread is not None:
            self._thread.join(timeout)
        self.lock.release()

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        log.info("index dispatcher delivering to vector_service at %s", self.client.address)
        while not self._stop.is_set():
            try:
                busy = self.run_once()
            except Exception:
                # A database hiccup: log it and carry on; the rows are still there.
                log.exception("index dispatcher round failed")
                busy = False
            if not busy:
                self._wake.wait(self.poll_seconds)
                self._wake.clear()

    # ----------------------------------------------------------------------------- rounds

    def run_once(self) -> bool:
        """One round. True when it delivered a full batch (more may be waiting)."""
        self.stats.holds_lock = self.lock.hold()
        if not self.stats.holds_lock:
            return False
        with self.db.read() as s:
            rows = _rows(
                list(
                    s.scalars(
                        select(IndexOutbox)
                        .where(IndexOutbox.next_attempt_at <= now())
                        .order_by(IndexOutbox.next_attempt_at, IndexOutbox.id)
                        .limit(self.batch_size)
                    )
                )
            )
        if not rows:
            return False
        with tracing.span_from(
            "index outbox delivery", [r.traceparent for r in rows], {"loom.outbox.rows": len(rows)}
        ):
            self._deliver(rows)
        return len(rows) == self.batch_size

    def _deliver(self, rows: list[Row]) -> None:
        OUTBOX_DELIVERY_ATTEMPTS.inc()
        started = time.perf_counter()
        try:
            embedded = self._send(self._plan(rows))
        except grpc.RpcError as exc:
            code, detail = exc.code(), " ".join(str(exc.details() or "").split())
            OUTBOX_DELIVERY_FAILURES.labels(code.name).inc()
            OUTBOX_DELIVERY_SECONDS.observe(time.perf_counter() - started)
            sources = {(r.kind, r.source_id) for r in rows}
            if code not in WHOLE_BATCH and len(sources) > 1:
                for source in sorted(sources):
                    self._deliver([r for r in rows if (r.kind, r.source_id) == source])
                return
            self._failed(rows, f"{code.name}: {detail}")
            return
        with self.db.write() as s:
            s.execute(delete(OUTBOX).where(OUTBOX.c.id.in_([r.id for r in rows])))
        OUTBOX_DELIVERY_SECONDS.observe(time.perf_counter() - started)
        OUTBOX_DELIVERED_ROWS.inc(len(rows))
        OUTBOX_EMBEDDED_TEXTS.inc(embedded)
        self.stats.delivered += len(rows)
        self.stats.embedded += embedded
        self.stats.last_delivery_at = time.time()

    def _failed(self, rows: list[Row], error: str) -> None:
        error = error[:MAX_ERROR_CHARS]
        self.stats.last_error = error
        self.stats.last_error_at = time.time()
        attempts = max(r.attempts for r in rows) + 1
        log.warning(
            "could not deliver %d index changes to vector_service (attempt %d): %s",
            len(rows),
            attempts,
            error,
        )
        ts = now()
        with self.db.write() as s:
            for r in rows:
                s.execute(
                    update(OUTBOX)
                    .where(OUTBOX.c.id == r.id)
                    .values(
                        attempts=r.attempts + 1,
                        last_error=error,
                        next_attempt_at=ts
                        + backoff_seconds(r.attempts + 1, BACKOFF_BASE_SECONDS, self.backoff_cap),
                    )
                )

    # ------------------------------------------------------------------------------ plans

    def _plan(self, rows: list[Row]) -> _Plan:
        """What to send, from the sources' state now (not from when the rows were written)."""
        by_kind: dict[str, list[Row]] = defaultdict(list)
        for r in rows:
            by_kind[r.kind].append(r)
        plan = _Plan()
        with self.db.read() as s:
            section_rows = by_kind[Kind.SECTION]
            section_ids = sorted({r.source_id for r in section_rows})
            # A section row for an entry that still exists re-delivers its page.
            section_pages = {
                entry_id: page_id
                for entry_id, page_id in s.execute(
                    select(SectionEntry.id, PageSection.page_id)
                    .join(PageSection, PageSection.section_entry_id == SectionEntry.id)
                    .where(SectionEntry.id.in_(section_ids))
                )
            }
            page_rows = by_kind[Kind.PAGE]
            page_ids = sorted({r.source_id for r in page_rows} | set(section_pages.values()))
            pages = vd.page_documents(s, page_ids)
            for docs in pages.values():
                for doc in docs:
                    plan.upserts[doc.collection].append(doc)
            gone_pages = [r for r in page_rows if r.source_id not in pages]
            for scope, ids in _by_scope(gone_pages).items():
                plan.deletes.append((vd.PAGES, scope, tuple(sorted(set(ids))), "", False))
                for page_id in sorted(set(ids)):
                    plan.deletes.append((vd.SECTIONS, scope, (), page_id, False))
            kept = {d.id for docs in pages.values() for d in docs if d.collection == vd.SECTIONS}
            gone_sections = [r for r in section_rows if r.source_id not in kept]
            for scope, ids in _by_scope(gone_sections).items():
                plan.deletes.append((vd.SECTIONS, scope, tuple(sorted(set(ids))), "", False))

            post_rows = by_kind[Kind.POST]
            posts = vd.post_documents(s, sorted({r.source_id for r in post_rows}))
            plan.upserts[vd.POSTS].extend(posts.values())
            gone_posts = [r for r in post_rows if r.source_id not in posts]
            for scope, ids in _by_scope(gone_posts).items():
                plan.deletes.append((vd.POSTS, scope, tuple(sorted(set(ids))), "", False))

            # An image's document is the worker's to write as it completes the job; a row here
            # (a delete, or a reconcile repair) rewrites a completed image's document from what
            # the job stored, and deletes the document of an image that is gone.
            image_rows = by_kind[Kind.IMAGE]
            image_ids = sorted({r.source_id for r in image_rows})
            completed = vd.image_documents(s, image_ids)
            plan.upserts[vd.IMAGES].extend(completed.values())
            images = vd.existing_images(s, image_ids)
            gone_images = [r for r in image_rows if r.source_id not in images]
            for scope, ids in _by_scope(gone_images).items():
                plan.deletes.append((vd.IMAGES, scope, tuple(sorted(set(ids))), "", False))

            env_rows = by_kind[Kind.ENVIRONMENT]
            envs = vd.scopes_of(s, (r.source_id for r in env_rows))
            for scope in {r.scope for r in env_rows if r.source_id not in envs}:
                for collection in vd.COLLECTIONS:
                    plan.deletes.append((collection, scope, (), "", True))
        return plan

    def _send(self, plan: _Plan) -> int:
        embedded = 0
        for collection, docs in plan.upserts.items():
            if docs:
                embedded += self.client.upsert(collection, docs)
        for collection, scope, ids, source_id, everything in plan.deletes:
            self.client.delete(
                collection, scope, ids=ids, source_id=source_id, all_in_scope=everything
            )
        return embedded
