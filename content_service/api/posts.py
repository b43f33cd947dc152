"""PostService: blog posts."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import empty_pb2
from loom.content.v1 import posts_pb2, posts_pb2_grpc

from content_service import posts
from content_service.api.common import STATUS_FROM_DB, mask_paths, status_to_db
from content_service.api.convert import ts
from content_service.db import models
from content_service.db.engine import Database
from servicekit.auth import current_principal
from servicekit.pagination import page_of, page_request


def post_proto(row: models.Post) -> posts_pb2.Post:
    return posts_pb2.Post(
        id=row.id,
        environment_id=row.environment_id,
        slug=row.slug,
        title=row.title,
        excerpt=row.excerpt,
        body=row.body,
        status=STATUS_FROM_DB[row.status],
        tags=posts.tags_of(row),
        author=row.author,
        published_at=ts(row.published_at),
        create_time=ts(row.created_at),
        update_time=ts(row.updated_at),
    )


def _published_at(p: posts_pb2.Post) -> int | None:
    return p.published_at.seconds if p.HasField("published_at") else None


class PostServicer(posts_pb2_grpc.PostServiceServicer):
    def __init__(self, db: Database) -> None:
        self.db = db

    def CreatePost(
        self, request: posts_pb2.CreatePostRequest, context: grpc.ServicerContext
    ) -> posts_pb2.Post:
        p = request.post
        fields = posts.PostInput(
            title=p.title,
            slug=p.slug,
            excerpt=p.excerpt,
            body=p.body,
            status=status_to_db(p.status, "post.status", default="draft") or "draft",
            tags=list(p.tags),
            author=p.author,
            published_at=_published_at(p),
        )
        with self.db.write() as s:
            return post_proto(
                posts.create_post(s, current_principal(), request.environment_id, fields)
            )

    def GetPost(
        self, request: posts_pb2.GetPostRequest, context: grpc.ServicerContext
    ) -> posts_pb2.Post:
        with self.db.read() as s:
            return post_proto(posts.get_post(s, current_principal(), request.id))

    def GetPostBySlug(
        self, request: posts_pb2.GetPostBySlugRequest, context: grpc.ServicerContext
    ) -> posts_pb2.Post:
        with self.db.read() as s:
            return post_proto(
                posts.get_post_by_slug(s, current_principal(), request.environment_id, request.slug)
            )

    def ListPosts(
        self, request: posts_pb2.ListPostsRequest, context: grpc.ServicerContext
    ) -> posts_pb2.ListPostsResponse:
        status = status_to_db(request.status, "status", default=None)
        page = page_request(request)
        with self.db.read() as s:
            items, token = page_of(
                posts.list_posts(
                    s,
                    current_principal(),
                    request.environment_id,
                    status=status,
                    tag=request.tag,
                    page=page,
                ),
                page,
                lambda r: r.id,
                post_proto,
            )
            return posts_pb2.ListPostsResponse(posts=items, next_page_token=token)

    def UpdatePost(
        self, request: posts_pb2.UpdatePostRequest, context: grpc.ServicerContext
    ) -> posts_pb2.Post:
        paths = mask_paths(request.update_mask, posts.UPDATABLE)
        p = request.post
        changes: dict[str, Any] = {}
        for name in ("title", "slug", "excerpt", "body", "author"):
            if name in paths:
                changes[name] = getattr(p, name)
        if "status" in paths:
            changes["status"] = status_to_db(p.status, "post.status", default="draft")
        if "tags" in paths:
            changes["tags"] = list(p.tags)
        if "published_at" in paths:
            changes["published_at"] = _published_at(p)
        with self.db.write() as s:
            return post_proto(posts.update_post(s, current_principal(), p.id, changes))

    def DeletePost(
        self, request: posts_pb2.DeletePostRequest, context: grpc.ServicerContext
    ) -> empty_pb2.Empty:
        with self.db.write() as s:
            posts.delete_post(s, current_principal(), request.id)
        return empty_pb2.Empty()
