"""Blog posts: plain functions over a session.

A post's tags live twice, on purpose: as the seed's JSON list in posts.tags (the order the
author gave) and as post_tags rows, which the tag filter reads through its index. Both are
written together here, in the same transaction."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from content_service import indexing, scope, validation
from content_service.db.models import Post, PostTag
from content_service.db.values import dumps, now
from servicekit.auth import Principal
from servicekit.errors import AlreadyExists, NotFound, invalid, shown
from servicekit.ids import new_id
from servicekit.pagination import PageRequest

STATUSES = ("draft", "published", "archived")
MAX_TAGS = 50
MAX_TAG_LEN = 100
MAX_EXCERPT = 2_000
MAX_BODY = 500_000
UPDATABLE = ("title", "slug", "excerpt", "body", "status", "tags", "author", "published_at")


@dataclass
class PostInput:
    """A post's writable fields; in an update only the keys present in `changes` apply."""

    title: str = ""
    slug: str = ""
    excerpt: str = ""
    body: str = ""
    status: str = "draft"
    tags: list[str] | None = None
    author: str = ""
    published_at: int | None = None


def tags_of(post: Post) -> list[str]:
    value = json.loads(post.tags or "[]")
    return [str(t) for t in value] if isinstance(value, list) else []


def _tags(values: list[str], field: str) -> list[str]:
    out: list[str] = []
    for i, raw in enumerate(values):
        tag = raw.strip()
        if not tag:
            raise invalid(f"{field}[{i}]", "must not be empty")
        if len(tag) > MAX_TAG_LEN:
            raise invalid(f"{field}[{i}]", f"must be at most {MAX_TAG_LEN} characters")
        if any(ord(ch) < 32 for ch in tag):
            raise invalid(f"{field}[{i}]", "must not contain control characters")
        if tag not in out:
            out.append(tag)
    if len(out) > MAX_TAGS:
        raise invalid(field, f"at most {MAX_TAGS} tags per post")
    return out


def _status(value: str, field: str) -> str:
    if value not in STATUSES:
        raise invalid(field, f"must be one of {', '.join(STATUSES)}")
    return value


def _check(changes: dict[str, Any]) -> dict[str, Any]:
    """Validates the given fields (field paths as in the request: `post.<name>`)."""
    out = dict(changes)
    if "title" in out:
        validation.text(out["title"], "post.title", max_len=500)
    if "slug" in out:
        validation.slug(out["slug"], "post.slug")
    if "excerpt" in out:
        validation.text(out["excerpt"], "post.excerpt", max_len=MAX_EXCERPT, required=False)
    if "body" in out:
        validation.text(out["body"], "post.body", max_len=MAX_BODY, required=False)
    if "status" in out:
        _status(out["status"], "post.status")
    if "author" in out:
        validation.text(out["author"], "post.author", max_len=200, required=False)
    if "tags" in out:
        out["tags"] = _tags(out["tags"] or [], "post.tags")
    if out.get("published_at") is not None:
        validation.seconds(out["published_at"], "post.published_at")
    return out


def _set_tags(session: Session, post: Post, tags: list[str]) -> None:
    post.tags = dumps(tags)
    session.flush()
    session.execute(delete(PostTag).where(PostTag.post_id == post.id))
    if tags:
        session.execute(
            insert(PostTag),
            [{"post_id": post.id, "tag": t, "environment_id": post.environment_id} for t in tags],
        )


def _flush_unique(session: Session, slug: str) -> None:
    try:
        session.flush()
    except IntegrityError as exc:
        raise AlreadyExists(
            f"a post with slug {shown(slug)} already exists in this environment"
        ) from exc


def create_post(
    session: Session, principal: Principal, environment_id: str, fields: PostInput
) -> Post:
    env = scope.environment(session, principal, environment_id)
    checked = _check(
        {
            "title": fields.title,
            "slug": fields.slug,
            "excerpt": fields.excerpt,
            "body": fields.body,
            "status": fields.status,
            "author": fields.author,
            "tags": fields.tags or [],
            "published_at": fields.published_at,
        }
    )
    ts = now()
    published_at = checked["published_at"]
    if published_at is None and checked["status"] == "published":
        published_at = ts
    post = Post(
        id=new_id(),
        environment_id=env.environment_id,
        slug=checked["slug"],
        title=checked["title"],
        excerpt=checked["excerpt"],
        body=checked["body"],
        status=checked["status"],
        author=checked["author"],
        tags="[]",
        published_at=published_at,
        created_at=ts,
        updated_at=ts,
    )
    session.add(post)
    _flush_unique(session, post.slug)
    _set_tags(session, post, checked["tags"])
    indexing.post_changed(session, post)
    return post


def get_post(session: Session, principal: Principal, post_id: str, field: str = "id") -> Post:
    return scope.in_environment(session, principal, Post, post_id, "post", field)[0]


def get_post_by_slug(
    session: Session, principal: Principal, environment_id: str, slug: str
) -> Post:
    env = scope.environment(session, principal, environment_id)
    if not slug:
        raise invalid("slug", "is required")
    post = session.scalars(
        select(Post).where(Post.environment_id == env.environment_id, Post.slug == slug)
    ).first()
    if post is None:
        raise NotFound("post", slug)
    return post


def list_posts(
    session: Session,
    principal: Principal,
    environment_id: str,
    *,
    status: str | None,
    tag: str,
    page: PageRequest,
) -> list[Post]:
    env = scope.environment(session, principal, environment_id)
    if tag:
        # Walks ix_post_tags_environment_id_tag_post_id in post id order.
        stmt = (
            select(Post)
            .join(PostTag, PostTag.post_id == Post.id)
            .where(PostTag.environment_id == env.environment_id, PostTag.tag == tag)
            .order_by(PostTag.post_id)
        )
        if page.after:
            stmt = stmt.where(PostTag.post_id > page.after)
    else:
        stmt = select(Post).where(Post.environment_id == env.environment_id).order_by(Post.id)
        if page.after:
            stmt = stmt.where(Post.id > page.after)
    if status:
        stmt = stmt.where(Post.status == status)
    return list(session.scalars(stmt.limit(page.size + 1)))


def update_post(
    session: Session, principal: Principal, post_id: str, changes: dict[str, Any]
) -> Post:
    post, _ = scope.in_environment(session, principal, Post, post_id, "post", "post.id", lock=True)
    checked = _check(changes)
    for name in ("title", "slug", "excerpt", "body", "status", "author"):
        if name in checked:
            setattr(post, name, checked[name])
    if "published_at" in checked:
        post.published_at = checked["published_at"]
    if post.status == "published" and post.published_at is None:
        post.published_at = now()
    post.updated_at = now()
    _flush_unique(session, post.slug)
    if "tags" in checked:
        _set_tags(session, post, checked["tags"])
    indexing.post_changed(session, post)
    return post


def delete_post(session: Session, principal: Principal, post_id: str) -> None:
    post = get_post(session, principal, post_id)
    indexing.post_deleted(session, post)
    session.execute(delete(PostTag).where(PostTag.post_id == post.id))
    session.delete(post)
