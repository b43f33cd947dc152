"""Reconcile: compares what vector_service holds with what the content says it should hold
(content_service.indexing.documents), and optionally queues the fixes in the outbox.

The comparison reads the content in one read transaction per environment and lists
vector_service's documents (id, scope, source, text sha256) for the same scope; it never
writes either side. Repairs go through the outbox, so they are delivered (and retried) like
any other change, by the one dispatcher."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from content_service.db.engine import Database
from content_service.db.models import Environment, Image, Page, Post, Site, Team
from content_service.indexing import documents as vd
from content_service.indexing import outbox
from content_service.indexing.vector_client import VectorClient

SAMPLE = 20


@dataclass(frozen=True)
class Expected:
    sha256: str
    source_id: str
    scope: vd.Scope


@dataclass
class Drift:
    collection: str
    expected: int = 0
    indexed: int = 0
    missing: list[str] = field(default_factory=list)
    orphaned: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.missing) + len(self.orphaned) + len(self.stale)

    def sample(self) -> list[str]:
        return (self.missing + self.orphaned + self.stale)[:SAMPLE]


@dataclass
class Report:
    drifts: list[Drift]
    queued: int = 0

    @property
    def total(self) -> int:
        return sum(d.total for d in self.drifts)


@dataclass(frozen=True)
class Target:
    """What to reconcile: the environments whose content is expected, and the vector scopes
    to list (the same area, so orphans of deleted environments inside it are found)."""

    environments: list[vd.Scope]
    listed: list[vd.Scope]


def target(session: Session, team_id: str, site_id: str, environment_id: str) -> Target:
    stmt = select(Environment.id, Environment.site_id, Site.team_id).join(
        Site, Site.id == Environment.site_id
    )
    if team_id:
        stmt = stmt.where(Site.team_id == team_id)
    if site_id:
        stmt = stmt.where(Environment.site_id == site_id)
    if environment_id:
        stmt = stmt.where(Environment.id == environment_id)
    envs = [vd.Scope(r.team_id, r.site_id, r.id) for r in session.execute(stmt.order_by("id"))]
    if team_id:
        listed = [vd.Scope(team_id, site_id, environment_id)]
    else:
        listed = [vd.Scope(t, "", "") for t in session.scalars(select(Team.id).order_by(Team.id))]
    return Target(envs, listed)


def _expected(session: Session, env: vd.Scope) -> dict[str, dict[str, Expected]]:
    out: dict[str, dict[str, Expected]] = {c: {} for c in vd.COLLECTIONS}
    page_ids = list(
        session.scalars(select(Page.id).where(Page.environment_id == env.environment_id))
    )
    for start in range(0, len(page_ids), vd.CHUNK):
        for docs in vd.page_documents(session, page_ids[start : start + vd.CHUNK]).values():
            for d in docs:
                out[d.collection][d.id] = Expected(d.sha256, d.source_id, d.scope)
    post_ids = list(
        session.scalars(select(Post.id).where(Post.environment_id == env.environment_id))
    )
    for start in range(0, len(post_ids), vd.CHUNK):
        for d in vd.post_documents(session, post_ids[start : start + vd.CHUNK]).values():
            out[vd.POSTS][d.id] = Expected(d.sha256, d.source_id, d.scope)
    image_ids = list(
        session.scalars(
            select(Image.id).where(
                Image.environment_id == env.environment_id, Image.state == "completed"
            )
        )
    )
    for start in range(0, len(image_ids), vd.CHUNK):
        for d in vd.image_documents(session, image_ids[start : start + vd.CHUNK]).values():
            out[vd.IMAGES][d.id] = Expected(d.sha256, d.source_id, d.scope)
    return out


def reconcile(db: Database, client: VectorClient, what: Target, *, repair: bool) -> Report:
    expected: dict[str, dict[str, Expected]] = {c: {} for c in vd.COLLECTIONS}
    for env in what.environments:
        with db.read() as s:
            for collection, docs in _expected(s, env).items():
                expected[collection].update(docs)
    drifts = []
    fixes: list[tuple[vd.Scope, outbox.Kind, str]] = []
    for collection in vd.COLLECTIONS:
        indexed = {
            d.id: d for scope in what.listed for d in client.list_documents(collection, scope)
        }
        want = expected[collection]
        drift = Drift(collection, expected=len(want), indexed=len(indexed))
        drift.missing = sorted(set(want) - set(indexed))
        orphans = set(indexed) - set(want)
        if collection == vd.IMAGES and orphans:
            with db.read() as s:
                # The worker indexes an image before it completes it: the document of an
                # image that exists in any state is not an orphan (nor, so, is one completed
                # after the expected set was read).
                orphans -= vd.existing_images(s, orphans)
        drift.orphaned = sorted(orphans)
        for doc_id in sorted(set(want) & set(indexed)):
            w, have = want[doc_id], indexed[doc_id]
            scope = vd.Scope(have.scope.team_id, have.scope.site_id, have.scope.environment_id)
            if w.sha256 != have.text_sha256 or w.source_id != have.source_id or w.scope != scope:
                drift.stale.append(doc_id)
        drifts.append(drift)
        # Missing or stale: re-deliver the source. Orphans: deliver the (gone) source, which
        # deletes its documents.
        kind = {
            vd.PAGES: outbox.Kind.PAGE,
            vd.SECTIONS: outbox.Kind.PAGE,
            vd.POSTS: outbox.Kind.POST,
            vd.IMAGES: outbox.Kind.IMAGE,
        }[collection]
        for doc_id in drift.missing + drift.stale:
            fixes.append((want[doc_id].scope, kind, want[doc_id].source_id))
        orphan_kind = outbox.Kind.SECTION if collection == vd.SECTIONS else kind
        for doc_id in drift.orphaned:
            where = indexed[doc_id].scope
            found = vd.Scope(where.team_id, where.site_id, where.environment_id)
            fixes.append((found, orphan_kind, doc_id))
    report = Report(drifts)
    if repair and fixes:
        unique = sorted(set(fixes))
        with db.write() as s:
            for scope, kind, source_id in unique:
                outbox.enqueue_scoped(
                    s,
                    (scope.team_id, scope.site_id, scope.environment_id),
                    kind,
                    [source_id],
                    outbox.Op.UPSERT,
                )
        report.queued = len(unique)
    return report
