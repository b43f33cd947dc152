"""The index outbox: what vector_service must catch up on, written in the content change's
own transaction.

A row says "this source changed": a page (its page document and its sections' documents), a
section entry, a post, an image, or a whole environment that was deleted. It carries the
tenant scope, so a delete can be delivered after the rows it names are gone. The dispatcher
(content_service.indexing.dispatcher) reads the source's current state when it delivers, so several
changes to one source cost one delivery, and a row never carries stale text.
Rows are never updated by writers and never coalesced at write time: a row the dispatcher
already read stays behind it, and the one written after it is delivered next.
With tracing on, a row carries the `traceparent` of the write that queued it, so its delivery
continues that trace."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from enum import StrEnum

from sqlalchemy import Table
from sqlalchemy.orm import Session

from content_service import scope
from content_service.db import bulk
from content_service.db.models import IndexOutbox
from content_service.db.values import now
from servicekit import tracing

OUTBOX: Table = IndexOutbox.__table__  # type: ignore[assignment]
_INSERT = (
    "team_id",
    "site_id",
    "environment_id",
    "kind",
    "source_id",
    "op",
    "attempts",
    "last_error",
    "next_attempt_at",
    "created_at",
    "traceparent",
)


class Kind(StrEnum):
    PAGE = "page"
    SECTION = "section"
    POST = "post"
    IMAGE = "image"
    ENVIRONMENT = "environment"


class Op(StrEnum):
    # What the writer did; informational: the dispatcher goes by the source's current state.
    UPSERT = "upsert"
    DELETE = "delete"


class _ScopeCache:
    """environment id -> (team id, site id). An environment never moves, so entries never go
    stale; a deleted environment's entry is harmless (its id is never reused)."""

    MAX = 10_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scopes: dict[str, tuple[str, str]] = {}

    def get(self, session: Session, environment_id: str) -> tuple[str, str]:
        found = self._scopes.get(environment_id)
        if found is not None:
            return found
        env = scope.lookup(session, environment_id)
        if env is None:
            raise LookupError(f"no environment {environment_id!r}")  # callers hold its row
        found = (env.team_id, env.site_id)
        with self._lock:
            if len(self._scopes) >= self.MAX:
                self._scopes.clear()
            self._scopes[environment_id] = found
        return found


_scopes = _ScopeCache()


def enqueue(
    session: Session, environment_id: str, kind: Kind, source_ids: Iterable[str], op: Op
) -> None:
    """Adds one outbox row per source id, in the caller's transaction."""
    ids = list(source_ids)
    if ids:
        team_id, site_id = _scopes.get(session, environment_id)
        enqueue_scoped(session, (team_id, site_id, environment_id), kind, ids, op)


def enqueue_scoped(
    session: Session, scope: tuple[str, str, str], kind: Kind, source_ids: Iterable[str], op: Op
) -> None:
    """enqueue with the (team, site, environment) given: for sources whose environment may
    be gone (a reconcile's orphans)."""
    team_id, site_id, environment_id = scope
    ts = now()
    trace = tracing.traceparent()
    bulk.insert_rows(
        session,
        OUTBOX,
        _INSERT,
        [
            (
                team_id,
                site_id,
                environment_id,
                kind.value,
                source_id,
                op.value,
                0,
                None,
                ts,
                ts,
                trace,
            )
            for source_id in source_ids
        ],
    )


def environment_deleted(session: Session, environment_ids: Iterable[str]) -> None:
    """Queues the removal of every document of these environments; call before deleting
    them (the scope lookup needs their rows)."""
    for environment_id in environment_ids:
        enqueue(session, environment_id, Kind.ENVIRONMENT, [environment_id], Op.DELETE)
