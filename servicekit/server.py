"""Server wiring shared by our processes: thread-pool server with the interceptors it is given
(ours pass servicekit.edge's), health, reflection, optional TLS, graceful shutdown on
SIGTERM/SIGINT, and what an operator sees: with tracing on (servicekit.tracing) a span per RPC,
and with a metrics port the per-RPC metrics and a Prometheus endpoint (servicekit.metrics).

We serve with the sync `grpc.server` and a thread pool because the data layer (SQLAlchemy
sessions, LanceDB, Pillow) is synchronous, not for speed. `make bench` measures it against
`grpc.aio` on the same Echo RPC (server_flavour in docs/benchmarks.md): on our 2-core machine
the two serve about the same unary calls/s at about the same CPU per call, within the
machine's noise; the benchmark's target is that sync costs no more than 10%."""

from __future__ import annotations

import errno
import logging
import signal
import socket
import threading
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client.registry import Collector

from servicekit import tracing
from servicekit.lifeline import Lifeline
from servicekit.metrics import (
    MetricsPortInUse,
    MetricsServer,
    RpcMetricsInterceptor,
    serve_metrics,
)

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    # When set, clients must present a certificate signed by this CA (mTLS).
    client_ca: Path | None = None


@dataclass
class Service:
    name: str  # full service name, e.g. "loom.content.v1.PageService"
    add: Callable[[Any, grpc.Server], None]
    servicer: Any

    @classmethod
    def of(cls, pb2: ModuleType, pb2_grpc: ModuleType, name: str, servicer: Any) -> Service:
        """The generated service `name`: its full name from pb2's descriptor, its registration
        function from pb2_grpc (grpc's generated `add_<name>Servicer_to_server`)."""
        full_name = pb2.DESCRIPTOR.services_by_name[name].full_name
        return cls(full_name, getattr(pb2_grpc, f"add_{name}Servicer_to_server"), servicer)


@dataclass(frozen=True)
class MetricsOptions:
    """Where a server serves Prometheus metrics (port 0: a free one), and the collectors of
    its scrape-time gauges."""

    host: str
    port: int
    collectors: Sequence[Collector] = ()


@dataclass
class Running:
    server: grpc.Server
    port: int
    health: health.HealthServicer
    on_stop: list[Callable[[], None]] = field(default_factory=list)
    # Other ports the process serves beside gRPC, by name, as bound (content_service:
    # "media_http"); each is stopped by an on_stop hook.
    listeners: dict[str, int] = field(default_factory=dict)
    metrics: MetricsServer | None = None

    @property
    def metrics_port(self) -> int | None:
        """The port of the Prometheus endpoint (None: no metrics served)."""
        return self.metrics.port if self.metrics is not None else None

    def stop(self, grace: float | None) -> None:
        """Health NOT_SERVING first (load balancers stop sending), then drain in-flight calls."""
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        for hook in self.on_stop:
            hook()


def build_server(
    *,
    services: Sequence[Service],
    interceptors: Sequence[Any],
    host: str,
    port: int,
    workers: int,
    tls: TlsFiles | None = None,
    metrics: MetricsOptions | None = None,
) -> Running:
    """The server, bound and not started. `interceptors` run in their order, after the
    tracing one (when tracing is on: its span covers them) and the metrics one (when
    `metrics` is given: authentication and domain errors are counted with their codes).
    Raises PortInUse, or servicekit.metrics.MetricsPortInUse for the metrics port."""
    outer: list[Any] = []
    traced = tracing.server_interceptor()
    if traced is not None:
        outer.append(traced)
    if metrics is not None:
        outer.append(RpcMetricsInterceptor())
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rpc"),
        interceptors=[*outer, *interceptors],
        options=[
            # Never share a port with another process by accident.
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ],
    )
    for service in services:
        service.add(service.servicer, server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [s.name for s in services]
    for name in ["", *names]:
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        [
            *names,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    address = f"{host}:{port}"
    check_free(host, port)
    if tls is None:
        bound = server.add_insecure_port(address)
    else:
        credentials = grpc.ssl_server_credentials(
            [(tls.key.read_bytes(), tls.cert.read_bytes())],
            root_certificates=tls.client_ca.read_bytes() if tls.client_ca else None,
            require_client_auth=tls.client_ca is not None,
        )
        bound = server.add_secure_port(address, credentials)
    if bound == 0:
        raise OSError(f"could not bind {address}")
    running = Running(server=server, port=bound, health=health_servicer)
    if metrics is not None:
        try:
            running.metrics = serve_metrics(metrics.host, metrics.port, metrics.collectors)
        except BaseException:
            server.stop(None)  # frees the gRPC port this never started
            raise
        running.on_stop.append(running.metrics.stop)
    return running


class PortInUse(OSError):
    """Another process listens on the address: the entry points report it in one line."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(f"{host}:{port} is already in use (is another one running?)")
        self.host = host
        self.port = port


def check_free(host: str, port: int) -> None:
    """Raises PortInUse when something listens on host:port. gRPC's own bind failure is a
    RuntimeError with a C-core log line beside it; asking first gives one clear error. With
    SO_REUSEADDR, as gRPC binds, so that connections in TIME_WAIT do not count."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return  # gRPC reports a bad host itself
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(host, port) from None
            raise


def wait_for_signal(stopping: threading.Event) -> None:
    """Blocks the main thread until `stopping` is set by a signal handler, or the supervisor
    that started this process is gone (servicekit.lifeline; then `stopping` is set here).

    Never one untimed wait: Python runs signal handlers in the main thread, and a signal the
    kernel delivers to another thread (gRPC's, say) does not interrupt the main thread's lock
    wait, so an untimed `Event.wait()` could sleep through SIGTERM forever (seen: 1 run in 3
    of the image worker ignored SIGTERM). A timed wait returns to the interpreter, which then
    runs the pending handler."""
    lifeline = Lifeline.from_env()
    while not stopping.wait(0.2):
        if lifeline.gone():
            stopping.set()


def serve_until_signalled(running: Running, grace: float, what: str) -> None:
    """Starts the server and blocks until SIGTERM/SIGINT, then stops gracefully."""
    stopping = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("%s got %s; draining for up to %.0fs", what, signal.Signals(signum).name, grace)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    running.server.start()
    log.info("%s listening on port %d", what, running.port)
    if running.metrics is not None:
        log.info("%s serves Prometheus metrics at %s", what, running.metrics.url)
    wait_for_signal(stopping)
    running.stop(grace)
    log.info("%s stopped", what)


def serve_main(
    build: Callable[[], Running],
    *,
    what: str,
    grace: float,
    port_setting: str | Callable[[PortInUse], str],
    metrics_setting: str,
) -> int:
    """A server's __main__ once its settings are read: builds the server, serves it until
    SIGTERM/SIGINT and returns 0, exporting the traces still buffered on the way out. A
    port already taken is one log line naming its setting, and 2. Whatever else `build`
    raises is the caller's to report."""
    try:
        running = build()
    except PortInUse as exc:
        setting = port_setting if isinstance(port_setting, str) else port_setting(exc)
        log.error("%s; set %s to another port", exc, setting)
        return 2
    except MetricsPortInUse as exc:
        log.error("%s; set %s to another port", exc, metrics_setting)
        return 2
    try:
        serve_until_signalled(running, grace, what)
    finally:
        tracing.shutdown()
    return 0
