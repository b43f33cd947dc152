"""What IndexingService reports about the outbox: pending changes, the oldest, the failing
ones and their latest error, for every team or one."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from content_service.db.models import IndexOutbox


@dataclass(frozen=True)
class OutboxStatus:
    pending: int
    oldest_created_at: int | None
    failing: int  # rows tried at least once
    last_error: str  # of the row tried most often ('' when none failed)


def _of(team_id: str) -> list[ColumnElement[bool]]:
    return [IndexOutbox.team_id == team_id] if team_id else []


def outbox_counts(session: Session, team_id: str = "") -> tuple[int, int | None, int]:
    """(pending rows, the oldest one's created_at, rows tried at least once) of one team
    ('' = every team): one statement, also what the metrics report."""
    count, oldest, failing = session.execute(
        select(
            func.count(),
            func.min(IndexOutbox.created_at),
            func.count().filter(IndexOutbox.attempts > 0),
        ).where(*_of(team_id))
    ).one()
    return int(count), oldest, int(failing)


def outbox_status(session: Session, team_id: str) -> OutboxStatus:
    """The outbox of one team ('' = every team)."""
    where = _of(team_id)
    count, oldest, failing = outbox_counts(session, team_id)
    stored_error = session.scalar(
        select(IndexOutbox.last_error)
        .where(IndexOutbox.attempts > 0, *where)
        .order_by(IndexOutbox.attempts.desc(), IndexOutbox.id)
        .limit(1)
    )
    return OutboxStatus(count, oldest, failing, stored_error or "")


def pending_count(session: Session, team_id: str) -> int:
    """Rows of one team ('' = every team) not yet delivered."""
    found = session.scalar(select(func.count()).select_from(IndexOutbox).where(*_of(team_id)))
    return found or 0
