"""Environment clone: a new environment in the same site with a copy of everything in the
source, in one transaction, with batched Core inserts (content_service.db.copier).

Every copied row gets a new id; references are remapped to the copies: sections point at the
copied definitions, page_sections at the copied pages and entries, post_tags at the copied
posts, menu items at the copied pages. What the indexes owe the clone (its search documents,
its outbox rows) is the environment_cloned hook's. Images are not copied (they belong to the
images service).

On PostgreSQL the transaction runs at REPEATABLE READ so every table is read from the same
snapshot, even while others write to the source; SQLite's BEGIN IMMEDIATE already gives one."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from content_service import indexing, navigation, scope, tenancy, validation
from content_service.db.copier import TableCopier
from content_service.db.models import (
    Environment,
    Navigation,
    Page,
    PageSection,
    Post,
    PostTag,
    SectionDefinition,
    SectionEntry,
    SiteSettings,
)
from content_service.db.values import dumps, now
from servicekit.auth import Principal
from servicekit.ids import new_id

log = logging.getLogger(__name__)


@dataclass
class CloneResult:
    environment: Environment
    counts: dict[str, int]
    seconds: float


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
    copier = TableCopier(session, source, target, ts)

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

    indexing.environment_cloned(copier, pages, posts)
    seconds = time.perf_counter() - started
    log.info(
        "clone %s -> %s: done in %.2f s (%s)",
        source,
        target,
        seconds,
        ", ".join(f"{k}={v}" for k, v in copier.counts.items()),
    )
    return CloneResult(environment=env, counts=copier.counts, seconds=seconds)
