"""Page tokens are authenticated (servicekit.pagination): an HMAC over the cursor and the
token's scope (the method, the request's other fields, the caller) with a key every replica of
the deployment derives from the service token. A forged, tampered, oversized, other-query or
other-tenant token is INVALID_ARGUMENT on field `page_token`, on every List/Search method."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from loom.content.v1 import chat_pb2, common_pb2, pages_pb2, posts_pb2, search_pb2

from tests.content.service_stubs import chat, make_chat, make_post, posts, search_stub
from tests.content.tenants_and_pages import make_definition, make_page, make_tenant
from tests.support import ContentServer, ContentServerFactory, raises_status


def _old_style(cursor: str) -> str:
    """A token in the unsigned format of before: base64 JSON naming any cursor."""
    raw = json.dumps({"a": cursor, "f": "0" * 16}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _tampered(token: str) -> str:
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[1] ^= 0x01  # one bit of the cursor
    return base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")


def _refused(call: Callable[[], Any]) -> None:
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        call()
    assert err["fields"] == ["page_token"], err


def test_bad_tokens_on_pages_posts_chat_and_search(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    hero = make_definition(t)
    for slug in ("a", "b", "c"):
        make_page(t, hero.id, slug=slug, n_sections=1)
        make_post(t, slug, body="walrus " * 3)
    session = make_chat(t, 3)

    def list_pages(token: str, **kw: Any) -> Any:
        return t.client.pages.ListPages(
            pages_pb2.ListPagesRequest(environment_id=t.env_id, page_size=1, page_token=token, **kw)
        )

    def list_posts(token: str) -> Any:
        return posts(t).ListPosts(
            posts_pb2.ListPostsRequest(environment_id=t.env_id, page_size=1, page_token=token)
        )

    def list_messages(token: str) -> Any:
        return chat(t).ListMessages(
            chat_pb2.ListMessagesRequest(session_id=session.id, page_size=1, page_token=token)
        )

    def find(token: str, query: str = "walrus") -> Any:
        return search_stub(t).Search(
            search_pb2.SearchRequest(
                environment_id=t.env_id, query=query, page_size=1, page_token=token
            )
        )

    for call in (list_pages, list_posts, list_messages, find):
        token = call("").next_page_token
        assert token
        assert call(token).next_page_token  # a real token works, page after page
        for bad in (
            _tampered(token),
            token[:-2],
            token + "AA",
            _old_style("9" * 30),  # the 30-digit cursor that was INTERNAL
            _old_style("-1"),
            "x" * 100_000,
            "not base64 at all: é",
            "",
        ):
            if bad:
                _refused(lambda bad=bad, call=call: call(bad))  # type: ignore[misc]

    page_token = list_pages("").next_page_token
    post_token = list_posts("").next_page_token
    _refused(lambda: list_pages(post_token))  # another method's
    _refused(lambda: list_posts(page_token))
    _refused(lambda: list_pages(page_token, status=common_pb2.CONTENT_STATUS_PUBLISHED))
    _refused(lambda: find(find("").next_page_token, "walrus walrus"))  # another query's
    # The page size may change between pages (AIP-158).
    t.client.pages.ListPages(
        pages_pb2.ListPagesRequest(environment_id=t.env_id, page_size=2, page_token=page_token)
    )

    # Another caller's: the admin key's token on the team's own list, and the other way.
    admin_token = content_server.admin.pages.ListPages(
        pages_pb2.ListPagesRequest(environment_id=t.env_id, page_size=1)
    ).next_page_token
    _refused(lambda: list_pages(admin_token))
    other = make_tenant(content_server.admin, "other")
    _refused(
        lambda: other.client.pages.ListPages(
            pages_pb2.ListPagesRequest(environment_id=t.env_id, page_size=1, page_token=page_token)
        )
    )


def test_replicas_of_one_deployment_share_tokens(
    content_servers: ContentServerFactory, tmp_path: Path
) -> None:
    first = content_servers(tmp_path / "one")
    second = content_servers(tmp_path / "two")  # the same service token, the same database
    stranger = content_servers(tmp_path / "three", service_token="another-deployment")
    t = make_tenant(first.admin)
    hero = make_definition(t)
    for slug in ("a", "b", "c"):
        make_page(t, hero.id, slug=slug, n_sections=1)

    def ask(server: ContentServer, token: str = "") -> Any:
        return server.client(t.key).pages.ListPages(
            pages_pb2.ListPagesRequest(environment_id=t.env_id, page_size=1, page_token=token)
        )

    token = ask(first).next_page_token
    assert ask(second, token).pages[0].slug == ask(first, token).pages[0].slug
    _refused(lambda: ask(stranger, token))
