"""ChatService: sessions per site, ordered messages, concurrent appends."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc
from loom.content.v1 import chat_pb2, tenancy_pb2
from sqlalchemy import text

from tests.content.service_stubs import chat, collect
from tests.content.tenants_and_pages import Tenant, make_tenant, struct
from tests.support import ContentServer, raises_status

USER = chat_pb2.MESSAGE_ROLE_USER
ASSISTANT = chat_pb2.MESSAGE_ROLE_ASSISTANT
TOOL = chat_pb2.MESSAGE_ROLE_TOOL


def new_session(t: Tenant, title: str = "Build my site") -> chat_pb2.ChatSession:
    return chat(t).CreateSession(
        chat_pb2.CreateSessionRequest(
            site_id=t.site_id,
            session=chat_pb2.ChatSession(title=title, metadata=struct({"model": "m1"})),
        )
    )


def append(t: Tenant, session_id: str, *messages: tuple[int, dict[str, object]]) -> list[int]:
    resp = chat(t).AppendMessages(
        chat_pb2.AppendMessagesRequest(
            session_id=session_id,
            messages=[chat_pb2.Message(role=r, content=struct(c)) for r, c in messages],
        )
    )
    return [m.seq for m in resp.messages]


def all_messages(t: Tenant, session_id: str, page_size: int = 7) -> list[chat_pb2.Message]:
    return collect(
        lambda token: chat(t).ListMessages(
            chat_pb2.ListMessagesRequest(
                session_id=session_id, page_size=page_size, page_token=token
            )
        ),
        "messages",
    )


def test_messages_keep_their_order_roles_and_json(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    session = new_session(t)
    assert session.site_id == t.site_id
    assert session.metadata["model"] == "m1"
    assert append(t, session.id, (USER, {"text": "Make a pricing page"})) == [0]
    seqs = append(
        t,
        session.id,
        (ASSISTANT, {"tool_calls": [{"name": "create_page", "args": {"slug": "pricing"}}]}),
        (TOOL, {"result": {"ok": True, "page_id": "p1"}}),
        (ASSISTANT, {"text": "Done."}),
    )
    assert seqs == [1, 2, 3]
    messages = all_messages(t, session.id, page_size=2)
    assert [m.seq for m in messages] == [0, 1, 2, 3]
    assert [m.role for m in messages] == [USER, ASSISTANT, TOOL, ASSISTANT]
    assert messages[1].content["tool_calls"][0]["args"]["slug"] == "pricing"
    assert messages[2].content["result"]["ok"] is True
    got = chat(t).GetSession(chat_pb2.GetSessionRequest(id=session.id))
    assert got.message_count == 4
    assert got.title == "Build my site"


def test_concurrent_appenders_never_collide(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    session = new_session(t)
    writers, rounds = 6, 8

    def work(n: int) -> list[int]:
        seqs: list[int] = []
        for i in range(rounds):
            seqs += append(
                t,
                session.id,
                (USER, {"w": n, "i": i, "part": 0}),
                (TOOL, {"w": n, "i": i, "part": 1}),
            )
        return seqs

    with ThreadPoolExecutor(writers) as pool:
        results = list(pool.map(work, range(writers)))
    total = writers * rounds * 2
    assert sorted(s for r in results for s in r) == list(range(total))
    messages = all_messages(t, session.id, page_size=1000)
    assert [m.seq for m in messages] == list(range(total))
    # The two messages of one call are adjacent and in the order given.
    for first, second in zip(messages[::2], messages[1::2], strict=True):
        assert (first.content["w"], first.content["i"]) == (
            second.content["w"],
            second.content["i"],
        )
        assert (first.content["part"], second.content["part"]) == (0, 1)


def test_sessions_list_by_site_and_delete_takes_the_messages(
    content_server: ContentServer,
) -> None:
    t = make_tenant(content_server.admin)
    sessions = [new_session(t, f"s{i}") for i in range(5)]
    append(t, sessions[0].id, (USER, {"text": "hi"}), (ASSISTANT, {"text": "hello"}))
    listed = collect(
        lambda token: chat(t).ListSessions(
            chat_pb2.ListSessionsRequest(site_id=t.site_id, page_size=2, page_token=token)
        ),
        "sessions",
    )
    assert [s.title for s in listed] == ["s0", "s1", "s2", "s3", "s4"]
    assert [s.message_count for s in listed] == [2, 0, 0, 0, 0]
    chat(t).DeleteSession(chat_pb2.DeleteSessionRequest(id=sessions[0].id))
    with raises_status(grpc.StatusCode.NOT_FOUND):
        chat(t).GetSession(chat_pb2.GetSessionRequest(id=sessions[0].id))
    with raises_status(grpc.StatusCode.NOT_FOUND):
        chat(t).ListMessages(chat_pb2.ListMessagesRequest(session_id=sessions[0].id))
    with content_server.db.read() as s:
        assert s.execute(text("select count(*) from messages")).scalar() == 0
    # Deleting the site takes its sessions along.
    t.client.tenancy.DeleteSite(tenancy_pb2.DeleteSiteRequest(id=t.site_id))
    with content_server.db.read() as s:
        assert s.execute(text("select count(*) from sessions")).scalar() == 0


def test_bad_appends_name_the_field_and_write_nothing(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    session = new_session(t)
    cases = [
        ([], "messages"),
        ([chat_pb2.Message(content=struct({"t": 1}))], "messages[0].role"),
        (
            [
                chat_pb2.Message(role=USER, content=struct({"t": 1})),
                chat_pb2.Message(role=USER, content=struct({"big": "x" * 300_000})),
            ],
            "messages[1].content",
        ),
        ([chat_pb2.Message(role=USER)] * 101, "messages"),
    ]
    for messages, field in cases:
        with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
            chat(t).AppendMessages(
                chat_pb2.AppendMessagesRequest(session_id=session.id, messages=messages)
            )
        assert err["fields"] == [field]
    assert all_messages(t, session.id) == []
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        chat(t).CreateSession(
            chat_pb2.CreateSessionRequest(
                site_id=t.site_id, session=chat_pb2.ChatSession(title="x" * 501)
            )
        )
    assert err["fields"] == ["session.title"]


def test_another_teams_sessions_are_not_found(content_server: ContentServer) -> None:
    acme = make_tenant(content_server.admin, "acme")
    other = make_tenant(content_server.admin, "other")
    session = new_session(acme)
    append(acme, session.id, (USER, {"text": "secret"}))
    for call in (
        lambda: chat(other).GetSession(chat_pb2.GetSessionRequest(id=session.id)),
        lambda: chat(other).ListSessions(chat_pb2.ListSessionsRequest(site_id=acme.site_id)),
        lambda: chat(other).ListMessages(chat_pb2.ListMessagesRequest(session_id=session.id)),
        lambda: append(other, session.id, (USER, {"text": "intrude"})),
        lambda: chat(other).DeleteSession(chat_pb2.DeleteSessionRequest(id=session.id)),
        lambda: chat(other).CreateSession(chat_pb2.CreateSessionRequest(site_id=acme.site_id)),
    ):
        with raises_status(grpc.StatusCode.NOT_FOUND):
            call()
    assert [m.content["text"] for m in all_messages(acme, session.id)] == ["secret"]
