"""What a content write owes the indexes: one hook per kind of change.

Resource modules (pages, posts, images, tenancy, clone) call these inside the write's own
transaction, after the change is applied, and nothing else of this package: each hook keeps
the full-text documents (fulltext) and queues the change for vector_service (outbox) together,
so a rolled-back write leaves no trace in either and a committed one is searchable at once and
embedded once the dispatcher delivers it. The hooks take plain records and db rows; this
package never imports a resource module.

The rest of the room: the outbox, its dispatcher and the dispatcher's lock, the client to
vector_service, what is embedded for each kind (documents), reconcile, and the status queries
of IndexingService (status). docs/indexing.md's table lists these hooks."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from sqlalchemy.orm import Session

from content_service.db.copier import TableCopier
from content_service.db.models import Image, Page, Post
from content_service.indexing import fulltext, outbox
from content_service.indexing.fulltext import NewPage

__all__ = [
    "NewPage",
    "environment_cloned",
    "environments_deleted",
    "image_deleted",
    "page_changed",
    "page_deleted",
    "pages_created",
    "post_changed",
    "post_deleted",
    "section_removed",
]


def pages_created(session: Session, pages: Sequence[NewPage]) -> None:
    """Pages this transaction has just created (CreatePage, BatchCreatePages): set-wise, one
    insert per table for the whole batch."""
    if not pages:
        return
    fulltext.index_new_pages(session, pages)
    by_environment: dict[str, list[str]] = {}
    for page in pages:
        by_environment.setdefault(page.environment_id, []).append(page.id)
    for environment_id, ids in by_environment.items():
        outbox.enqueue(session, environment_id, outbox.Kind.PAGE, ids, outbox.Op.UPSERT)


def page_changed(session: Session, page: Page) -> None:
    """A page's fields or sections changed (UpdatePage, Add/Update/Move/RemoveSection)."""
    fulltext.index_page(session, page.id, page.environment_id, page.title)
    outbox.enqueue(session, page.environment_id, outbox.Kind.PAGE, [page.id], outbox.Op.UPSERT)


def page_deleted(session: Session, page: Page) -> None:
    """Call before the page's row goes (its sections' documents go with the page's)."""
    fulltext.forget_page(session, page.id)
    outbox.enqueue(session, page.environment_id, outbox.Kind.PAGE, [page.id], outbox.Op.DELETE)


def section_removed(session: Session, page: Page, section_id: str) -> None:
    """A section entry left its page (RemoveSection); the page itself changed too."""
    page_changed(session, page)
    outbox.enqueue(
        session, page.environment_id, outbox.Kind.SECTION, [section_id], outbox.Op.DELETE
    )


def post_changed(session: Session, post: Post) -> None:
    fulltext.index_post(session, post.id, post.environment_id, post.title, post.excerpt, post.body)
    outbox.enqueue(session, post.environment_id, outbox.Kind.POST, [post.id], outbox.Op.UPSERT)


def post_deleted(session: Session, post: Post) -> None:
    fulltext.forget_post(session, post.id)
    outbox.enqueue(session, post.environment_id, outbox.Kind.POST, [post.id], outbox.Op.DELETE)


def image_deleted(session: Session, image: Image) -> None:
    """An image's document is written by image_worker when it completes the job; only its
    removal is content_service's to queue."""
    outbox.enqueue(session, image.environment_id, outbox.Kind.IMAGE, [image.id], outbox.Op.DELETE)


def environments_deleted(session: Session, environment_ids: Iterable[str]) -> None:
    """Every document of these environments goes (DeleteEnvironment, DeleteSite). Call before
    deleting them: the outbox rows take their scope from the environments' rows."""
    outbox.environment_deleted(session, environment_ids)


def environment_cloned(
    copier: TableCopier, pages: Mapping[str, str], posts: Mapping[str, str]
) -> None:
    """An environment was copied (CloneEnvironment): its documents are copied with it, and
    every copied page and post is queued like a new one. `pages`/`posts`: source id -> copy."""
    fulltext.copy_documents(copier, pages, posts)
    session, target = copier.session, copier.target
    outbox.enqueue(session, target, outbox.Kind.PAGE, sorted(pages.values()), outbox.Op.UPSERT)
    outbox.enqueue(session, target, outbox.Kind.POST, sorted(posts.values()), outbox.Op.UPSERT)
