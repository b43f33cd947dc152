"""The one interceptor at the edge of every server: request id, authentication, and the one
mapping from domain errors to gRPC statuses (with google.rpc ErrorInfo / BadRequest)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from servicekit import decoding, error_size, pagination
from servicekit.auth import Authenticator, bearer_token, reset_principal, set_principal
from servicekit.errors import InvalidArgument, ServiceError
from servicekit.logs import request_id_var

log = logging.getLogger(__name__)

ERROR_DOMAIN = "loom"
# Health and reflection answer without a key, so probes and `grpcurl list` just work.
PUBLIC_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")


def status_for(error: ServiceError) -> status_pb2.Status:
    """The status of a domain error, cut to fit a client's metadata limit (error_size)."""
    status = status_pb2.Status(code=error.code.value[0], message=error_size.message(error.message))
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN))
    status.details.append(info)
    if isinstance(error, InvalidArgument):
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description
                )
                for v in error_size.violations(error.violations)
            ]
        )
        detail = any_pb2.Any()
        detail.Pack(bad)
        status.details.append(detail)
    return status


def _internal_status(request_id: str) -> status_pb2.Status:
    return status_pb2.Status(
        code=code_pb2.INTERNAL, message=f"internal error (request id {request_id})"
    )


if TYPE_CHECKING:
    _Interceptor = grpc.ServerInterceptor[Any, Any]
    _Handler = grpc.RpcMethodHandler[Any, Any]
else:
    _Interceptor = grpc.ServerInterceptor
    _Handler = grpc.RpcMethodHandler


class EdgeInterceptor(_Interceptor):
    def __init__(self, authenticate: Authenticator, *, page_token_secret: str = "") -> None:
        """`page_token_secret`: what every replica of this deployment shares (our servers pass
        the service token); page tokens are signed with a key derived from it. Empty: a key of
        this process alone."""
        self._authenticate = authenticate
        self._page_key = (
            pagination.key_from_secret(page_token_secret)
            if page_token_secret
            else pagination.signing_key.get()
        )

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], _Handler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _Handler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method
        metadata = handler_call_details.invocation_metadata
        public = method.startswith(PUBLIC_PREFIXES)
        edge = self

        def request_id() -> str:
            return _metadata_value(metadata, "x-request-id") or os.urandom(8).hex()

        def authenticate() -> Any:
            return None if public else set_principal(edge._authenticate(bearer_token(metadata)))

        def fail(context: grpc.ServicerContext, exc: BaseException) -> None:
            if isinstance(exc, ServiceError):
                status = status_for(exc)
                log.info("%s -> %s: %s", method, exc.code.name, status.message)
                context.abort_with_status(rpc_status.to_status(status))
            code = context.code()  # type: ignore[attr-defined]
            if code not in (None, grpc.StatusCode.OK):
                raise exc  # already aborted deliberately (by grpc itself)
            if not context.is_active() or isinstance(exc, grpc.RpcError):
                # The client went away (cancelled, deadline): reading its request stream
                # raised. Nobody is listening for a status; this is not our failure.
                log.info("%s: client cancelled or timed out", method)
                raise exc
            log.exception("%s failed unexpectedly", method)
            context.abort_with_status(rpc_status.to_status(_internal_status(request_id_var.get())))

        def unary(behavior: Callable[[Any, grpc.ServicerContext], Any], accept: Any) -> Any:
            def call(request: Any, context: grpc.ServicerContext) -> Any:
                rid_token = request_id_var.set(request_id())
                key_token = pagination.signing_key.set(edge._page_key)
                principal_token = None
                try:
                    principal_token = authenticate()
                    return behavior(accept(request), context)
                except Exception as exc:
                    fail(context, exc)
                    raise
                finally:
                    if principal_token is not None:
                        reset_principal(principal_token)
                    pagination.signing_key.reset(key_token)
                    request_id_var.reset(rid_token)

            return call

        def streaming(
            behavior: Callable[[Any, grpc.ServicerContext], Iterator[Any]], accept: Any
        ) -> Any:
            def call(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                rid_token = request_id_var.set(request_id())
                key_token = pagination.signing_key.set(edge._page_key)
                principal_token = None
                try:
                    principal_token = authenticate()
                    yield from behavior(accept(request), context)
                except Exception as exc:
                    fail(context, exc)
                    raise
                finally:
                    if principal_token is not None:
                        reset_principal(principal_token)
                    pagination.signing_key.reset(key_token)
                    request_id_var.reset(rid_token)

            return call

        # A request that does not parse is INVALID_ARGUMENT (servicekit.decoding), not grpc's
        # INTERNAL "Exception deserializing request!".
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                unary(handler.unary_unary, decoding.checked),
                request_deserializer=decoding.tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                streaming(handler.unary_stream, decoding.checked),
                request_deserializer=decoding.tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                unary(handler.stream_unary, decoding.checked_stream),
                request_deserializer=decoding.tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        assert handler.stream_stream is not None
        return grpc.stream_stream_rpc_method_handler(
            streaming(handler.stream_stream, decoding.checked_stream),
            request_deserializer=decoding.tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )


def _metadata_value(metadata: Any, key: str) -> str | None:
    for k, v in metadata or ():
        if k == key:
            return v.decode() if isinstance(v, bytes) else str(v)
    return None
