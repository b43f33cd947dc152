"""Environment clone: a new environment in the same site with a copy of everything in the
source, in one transaction, with batched Core inserts (one INSERT of many rows per chunk; the
ORM's row-at-a-time unit of work was 25x slower, see STYLE.md).

Every copied row gets a new id; references are remapped to the copies: sections point at the
copied definitions, page_sections at the copied pages and entries, post_tags at the copied
posts, menu items at the copied pages. search_documents are copied too (same text, remapped
ids), so the clone is searchable when the call returns. Images are not copied (they belong to
the images service).

On PostgreSQL the transaction runs at REPEATABLE READ so every table is read from the same
snapshot, even while others write to the source; SQLite's BEGIN IMMEDIATE already gives one."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, insert, select
from sqlalchemy.orm import Session

from content_service import navigation, outbox, scope, tenancy, validation
from content_service.convert import dumps, now
from content_service.db.models import (
    Environment,
    Navigation,
    Page,
    PageSection,
    Post,
    PostTag,
    SearchDocument,
    SectionDefinition,
    SectionEntry,
    SiteSettings,
)
from servicekit.auth import Principal
from servicekit.ids import new_id

log = logging.getLogger(__name__)

CHUNK = 1_000
# Tables this size or larger get a log line per chunk, not only per table.
LARGE = 5_000


def _table(model: Any) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


@dataclass
class CloneResult:
    environment: Environment
    counts: dict[str, int]
    seconds: float


class _Copier:
    """Copies rows table by table. Each table is read by key: first the list of source keys
    (an index-only read), then the rows CHUNK keys at a time with `key IN (...)` (primary or
    indexed key lookups, no sort), each chunk inserted with one executemany. No cursor stays
    open while we insert into the table it reads."""

    def __init__(self, session: Session, source: str, target: str) -> None:
        self.session = session
        self.source = source
        self.target = target
        self.counts: dict[str, int] = {}

    def copy(
        self,
        name: str,
        model: Any,
        key: str,
        keys: Sequence[Any],
        transform: Callable[[dict[str, Any]], dict[str, Any] | None],
    ) -> None:
        table = _table(model)
        column = table.c[key]
        total = 0
        for start in range(0, len(keys), CHUNK):
            chunk = keys[start : start + CHUNK]
            rows = self.session.execute(select(table).where(column.in_(chunk))).mappings()
            out = [r for r in (transform(dict(row)) for row in rows) if r is not None]
            if out:
                self.session.execute(insert(table), out)
            total += len(out)
            if len(keys) >= LARGE:
                log.info(
                    "clone %s -> %s: %s: %d of about %d rows",
                    self.source,
                    self.target,
                    name,
                    total,
                    len(keys),
                )
        self.counts[name] = total
        log.info("clone %s -> %s: copied %d %s", self.source, self.target, total, name)

    def keys(self, column: Any, *where: Any) -> list[Any]:
        return sorted(self.session.scalars(select(column).where(*where)))


def clone_environment(
    session: Session, principal: Principal, source_environment_id: str, name: str
) -> CloneResult:
    if session.get_bind().dialect.name == "postgresql":
        # Must be the transaction's first statement: one snapshot for every table we read.
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    started = time.perf_counter()
    src = scope.environment(session, principal, source_environment_id, "source_environment_id")
    validation.environment_name(name, "name")
    env = tenancy.create_environment(session, principal, src.site_id, name)
    source, target = src.environment_id, env.id
    log.info("clone %s -> %s (%r): started", source, target, name)
    ts = now()
    copier = _Copier(session, source, target)

    definitions: dict[str, str] = {}

    def definition(row: dict[str, Any]) -> dict[str, Any]:
        definitions[row["id"]] = new = new_id()
        return {**row, "id": new, "environment_id": target, "created_at": ts, "updated_at": ts}

    copier.copy(
        "section_definitions",
        SectionDefinition,
        "id",
        copier.keys(SectionDefinition.id, SectionDefinition.environment_id == source),
        definition,
    )

    entries: dict[str, str] = {}

    def entry(row: dict[str, Any]) -> dict[str, Any]:
        entries[row["id"]] = new = new_id()
        return {
            **row,
            "id": new,
            "environment_id": target,
            "definition_id": definitions[row["definition_id"]],
            "created_at": ts,
            "updated_at": ts,
        }

    copier.copy(
        "sections",
        SectionEntry,
        "id",
        copier.keys(SectionEntry.id, SectionEntry.environment_id == source),
        entry,
    )

    pages: dict[str, str] = {}

    def page(row: dict[str, Any]) -> dict[str, Any]:
        pages[row["id"]] = new = new_id()
        # request_id was the idempotency key of the call that created the source page.
        return {
            **row,
            "id": new,
            "environment_id": target,
            "version": 1,
            "request_id": None,
            "created_at": ts,
            "updated_at": ts,
        }

    copier.copy(
        "pages",
        Page,
        "id",
        copier.keys(Page.id, Page.environment_id == source),
        page,
    )

    def link(row: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": new_id(),
            "page_id": pages[row["page_id"]],
            "section_entry_id": entries[row["section_entry_id"]],
            "position": row["position"],
        }

    copier.copy(
        "page_sections",
        PageSection,
        "page_id",
        sorted(pages),
        link,
    )

    posts: dict[str, str] = {}

    def post(row: dict[str, Any]) -> dict[str, Any]:
        posts[row["id"]] = new = new_id()
        return {**row, "id": new, "environment_id": target, "created_at": ts, "updated_at": ts}

    copier.copy(
        "posts",
        Post,
        "id",
        copier.keys(Post.id, Post.environment_id == source),
        post,
    )

    def tag(row: dict[str, Any]) -> dict[str, Any]:
        return {"post_id": posts[row["post_id"]], "tag": row["tag"], "environment_id": target}

    copier.copy(
        "post_tags",
        PostTag,
        "post_id",
        sorted(posts),
        tag,
    )

    def menu(row: dict[str, Any]) -> dict[str, Any]:
        items = navigation.remap(json.loads(row["items"] or "[]"), pages)
        return {
            **row,
            "id": new_id(),
            "environment_id": target,
            "items": dumps(items),
            "created_at": ts,
            "updated_at": ts,
        }

    copier.copy(
        "menus",
        Navigation,
        "id",
        copier.keys(Navigation.id, Navigation.environment_id == source),
        menu,
    )

    def settings(row: dict[str, Any]) -> dict[str, Any]:
        return {**row, "environment_id": target, "updated_at": ts}

    copier.copy(
        "site_settings",
        SiteSettings,
        "environment_id",
        [source],
        settings,
    )

    def document(row: dict[str, Any]) -> dict[str, Any] | None:
        new_page = pages.get(row["page_id"]) if row["page_id"] else None
        new_post = posts.get(row["post_id"]) if row["post_id"] else None
        if new_page is None and new_post is None:
            return None
        row.pop("id")
        return {
            **row,
            "environment_id": target,
            "page_id": new_page,
            "post_id": new_post,
            "updated_at": ts,
        }

    docs = _table(SearchDocument)
    copier.copy(
        "search_documents",
        SearchDocument,
        "id",
        copier.keys(docs.c.id, docs.c.environment_id == source),
        document,
    )
    # vector_service gets the clone's documents through the outbox, like any new page.
    outbox.enqueue(session, target, outbox.Kind.PAGE, sorted(pages.values()), outbox.Op.UPSERT)
    outbox.enqueue(session, target, outbox.Kind.POST, sorted(posts.values()), outbox.Op.UPSERT)
    seconds = time.perf_counter() - started
    log.info(
        "clone %s -> %s: done in %.2f s (%s)",
        source,
        target,
        seconds,
        ", ".join(f"{k}={v}" for k, v in copier.counts.items()),
    )
    return CloneResult(environment=env, counts=copier.counts, seconds=seconds)
