"""Keeps the full-text search documents, and the vector outbox, in step with pages and posts.

Called by the write functions (pages.py, posts.py, clone.py) inside the RPC's write
transaction, after the change is applied: a page is searchable the moment the call that wrote
it returns, and a rolled-back write leaves no trace in the index. One row of search_documents
per page or post; the backend's full-text index over it (SQLite FTS5 through triggers,
PostgreSQL a generated tsvector column) follows that row in the same transaction (see
migration 0005). Deleting a page, post or environment also removes its documents through the
foreign keys' ON DELETE CASCADE; the explicit `forget_*` calls make that independent of the
connection's foreign-key setting.

Every call also queues the source for vector_service (content_service.outbox) in the same
transaction, so whatever is searchable here is embedded there once the dispatcher delivers it."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, delete, insert, select, update
from sqlalchemy.orm import Session

from content_service import outbox
from content_service.convert import loads_object, now
from content_service.db import bulk
from content_service.db.models import Page, PageSection, Post, SearchDocument, SectionEntry

if TYPE_CHECKING:  # pages imports this module
    from content_service.pages import WrittenPage

PAGE = "page"
POST = "post"
# Highlight markers the search queries ask the backend to put around matches (Unicode
# private use characters, so they cannot collide with HTML or Markdown); removed from
# indexed text so user content can never fake a highlight.
MARK_START = "\ue000"
MARK_END = "\ue001"
_SCRUB = str.maketrans({"\x00": " ", MARK_START: " ", MARK_END: " "})
# Text beyond this many characters of a title or body is not indexed: it keeps every
# document well under PostgreSQL's 1 MB tsvector limit, so no write can fail on indexing.
MAX_INDEXED_CHARS = 200_000

DOCUMENTS: Table = SearchDocument.__table__  # type: ignore[assignment]


def clean(text: str) -> str:
    """Text as stored for search: no highlight markers, no NUL (PostgreSQL rejects it), at
    most MAX_INDEXED_CHARS characters."""
    return text[:MAX_INDEXED_CHARS].translate(_SCRUB)


def strings(value: Any) -> Iterator[str]:
    """Every string leaf of a JSON value, in document order (keys are not text)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def page_body(section_contents: list[str]) -> str:
    """A page's searchable body: the text inside its sections (stored JSON), in order."""
    return body_of([loads_object(content) for content in section_contents])


def body_of(section_values: Iterable[Any]) -> str:
    """page_body of section contents already parsed."""
    return "\n".join(s for value in section_values for s in strings(value) if s.strip())


def post_body(excerpt: str, body: str) -> str:
    return "\n".join(t for t in (excerpt, body) if t)


def _upsert(
    session: Session,
    *,
    environment_id: str,
    kind: str,
    source_id: str,
    title: str,
    body: str,
) -> None:
    key = DOCUMENTS.c.page_id if kind == PAGE else DOCUMENTS.c.post_id
    title, body = clean(title), clean(body)
    existing = session.execute(
        select(DOCUMENTS.c.id, DOCUMENTS.c.title, DOCUMENTS.c.body).where(key == source_id)
    ).first()
    if existing is None:
        session.execute(
            insert(DOCUMENTS).values(
                environment_id=environment_id,
                kind=kind,
                page_id=source_id if kind == PAGE else None,
                post_id=source_id if kind == POST else None,
                title=title,
                body=body,
                updated_at=now(),
            )
        )
    elif (existing.title, existing.body) != (title, body):
        # Unchanged text (a section move, a status change) does not touch the index.
        session.execute(
            update(DOCUMENTS)
            .where(DOCUMENTS.c.id == existing.id)
            .values(title=title, body=body, updated_at=now())
        )


def index_page(session: Session, page: Page) -> None:
    """(Re)indexes a page from its current title and sections (pending changes included:
    the session autoflushes before reading)."""
    contents = list(
        session.scalars(
            select(SectionEntry.content)
            .join(PageSection, PageSection.section_entry_id == SectionEntry.id)
            .where(PageSection.page_id == page.id)
            .order_by(PageSection.position)
        )
    )
    _upsert(
        session,
        environment_id=page.environment_id,
        kind=PAGE,
        source_id=page.id,
        title=page.title,
        body=page_body(contents),
    )
    outbox.enqueue(session, page.environment_id, outbox.Kind.PAGE, [page.id], outbox.Op.UPSERT)


_DOCUMENT_INSERT = ("environment_id", "kind", "page_id", "post_id", "title", "body", "updated_at")


def index_new_pages(session: Session, pages: Sequence[tuple[WrittenPage, Sequence[Any]]]) -> None:
    """index_page for pages this transaction has just created, given their sections' contents
    in order: one multi-row insert and no lookups (a new page has no document yet). What bulk
    creation costs per page is mostly here, so it is done set-wise."""
    if not pages:
        return
    ts = now()
    bulk.insert_rows(
        session,
        DOCUMENTS,
        _DOCUMENT_INSERT,
        [
            (
                page.environment_id,
                PAGE,
                page.id,
                None,
                clean(page.title),
                clean(body_of(contents)),
                ts,
            )
            for page, contents in pages
        ],
    )
    by_environment: dict[str, list[str]] = {}
    for page, _ in pages:
        by_environment.setdefault(page.environment_id, []).append(page.id)
    for environment_id, ids in by_environment.items():
        outbox.enqueue(session, environment_id, outbox.Kind.PAGE, ids, outbox.Op.UPSERT)


def index_post(session: Session, post: Post) -> None:
    session.flush()
    _upsert(
        session,
        environment_id=post.environment_id,
        kind=POST,
        source_id=post.id,
        title=post.title,
        body=post_body(post.excerpt, post.body),
    )
    outbox.enqueue(session, post.environment_id, outbox.Kind.POST, [post.id], outbox.Op.UPSERT)


def forget_page(session: Session, page: Page) -> None:
    session.execute(delete(DOCUMENTS).where(DOCUMENTS.c.page_id == page.id))
    outbox.enqueue(session, page.environment_id, outbox.Kind.PAGE, [page.id], outbox.Op.DELETE)


def forget_post(session: Session, post: Post) -> None:
    session.execute(delete(DOCUMENTS).where(DOCUMENTS.c.post_id == post.id))
    outbox.enqueue(session, post.environment_id, outbox.Kind.POST, [post.id], outbox.Op.DELETE)
