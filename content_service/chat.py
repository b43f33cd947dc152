"""Chat sessions (per site) and their messages: plain functions over a session.

messages.seq is dense and zero-based per session. It is assigned inside the write
transaction after taking the session row's lock (SELECT ... FOR UPDATE on PostgreSQL; SQLite's
BEGIN IMMEDIATE already serializes writers), so concurrent appends queue instead of reading
the same max(seq); the unique (session_id, seq) constraint backs that up.

Every write to a session or its messages bumps sessions.version under that same lock: the
session's etag. A write that names an etag is Aborted when it is not the current one."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from content_service import scope, validation
from content_service.db.models import ChatSession, Message, Site
from content_service.db.values import now
from servicekit.auth import Principal
from servicekit.errors import Aborted, NotFound, invalid
from servicekit.ids import new_id
from servicekit.pagination import PageRequest

ROLES = ("user", "assistant", "tool", "system")
MAX_MESSAGES_PER_APPEND = 100
MAX_MESSAGES_PER_REPLACE = 1000
MAX_CONTENT_BYTES = 256 * 1024
MAX_METADATA_BYTES = 64 * 1024
MAX_WORKING_MEMORY_BYTES = 256 * 1024
MAX_MODEL = 200
# What UpdateSession may change.
UPDATABLE = ("title", "metadata", "model", "working_memory")
# The messages of one AppendMessages or ReplaceMessages, encoded (its response echoes them):
# under a default client's 4 MiB receive limit.
MAX_APPEND_BYTES = 3 * 1024 * 1024


@dataclass
class NewMessage:
    role: str  # "" when unspecified (rejected)
    content: dict[str, Any]
    size: int | None = None  # the content's encoded size when the caller knows it


def etag_of(chat: ChatSession) -> str:
    return f'W/"{chat.version}"'


def _for_write(
    session: Session, principal: Principal, session_id: str, field: str, etag: str
) -> ChatSession:
    """The session, locked for a write, whose etag (when the caller sent one) is current."""
    chat = _session_in_scope(session, principal, session_id, field, lock=True)
    if etag and etag != etag_of(chat):
        raise Aborted(
            "the session changed since you read it (etag mismatch); read it again",
            reason="ETAG_MISMATCH",
        )
    return chat


def _touch(chat: ChatSession) -> None:
    chat.version += 1
    chat.updated_at = now()


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


@dataclass
class SessionFields:
    """What a client sets on a session (CreateSession reads all, UpdateSession the masked)."""

    title: str = ""
    metadata: dict[str, Any] | None = None
    model: str = ""
    working_memory: dict[str, Any] | None = None


def _stored(fields: SessionFields, paths: Iterable[str]) -> dict[str, str]:
    """The columns for `paths`, validated (nothing is written before every path passed)."""
    out: dict[str, str] = {}
    for path in paths:
        if path == "title":
            out["title"] = validation.text(
                fields.title, "session.title", max_len=500, required=False
            )
        elif path == "metadata":
            out["metadata_json"] = validation.json_object(
                fields.metadata or {}, "session.metadata", max_bytes=MAX_METADATA_BYTES
            )
        elif path == "model":
            out["model"] = validation.text(
                fields.model, "session.model", max_len=MAX_MODEL, required=False
            )
        elif path == "working_memory":
            out["working_memory"] = validation.json_object(
                fields.working_memory or {},
                "session.working_memory",
                max_bytes=MAX_WORKING_MEMORY_BYTES,
            )
    return out


def create_session(
    session: Session, principal: Principal, site_id: str, fields: SessionFields
) -> ChatSession:
    site = scope.site(session, principal, site_id)
    stored = _stored(fields, UPDATABLE)
    ts = now()
    chat = ChatSession(
        id=new_id(),
        site_id=site.id,
        created_at=ts,
        updated_at=ts,
        version=1,
        **stored,
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


def update_session(
    session: Session,
    principal: Principal,
    session_id: str,
    fields: SessionFields,
    paths: Iterable[str],
    etag: str,
) -> ChatSession:
    stored = _stored(fields, paths)
    chat = _for_write(session, principal, session_id, "session.id", etag)
    for column, value in stored.items():
        setattr(chat, column, value)
    _touch(chat)
    return chat


def delete_session(session: Session, principal: Principal, session_id: str) -> None:
    chat = _session_in_scope(session, principal, session_id, "id", lock=True)
    session.execute(delete(Message).where(Message.session_id == chat.id))
    session.delete(chat)


def _checked(messages: list[NewMessage]) -> list[tuple[str, str]]:
    """(role, stored content) per message, every one validated."""
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
    return stored


def append_messages(
    session: Session,
    principal: Principal,
    session_id: str,
    messages: list[NewMessage],
    etag: str = "",
) -> tuple[ChatSession, list[dict[str, Any]]]:
    """Appends in order; returns the session and the inserted rows (id, seq, role, content,
    created_at)."""
    if not messages:
        raise invalid("messages", "at least one message is required")
    if len(messages) > MAX_MESSAGES_PER_APPEND:
        raise invalid("messages", f"at most {MAX_MESSAGES_PER_APPEND} messages per call")
    stored = _checked(messages)
    chat = _for_write(session, principal, session_id, "session_id", etag)
    last = session.scalar(select(func.max(Message.seq)).where(Message.session_id == chat.id))
    return chat, _insert(session, chat, stored, 0 if last is None else last + 1)


def replace_messages(
    session: Session,
    principal: Principal,
    session_id: str,
    messages: list[NewMessage],
    etag: str = "",
) -> tuple[ChatSession, list[dict[str, Any]]]:
    """The session's history becomes `messages` (seq from 0), in one transaction."""
    if len(messages) > MAX_MESSAGES_PER_REPLACE:
        raise invalid("messages", f"at most {MAX_MESSAGES_PER_REPLACE} messages per call")
    stored = _checked(messages)
    chat = _for_write(session, principal, session_id, "session_id", etag)
    session.execute(delete(Message).where(Message.session_id == chat.id))
    return chat, _insert(session, chat, stored, 0)


def clear_messages(
    session: Session, principal: Principal, session_id: str, etag: str = ""
) -> ChatSession:
    return replace_messages(session, principal, session_id, [], etag)[0]


def _insert(
    session: Session, chat: ChatSession, stored: list[tuple[str, str]], start: int
) -> list[dict[str, Any]]:
    _touch(chat)
    ts = chat.updated_at
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
    if rows:
        session.execute(insert(Message), rows)
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
