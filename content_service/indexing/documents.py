"""What content_service asks vector_service to embed: one rule, used by the dispatcher (to
deliver) and by reconcile (to compare).

- a page: its title and the text of its sections (the same text full-text search indexes);
- each section entry alone (source id = its page);
- a post: its title, excerpt and body;
- a completed image: file name, alt text, vision caption and tags (servicekit.image_text, the
  rule the image worker indexes with before it completes the job; content rebuilds the same
  text from what the job stored, for reconcile and repairs)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property

from sqlalchemy import select
from sqlalchemy.orm import Session

from content_service.db.models import (
    Environment,
    Image,
    Page,
    PageSection,
    Post,
    SearchDocument,
    SectionEntry,
    Site,
)
from content_service.db.values import loads_object
from content_service.indexing.fulltext import clean, page_body, post_body
from servicekit.image_text import image_text

# vector_service refuses longer texts; models read far less than this anyway.
MAX_TEXT_CHARS = 100_000
# Ids per `IN (...)` list (here and in reconcile).
CHUNK = 500

PAGES = "pages"
SECTIONS = "sections"
POSTS = "posts"
IMAGES = "images"
COLLECTIONS = (PAGES, SECTIONS, POSTS, IMAGES)


@dataclass(frozen=True, order=True)
class Scope:
    team_id: str
    site_id: str
    environment_id: str


@dataclass(frozen=True)
class VectorDocument:
    collection: str
    id: str
    source_id: str
    scope: Scope
    text: str

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


def _text(*parts: str) -> str:
    return clean("\n".join(p for p in parts if p.strip()))[:MAX_TEXT_CHARS]


def scopes_of(session: Session, environment_ids: Iterable[str]) -> dict[str, Scope]:
    ids = sorted(set(environment_ids))
    rows = session.execute(
        select(Environment.id, Environment.site_id, Site.team_id)
        .join(Site, Site.id == Environment.site_id)
        .where(Environment.id.in_(ids))
    )
    return {r.id: Scope(r.team_id, r.site_id, r.id) for r in rows}


def page_documents(session: Session, page_ids: Sequence[str]) -> dict[str, list[VectorDocument]]:
    """page id -> its page document and section documents, for the pages that exist. A
    section with no text has no document."""
    if not page_ids:
        return {}
    pages = session.execute(
        select(Page.id, Page.environment_id, SearchDocument.title, SearchDocument.body)
        .join(SearchDocument, SearchDocument.page_id == Page.id)
        .where(Page.id.in_(page_ids))
    ).all()
    scopes = scopes_of(session, (p.environment_id for p in pages))
    out: dict[str, list[VectorDocument]] = {}
    for p in pages:
        scope = scopes[p.environment_id]
        out[p.id] = [VectorDocument(PAGES, p.id, p.id, scope, _text(p.title, p.body))]
    sections = session.execute(
        select(PageSection.page_id, SectionEntry.id, SectionEntry.content)
        .join(SectionEntry, SectionEntry.id == PageSection.section_entry_id)
        .where(PageSection.page_id.in_(list(out)))
        .order_by(PageSection.page_id, PageSection.position)
    )
    for s in sections:
        text = _text(page_body([s.content]))
        if text:
            docs = out[s.page_id]
            docs.append(VectorDocument(SECTIONS, s.id, s.page_id, docs[0].scope, text))
    return out


def post_documents(session: Session, post_ids: Sequence[str]) -> dict[str, VectorDocument]:
    if not post_ids:
        return {}
    posts = session.execute(
        select(Post.id, Post.environment_id, Post.title, Post.excerpt, Post.body).where(
            Post.id.in_(post_ids)
        )
    ).all()
    scopes = scopes_of(session, (p.environment_id for p in posts))
    return {
        p.id: VectorDocument(
            POSTS,
            p.id,
            p.id,
            scopes[p.environment_id],
            _text(p.title, post_body(p.excerpt, p.body)),
        )
        for p in posts
    }


def image_documents(session: Session, image_ids: Sequence[str]) -> dict[str, VectorDocument]:
    """image id -> its document, for the images that exist and are completed."""
    if not image_ids:
        return {}
    rows = session.execute(
        select(
            Image.id, Image.environment_id, Image.filename, Image.alt_text, Image.metadata_json
        ).where(Image.id.in_(image_ids), Image.state == "completed")
    ).all()
    scopes = scopes_of(session, (r.environment_id for r in rows))
    out = {}
    for r in rows:
        meta = loads_object(r.metadata_json)
        caption = meta.get("caption")
        tags = meta.get("tags")
        text = image_text(
            r.id,
            r.filename,
            r.alt_text,
            caption if isinstance(caption, str) else "",
            [str(t) for t in tags] if isinstance(tags, list) else (),
        )
        out[r.id] = VectorDocument(IMAGES, r.id, r.id, scopes[r.environment_id], _text(text))
    return out


def existing_images(session: Session, image_ids: Iterable[str]) -> set[str]:
    """The ids among these of images that exist, in any state."""
    ids = sorted(set(image_ids))
    found: set[str] = set()
    for start in range(0, len(ids), CHUNK):
        found.update(
            session.scalars(select(Image.id).where(Image.id.in_(ids[start : start + CHUNK])))
        )
    return found
