"""Benchmark 0, the server flavour: the sync `grpc.server` with a thread pool (what our
services use) against `grpc.aio`, serving the same Echo RPC to the same client.

Backs the README's "Server flavour" claim. Each server runs alone in its own process; the
client is the same for both (threads of sync stubs on one channel, in this process), and
rounds alternate so a noisy neighbour hurts both alike. Reported: calls/s, and the server
process's CPU time per call (from /proc)."""

from __future__ import annotations

import statistics
from typing import Any

import grpc
from loom.bench.v1 import echo_pb2, echo_pb2_grpc

from bench.echo import (
    Run,
    drive,
    median_cpu,
    median_rate,
    paired_ratios,
    serve_echo_aio,
    serve_echo_sync,
    server_process,
)

WORKERS = 16  # CONTENT_WORKERS' default
# Sync is chosen because the data layer (SQLAlchemy, LanceDB, Pillow) is synchronous, not for
# speed: the target is that it costs no more than 10% of aio's throughput. Measured, the two are
# level within this machine's noise (paired round ratios from 0.87 to 1.2 in one run).
TARGET = 0.9
CLIENT_THREADS = 8
RESPONSE_BYTES = 1024


def run(quick: bool) -> dict[str, Any]:
    calls, rounds, warmup = (1500, 3, 200) if quick else (5000, 7, 500)
    sync_runs: list[Run] = []
    aio_runs: list[Run] = []
    with (
        server_process(serve_echo_sync, WORKERS) as sync_server,
        server_process(serve_echo_aio, WORKERS) as aio_server,
        grpc.insecure_channel(sync_server.address) as sync_channel,
        grpc.insecure_channel(aio_server.address) as aio_channel,
    ):
        request = echo_pb2.EchoRequest(response_bytes=RESPONSE_BYTES)
        sync_stub = echo_pb2_grpc.EchoServiceStub(sync_channel)
        aio_stub = echo_pb2_grpc.EchoServiceStub(aio_channel)

        def sync_call() -> None:
            sync_stub.Echo(request, timeout=10)

        def aio_call() -> None:
            aio_stub.Echo(request, timeout=10)

        drive(sync_call, warmup, CLIENT_THREADS)
        drive(aio_call, warmup, CLIENT_THREADS)
        # Both servers stay up (the idle one costs nothing); rounds alternate so a noisy
        # neighbour hurts both alike.
        for _ in range(rounds):
            sync_runs.append(drive(sync_call, calls, CLIENT_THREADS, sync_server.pid))
            aio_runs.append(drive(aio_call, calls, CLIENT_THREADS, aio_server.pid))
    sync_rate, aio_rate = median_rate(sync_runs), median_rate(aio_runs)
    ratios = paired_ratios([r.rate for r in sync_runs], [r.rate for r in aio_runs])
    sync_cpu, aio_cpu = median_cpu(sync_runs), median_cpu(aio_runs)
    cpu_note = (
        f"server CPU per call: sync {sync_cpu:.0f} us, aio {aio_cpu:.0f} us "
        f"(sync/aio {sync_cpu / aio_cpu:.2f})"
        if sync_cpu and aio_cpu
        else "server CPU per call unavailable"
    )
    return {
        "name": "server_flavour",
        "title": "Server flavour: sync grpc.server (thread pool) vs grpc.aio, Echo RPC",
        "ours": round(sync_rate, 1),
        "baseline": round(aio_rate, 1),
        "unit": "calls/s",
        "ratio": round(statistics.median(ratios), 3),
        "target": TARGET,
        "notes": (
            f"ours = sync grpc.server, {WORKERS} threads; baseline = grpc.aio; same Echo "
            f"({RESPONSE_BYTES} B answer), {CLIENT_THREADS} client threads, {calls} calls x "
            f"{rounds} alternating round(s); ratio = median of the rounds' ratios; {cpu_note}"
        ),
        "details": {
            "sync_calls_per_s": [round(r.rate, 1) for r in sync_runs],
            "aio_calls_per_s": [round(r.rate, 1) for r in aio_runs],
            "ratios": [round(x, 3) for x in ratios],
            "sync_cpu_us_per_call": round(sync_cpu, 1) if sync_cpu else None,
            "aio_cpu_us_per_call": round(aio_cpu, 1) if aio_cpu else None,
        },
    }
