"""OpenTelemetry traces of our processes, off by default (`LOOM_TRACES=otlp` turns them on).

- `configure(mode, service_name)`, once in a process's __main__: `off` imports no SDK and
  installs nothing; `otlp` exports spans in batches with the OTLP/gRPC exporter, configured
  by the standard variables (`OTEL_EXPORTER_OTLP_ENDPOINT`, `..._HEADERS`, ...; the sampler
  by `OTEL_TRACES_SAMPLER`); `console` prints them (a quick look without a collector).
  Tests `install` a provider of their own (the SDK's in-memory exporter).
- Servers: `server_interceptor()` (servicekit.server puts it first) makes a SERVER span per
  RPC, the child of the caller's `traceparent` metadata, with the request id as the
  attribute `loom.request_id`. Clients: servicekit.clients makes a CLIENT span per call and
  sends its context.
- Work that outlives a call: `traceparent()` is the current span's context as text (the index
  outbox stores it with each row), and `span_from(name, traceparents)` continues that trace
  later (the outbox delivery), linking to every trace when a batch joins several.

When tracing is off, every helper here returns at its first line, no span or context object
is made, and the servers and channels do not even get the interceptors: zero cost. Whether it
is on is decided when a server or channel is built, so configure before building them.

We use our own interceptors rather than opentelemetry-instrumentation-grpc: its server
wrapper leaves a span OK when the handler aborts with `abort_with_status`, which is how
servicekit.edge answers every error, and it needs the process-global tracer provider, which
can be set only once per process (tests start many servers in one)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from servicekit.handlers import Handler, observed

__all__ = [
    "REQUEST_ID_ATTRIBUTE",
    "Mode",
    "attached",
    "configure",
    "current_context",
    "current_ids",
    "enabled",
    "end_client_span",
    "install",
    "server_interceptor",
    "shutdown",
    "span",
    "span_from",
    "start_client_span",
    "traceparent",
    "uninstall",
]

Mode = Literal["off", "otlp", "console"]

REQUEST_ID_METADATA: Final = "x-request-id"
REQUEST_ID_ATTRIBUTE: Final = "loom.request_id"
TRACEPARENT: Final = "traceparent"
# Health checks are probes every few seconds: a trace each would bury the real ones.
UNTRACED_PREFIX: Final = "/grpc.health.v1."
# A delivery that joins more traces than this links to the first ones only.
MAX_LINKS: Final = 64
# Server codes that are the server's failure (OpenTelemetry's gRPC conventions); the others
# (NOT_FOUND, INVALID_ARGUMENT...) are the caller's, and leave a server span unset.
_SERVER_ERRORS: Final = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)

_PROPAGATOR: Final = TraceContextTextMapPropagator()
_tracer: trace.Tracer | None = None
_provider: trace.TracerProvider | None = None


def enabled() -> bool:
    return _tracer is not None


def install(provider: trace.TracerProvider) -> None:
    """Traces from now on go to `provider` (ours, never the process-global one)."""
    global _tracer, _provider
    _provider = provider
    _tracer = provider.get_tracer("loom")


def uninstall() -> None:
    """Tracing off again (servers and channels built meanwhile keep their interceptors)."""
    global _tracer, _provider
    _tracer = None
    _provider = None


def configure(mode: Mode, service_name: str) -> None:
    """Sets up tracing for this process (LOOM_TRACES); `off` does nothing at all."""
    if mode == "off":
        return
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
    )

    exporter: SpanExporter
    if mode == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    else:
        exporter = ConsoleSpanExporter()
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    install(provider)


def shutdown() -> None:
    """Exports what is still buffered and turns tracing off (at the end of a __main__)."""
    provider = _provider
    uninstall()
    stop = getattr(provider, "shutdown", None)
    if callable(stop):
        stop()


# ----------------------------------------------------------------------- spans of our own


def span(name: str, attributes: Mapping[str, Any] | None = None) -> AbstractContextManager[Any]:
    """A span around a block, child of the current one (a no-op context when off)."""
    if _tracer is None:
        return nullcontext()
    return _tracer.start_as_current_span(name, attributes=attributes)


def traceparent() -> str | None:
    """The current span's W3C `traceparent`, for work queued now and done later (None when
    tracing is off or no span is current)."""
    if _tracer is None:
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get(TRACEPARENT)


@contextmanager
def span_from(
    name: str, traceparents: Sequence[str | None], attributes: Mapping[str, Any] | None = None
) -> Iterator[None]:
    """A span for work that others queued with their `traceparent()`: the child of their
    span when they are all one trace, else the root of a new trace with a link to each."""
    if _tracer is None:
        yield
        return
    parents = [
        trace.get_current_span(_PROPAGATOR.extract({TRACEPARENT: text})).get_span_context()
        for text in dict.fromkeys(p for p in traceparents if p)
    ]
    valid = [p for p in parents if p.is_valid]
    root = otel_context.Context()
    if len({p.trace_id for p in valid}) == 1:
        parent = trace.set_span_in_context(trace.NonRecordingSpan(valid[0]), root)
        links: list[Link] = []
    else:
        parent = root
        links = [Link(p) for p in valid[:MAX_LINKS]]
    with _tracer.start_as_current_span(
        name, context=parent, kind=SpanKind.CONSUMER, links=links, attributes=attributes
    ):
        yield


def current_context() -> object | None:
    """The current trace context, to carry into another thread (None when off)."""
    return otel_context.get_current() if _tracer is not None else None


@contextmanager
def attached(carried: object | None) -> Iterator[None]:
    """Runs a block in a context from `current_context()` (of another thread)."""
    if carried is None or not isinstance(carried, otel_context.Context):
        yield
        return
    token = otel_context.attach(carried)
    try:
        yield
    finally:
        otel_context.detach(token)


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) in hex of the current span, for log lines; None when off or
    outside a span."""
    if _tracer is None:
        return None
    found = trace.get_current_span().get_span_context()
    if not found.is_valid:
        return None
    return trace.format_trace_id(found.trace_id), trace.format_span_id(found.span_id)


