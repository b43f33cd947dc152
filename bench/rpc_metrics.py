"""Benchmark: what the per-RPC metrics cost (servicekit.metrics.RpcMetricsInterceptor).

Two content servers exactly as `python -m content_service serve` builds them, each with the
Echo service and in its own process: one with CONTENT_METRICS_PORT set (the metrics
interceptor before the edge, and the scrape endpoint), one without. The same client drives
Echo (the edge's authentication included, as every call pays it) against both in alternating
rounds. ratio = Echo calls/s with metrics / without (target >= 0.95: the metrics cost under 5%
of the cheapest authenticated call); the server CPU per call of each gives the cost in
microseconds. Nobody scrapes during the rounds: a scrape's cost is Prometheus's interval's,
not a call's.

On a busy shared machine the two servers' CPU per call differ by more than the interceptor
costs, so the run also times the interceptor itself in this process: a real gRPC handler
wrapped by RpcMetricsInterceptor, called directly (with a stand-in for the servicer context,
which answers code() and is_active() as gRPC's does), against the bare handler, in
alternating batches; the difference is the cost per call."""

from __future__ import annotations

import statistics
import time
from contextlib import ExitStack
from typing import Any

import grpc
from loom.bench.v1 import echo_pb2

from bench.content import Client, content_server, serve_content, tenant
from bench.echo import Run, drive, median_cpu, median_rate, paired_ratios
from servicekit.metrics import RpcMetricsInterceptor, RpcStats

TARGET = 0.95
CLIENT_THREADS = 8
RESPONSE_BYTES = 1024


def serve_metered(data_dir: str, ready: Any, stop: Any) -> None:
    serve_content(data_dir, ready, stop, metrics="on")


def serve_unmetered(data_dir: str, ready: Any, stop: Any) -> None:
    serve_content(data_dir, ready, stop, metrics="off")


class _Context:
    """What the interceptor asks of a servicer context, answered as gRPC's does for a call
    that ended OK."""

    def code(self) -> None:
        return None

    def is_active(self) -> bool:
        return True


class _Details:
    method = "/loom.bench.v1.EchoService/Echo"
    invocation_metadata = ()


def in_process_cost_us(calls: int, rounds: int) -> tuple[float, float]:
    """(the bare handler, the same through RpcMetricsInterceptor), microseconds per call,
    medians of alternating batches."""
    reply = echo_pb2.EchoResponse()
    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: reply)
    interceptor = RpcMetricsInterceptor(RpcStats((0.001, 0.01, 0.1)))
    context, details, request = _Context(), _Details(), echo_pb2.EchoRequest()

    def bare() -> None:
        handler.unary_unary(request, context)

    def metered() -> None:
        wrapped = interceptor.intercept_service(lambda _details: handler, details)
        assert wrapped is not None
        wrapped.unary_unary(request, context)

    def timed(call: Any) -> float:
        started = time.perf_counter()
        for _ in range(calls):
            call()
        return (time.perf_counter() - started) / calls * 1e6

    plain_us: list[float] = []
    metered_us: list[float] = []
    for _ in range(rounds):
        plain_us.append(timed(bare))
        metered_us.append(timed(metered))
    return statistics.median(plain_us), statistics.median(metered_us)


def run(quick: bool) -> dict[str, Any]:
    calls, rounds, warmup = (1500, 3, 200) if quick else (2000, 15, 400)
    metered: list[Run] = []
    plain: list[Run] = []
    with ExitStack() as stack:
        on, on_channel, _ = stack.enter_context(content_server(serve_metered))
        off, off_channel, _ = stack.enter_context(content_server(serve_unmetered))
        assert on.info["metrics_port"]
        assert off.info["metrics_port"] is None
        on_client: Client = tenant(on_channel)[0]
        off_client: Client = tenant(off_channel)[0]
        request = echo_pb2.EchoRequest(response_bytes=RESPONSE_BYTES)

        def with_metrics() -> None:
            on_client.echo.Echo(request, metadata=on_client.metadata, timeout=10)

        def without() -> None:
            off_client.echo.Echo(request, metadata=off_client.metadata, timeout=10)

        drive(with_metrics, warmup, CLIENT_THREADS)
        drive(without, warmup, CLIENT_THREADS)
        for _ in range(rounds):  # alternate, so a noisy neighbour hurts both alike
            plain.append(drive(without, calls, CLIENT_THREADS, off.pid))
            metered.append(drive(with_metrics, calls, CLIENT_THREADS, on.pid))
    ratios = paired_ratios([r.rate for r in metered], [r.rate for r in plain])
    on_cpu, off_cpu = median_cpu(metered), median_cpu(plain)
    bare_us, wrapped_us = in_process_cost_us(20_000 if quick else 100_000, 5)
    interceptor_us = wrapped_us - bare_us
    cost = (
        f"server CPU per call: {on_cpu:.0f} us with metrics, {off_cpu:.0f} us without "
        f"({on_cpu - off_cpu:+.1f} us)"
        if on_cpu and off_cpu
        else "server CPU per call unavailable"
    )
    return {
        "name": "rpc_metrics",
        "title": "Echo with the per-RPC metrics vs without, two content servers",
        "ours": round(median_rate(metered), 1),
        "baseline": round(median_rate(plain), 1),
        "unit": "calls/s",
        "ratio": round(statistics.median(ratios), 3),
        "target": TARGET,
        "notes": (
            f"content's create_server + Echo ({RESPONSE_BYTES} B), team-key auth, with and "
            f"without CONTENT_METRICS_PORT; {CLIENT_THREADS} client threads, {calls} calls x "
            f"{rounds} alternating rounds; ratio = median of the rounds' ratios; {cost}; "
            f"the interceptor alone, in process: {interceptor_us:.1f} us per call"
            + (f" ({interceptor_us / off_cpu:.1%} of an Echo call's server CPU)" if off_cpu else "")
        ),
        "details": {
            "with_metrics_calls_per_s": [round(r.rate, 1) for r in metered],
            "without_calls_per_s": [round(r.rate, 1) for r in plain],
            "ratios": [round(x, 3) for x in ratios],
            "with_metrics_cpu_us_per_call": round(on_cpu, 1) if on_cpu else None,
            "without_cpu_us_per_call": round(off_cpu, 1) if off_cpu else None,
            "interceptor_us_per_call_in_process": round(interceptor_us, 2),
        },
    }
