"""What the benchmarks share: the Echo servicer (sync and asyncio), servers in their own
process (so a server's CPU is its own, and the client's GIL is not the server's), a fixed-count
load driver, and a process's CPU time."""

from __future__ import annotations

import asyncio
import os
import queue
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import get_context
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import Any

import grpc
from loom.bench.v1 import echo_pb2, echo_pb2_grpc

_PAYLOADS: dict[int, bytes] = {}


def payload(size: int) -> bytes:
    if size not in _PAYLOADS:
        _PAYLOADS[size] = b"x" * max(0, size)
    return _PAYLOADS[size]


class EchoServicer(echo_pb2_grpc.EchoServiceServicer):
    def Echo(self, request: echo_pb2.EchoRequest, context: grpc.ServicerContext) -> Any:
        return echo_pb2.EchoResponse(payload=payload(request.response_bytes))


class AsyncEchoServicer(echo_pb2_grpc.EchoServiceServicer):
    async def Echo(self, request: echo_pb2.EchoRequest, context: Any) -> Any:
        return echo_pb2.EchoResponse(payload=payload(request.response_bytes))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    # After the command name: state is field 3, utime 14 and stime 15 (1-based, man 5 proc).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- servers in a child process ---------------------------------------------------------


@dataclass
class ServerProcess:
    process: BaseProcess
    port: int
    info: dict[str, Any]
    stop: Event

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid


@contextmanager
def server_process(target: Callable[..., None], *args: Any) -> Iterator[ServerProcess]:
    """Runs `target(*args, ready_queue, stop_event)` in a spawned process. The target puts
    {"port": N, ...} on the queue once it serves, and returns when the event is set."""
    ctx = get_context("spawn")
    ready: Queue[dict[str, Any]] = ctx.Queue()
    stop = ctx.Event()
    process = ctx.Process(target=target, args=(*args, ready, stop), daemon=True)
    process.start()
    try:
        info = _first_message(ready, process)
        if "error" in info:
            raise RuntimeError(f"benchmark server failed to start: {info['error']}")
        yield ServerProcess(process, int(info["port"]), info, stop)
    finally:
        stop.set()
        process.join(30)
        if process.is_alive():
            process.kill()
            process.join()
        ready.close()


def _first_message(ready: Queue[dict[str, Any]], process: BaseProcess) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            return ready.get(timeout=0.5)
        except queue.Empty:
            if not process.is_alive():
                return {"error": f"the server process exited with {process.exitcode}"}
    return {"error": "the server process did not report its port within 120 s"}


def serve_echo_sync(workers: int, ready: Queue[dict[str, Any]], stop: Event) -> None:
    """The sync flavour our services use: grpc.server with a thread pool."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
    echo_pb2_grpc.add_EchoServiceServicer_to_server(EchoServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    ready.put({"port": port})
    stop.wait()
    server.stop(1).wait()


def serve_echo_aio(_workers: int, ready: Queue[dict[str, Any]], stop: Event) -> None:
    """grpc.aio on one event loop, the same servicer as a coroutine."""

    async def main() -> None:
        server = grpc.aio.server()
        echo_pb2_grpc.add_EchoServiceServicer_to_server(AsyncEchoServicer(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        ready.put({"port": port})
        await asyncio.get_running_loop().run_in_executor(None, stop.wait)
        await server.stop(1)

    asyncio.run(main())


# --- load --------------------------------------------------------------------------------


@dataclass
class Run:
    calls: int
    seconds: float
    server_cpu: float | None = None

    @property
    def rate(self) -> float:
        return self.calls / self.seconds

    @property
    def cpu_us_per_call(self) -> float | None:
        if self.server_cpu is None:
            return None
        return self.server_cpu / self.calls * 1e6


def drive(call: Callable[[], Any], calls: int, threads: int, server_pid: int | None = None) -> Run:
    """Makes `calls` calls from `threads` client threads as fast as the server answers."""
    remaining = [calls]
    lock = threading.Lock()
    errors: list[BaseException] = []
    start_gate = threading.Barrier(threads + 1)

    def worker() -> None:
        start_gate.wait()
        while True:
            with lock:
                if remaining[0] <= 0:
                    return
                remaining[0] -= 1
            try:
                call()
            except BaseException as exc:
                errors.append(exc)
                return

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for t in pool:
        t.start()
    cpu_before = cpu_seconds(server_pid) if server_pid else None
    start_gate.wait()
    started = time.perf_counter()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - started
    cpu = cpu_seconds(server_pid) - cpu_before if server_pid and cpu_before is not None else None
    if errors:
        raise RuntimeError(f"{len(errors)} call(s) failed, first: {errors[0]!r}") from errors[0]
    return Run(calls, elapsed, cpu)


def median_rate(runs: list[Run]) -> float:
    return statistics.median(r.rate for r in runs)


def median_cpu(runs: list[Run]) -> float | None:
    values = [r.cpu_us_per_call for r in runs if r.cpu_us_per_call is not None]
    return statistics.median(values) if values else None


def paired_ratios(ours: list[float], base: list[float]) -> list[float]:
    """Each round's ours / baseline. A round's two runs are back to back, so the median of
    these is steadier on a shared machine than the ratio of the two medians when the load
    drifts between rounds."""
    return [o / b for o, b in zip(ours, base, strict=True)]
