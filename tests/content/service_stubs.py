"""The content services beyond tenancy and pages, called as a tenant: stubs for posts,
navigation (menus), site settings, chat, search and environment clone, a post builder, search
calls, and `collect` for paginated List calls (tenants and pages: tenants_and_pages.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from loom.content.v1 import (
    chat_pb2,
    chat_pb2_grpc,
    clone_pb2_grpc,
    common_pb2,
    navigation_pb2_grpc,
    posts_pb2,
    posts_pb2_grpc,
    search_pb2,
    search_pb2_grpc,
    settings_pb2_grpc,
)

from tests.content.tenants_and_pages import Tenant, struct
from tests.support import Stub


def posts(t: Tenant) -> Stub:
    return t.client.stub(posts_pb2_grpc.PostServiceStub)


def nav(t: Tenant) -> Stub:
    return t.client.stub(navigation_pb2_grpc.NavigationServiceStub)


def site_settings(t: Tenant) -> Stub:
    return t.client.stub(settings_pb2_grpc.SiteSettingsServiceStub)


def chat(t: Tenant) -> Stub:
    return t.client.stub(chat_pb2_grpc.ChatServiceStub)


def search_stub(t: Tenant) -> Stub:
    return t.client.stub(search_pb2_grpc.SearchServiceStub)


def clone_stub(t: Tenant) -> Stub:
    return t.client.stub(clone_pb2_grpc.EnvironmentCloneServiceStub)


def make_chat(t: Tenant, messages: int = 1, title: str = "chat") -> chat_pb2.ChatSession:
    """A chat session of the tenant's site with `messages` user messages ("hi")."""
    session: chat_pb2.ChatSession = chat(t).CreateSession(
        chat_pb2.CreateSessionRequest(site_id=t.site_id, session=chat_pb2.ChatSession(title=title))
    )
    chat(t).AppendMessages(
        chat_pb2.AppendMessagesRequest(
            session_id=session.id,
            messages=[
                chat_pb2.Message(role=chat_pb2.MESSAGE_ROLE_USER, content=struct({"text": "hi"}))
                for _ in range(messages)
            ],
        )
    )
    return session


def make_post(
    t: Tenant,
    slug: str = "hello",
    *,
    title: str | None = None,
    body: str = "Some **Markdown** body.",
    excerpt: str = "",
    tags: list[str] | None = None,
    status: int = common_pb2.CONTENT_STATUS_DRAFT,
    env_id: str | None = None,
) -> posts_pb2.Post:
    return posts(t).CreatePost(
        posts_pb2.CreatePostRequest(
            environment_id=env_id or t.env_id,
            post=posts_pb2.Post(
                slug=slug,
                title=title or f"Post {slug}",
                body=body,
                excerpt=excerpt,
                tags=tags or [],
                status=status,
                author="Ada",
            ),
        )
    )


def search(
    t: Tenant, query: str, *, kinds: list[int] | None = None, env_id: str | None = None, **kw: Any
) -> search_pb2.SearchResponse:
    return search_stub(t).Search(
        search_pb2.SearchRequest(
            environment_id=env_id or t.env_id, query=query, kinds=kinds or [], **kw
        )
    )


def search_ids(t: Tenant, query: str, **kw: Any) -> list[str]:
    return [r.id for r in search(t, query, **kw).results]


def collect(call: Callable[[str], Any], field: str) -> list[Any]:
    """Every item of a paginated List call (call(page_token) -> response)."""
    out: list[Any] = []
    token = ""
    while True:
        resp = call(token)
        out += list(getattr(resp, field))
        token = resp.next_page_token
        if not token:
            return out
