"""Chat sessions (per site) and their messages: plain functions over a session.

messages.seq is dense and zero-based per session. It is assigned inside the write
transaction after taking the session row's lock (SELECT ... FOR UPDATE on PostgreSQL; SQLite's
BEGIN IMMEDIATE already serializes writers), so concurrent appends queue instead of reading
the same max(seq); the unique (session_id, seq) constraint backs that up."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from content_service import scope, validation
from content_service.db.models import ChatSession, Message, Site
from content_service.db.values import now
from servicekit.auth import Principal
from servicekit.errors import NotFound, invalid
from servicekit.ids import new_id
from servicekit.pagination import PageRequest

ROLES = ("user", "assistant", "tool")
MAX_MESSAGES_PER_APPEND = 100
MAX_CONTENT_BYTES = 256 * 1024
MAX_METADATA_BYTES = 64 * 1024
# The messages of one AppendMessages, encoded (its response echoes them): under a default
# client's 4 MiB receive limit.
MAX_APPEND_BYTES = 3 * 1024 * 1024


@dataclass
class NewMessage:
    role: str  # "" when unspecified (rejected)
    content: dict[str, Any]
    size: int | None = None  # the content's encoded size when the caller knows it


def _session_in_scope(
    session: Session, principal: Principal, session_id: str, field: str, *, lock: bool = False
) -> ChatSession:
    scope.require_id(session_id, field)
    stmt = select(ChatSession).where(ChatSession.id == session_id)
    if lock:
        stmt = stmt.with_for_update()
    chat = session.scalars(stmt).first()
    if chat is None:
        raise NotFound("session", session_id)
    team_id = session.scalar(select(Site.team_id).where(Site.id == chat.site_id))
    if team_id is None or not principal.can_see(team_id):
        raise NotFound("session", session_id)
    return chat


def message_counts(session: Session, session_ids: list[str]) -> dict[str, int]:
    if not session_ids:
        return {}
    rows = session.execute(
        select(Message.session_id, func.count())
        .where(Message.session_id.in_(session_ids))
        .group_by(Message.session_id)
    )
    return {sid: int(n) for sid, n in rows}


def create_session(
    session: Session, principal: Principal, site_id: str, title: str, metadata: dict[str, Any]
) -> ChatSession:
    site = scope.site(session, principal, site_id)
    validation.text(title, "session.title", max_len=500, required=False)
    stored = validation.json_object(metadata, "session.metadata", max_bytes=MAX_METADATA_BYTES)
    ts = now()
    chat = ChatSession(
        id=new_id(),
        site_id=site.id,
        title=title,
        metadata_json=stored,
        created_at=ts,
        updated_at=ts,
    )
    session.add(chat)
    session.flush()
    return chat


def get_session(session: Session, principal: Principal, session_id: str) -> ChatSession:
    return _session_in_scope(session, principal, session_id, "id")


def list_sessions(
    session: Session, principal: Principal, site_id: str, page: PageRequest
) -> list[ChatSession]:
    site = scope.site(session, principal, site_id)
    stmt = select(ChatSession).where(ChatSession.site_id == site.id)
    if page.after:
        stmt = stmt.where(ChatSession.id > page.after)
    return list(session.scalars(stmt.order_by(ChatSession.id).limit(page.size + 1)))


def delete_session(session: Session, principal: Principal, session_id: str) -> None:
    chat = _session_in_scope(session, principal, session_id, "id", lock=True)
    session.execute(delete(Message).where(Message.session_id == chat.id))
    session.delete(chat)


def append_messages(
    session: Session, principal: Principal, session_id: str, messages: list[NewMessage]
) -> list[dict[str, Any]]:
    """Appends in order; returns the inserted rows (id, seq, role, content, created_at)."""
    if not messages:
        raise invalid("messages", "at least one message is required")
    if len(messages) > MAX_MESSAGES_PER_APPEND:
        raise invalid("messages", f"at most {MAX_MESSAGES_PER_APPEND} messages per call")
    stored: list[tuple[str, str]] = []
    total = 0
    for i, message in enumerate(messages):
        total += (
            message.size if message.size is not None else validation.encoded_size(message.content)
        )
        if total > MAX_APPEND_BYTES:
            raise invalid(
                f"messages[{i}].content",
                f"the messages up to this one are {total} bytes encoded, over the limit of "
                f"{MAX_APPEND_BYTES // (1024 * 1024)} MiB for one call; append fewer per call",
            )
        if message.role not in ROLES:
            raise invalid(f"messages[{i}].role", f"must be one of {', '.join(ROLES)}")
        content = validation.json_object(
            message.content, f"messages[{i}].content", max_bytes=MAX_CONTENT_BYTES
        )
        stored.append((message.role, content))
    chat = _session_in_scope(session, principal, session_id, "session_id", lock=True)
    last = session.scalar(select(func.max(Message.seq)).where(Message.session_id == chat.id))
    start = 0 if last is None else last + 1
    ts = now()
    rows = [
        {
            "id": new_id(),
            "session_id": chat.id,
            "seq": start + i,
            "role": role,
            "content": content,
            "created_at": ts,
        }
        for i, (role, content) in enumerate(stored)
    ]
    session.execute(insert(Message), rows)
    chat.updated_at = ts
    return rows


def list_messages(
    session: Session, principal: Principal, session_id: str, page: PageRequest
) -> list[Message]:
    chat = _session_in_scope(session, principal, session_id, "session_id")
    stmt = select(Message).where(Message.session_id == chat.id)
    if page.after is not None:
        try:
            after = int(page.after)
        except ValueError:
            raise invalid("page_token", "not a token this service issued") from None
        if not -1 <= after < 2**62:  # a signed token holds a seq we gave out; this is a bound
            raise invalid("page_token", "not a token this service issued")
        stmt = stmt.where(Message.seq > after)
    return list(session.scalars(stmt.order_by(Message.seq).limit(page.size + 1)))
