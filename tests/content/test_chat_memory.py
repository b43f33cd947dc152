"""ChatService sessions with memory: UpdateSession (title, metadata, model, working memory),
etags on every write, ReplaceMessages, ClearMessages and the SYSTEM role."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from threading import Barrier

import grpc
from google.protobuf import field_mask_pb2
from loom.content.v1 import chat_pb2

from tests.content.service_stubs import chat
from tests.content.tenants_and_pages import Tenant, make_tenant, struct
from tests.content.test_chat import all_messages, new_session
from tests.support import ContentServer, raises_status

USER = chat_pb2.MESSAGE_ROLE_USER
ASSISTANT = chat_pb2.MESSAGE_ROLE_ASSISTANT
SYSTEM = chat_pb2.MESSAGE_ROLE_SYSTEM


def message(role: int, text: str) -> chat_pb2.Message:
    return chat_pb2.Message(role=role, content=struct({"text": text}))


def update(
    t: Tenant, session: chat_pb2.ChatSession, *paths: str, etag: str = ""
) -> chat_pb2.ChatSession:
    session.etag = etag
    return chat(t).UpdateSession(
        chat_pb2.UpdateSessionRequest(
            session=session, update_mask=field_mask_pb2.FieldMask(paths=list(paths))
        )
    )


def get(t: Tenant, session_id: str) -> chat_pb2.ChatSession:
    return chat(t).GetSession(chat_pb2.GetSessionRequest(id=session_id))


def texts(t: Tenant, session_id: str) -> list[tuple[int, int, str]]:
    return [(m.seq, m.role, m.content["text"]) for m in all_messages(t, session_id)]


def test_a_session_saves_its_model_and_working_memory(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    created = chat(t).CreateSession(
        chat_pb2.CreateSessionRequest(
            site_id=t.site_id,
            session=chat_pb2.ChatSession(
                title="Build", model="gpt-x", working_memory=struct({"page": "home"})
            ),
        )
    )
    assert (created.model, created.working_memory["page"]) == ("gpt-x", "home")
    turn = chat_pb2.ChatSession(
        id=created.id,
        title="Pricing page",
        model="gpt-y",
        working_memory=struct({"page": "pricing", "todo": ["hero", "plans"], "step": 2}),
    )
    after = update(t, turn, "title", "model", "working_memory", etag=created.etag)
    read = get(t, created.id)
    assert (read.title, read.model) == ("Pricing page", "gpt-y")
    assert read.working_memory["todo"] == ["hero", "plans"]
    assert read.working_memory["step"] == 2
    assert read.etag == after.etag != created.etag
    # Only the masked fields change: the metadata stays.
    only = update(t, chat_pb2.ChatSession(id=created.id, title="T", model="ignored"), "title")
    assert (only.title, only.model) == ("T", "gpt-y")


def test_an_empty_mask_writes_all_four_fields(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    session = new_session(t)
    cleared = update(t, chat_pb2.ChatSession(id=session.id))
    assert (cleared.title, cleared.model) == ("", "")
    assert dict(cleared.metadata) == {}
    assert dict(cleared.working_memory) == {}
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        update(t, chat_pb2.ChatSession(id=session.id), "message_count")
    assert err["fields"][0] == "update_mask"


def test_a_stale_etag_is_aborted_and_writes_nothing(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    session = new_session(t, "First")
    stale = session.etag
    update(t, chat_pb2.ChatSession(id=session.id, title="Second"), "title", etag=stale)
    with raises_status(grpc.StatusCode.ABORTED) as err:
        update(t, chat_pb2.ChatSession(id=session.id, title="Third"), "title", etag=stale)
    assert err["reason"] == "ETAG_MISMATCH"
    assert get(t, session.id).title == "Second"
    for call in (
        lambda: chat(t).AppendMessages(
            chat_pb2.AppendMessagesRequest(
                session_id=session.id, messages=[message(USER, "x")], etag=stale
            )
        ),
        lambda: chat(t).ReplaceMessages(
            chat_pb2.ReplaceMessagesRequest(
                session_id=session.id, messages=[message(USER, "x")], etag=stale
            )
        ),
        lambda: chat(t).ClearMessages(
            chat_pb2.ClearMessagesRequest(session_id=session.id, etag=stale)
        ),
    ):
        with raises_status(grpc.StatusCode.ABORTED):
            call()
    assert texts(t, session.id) == []


def test_every_write_to_the_history_changes_the_etag(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    session = new_session(t)
    appended = chat(t).AppendMessages(
        chat_pb2.AppendMessagesRequest(
            session_id=session.id, messages=[message(USER, "hi")], etag=session.etag
        )
    )
    assert appended.etag == get(t, session.id).etag != session.etag
    replaced = chat(t).ReplaceMessages(
        chat_pb2.ReplaceMessagesRequest(
            session_id=session.id, messages=[message(USER, "hello")], etag=appended.etag
        )
    )
    assert replaced.etag == get(t, session.id).etag != appended.etag
    cleared = chat(t).ClearMessages(
        chat_pb2.ClearMessagesRequest(session_id=session.id, etag=replaced.etag)
    )
    assert cleared.etag == get(t, session.id).etag != replaced.etag


def test_replace_rewrites_the_history_from_seq_zero(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    session = new_session(t)
    chat(t).AppendMessages(
        chat_pb2.AppendMessagesRequest(
            session_id=session.id,
            messages=[message(USER, f"turn {i}") for i in range(5)],
        )
    )
    summary = [message(SYSTEM, "You build websites."), message(ASSISTANT, "Summary so far")]
    resp = chat(t).ReplaceMessages(
        chat_pb2.ReplaceMessagesRequest(session_id=session.id, messages=summary)
    )
    assert [(m.seq, m.role) for m in resp.messages] == [(0, SYSTEM), (1, ASSISTANT)]
    assert texts(t, session.id) == [
        (0, SYSTEM, "You build websites."),
        (1, ASSISTANT, "Summary so far"),
    ]
    assert get(t, session.id).message_count == 2
    # Appends continue after the new history.
    more = chat(t).AppendMessages(
        chat_pb2.AppendMessagesRequest(session_id=session.id, messages=[message(USER, "next")])
    )
    assert [m.seq for m in more.messages] == [2]


def test_a_bad_message_in_a_replace_leaves_the_history(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    session = new_session(t)
    chat(t).AppendMessages(
        chat_pb2.AppendMessagesRequest(session_id=session.id, messages=[message(USER, "keep")])
    )
    bad = [message(USER, "ok"), chat_pb2.Message(content=struct({"text": "no role"}))]
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        chat(t).ReplaceMessages(
            chat_pb2.ReplaceMessagesRequest(session_id=session.id, messages=bad)
        )
    assert err["fields"][0] == "messages[1].role"
    assert texts(t, session.id) == [(0, USER, "keep")]


def test_clear_keeps_the_session_and_empties_it(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    session = new_session(t)
    chat(t).AppendMessages(
        chat_pb2.AppendMessagesRequest(session_id=session.id, messages=[message(USER, "a")])
    )
    cleared = chat(t).ClearMessages(chat_pb2.ClearMessagesRequest(session_id=session.id))
    assert cleared.message_count == 0
    assert get(t, session.id).title == session.title
    assert texts(t, session.id) == []


def test_limits_name_the_field(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    session = new_session(t)
    cases = [
        (chat_pb2.ChatSession(id=session.id, model="m" * 201), "model", "session.model"),
        (
            chat_pb2.ChatSession(
                id=session.id, working_memory=struct({"notes": "x" * (256 * 1024)})
            ),
            "working_memory",
            "session.working_memory",
        ),
    ]
    for sent, path, field in cases:
        with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
            update(t, sent, path)
        assert err["fields"][0] == field
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        chat(t).ReplaceMessages(
            chat_pb2.ReplaceMessagesRequest(
                session_id=session.id, messages=[message(USER, "x")] * 1001
            )
        )
    assert err["fields"][0] == "messages"
    assert get(t, session.id).etag == session.etag  # nothing was written


def test_another_teams_session_is_not_found(content_server: ContentServer) -> None:
    a = make_tenant(content_server.admin, "a")
    b = make_tenant(content_server.admin, "b")
    session = new_session(a)
    for call in (
        lambda: update(b, chat_pb2.ChatSession(id=session.id, title="mine"), "title"),
        lambda: chat(b).ReplaceMessages(chat_pb2.ReplaceMessagesRequest(session_id=session.id)),
        lambda: chat(b).ClearMessages(chat_pb2.ClearMessagesRequest(session_id=session.id)),
    ):
        with raises_status(grpc.StatusCode.NOT_FOUND):
            call()
    assert get(a, session.id).etag == session.etag


def test_concurrent_saves_with_one_etag_let_exactly_one_win(
    content_server: ContentServer,
) -> None:
    t = make_tenant(content_server.admin)
    session = new_session(t)
    writers = 4
    start = Barrier(writers)

    def save(i: int) -> str:
        start.wait()
        try:
            update(
                t,
                chat_pb2.ChatSession(id=session.id, working_memory=struct({"writer": i})),
                "working_memory",
                etag=session.etag,
            )
        except grpc.RpcError as exc:
            return exc.code().name
        return f"won {i}"

    with ThreadPoolExecutor(writers) as pool:
        results = list(pool.map(save, range(writers)))
    winners = [r for r in results if r.startswith("won")]
    assert len(winners) == 1, results
    assert sorted(r for r in results if not r.startswith("won")) == ["ABORTED"] * (writers - 1)
    assert get(t, session.id).working_memory["writer"] == int(winners[0].split()[1])
