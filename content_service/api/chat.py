"""ChatService: chat sessions of a site and their ordered messages."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc
from google.protobuf import empty_pb2
from loom.content.v1 import chat_pb2, chat_pb2_grpc

from content_service import chat
from content_service.api.common import mask_paths
from content_service.api.convert import dict_to_struct, struct_field_to_json, ts
from content_service.db import models
from content_service.db.engine import Database
from content_service.db.values import loads_object
from servicekit.auth import current_principal
from servicekit.pagination import page_of, page_request

ROLE_TO_DB = {
    chat_pb2.MESSAGE_ROLE_USER: "user",
    chat_pb2.MESSAGE_ROLE_ASSISTANT: "assistant",
    chat_pb2.MESSAGE_ROLE_TOOL: "tool",
    chat_pb2.MESSAGE_ROLE_SYSTEM: "system",
}
ROLE_FROM_DB = {v: k for k, v in ROLE_TO_DB.items()}


def session_proto(row: models.ChatSession, message_count: int) -> chat_pb2.ChatSession:
    return chat_pb2.ChatSession(
        id=row.id,
        site_id=row.site_id,
        title=row.title,
        metadata=dict_to_struct(loads_object(row.metadata_json)),
        message_count=message_count,
        create_time=ts(row.created_at),
        update_time=ts(row.updated_at),
        model=row.model,
        working_memory=dict_to_struct(loads_object(row.working_memory)),
        etag=chat.etag_of(row),
    )


def _fields(message: chat_pb2.ChatSession) -> chat.SessionFields:
    return chat.SessionFields(
        title=message.title,
        metadata=struct_field_to_json(message, "metadata", "session.metadata"),
        model=message.model,
        working_memory=struct_field_to_json(message, "working_memory", "session.working_memory"),
    )


def _new_messages(messages: Iterable[chat_pb2.Message]) -> list[chat.NewMessage]:
    return [
        chat.NewMessage(
            role=ROLE_TO_DB.get(m.role, ""),
            content=struct_field_to_json(m, "content", f"messages[{i}].content"),
            size=m.content.ByteSize(),
        )
        for i, m in enumerate(messages)
    ]


def message_proto(row: dict[str, Any]) -> chat_pb2.Message:
    return chat_pb2.Message(
        id=row["id"],
        session_id=row["session_id"],
        seq=row["seq"],
        role=ROLE_FROM_DB.get(row["role"], chat_pb2.MESSAGE_ROLE_UNSPECIFIED),
        content=dict_to_struct(loads_object(row["content"])),
        create_time=ts(row["created_at"]),
    )


def _message_row(row: models.Message) -> dict[str, Any]:
    return {
        "id": row.id,
        "session_id": row.session_id,
        "seq": row.seq,
        "role": row.role,
        "content": row.content,
        "created_at": row.created_at,
    }


class ChatServicer(chat_pb2_grpc.ChatServiceServicer):
    def __init__(self, db: Database) -> None:
        self.db = db

    def CreateSession(
        self, request: chat_pb2.CreateSessionRequest, context: grpc.ServicerContext
    ) -> chat_pb2.ChatSession:
        fields = _fields(request.session)
        with self.db.write() as s:
            row = chat.create_session(s, current_principal(), request.site_id, fields)
            return session_proto(row, 0)

    def UpdateSession(
        self, request: chat_pb2.UpdateSessionRequest, context: grpc.ServicerContext
    ) -> chat_pb2.ChatSession:
        paths = mask_paths(request.update_mask, set(chat.UPDATABLE))
        fields = _fields(request.session)
        with self.db.write() as s:
            row = chat.update_session(
                s, current_principal(), request.session.id, fields, paths, request.session.etag
            )
            return session_proto(row, chat.message_counts(s, [row.id]).get(row.id, 0))

    def GetSession(
        self, request: chat_pb2.GetSessionRequest, context: grpc.ServicerContext
    ) -> chat_pb2.ChatSession:
        with self.db.read() as s:
            row = chat.get_session(s, current_principal(), request.id)
            return session_proto(row, chat.message_counts(s, [row.id]).get(row.id, 0))

    def ListSessions(
        self, request: chat_pb2.ListSessionsRequest, context: grpc.ServicerContext
    ) -> chat_pb2.ListSessionsResponse:
        page = page_request(request)
        with self.db.read() as s:
            rows = chat.list_sessions(s, current_principal(), request.site_id, page)
            counts = chat.message_counts(s, [r.id for r in rows])
            items, token = page_of(
                rows, page, lambda r: r.id, lambda r: session_proto(r, counts.get(r.id, 0))
            )
            return chat_pb2.ListSessionsResponse(sessions=items, next_page_token=token)

    def DeleteSession(
        self, request: chat_pb2.DeleteSessionRequest, context: grpc.ServicerContext
    ) -> empty_pb2.Empty:
        with self.db.write() as s:
            chat.delete_session(s, current_principal(), request.id)
        return empty_pb2.Empty()

    def AppendMessages(
        self, request: chat_pb2.AppendMessagesRequest, context: grpc.ServicerContext
    ) -> chat_pb2.AppendMessagesResponse:
        messages = _new_messages(request.messages)
        with self.db.write() as s:
            row, rows = chat.append_messages(
                s, current_principal(), request.session_id, messages, request.etag
            )
            etag = chat.etag_of(row)
        return chat_pb2.AppendMessagesResponse(messages=[message_proto(r) for r in rows], etag=etag)

    def ReplaceMessages(
        self, request: chat_pb2.ReplaceMessagesRequest, context: grpc.ServicerContext
    ) -> chat_pb2.ReplaceMessagesResponse:
        messages = _new_messages(request.messages)
        with self.db.write() as s:
            row, rows = chat.replace_messages(
                s, current_principal(), request.session_id, messages, request.etag
            )
            etag = chat.etag_of(row)
        return chat_pb2.ReplaceMessagesResponse(
            messages=[message_proto(r) for r in rows], etag=etag
        )

    def ClearMessages(
        self, request: chat_pb2.ClearMessagesRequest, context: grpc.ServicerContext
    ) -> chat_pb2.ChatSession:
        with self.db.write() as s:
            row = chat.clear_messages(s, current_principal(), request.session_id, request.etag)
            return session_proto(row, 0)

    def ListMessages(
        self, request: chat_pb2.ListMessagesRequest, context: grpc.ServicerContext
    ) -> chat_pb2.ListMessagesResponse:
        page = page_request(request)
        with self.db.read() as s:
            items, token = page_of(
                chat.list_messages(s, current_principal(), request.session_id, page),
                page,
                lambda r: str(r.seq),
                lambda r: message_proto(_message_row(r)),
            )
            return chat_pb2.ListMessagesResponse(messages=items, next_page_token=token)
