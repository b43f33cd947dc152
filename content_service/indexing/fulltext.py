"""Full-text upkeep: the search_documents rows of pages and posts.

Called through the write hooks (content_service.indexing) inside the RPC's write transaction,
after the change is applied: a page is searchable the moment the call that wrote it returns,
and a rolled-back write leaves no trace in the index. One row of search_documents per page or
post; the backend's full-text index over it (SQLite FTS5 through triggers, PostgreSQL a
generated tsvector column) follows that row in the same transaction (see migration 0005).
Deleting a page, post or environment also removes its documents through the foreign keys'
ON DELETE CASCADE; the explicit `forget_*` calls make that independent of the connection's
foreign-key setting."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

from sqlalchemy import Table, delete, insert, select, update
from sqlalchemy.orm import Session

from content_service.db import bulk
from content_service.db.copier import TableCopier
from content_service.db.models import (
    MARK_END,
    MARK_START,
    SEARCH_PAGE,
    SEARCH_POST,
    PageSection,
    SearchDocument,
    SectionEntry,
)
from content_service.db.values import loads_object, now

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
    key = DOCUMENTS.c.page_id if kind == SEARCH_PAGE else DOCUMENTS.c.post_id
    title, body = clean(title), clean(body)
    existing = session.execute(
        select(DOCUMENTS.c.id, DOCUMENTS.c.title, DOCUMENTS.c.body).where(key == source_id)
    ).first()
    if existing is None:
        session.execute(
            insert(DOCUMENTS).values(
                environment_id=environment_id,
                kind=kind,
                page_id=source_id if kind == SEARCH_PAGE else None,
                post_id=source_id if kind == SEARCH_POST else None,
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


def index_page(session: Session, page_id: str, environment_id: str, title: str) -> None:
    """(Re)indexes a page from its title and current sections (pending changes included:
    the session autoflushes before reading)."""
    contents = list(
        session.scalars(
            select(SectionEntry.content)
            .join(PageSection, PageSection.section_entry_id == SectionEntry.id)
            .where(PageSection.page_id == page_id)
            .order_by(PageSection.position)
        )
    )
    _upsert(
        session,
        environment_id=environment_id,
        kind=SEARCH_PAGE,
        source_id=page_id,
        title=title,
        body=page_body(contents),
    )


_DOCUMENT_INSERT = ("environment_id", "kind", "page_id", "post_id", "title", "body", "updated_at")


class NewPage(NamedTuple):
    """A page a write has just created, with its sections' contents in order."""

    id: str
    environment_id: str
    title: str
    contents: Sequence[Any]


def index_new_pages(session: Session, pages: Sequence[NewPage]) -> None:
    """index_page for pages this transaction has just created: one multi-row insert and no
    lookups (a new page has no document yet). What bulk creation costs per page is mostly
    here, so it is done set-wise."""
    ts = now()
    bulk.insert_rows(
        session,
        DOCUMENTS,
        _DOCUMENT_INSERT,
        [
            (
                page.environment_id,
                SEARCH_PAGE,
                page.id,
                None,
                clean(page.title),
                clean(body_of(page.contents)),
                ts,
            )
            for page in pages
        ],
    )


def index_post(
    session: Session, post_id: str, environment_id: str, title: str, excerpt: str, body: str
) -> None:
    session.flush()
    _upsert(
        session,
        environment_id=environment_id,
        kind=SEARCH_POST,
        source_id=post_id,
        title=title,
        body=post_body(excerpt, body),
    )


def forget_page(session: Session, page_id: str) -> None:
    session.execute(delete(DOCUMENTS).where(DOCUMENTS.c.page_id == page_id))


def forget_post(session: Session, post_id: str) -> None:
    session.execute(delete(DOCUMENTS).where(DOCUMENTS.c.post_id == post_id))


def copy_documents(copier: TableCopier, pages: Mapping[str, str], posts: Mapping[str, str]) -> None:
    """Copies an environment's documents to its clone (same text, the copies' ids), so the
    clone is searchable when the clone call returns. `pages`/`posts`: source id -> copy id."""

    def document(row: dict[str, Any]) -> dict[str, Any] | None:
        new_page = pages.get(row["page_id"]) if row["page_id"] else None
        new_post = posts.get(row["post_id"]) if row["post_id"] else None
        if new_page is None and new_post is None:
            return None
        row.pop("id")
        return {
            **row,
            "environment_id": copier.target,
            "page_id": new_page,
            "post_id": new_post,
            "updated_at": copier.now,
        }

    copier.copy(
        "search_documents",
        SearchDocument,
        "id",
        copier.keys(DOCUMENTS.c.id, DOCUMENTS.c.environment_id == copier.source),
        document,
    )