# ---------------------------------------------------------------------------- client side


def _rpc_attributes(full_method: str) -> dict[str, Any]:
    service, _, method = full_method.lstrip("/").rpartition("/")
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}


def _value(metadata: Any, key: str) -> str | None:
    for k, v in metadata or ():
        if k == key:
            return v.decode() if isinstance(v, bytes) else str(v)
    return None


def start_client_span(
    full_method: str, metadata: Sequence[tuple[str, Any]]
) -> tuple[trace.Span, tuple[tuple[str, str], ...]] | None:
    """A CLIENT span for a call about to start, and the metadata that carries its context
    (servicekit.clients adds it); None when tracing is off."""
    if _tracer is None:
        return None
    attributes = _rpc_attributes(full_method)
    request_id = _value(metadata, REQUEST_ID_METADATA)
    if request_id:
        attributes[REQUEST_ID_ATTRIBUTE] = request_id
    client = _tracer.start_span(
        full_method.lstrip("/"), kind=SpanKind.CLIENT, attributes=attributes
    )
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(client))
    return client, tuple(carrier.items())


def end_client_span(client: trace.Span, call: Any) -> None:
    """Ends the span of a call once it has its status (`call` None: it never started)."""
    code = _call_code(call)
    client.set_attribute("rpc.grpc.status_code", code.value[0])
    if code is not grpc.StatusCode.OK:
        details = call.details() if call is not None and callable(call.details) else None
        client.set_status(Status(StatusCode.ERROR, f"{code.name}: {details or ''}".rstrip(": ")))
    client.end()


def _call_code(call: Any) -> grpc.StatusCode:
    code = call.code() if call is not None else None
    return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN


# ---------------------------------------------------------------------------- server side

if TYPE_CHECKING:
    _Interceptor = grpc.ServerInterceptor[Any, Any]
else:
    _Interceptor = grpc.ServerInterceptor


@dataclass(frozen=True)
class _CallDetails(grpc.HandlerCallDetails):
    method: str
    invocation_metadata: tuple[tuple[str, Any], ...]


def server_interceptor() -> _Interceptor | None:
    """The interceptor that traces every RPC, or None when tracing is off."""
    return None if _tracer is None else _TracingInterceptor(_tracer)


def new_request_id() -> str:
    return uuid.uuid4().hex[:16]


class _TracingInterceptor(_Interceptor):
    """A SERVER span per RPC (health checks aside). The request id is the caller's
    `x-request-id`; a call without one gets one here, passed on in the metadata the inner
    interceptors read, so the edge's log lines and this span carry the same id."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Handler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        method: str = handler_call_details.method
        if method.startswith(UNTRACED_PREFIX):
            return continuation(handler_call_details)
        metadata = tuple(handler_call_details.invocation_metadata or ())
        request_id = _value(metadata, REQUEST_ID_METADATA)
        if request_id is None:
            request_id = new_request_id()
            handler_call_details = _CallDetails(
                method, (*metadata, (REQUEST_ID_METADATA, request_id))
            )
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        tracer = self._tracer
        name = method.lstrip("/")
        attributes = {**_rpc_attributes(method), REQUEST_ID_ATTRIBUTE: request_id}
        incoming = _value(metadata, TRACEPARENT)

        def start(_kind: str) -> tuple[AbstractContextManager[trace.Span], trace.Span]:
            parent = _PROPAGATOR.extract({TRACEPARENT: incoming}) if incoming else None
            scope = tracer.start_as_current_span(
                name,
                context=parent,
                kind=SpanKind.SERVER,
                attributes=attributes,
                record_exception=False,
                set_status_on_exception=False,
            )
            return scope, scope.__enter__()

        def finish(
            started: tuple[AbstractContextManager[trace.Span], trace.Span], code: grpc.StatusCode
        ) -> None:
            scope, server = started
            _end_server(server, code)
            scope.__exit__(None, None, None)

        return observed(handler, start, finish)


def _end_server(server: trace.Span, code: grpc.StatusCode) -> None:
    server.set_attribute("rpc.grpc.status_code", code.value[0])
    if code in _SERVER_ERRORS:
        server.set_status(Status(StatusCode.ERROR, code.name))
