"""The one client kit for calls between our own services (content_service, vector_service,
image_worker and loom_backup all call each other through it).

- `open_channel(address, token, timeout=..., retry=...)`: a channel whose every call carries
  the service token (`authorization: Bearer ...`) and a deadline (`timeout`, unless the call
  passes its own), and, with `retry`, lets gRPC retry UNAVAILABLE for the named methods with
  backoff through the service config's `retryPolicy` (`grpc.enable_retries`).
- `TRANSIENT` / `is_transient(exc)`: the status codes a later try of the same call may not
  meet. A caller whose decision differs builds its own set on this one, where it decides.
- `error_details(exc)`: the google.rpc details servicekit.edge puts on a status (ErrorInfo
  reason, domain and metadata; BadRequest field violations), read with grpcio-status.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from servicekit import tracing
from servicekit.errors import FieldViolation

__all__ = [
    "TRANSIENT",
    "ErrorDetails",
    "Retry",
    "bearer",
    "error_details",
    "is_transient",
    "open_channel",
]

# Failures that can go away by themselves: a later try of the same call may succeed. Whether
# to try again is still the caller's decision (a try that failed DEADLINE_EXCEEDED may have
# done its work: our calls between services are idempotent, a claim aside).
TRANSIENT: Final = frozenset(
    {
        # The call never reached a server, or the server is down or restarting.
        grpc.StatusCode.UNAVAILABLE,
        # The server was slower than the deadline (a model call, a busy database); the next
        # try may be quicker. The first one may have done the work: see idempotent above.
        grpc.StatusCode.DEADLINE_EXCEEDED,
        # A server limit that eases with time (too many claims waiting, a full pool, a rate
        # limit).
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        # A write lost a race with another one (servicekit.errors.Aborted); the same call
        # again usually succeeds.
        grpc.StatusCode.ABORTED,
        # An unexpected server error (servicekit.edge answers INTERNAL for any exception it
        # does not know), or a broken connection that gRPC reports as INTERNAL: tried again
        # with backoff rather than given up on at once.
        grpc.StatusCode.INTERNAL,
        # A server that failed without a status, or a proxy in between: as INTERNAL.
        grpc.StatusCode.UNKNOWN,
    }
)

# The only code the channel retries by itself. A call that failed UNAVAILABLE usually never
# reached a server; DEADLINE_EXCEEDED is not retried there because the deadline covers all of
# a call's tries, so there is no time left for another one.
CHANNEL_RETRIED_CODES: Final = ("UNAVAILABLE",)


def is_transient(exc: grpc.RpcError) -> bool:
    return exc.code() in TRANSIENT


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    """The metadata that authenticates a call with `token` (servicekit.auth.bearer_token
    reads it on the server)."""
    return (("authorization", f"Bearer {token}"),)


@dataclass(frozen=True)
class Retry:
    """gRPC's own retries (the channel's service config `retryPolicy`) of UNAVAILABLE for the
    named methods, `max_attempts` tries in all with exponential backoff, within each call's
    deadline. Name only methods that are safe to send twice."""

    methods: Sequence[tuple[str, str]]  # (full service name, method name)
    max_attempts: int
    initial_backoff_seconds: float
    max_backoff_seconds: float
    backoff_multiplier: float = 2

    def service_config(self) -> str:
        return json.dumps(
            {
                "methodConfig": [
                    {
                        "name": [
                            {"service": service, "method": method}
                            for service, method in self.methods
                        ],
                        "retryPolicy": {
                            "maxAttempts": self.max_attempts,
                            "initialBackoff": f"{self.initial_backoff_seconds:g}s",
                            "maxBackoff": f"{self.max_backoff_seconds:g}s",
                            "backoffMultiplier": self.backoff_multiplier,
                            "retryableStatusCodes": list(CHANNEL_RETRIED_CODES),
                        },
                    }
                ]
            }
        )


ChannelOption = tuple[str, int | str]


def open_channel(
    address: str,
    token: str,
    *,
    timeout: float,
    retry: Retry | None = None,
    options: Sequence[ChannelOption] = (),
) -> grpc.Channel:
    """A channel to one of our services. Every call on it sends `token` as its bearer (unless
    the call brings its own `authorization`) and has a deadline: the call's own `timeout`, or
    this `timeout`. `options` are further gRPC channel options (buffers, reconnect backoff).
    Closing the channel cancels the calls in flight. With tracing on (servicekit.tracing,
    decided now), every call is a client span whose context goes along as `traceparent`."""
    all_options: list[ChannelOption] = []
    if retry is not None:
        all_options += [("grpc.enable_retries", 1), ("grpc.service_config", retry.service_config())]
    all_options += options
    channel = grpc.insecure_channel(address, options=all_options)
    defaults = _TracedCalls if tracing.enabled() else _CallDefaults
    return grpc.intercept_channel(channel, defaults(token, timeout))


@dataclass(frozen=True)
class ErrorDetails:
    """What a failed call says about itself: its status, and the google.rpc details
    servicekit.edge sends (ErrorInfo; BadRequest for INVALID_ARGUMENT). Empty where the
    server sent none."""

    code: grpc.StatusCode
    message: str
    reason: str = ""
    domain: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)
    field_violations: tuple[FieldViolation, ...] = ()


def error_details(exc: grpc.RpcError) -> ErrorDetails:
    """The details of a failed call; never raises (an error that is not a finished call, or a
    status at odds with its code, gives just the code and message)."""
    code = exc.code() if callable(getattr(exc, "code", None)) else grpc.StatusCode.UNKNOWN
    message = (exc.details() if callable(getattr(exc, "details", None)) else None) or ""
    try:
        # The error a call raises is that call: it has code() and trailing_metadata().
        status = rpc_status.from_call(cast(grpc.Call, exc))
    except (AttributeError, ValueError):
        status = None
    details: list[any_pb2.Any] = list(status.details) if status else []
    info = _first(details, error_details_pb2.ErrorInfo())
    bad = _first(details, error_details_pb2.BadRequest())
    return ErrorDetails(
        code=code,
        message=str(message),
        reason=str(info.reason),
        domain=str(info.domain),
        metadata={str(k): str(v) for k, v in info.metadata.items()},
        field_violations=tuple(
            FieldViolation(str(v.field), str(v.description)) for v in bad.field_violations
        ),
    )


_Detail = TypeVar("_Detail", bound=Message)


def _first(details: Sequence[any_pb2.Any], into: _Detail) -> _Detail:
    """`into`, filled from the first detail of its type (left empty when there is none)."""
    for detail in details:
        if detail.Unpack(into):  # False, and `into` untouched, for a detail of another type
            break
    return into


# ------------------------------------------------------------------------------ the defaults

if TYPE_CHECKING:
    _UnaryUnary = grpc.UnaryUnaryClientInterceptor[Any, Any]
    _UnaryStream = grpc.UnaryStreamClientInterceptor[Any, Any]
    _StreamUnary = grpc.StreamUnaryClientInterceptor[Any, Any]
    _StreamStream = grpc.StreamStreamClientInterceptor[Any, Any]
else:
    _UnaryUnary = grpc.UnaryUnaryClientInterceptor
    _UnaryStream = grpc.UnaryStreamClientInterceptor
    _StreamUnary = grpc.StreamUnaryClientInterceptor
    _StreamStream = grpc.StreamStreamClientInterceptor


@dataclass(frozen=True)
class _CallDetails(grpc.ClientCallDetails):
    method: str
    timeout: float | None
    metadata: Any
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None


class _CallDefaults(_UnaryUnary, _UnaryStream, _StreamUnary, _StreamStream):
    """Adds the bearer token and the default deadline to a call that lacks them."""

    def __init__(self, token: str, timeout: float) -> None:
        self._auth = bearer(token)
        self._timeout = timeout

    def _details(
        self, details: grpc.ClientCallDetails, extra: tuple[tuple[str, str], ...] = ()
    ) -> grpc.ClientCallDetails:
        metadata = tuple(details.metadata or ())
        if not any(key == "authorization" for key, _ in metadata):
            metadata = self._auth + metadata
        metadata += extra
        return _CallDetails(
            method=details.method,
            timeout=self._timeout if details.timeout is None else details.timeout,
            metadata=metadata,
            credentials=details.credentials,
            wait_for_ready=details.wait_for_ready,
            compression=details.compression,
        )

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


class _TracedCalls(_CallDefaults):
    """_CallDefaults, and every call a client span (servicekit.tracing) ended by the call's
    own completion, whether it was blocking, a future or a stream."""

    def _traced(self, continuation: Any, details: Any, request: Any) -> Any:
        started = tracing.start_client_span(details.method, tuple(details.metadata or ()))
        if started is None:  # tracing was turned off since the channel was opened
            return continuation(self._details(details), request)
        client, carried = started
        try:
            call = continuation(self._details(details, carried), request)
        except BaseException:
            tracing.end_client_span(client, None)
            raise
        call.add_done_callback(lambda done: tracing.end_client_span(client, done))
        return call

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return self._traced(continuation, details, request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return self._traced(continuation, details, request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return self._traced(continuation, details, requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return self._traced(continuation, details, requests)
