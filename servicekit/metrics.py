"""Prometheus metrics of our processes: the per-RPC families every server exports, and the
scrape endpoint each process serves on its own port (`*_METRICS_PORT`, off by default).

Families are process-wide (prometheus_client's default registry, with its `process_*` and
`python_*` collectors): each process is one service. Counting an event costs prometheus_client
a lock and an add; the per-RPC families, counted on every call, take no lock at all (RpcStats).
Gauges that need a query (outbox rows, jobs by state, table stats) are not kept up to date on
the request path: each server hands `serve_metrics` collectors that compute them when
Prometheus scrapes, so a busy server pays nothing for them between scrapes.

The RPC families follow grpc-ecosystem/go-grpc-prometheus, so dashboards and alerts written
for it work here: `grpc_server_started_total`, `grpc_server_handled_total` (by `grpc_code`),
`grpc_server_handling_seconds` (histogram), plus `grpc_server_calls_in_flight`."""

from __future__ import annotations

import bisect
import errno
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import grpc
from prometheus_client import REGISTRY, CollectorRegistry, disable_created_metrics
from prometheus_client import start_http_server as _start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from servicekit.handlers import Handler, observed

__all__ = [
    "LATENCY_BUCKETS",
    "GaugeCollector",
    "MetricsPortInUse",
    "MetricsServer",
    "RpcMetricsInterceptor",
    "serve_metrics",
]

log = logging.getLogger(__name__)

# No `*_created` series beside every counter and histogram: they double what each scrape
# carries, and Prometheus reads a restart from the counter itself.
disable_created_metrics()  # type: ignore[no-untyped-call]

# Seconds: from a cached read (sub-millisecond) to a long-poll claim (20 s).
LATENCY_BUCKETS: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)

_RPC_LABELS = ("grpc_type", "grpc_service", "grpc_method")
# Indexed by a status code's number: a fixed list, so counting never inserts into a dict
# that a scrape may be reading.
_CODES: Final = sorted(grpc.StatusCode, key=lambda code: code.value[0])


class _Cells:
    """One method's numbers as one thread counted them (only that thread writes them)."""

    __slots__ = ("buckets", "handled", "seconds", "started")

    def __init__(self, buckets: int) -> None:
        self.started = 0
        self.handled = [0] * len(_CODES)
        # Calls per latency bucket, not cumulative; the last one is +Inf.
        self.buckets = [0] * (buckets + 1)
        self.seconds = 0.0


