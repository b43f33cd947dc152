"""PostService: create, read by id and slug, list with filters, update with a mask, delete."""

from __future__ import annotations

import time
from typing import Any

import grpc
from google.protobuf import field_mask_pb2, timestamp_pb2
from loom.content.v1 import common_pb2, posts_pb2
from sqlalchemy import text

from tests.content.service_stubs import collect, make_post, posts
from tests.content.tenants_and_pages import Tenant, make_tenant
from tests.support import ContentServer, raises_status

PUBLISHED = common_pb2.CONTENT_STATUS_PUBLISHED
DRAFT = common_pb2.CONTENT_STATUS_DRAFT


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


def test_create_then_read_by_id_and_slug(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    created = make_post(t, "hello-world", title="Hello", excerpt="Hi", tags=["news", " go "])
    assert created.id
    assert created.status == DRAFT
    assert list(created.tags) == ["news", "go"]
    assert created.author == "Ada"
    assert created.body == "Some **Markdown** body."
    assert not created.HasField("published_at")
    by_id = posts(t).GetPost(posts_pb2.GetPostRequest(id=created.id))
    by_slug = posts(t).GetPostBySlug(
        posts_pb2.GetPostBySlugRequest(environment_id=t.env_id, slug="hello-world")
    )
    assert by_id == by_slug == created


def test_published_at_is_set_on_first_publish_and_kept(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    before = int(time.time())
    draft = make_post(t, "d")
    published = posts(t).UpdatePost(
        posts_pb2.UpdatePostRequest(
            post=posts_pb2.Post(id=draft.id, status=PUBLISHED), update_mask=mask("status")
        )
    )
    first = published.published_at.seconds
    assert before <= first <= int(time.time()) + 1
    unpublished = posts(t).UpdatePost(
        posts_pb2.UpdatePostRequest(
            post=posts_pb2.Post(id=draft.id, status=DRAFT), update_mask=mask("status")
        )
    )
    assert unpublished.published_at.seconds == first
    # Given explicitly, it is kept as given.
    explicit = posts(t).CreatePost(
        posts_pb2.CreatePostRequest(
            environment_id=t.env_id,
            post=posts_pb2.Post(
                slug="old",
                title="Old",
                status=PUBLISHED,
                published_at=timestamp_pb2.Timestamp(seconds=1_000_000_000),
            ),
        )
    )
    assert explicit.published_at.seconds == 1_000_000_000
    assert make_post(t, "now", status=PUBLISHED).published_at.seconds >= before


def test_duplicate_slug_is_already_exists_and_per_environment(
    content_server: ContentServer,
) -> None:
    t = make_tenant(content_server.admin)
    other = make_tenant(content_server.admin, "other")
    make_post(t, "same")
    with raises_status(grpc.StatusCode.ALREADY_EXISTS):
        make_post(t, "same")
    make_post(other, "same")  # another environment may use it
    second = make_post(t, "second")
    with raises_status(grpc.StatusCode.ALREADY_EXISTS):
        posts(t).UpdatePost(
            posts_pb2.UpdatePostRequest(
                post=posts_pb2.Post(id=second.id, slug="same"), update_mask=mask("slug")
            )
        )


def test_bad_input_names_the_field_and_writes_nothing(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    cases = [
        (posts_pb2.Post(slug="Bad Slug", title="x"), "post.slug"),
        (posts_pb2.Post(slug="ok", title=""), "post.title"),
        (posts_pb2.Post(slug="ok", title="x" * 501), "post.title"),
        (posts_pb2.Post(slug="ok", title="x", tags=["fine", " "]), "post.tags[1]"),
        (posts_pb2.Post(slug="ok", title="x", tags=["t" * 101]), "post.tags[0]"),
        (posts_pb2.Post(slug="ok", title="x", tags=[f"t{i}" for i in range(51)]), "post.tags"),
        (posts_pb2.Post(slug="ok", title="x", excerpt="e" * 2001), "post.excerpt"),
        (posts_pb2.Post(slug="ok", title="x", body="nul\x00"), "post.body"),
        (posts_pb2.Post(slug="ok", title="x", status=9), "post.status"),  # type: ignore[arg-type]
    ]
    for post, field in cases:
        with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
            posts(t).CreatePost(posts_pb2.CreatePostRequest(environment_id=t.env_id, post=post))
        assert err["fields"] == [field], (post, err)
    with content_server.db.read() as s:
        assert s.execute(text("select count(*) from posts")).scalar() == 0
        assert s.execute(text("select count(*) from post_tags")).scalar() == 0
    created = make_post(t, "ok")
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        posts(t).UpdatePost(
            posts_pb2.UpdatePostRequest(
                post=posts_pb2.Post(id=created.id, title="New", slug="BAD"),
                update_mask=mask("title", "slug"),
            )
        )
    assert err["fields"] == ["post.slug"]
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        posts(t).UpdatePost(
            posts_pb2.UpdatePostRequest(post=posts_pb2.Post(id=created.id), update_mask=mask("id"))
        )
    assert err["fields"] == ["update_mask"]
    assert posts(t).GetPost(posts_pb2.GetPostRequest(id=created.id)).title == "Post ok"


def test_update_changes_only_the_masked_fields_and_keeps_tags_in_step(
    content_server: ContentServer,
) -> None:
    t = make_tenant(content_server.admin)
    post = make_post(t, "p", title="Title", tags=["a", "b"])
    updated = posts(t).UpdatePost(
        posts_pb2.UpdatePostRequest(
            post=posts_pb2.Post(id=post.id, title="New title", body="ignored", tags=["b", "c"]),
            update_mask=mask("title", "tags"),
        )
    )
    assert updated.title == "New title"
    assert updated.body == post.body
    assert list(updated.tags) == ["b", "c"]
    with content_server.db.read() as s:
        rows = s.execute(
            text("select tag from post_tags where post_id = :id order by tag"), {"id": post.id}
        ).scalars()
        assert list(rows) == ["b", "c"]


def list_all(t: Tenant, **filters: Any) -> list[posts_pb2.Post]:
    return collect(
        lambda token: posts(t).ListPosts(
            posts_pb2.ListPostsRequest(
                environment_id=t.env_id, page_size=3, page_token=token, **filters
            )
        ),
        "posts",
    )


def test_list_filters_by_status_and_tag_and_paginates(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    made = []
    for i in range(10):
        made.append(
            make_post(
                t,
                f"p{i}",
                tags=["even"] if i % 2 == 0 else ["odd"],
                status=PUBLISHED if i < 4 else DRAFT,
            )
        )
    assert [p.slug for p in list_all(t)] == [p.slug for p in made]
    assert [p.slug for p in list_all(t, tag="even")] == ["p0", "p2", "p4", "p6", "p8"]
    assert [p.slug for p in list_all(t, status=PUBLISHED)] == ["p0", "p1", "p2", "p3"]
    assert [p.slug for p in list_all(t, status=PUBLISHED, tag="odd")] == ["p1", "p3"]
    assert list_all(t, tag="missing") == []
    first = posts(t).ListPosts(
        posts_pb2.ListPostsRequest(environment_id=t.env_id, page_size=2, tag="even")
    )
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        posts(t).ListPosts(
            posts_pb2.ListPostsRequest(
                environment_id=t.env_id, tag="odd", page_token=first.next_page_token
            )
        )
    assert err["fields"] == ["page_token"]


def test_delete_removes_the_post_and_its_tags(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    post = make_post(t, "gone", tags=["x"])
    posts(t).DeletePost(posts_pb2.DeletePostRequest(id=post.id))
    with raises_status(grpc.StatusCode.NOT_FOUND):
        posts(t).GetPost(posts_pb2.GetPostRequest(id=post.id))
    assert list_all(t, tag="x") == []
    with raises_status(grpc.StatusCode.NOT_FOUND):
        posts(t).DeletePost(posts_pb2.DeletePostRequest(id=post.id))


def test_another_teams_post_is_not_found(content_server: ContentServer) -> None:
    acme = make_tenant(content_server.admin, "acme")
    other = make_tenant(content_server.admin, "other")
    post = make_post(acme, "secret")
    for call in (
        lambda: posts(other).GetPost(posts_pb2.GetPostRequest(id=post.id)),
        lambda: posts(other).GetPostBySlug(
            posts_pb2.GetPostBySlugRequest(environment_id=acme.env_id, slug="secret")
        ),
        lambda: posts(other).ListPosts(posts_pb2.ListPostsRequest(environment_id=acme.env_id)),
        lambda: posts(other).UpdatePost(
            posts_pb2.UpdatePostRequest(
                post=posts_pb2.Post(id=post.id, title="pwned"), update_mask=mask("title")
            )
        ),
        lambda: posts(other).DeletePost(posts_pb2.DeletePostRequest(id=post.id)),
        lambda: make_post(other, "mine", env_id=acme.env_id),
    ):
        with raises_status(grpc.StatusCode.NOT_FOUND):
            call()
    assert posts(acme).GetPost(posts_pb2.GetPostRequest(id=post.id)).title == "Post secret"
