"""What the interceptors that wrap a server's handlers share (servicekit.metrics and
servicekit.tracing): rebuilding a handler around a wrapped behavior, running something before
and after every call with the status code it ended with, and that status code."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

__all__ = ["Handler", "final_code", "observed", "rewrap"]

if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]
else:
    Handler = grpc.RpcMethodHandler

# wrap(behavior, kind) -> the new behavior; kind as go-grpc-prometheus names it.
Wrap = Callable[[Any, str], Any]


def rewrap(handler: Handler, unary: Wrap, streaming: Wrap) -> Handler:
    """`handler` with its behavior wrapped: `unary(behavior, kind)` for the methods that
    answer one response, `streaming(behavior, kind)` for those that answer a stream (whose
    wrapper must be a generator)."""
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            unary(handler.unary_unary, "unary"),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            streaming(handler.unary_stream, "server_stream"),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(
            unary(handler.stream_unary, "client_stream"),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    assert handler.stream_stream is not None
    return grpc.stream_stream_rpc_method_handler(
        streaming(handler.stream_stream, "bidi_stream"),
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def final_code(context: grpc.ServicerContext, failed: bool) -> grpc.StatusCode:
    """The status a call ends with, once its behavior returned (`failed`: raised): the one
    set on the context (servicekit.edge aborts with it), else OK; for an exception nobody
    turned into a status, what gRPC then sends (UNKNOWN, or CANCELLED when the client left)."""
    code = context.code()  # type: ignore[attr-defined]
    if isinstance(code, grpc.StatusCode):
        return code
    if not failed:
        return grpc.StatusCode.OK
    return grpc.StatusCode.UNKNOWN if context.is_active() else grpc.StatusCode.CANCELLED


_Started = TypeVar("_Started")


def observed(
    handler: Handler,
    start: Callable[[str], _Started],
    finish: Callable[[_Started, grpc.StatusCode], None],
) -> Handler:
    """`handler` with `start(kind)` called as each call begins and `finish(what start
    returned, the status code)` as it ends, however it ends (a stream: once it is exhausted,
    failed or dropped)."""

    def unary(behavior: Callable[[Any, grpc.ServicerContext], Any], kind: str) -> Any:
        def call(request: Any, context: grpc.ServicerContext) -> Any:
            started = start(kind)
            failed = True
            try:
                response = behavior(request, context)
                failed = False
                return response
            finally:
                finish(started, final_code(context, failed))

        return call

    def streaming(behavior: Callable[[Any, grpc.ServicerContext], Iterator[Any]], kind: str) -> Any:
        def call(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            started = start(kind)
            failed = True
            try:
                yield from behavior(request, context)
                failed = False
            finally:
                finish(started, final_code(context, failed))

        return call

    return rewrap(handler, unary, streaming)