class RpcStats(Collector):
    """The per-RPC families, counted without a lock: the hot path of a call is a few integer
    additions on cells that only its own thread writes (one set per thread of the server's
    pool), and a scrape sums the threads' cells. prometheus_client's metric objects take a
    lock per update; five of them per call were most of the interceptor's cost.

    Exposes grpc_server_started_total, grpc_server_handled_total (by grpc_code),
    grpc_server_handling_seconds (histogram) and grpc_server_calls_in_flight (started minus
    handled, computed at scrape time)."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self.bounds = tuple(float(b) for b in buckets)
        self._local = threading.local()
        # Every thread's cells, by (kind, full method). A thread's dict only grows, under the
        # lock, so a scrape can copy it under the same lock.
        self._shards: list[dict[tuple[str, str], _Cells]] = []
        self._lock = threading.Lock()

    def cells(self, kind: str, full_method: str) -> _Cells:
        shard: dict[tuple[str, str], _Cells] | None = getattr(self._local, "shard", None)
        if shard is None:
            shard = self._local.shard = {}
            with self._lock:
                self._shards.append(shard)
        key = (kind, full_method)
        found = shard.get(key)
        if found is None:
            with self._lock:
                found = shard[key] = _Cells(len(self.bounds))
        return found

    def observe(self, cells: _Cells, seconds: float, code: grpc.StatusCode) -> None:
        cells.buckets[bisect.bisect_left(self.bounds, seconds)] += 1
        cells.seconds += seconds
        cells.handled[code.value[0]] += 1

    def _families(self) -> list[Metric]:
        return [
            CounterMetricFamily(
                "grpc_server_started_total", "RPCs started on the server.", labels=_RPC_LABELS
            ),
            CounterMetricFamily(
                "grpc_server_handled_total",
                "RPCs completed on the server, by status code.",
                labels=(*_RPC_LABELS, "grpc_code"),
            ),
            HistogramMetricFamily(
                "grpc_server_handling_seconds",
                "Time from the start of an RPC to its status, on the server.",
                labels=_RPC_LABELS,
            ),
            GaugeMetricFamily(
                "grpc_server_calls_in_flight",
                "RPCs started and not yet completed.",
                labels=_RPC_LABELS,
            ),
        ]

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            shards = [list(shard.items()) for shard in self._shards]
        totals: dict[tuple[str, str], _Cells] = {}
        for shard in shards:
            for key, cells in shard:
                total = totals.get(key)
                if total is None:
                    total = totals[key] = _Cells(len(self.bounds))
                # Read once each: the owning thread may be adding meanwhile.
                total.started += cells.started
                total.handled = [a + b for a, b in zip(total.handled, cells.handled, strict=True)]
                total.buckets = [a + b for a, b in zip(total.buckets, cells.buckets, strict=True)]
                total.seconds += cells.seconds
        started, handled, handling, in_flight = self._families()
        assert isinstance(started, CounterMetricFamily)
        assert isinstance(handled, CounterMetricFamily)
        assert isinstance(handling, HistogramMetricFamily)
        assert isinstance(in_flight, GaugeMetricFamily)
        for (kind, full_method), total in sorted(totals.items()):
            service, _, name = full_method.lstrip("/").rpartition("/")
            labels = [kind, service, name]
            started.add_metric(labels, total.started)
            for code in _CODES:
                count = total.handled[code.value[0]]
                if count:
                    handled.add_metric([*labels, code.name], count)
            cumulative = list(itertools.accumulate(total.buckets))
            # The last bucket (+Inf) counts every call that ended.
            bounds = [*(f"{b:g}" for b in self.bounds), "+Inf"]
            handling.add_metric(
                labels, list(zip(bounds, cumulative, strict=True)), sum_value=total.seconds
            )
            in_flight.add_metric(labels, max(0, total.started - sum(total.handled)))
        return [started, handled, handling, in_flight]


RPC_STATS: Final = RpcStats(LATENCY_BUCKETS)
REGISTRY.register(RPC_STATS)

if TYPE_CHECKING:
    _Interceptor = grpc.ServerInterceptor[Any, Any]
else:
    _Interceptor = grpc.ServerInterceptor


class RpcMetricsInterceptor(_Interceptor):
    """Counts every RPC (started, handled by code, in flight) and times it, from the moment
    the server hands it to the interceptors to its status. Put it before the edge
    interceptor, so refused keys and domain errors are counted with their codes."""

    def __init__(self, stats: RpcStats = RPC_STATS) -> None:
        self._stats = stats

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Handler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None  # unknown method: gRPC answers UNIMPLEMENTED itself
        method: str = handler_call_details.method
        stats = self._stats

        def start(kind: str) -> tuple[_Cells, float]:
            cells = stats.cells(kind, method)
            cells.started += 1
            return cells, time.perf_counter()

        def finish(started: tuple[_Cells, float], code: grpc.StatusCode) -> None:
            cells, began = started
            stats.observe(cells, time.perf_counter() - began, code)

        return observed(handler, start, finish)


# ------------------------------------------------------------------------ scrape-time gauges


class GaugeCollector(Collector):
    """A collector of gauges computed when Prometheus scrapes. Subclasses implement
    `gauges()`; a failure (a database that does not answer, say) is logged once per streak
    and costs only this collector's families: the scrape still answers, with
    `loom_scrape_collector_up{collector=NAME}` 0."""

    name = "collector"

    def __init__(self) -> None:
        self._failing = False

    def gauges(self) -> Iterable[Metric]:
        raise NotImplementedError

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily(
            "loom_scrape_collector_up",
            "1 when the collector's scrape-time query answered, 0 when it failed.",
            labels=["collector"],
        )
        try:
            families = list(self.gauges())
        except Exception:  # a scrape must answer whatever one query does
            if not self._failing:
                log.warning("metrics collector %s failed", self.name, exc_info=True)
            self._failing = True
            families = []
            up.add_metric([self.name], 0)
        else:
            if self._failing:
                log.info("metrics collector %s works again", self.name)
            self._failing = False
            up.add_metric([self.name], 1)
        return [*families, up]


def gauge(
    name: str, documentation: str, labels: Sequence[str] = (), value: float | None = None
) -> GaugeMetricFamily:
    """A gauge family for a collector to fill; with `value`, its one unlabelled sample."""
    if value is not None:
        return GaugeMetricFamily(name, documentation, value=value)
    return GaugeMetricFamily(name, documentation, labels=list(labels))


# ------------------------------------------------------------------------- the HTTP endpoint


class _ProcessWide(Collector):
    """Every process-wide family (the default registry) in a registry of one endpoint."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


class _Merged(Collector):
    """The process-wide families, then the endpoint's scrape-time collectors, as one
    exposition. Each `loom_scrape_collector_up` sample comes from its own collector, so they
    are merged into one family (an exposition must not repeat a family)."""

    def __init__(self, collectors: Sequence[Collector]) -> None:
        self._collectors = [_ProcessWide(), *collectors]

    def collect(self) -> Iterable[Metric]:
        merged: dict[str, Metric] = {}
        for collector in self._collectors:
            for family in collector.collect():
                known = merged.get(family.name)
                if known is None:
                    merged[family.name] = family
                else:
                    known.samples.extend(family.samples)
        return merged.values()


class MetricsPortInUse(OSError):
    """The metrics port is taken: the entry points name the *_METRICS_PORT setting."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(f"metrics port {host}:{port} is already in use")
        self.host = host
        self.port = port


@dataclass
class MetricsServer:
    """A running scrape endpoint: GET http://host:port/metrics."""

    host: str
    port: int
    _httpd: Any
    _thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def serve_metrics(host: str, port: int, collectors: Sequence[Collector] = ()) -> MetricsServer:
    """Serves the process-wide families and `collectors` on host:port (0: a free port, which
    the returned server names) from a thread of its own. Raises MetricsPortInUse."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged(collectors))
    try:
        httpd, thread = _start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise MetricsPortInUse(host, port) from None
        raise
    return MetricsServer(host, int(httpd.server_port), httpd, thread)
