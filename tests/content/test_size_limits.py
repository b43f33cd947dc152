"""Size limits on what is stored, checked before anything is written, so every stored
resource and every List page fits a default client's 4 MiB receive limit, and no write answers
with an error after it committed (the issue: a 4 MiB AddSection onto a 5 MiB page committed,
then answered RESOURCE_EXHAUSTED, and GetPage/ListPages failed for everyone after)."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import field_mask_pb2
from loom.content.v1 import chat_pb2, pages_pb2, posts_pb2

from content_service import chat, pages
from tests.content.service_stubs import chat as chat_stub
from tests.content.service_stubs import collect, make_post, posts
from tests.content.tenants_and_pages import Tenant, make_definition, make_tenant, struct
from tests.support import ContentServer, raises_status

FREE = {"type": "object"}  # any content


def _section(definition_id: str, content: dict[str, Any]) -> pages_pb2.Section:
    return pages_pb2.Section(definition_id=definition_id, content=struct(content))


def _text(kib: int) -> dict[str, Any]:
    return {"text": "x" * (kib * 1024)}


def _create(t: Tenant, slug: str, sections: list[pages_pb2.Section], **kw: Any) -> Any:
    return t.client.pages.CreatePage(
        pages_pb2.CreatePageRequest(
            environment_id=t.env_id,
            page=pages_pb2.Page(slug=slug, title=slug, sections=sections, **kw),
        )
    )


def test_page_limits_hold_and_nothing_is_written(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    free = make_definition(t, "free", FREE)

    # One section: at most 256 KiB encoded, on every way in.
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        _create(t, "big", [_section(free.id, _text(300))])
    assert err["fields"] == ["page.sections[0].content"]
    # Encoded size, not JSON size: 30,000 small numbers are 60 KB of JSON, 330 KB encoded.
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        _create(t, "numbers", [_section(free.id, {"n": [0] * 30_000})])
    assert err["fields"] == ["page.sections[0].content"]
    # Metadata: 64 KiB.
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        _create(t, "meta", [], metadata=struct(_text(70)))
    assert err["fields"] == ["page.metadata"]
    # The whole page: 1 MiB.
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        _create(t, "whole", [_section(free.id, _text(250)) for _ in range(5)])
    assert err["fields"] == ["page.sections"]

    # A page near the limit: adding to it is refused, the page stays as it was, and it and
    # every list that holds it still answer.
    sizes = [240, 240, 240, 240, 40]  # KiB: about 1,000 KiB of 1,024
    page = _create(t, "near", [_section(free.id, _text(kib)) for kib in sizes])
    with raises_status(grpc.StatusCode.FAILED_PRECONDITION) as err:
        t.client.pages.AddSection(
            pages_pb2.AddSectionRequest(page_id=page.id, section=_section(free.id, _text(200)))
        )
    assert err["reason"] == "PAGE_TOO_LARGE"
    with raises_status(grpc.StatusCode.FAILED_PRECONDITION):
        t.client.pages.UpdateSection(
            pages_pb2.UpdateSectionRequest(
                page_id=page.id, section_id=page.sections[4].id, content=struct(_text(100))
            )
        )
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        t.client.pages.AddSection(
            pages_pb2.AddSectionRequest(page_id=page.id, section=_section(free.id, _text(300)))
        )
    assert err["fields"] == ["section.content"]
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        t.client.pages.UpdatePage(
            pages_pb2.UpdatePageRequest(
                page=pages_pb2.Page(id=page.id, metadata=struct(_text(50))),
                update_mask=field_mask_pb2.FieldMask(paths=["metadata"]),
            )
        )
    assert err["fields"] == ["page"]
    again = t.client.pages.GetPage(pages_pb2.GetPageRequest(id=page.id))
    assert again == page
    listed = t.client.pages.ListPages(pages_pb2.ListPagesRequest(environment_id=t.env_id))
    assert [p.slug for p in listed.pages] == ["near"]
    t.client.pages.ListSectionDefinitions(
        pages_pb2.ListSectionDefinitionsRequest(environment_id=t.env_id)
    )
    # A smaller section still goes in.
    t.client.pages.AddSection(
        pages_pb2.AddSectionRequest(page_id=page.id, section=_section(free.id, _text(20)))
    )


def test_batches_schemas_and_appends_are_bounded(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    free = make_definition(t, "free", FREE)
    batch = pages_pb2.BatchCreatePagesRequest(
        environment_id=t.env_id,
        requests=[
            pages_pb2.CreatePageRequest(
                page=pages_pb2.Page(
                    slug=f"p{i}", title="p", sections=[_section(free.id, _text(200))]
                )
            )
            for i in range(20)
        ],
    )
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        t.client.pages.BatchCreatePages(batch)
    assert err["fields"][0].startswith("requests[")
    assert err["fields"][0].endswith("].page")
    assert not t.client.pages.ListPages(pages_pb2.ListPagesRequest(environment_id=t.env_id)).pages

    for paths, definition, field in [
        (
            ["schema"],
            pages_pb2.SectionDefinition(
                id=free.id, schema=struct({"type": "object", "description": "d" * 70_000})
            ),
            "section_definition.schema",
        ),
        (
            ["default_content"],
            pages_pb2.SectionDefinition(id=free.id, default_content=struct(_text(70))),
            "section_definition.default_content",
        ),
    ]:
        with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
            t.client.pages.UpdateSectionDefinition(
                pages_pb2.UpdateSectionDefinitionRequest(
                    section_definition=definition,
                    update_mask=field_mask_pb2.FieldMask(paths=paths),
                )
            )
        assert err["fields"] == [field]

    session = chat_stub(t).CreateSession(
        chat_pb2.CreateSessionRequest(site_id=t.site_id, session=chat_pb2.ChatSession(title="s"))
    )
    too_many = [
        chat_pb2.Message(role=chat_pb2.MESSAGE_ROLE_USER, content=struct(_text(200)))
        for _ in range(20)
    ]
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        chat_stub(t).AppendMessages(
            chat_pb2.AppendMessagesRequest(session_id=session.id, messages=too_many)
        )
    assert err["fields"][0].startswith("messages[")
    assert (
        not chat_stub(t).ListMessages(chat_pb2.ListMessagesRequest(session_id=session.id)).messages
    )


def test_list_pages_are_bounded_by_bytes(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    session = chat_stub(t).CreateSession(
        chat_pb2.CreateSessionRequest(site_id=t.site_id, session=chat_pb2.ChatSession(title="s"))
    )
    for _ in range(3):  # 30 messages of 250 KiB: 7.5 MiB in all
        chat_stub(t).AppendMessages(
            chat_pb2.AppendMessagesRequest(
                session_id=session.id,
                messages=[
                    chat_pb2.Message(role=chat_pb2.MESSAGE_ROLE_USER, content=struct(_text(250)))
                    for _ in range(10)
                ],
            )
        )
    first = chat_stub(t).ListMessages(
        chat_pb2.ListMessagesRequest(session_id=session.id, page_size=1000)
    )
    assert 0 < len(first.messages) < 30
    assert first.next_page_token
    assert first.ByteSize() < 4 * 1024 * 1024  # what a default client receives
    every = collect(
        lambda token: chat_stub(t).ListMessages(
            chat_pb2.ListMessagesRequest(session_id=session.id, page_size=1000, page_token=token)
        ),
        "messages",
    )
    assert [m.seq for m in every] == list(range(30))

    for i in range(8):  # 8 posts of 500,000 characters
        make_post(t, f"long-{i}", body="y" * 500_000)
    listed = collect(
        lambda token: posts(t).ListPosts(
            posts_pb2.ListPostsRequest(environment_id=t.env_id, page_token=token)
        ),
        "posts",
    )
    assert len(listed) == 8


def test_the_limits_are_the_documented_ones() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "content-api.md").read_text()
    for value in (
        pages.MAX_SECTION_BYTES,
        pages.MAX_METADATA_BYTES,
        pages.MAX_PAGE_BYTES,
        pages.MAX_BATCH_BYTES,
        pages.MAX_SCHEMA_BYTES,
        chat.MAX_APPEND_BYTES,
    ):
        size = f"{value // 1024 // 1024} MiB" if value >= 1024 * 1024 else f"{value // 1024} KiB"
        assert size in doc, size
