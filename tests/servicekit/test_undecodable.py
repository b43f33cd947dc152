"""Requests that do not deserialize are INVALID_ARGUMENT naming the request message, on every
kind of method (unary, client stream, server stream, bidi) of both services, never grpc's
INTERNAL "Exception deserializing request!"."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2
from loom.content.v1 import images_pb2, pages_pb2
from loom.vector.v1 import vector_pb2

from tests.hostile.wire import (
    INVALID_UTF8,
    deep_self,
    deep_struct,
    field,
    with_invalid_utf8,
)
from tests.support import (
    ADMIN_KEY,
    SERVICE_TOKEN,
    ContentServer,
    errors_of,
    hash_embedder,
    serving_vector,
    vector_settings,
)

ADMIN = (("authorization", f"Bearer {ADMIN_KEY}"),)
SERVICE = (("authorization", f"Bearer {SERVICE_TOKEN}"),)


def _refused(error: grpc.RpcError, name: str) -> None:
    got = errors_of(error)
    assert got["code"] == grpc.StatusCode.INVALID_ARGUMENT, got
    assert got["reason"] == "UNDECODABLE_REQUEST"
    assert got["fields"] == ["request"]
    assert name in got["message"]


def _unary(channel: grpc.Channel, method: str, raw: bytes, metadata: object = ADMIN) -> None:
    call = channel.unary_unary(method)  # no serializers: the bytes go as they are
    call(raw, metadata=metadata, timeout=10)


def test_invalid_utf8_and_deep_nesting_on_unary_methods(content_server: ContentServer) -> None:
    channel = content_server.channel
    cases = [
        (
            "/loom.content.v1.PageService/GetPage",
            with_invalid_utf8(pages_pb2.GetPageRequest.DESCRIPTOR),
            "loom.content.v1.GetPageRequest",
        ),
        (
            # CreatePageRequest.page (2) -> Page.metadata: a Struct 10,000 levels deep.
            "/loom.content.v1.PageService/CreatePage",
            field(
                pages_pb2.CreatePageRequest.DESCRIPTOR.fields_by_name["page"].number,
                field(
                    pages_pb2.Page.DESCRIPTOR.fields_by_name["metadata"].number,
                    deep_struct(10_000),
                ),
            ),
            "loom.content.v1.CreatePageRequest",
        ),
        (
            # SetMenuRequest.menu -> Menu.items -> MenuItem.children, 10,000 levels deep.
            "/loom.content.v1.NavigationService/SetMenu",
            field(2, field(4, deep_self(4, 10_000))),
            "loom.content.v1.SetMenuRequest",
        ),
        ("/loom.content.v1.TenancyService/ListTeams", b"\xff\xff\xff", "ListTeamsRequest"),
    ]
    for method, raw, name in cases:
        assert raw is not None
        with pytest.raises(grpc.RpcError) as info:
            _unary(channel, method, raw)
        _refused(info.value, name)  # type: ignore[arg-type]
    # The server answers the next request as ever: a menu 50 levels deep parses (and is then
    # refused by the menu rules, which name the level).
    with pytest.raises(grpc.RpcError) as info:
        _unary(
            channel,
            "/loom.content.v1.NavigationService/SetMenu",
            field(2, field(4, deep_self(4, 50))),
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert errors_of(info.value)["reason"] != "UNDECODABLE_REQUEST"  # type: ignore[arg-type]


def test_a_key_is_still_checked_first(content_server: ContentServer) -> None:
    raw = with_invalid_utf8(pages_pb2.GetPageRequest.DESCRIPTOR)
    assert raw is not None
    with pytest.raises(grpc.RpcError) as info:
        _unary(content_server.channel, "/loom.content.v1.PageService/GetPage", raw, metadata=())
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]


def test_streams_in_and_out(content_server: ContentServer) -> None:
    channel = content_server.channel
    # Client stream: UploadImage, its second message undecodable.
    upload = channel.stream_unary("/loom.content.v1.ImageService/UploadImage")
    first = images_pb2.UploadImageRequest(environment_id="x", filename="a.png").SerializeToString()

    def messages() -> Iterator[bytes]:
        yield first
        yield field(
            images_pb2.UploadImageRequest.DESCRIPTOR.fields_by_name["filename"].number, INVALID_UTF8
        )

    with pytest.raises(grpc.RpcError) as info:
        upload(messages(), metadata=ADMIN, timeout=10)
    code = info.value.code()  # type: ignore[attr-defined]
    # The first message names a missing environment; which check answers first depends on
    # when the second message arrives. Never INTERNAL.
    assert code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)

    with pytest.raises(grpc.RpcError) as info:
        upload(iter([field(1, INVALID_UTF8)]), metadata=ADMIN, timeout=10)
    _refused(info.value, "loom.content.v1.UploadImageRequest")  # type: ignore[arg-type]

    # Server stream: DownloadImage.
    download = channel.unary_stream("/loom.content.v1.ImageService/DownloadImage")
    with pytest.raises(grpc.RpcError) as info:
        list(download(field(1, INVALID_UTF8), metadata=ADMIN, timeout=10))
    _refused(info.value, "loom.content.v1.DownloadImageRequest")  # type: ignore[arg-type]

    # Bidi, public: reflection.
    reflect = channel.stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
    )
    number = reflection_pb2.ServerReflectionRequest.DESCRIPTOR.fields_by_name[
        "list_services"
    ].number
    with pytest.raises(grpc.RpcError) as info:
        list(reflect(iter([field(number, INVALID_UTF8)]), timeout=10))
    _refused(info.value, "grpc.reflection.v1alpha.ServerReflectionRequest")  # type: ignore[arg-type]


def test_vector_service(tmp_path: Path) -> None:
    with serving_vector(vector_settings(tmp_path), hash_embedder()) as server:
        raw = with_invalid_utf8(vector_pb2.EmbedTextsRequest.DESCRIPTOR)
        assert raw is not None
        with pytest.raises(grpc.RpcError) as info:
            _unary(server.channel, "/loom.vector.v1.VectorService/EmbedTexts", raw, SERVICE)
        _refused(info.value, "loom.vector.v1.EmbedTextsRequest")  # type: ignore[arg-type]
