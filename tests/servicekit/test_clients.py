"""servicekit.clients against real gRPC servers on loopback port 0: the bearer token and a
deadline on every call, the channel's retry policy, the one transient set (and the callers'
decisions built on it), and the google.rpc details of a real content_service error."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from loom.bench.v1 import echo_pb2, echo_pb2_grpc
from loom.content.v1 import tenancy_pb2, tenancy_pb2_grpc

from content_service.indexing import dispatcher
from image_worker import worker
from servicekit.auth import Principal, Role, same_secret
from servicekit.clients import (
    TRANSIENT,
    ErrorDetails,
    Retry,
    bearer,
    error_details,
    is_transient,
    open_channel,
)
from servicekit.edge import EdgeInterceptor
from servicekit.errors import FieldViolation, Unauthenticated
from servicekit.server import Running, Service, build_server
from tests.conftest import ContentServer
from tests.support import SERVICE_TOKEN

TOKEN = "kit-test-token"
ECHO = "loom.bench.v1.EchoService"


@dataclass
class Seen:
    """What the server saw of each call."""

    authorization: list[str] = field(default_factory=list)
    request_ids: list[str] = field(default_factory=list)
    time_remaining: list[float | None] = field(default_factory=list)
    # Echo fails UNAVAILABLE this many times before it answers (the retry test).
    fail_first: int = 0
    # Echo sleeps this long before it answers (the deadline test).
    delay: float = 0.0
    # Echo aborts with this rich status (the details test).
    status: status_pb2.Status | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class RecordingEcho(echo_pb2_grpc.EchoServiceServicer):
    def __init__(self, seen: Seen) -> None:
        self.seen = seen

    def Echo(self, request: echo_pb2.EchoRequest, context: grpc.ServicerContext) -> Any:
        metadata = dict(context.invocation_metadata())
        with self.seen.lock:
            self.seen.authorization.append(str(metadata.get("authorization", "")))
            self.seen.request_ids.append(str(metadata.get("x-request-id", "")))
            self.seen.time_remaining.append(context.time_remaining())
            failing = self.seen.fail_first > 0
            self.seen.fail_first -= 1
        if failing:
            context.abort(grpc.StatusCode.UNAVAILABLE, "not yet")
        if self.seen.status is not None:
            context.abort_with_status(rpc_status.to_status(self.seen.status))
        time.sleep(self.seen.delay)
        return echo_pb2.EchoResponse(payload=b"x" * request.response_bytes)


def authenticate(secret: str | None) -> Principal:
    # Like our services' authenticators: the service token or nothing.
    if secret and same_secret(secret, TOKEN):
        return Principal(role=Role.SERVICE)
    raise Unauthenticated("wrong token")


@dataclass
class EchoServer:
    running: Running
    seen: Seen

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.running.port}"


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    seen = Seen()
    running = build_server(
        services=[Service.of(echo_pb2, echo_pb2_grpc, "EchoService", RecordingEcho(seen))],
        interceptors=[EdgeInterceptor(authenticate)],
        host="127.0.0.1",
        port=0,
        workers=4,
    )
    running.server.start()
    try:
        yield EchoServer(running, seen)
    finally:
        running.stop(grace=0)


def call(channel: grpc.Channel, **kwargs: Any) -> echo_pb2.EchoResponse:
    response: echo_pb2.EchoResponse = echo_pb2_grpc.EchoServiceStub(channel).Echo(
        echo_pb2.EchoRequest(response_bytes=3), **kwargs
    )
    return response


def failure(channel: grpc.Channel, **kwargs: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(channel, **kwargs)
    return info.value


# --------------------------------------------------------------------- bearer and deadline


def test_every_call_sends_the_token_as_its_bearer(echo: EchoServer) -> None:
    with open_channel(echo.address, TOKEN, timeout=5.0) as channel:
        assert call(channel).payload == b"xxx"
        call(channel, metadata=(("x-request-id", "job-1"),))
    assert echo.seen.authorization == [f"Bearer {TOKEN}"] * 2
    # The caller's own metadata travels beside it.
    assert echo.seen.request_ids == ["", "job-1"]


def test_a_wrong_token_is_refused_by_the_server(echo: EchoServer) -> None:
    with open_channel(echo.address, "not-the-token", timeout=5.0) as channel:
        error = failure(channel)
    details = error_details(error)
    assert (details.code, details.reason) == (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")


def test_a_calls_own_authorization_wins(echo: EchoServer) -> None:
    # loom_backup.reconcile.level sends bearer(token) itself, on whatever channel it is given.
    with open_channel(echo.address, "not-the-token", timeout=5.0) as channel:
        call(channel, metadata=bearer(TOKEN))
    assert echo.seen.authorization == [f"Bearer {TOKEN}"]


def test_every_call_has_a_deadline_the_channels_unless_it_brings_its_own(
    echo: EchoServer,
) -> None:
    with open_channel(echo.address, TOKEN, timeout=4.0) as channel:
        call(channel)
        call(channel, timeout=60.0)
    default, own = echo.seen.time_remaining
    # The server reads the deadline back with some slack of its own clock.
    assert default is not None
    assert 0 < default < 4.5
    assert own is not None
    assert 30 < own < 61


def test_the_default_deadline_ends_a_slow_call(echo: EchoServer) -> None:
    echo.seen.delay = 2.0
    with open_channel(echo.address, TOKEN, timeout=0.3) as channel:
        started = time.monotonic()
        error = failure(channel)
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 1.5
    assert is_transient(error)


# ---------------------------------------------------------------------------------- retries


def test_the_retry_policy_retries_unavailable_for_the_named_methods(echo: EchoServer) -> None:
    retry = Retry(
        methods=[(ECHO, "Echo")],
        max_attempts=3,
        initial_backoff_seconds=0.01,
        max_backoff_seconds=0.05,
    )
    echo.seen.fail_first = 2
    with open_channel(echo.address, TOKEN, timeout=5.0, retry=retry) as channel:
        assert call(channel).payload == b"xxx"
    assert len(echo.seen.authorization) == 3  # two UNAVAILABLE, then the answer


def test_without_a_retry_policy_or_for_another_method_nothing_is_retried(
    echo: EchoServer,
) -> None:
    other = Retry(
        methods=[(ECHO, "Other")],
        max_attempts=3,
        initial_backoff_seconds=0.01,
        max_backoff_seconds=0.05,
    )
    for retry in (None, other):
        echo.seen.fail_first = 1
        with open_channel(echo.address, TOKEN, timeout=5.0, retry=retry) as channel:
            error = failure(channel)
        assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert len(echo.seen.authorization) == 2


def test_the_retry_policy_is_grpcs_service_config() -> None:
    retry = Retry(
        methods=[(ECHO, "Echo")], max_attempts=4, initial_backoff_seconds=0.2, max_backoff_seconds=2
    )
    assert retry.service_config() == (
        '{"methodConfig": [{"name": [{"service": "loom.bench.v1.EchoService", "method": "Echo"}], '
        '"retryPolicy": {"maxAttempts": 4, "initialBackoff": "0.2s", "maxBackoff": "2s", '
        '"backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}]}'
    )


# ---------------------------------------------------------------------------- transient set


def test_the_transient_codes() -> None:
    # The set both callers shared before the kit; a change here changes both.
    assert sorted(code.name for code in TRANSIENT) == [
        "ABORTED",
        "DEADLINE_EXCEEDED",
        "INTERNAL",
        "RESOURCE_EXHAUSTED",
        "UNAVAILABLE",
        "UNKNOWN",
    ]


def test_the_callers_decisions_are_built_on_the_transient_set() -> None:
    # The dispatcher does not split a batch per source on these (nothing about one source).
    assert (
        TRANSIENT | {grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAUTHENTICATED}
        == dispatcher.WHOLE_BATCH
    )
    # The worker waits out a model mismatch while a reindex runs.
    assert TRANSIENT | {grpc.StatusCode.FAILED_PRECONDITION} == worker._INDEX_RETRIED


def test_a_service_that_is_not_there_is_transient() -> None:
    with open_channel("127.0.0.1:9", TOKEN, timeout=2.0) as channel:
        error = failure(channel)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert is_transient(error)
    assert error_details(error).reason == ""


# --------------------------------------------------------------------------------- details


def test_details_of_a_real_content_service_error(content_server: ContentServer) -> None:
    # The very call vector_service's key lookup makes, with a bad request.
    with open_channel(content_server.address, SERVICE_TOKEN, timeout=10.0) as channel:
        stub = tenancy_pb2_grpc.TenancyServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.ResolveApiKey(tenancy_pb2.ResolveApiKeyRequest(secret=""))
    error = raised.value
    assert error_details(error) == ErrorDetails(
        code=grpc.StatusCode.INVALID_ARGUMENT,
        message="secret: is required",
        reason="INVALID_ARGUMENT",
        domain="loom",
        field_violations=(FieldViolation("secret", "is required"),),
    )
    assert not is_transient(error)


def test_details_with_error_info_metadata(echo: EchoServer) -> None:
    info = any_pb2.Any()
    info.Pack(
        error_details_pb2.ErrorInfo(
            reason="LEASE_LOST", domain="loom", metadata={"image_id": "img1", "attempt": "2"}
        )
    )
    bad = any_pb2.Any()
    bad.Pack(
        error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field="a", description="x"),
                error_details_pb2.BadRequest.FieldViolation(field="b.c", description="y"),
            ]
        )
    )
    echo.seen.status = status_pb2.Status(
        code=code_pb2.FAILED_PRECONDITION, message="gone", details=[info, bad]
    )
    with open_channel(echo.address, TOKEN, timeout=5.0) as channel:
        error = failure(channel)
    assert error_details(error) == ErrorDetails(
        code=grpc.StatusCode.FAILED_PRECONDITION,
        message="gone",
        reason="LEASE_LOST",
        domain="loom",
        metadata={"image_id": "img1", "attempt": "2"},
        field_violations=(FieldViolation("a", "x"), FieldViolation("b.c", "y")),
    )


def test_details_of_an_error_that_is_not_a_call() -> None:
    assert error_details(grpc.RpcError()) == ErrorDetails(grpc.StatusCode.UNKNOWN, "")
