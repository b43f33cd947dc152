"""The stack the integration suite runs against: started here as local processes, or an
existing one (docker-compose, a staging box) given by its addresses.

Local processes are started with exactly the commands of `servicekit.stack.PROCESSES` (the
ones `make run` and docker-compose run) plus the migration step, each on port 0. The bound
port is read back from the server's own log line ("content_service listening on port N"),
so no port is picked first and bound later (that races)."""

from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.forwarder import Forwarder

ROOT = Path(__file__).resolve().parents[2]

# The one-shot schema upgrade: docker-compose's `migrate` service, and the first thing
# `python -m servicekit.stack` does.
MIGRATE = [sys.executable, "-m", "content_service", "migrate"]

ADMIN_KEY = "integration-admin-key"
SERVICE_TOKEN = "integration-service-token"

# Servers (module -> env prefix of their HOST/PORT settings). A process not listed here is
# not a server (image_worker): it is up when it is still running after WORKER_SETTLE_SECONDS.
SERVERS = {"content_service": "CONTENT", "vector_service": "VECTOR"}
# Start order: a process may need the address of one started before it.
START_ORDER = ["content_service", "vector_service"]
STARTUP_TIMEOUT = 90.0  # vector_service loads its embedding model
WORKER_SETTLE_SECONDS = 2.0
GRACE_SECONDS = 3

LISTENING = re.compile(r"(\w+) listening on port (\d+)")
# Each process's Prometheus endpoint, on the port the OS picked (*_METRICS_PORT=0).
METRICS = re.compile(r"serves Prometheus metrics at http://[^/]+:(\d+)/metrics")
# Our settings: never inherited from the caller's shell, where they may point elsewhere.
OWN_PREFIXES = ("CONTENT_", "VECTOR_", "WORKER_", "LOOM_", "DATA_DIR")


class StackError(RuntimeError):
    pass


def module_of(command: Sequence[str]) -> str | None:
    """`python -m X ...` -> X."""
    args = list(command)
    if "-m" in args and args.index("-m") + 1 < len(args):
        return args[args.index("-m") + 1]
    return None


def modules(processes: Mapping[str, Sequence[str]]) -> set[str]:
    return {m for m in (module_of(c) for c in processes.values()) if m}


def setting_env_names(settings_class: Any) -> dict[str, str]:
    """{field: the environment variable a pydantic-settings class reads it from}."""
    prefix = settings_class.model_config.get("env_prefix", "")
    out = {}
    for name, info in settings_class.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, str):
            out[name] = alias
        elif alias is not None and hasattr(alias, "choices"):
            out[name] = str(alias.choices[0])
        else:
            out[name] = f"{prefix}{name}".upper()
    return out


def content_vector_address_env() -> str | None:
    """The variable that tells content_service where vector_service is (for its index
    outbox), once ContentSettings has one."""
    from content_service.settings import ContentSettings

    names = setting_env_names(ContentSettings)
    found = [env for name, env in names.items() if "vector" in name and "address" in name]
    return found[0] if found else None


@dataclass
class StackInfo:
    """What a test needs to reach the stack."""

    content: str
    vector: str | None
    admin_key: str
    worker: bool
    local: LocalStack | None = None

    @property
    def description(self) -> str:
        where = "local processes" if self.local else "an existing stack"
        return f"{where}: content={self.content} vector={self.vector} worker={self.worker}"


@dataclass
class Process:
    name: str
    command: list[str]
    log_path: Path
    popen: subprocess.Popen[bytes]
    lines: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=60))
    port: int | None = None
    metrics_port: int | None = None
    listening: threading.Event = field(default_factory=threading.Event)
    reader: threading.Thread | None = None

    def tail(self) -> str:
        return "\n".join(f"    {line}" for line in self.lines) or "    (no output)"

    def read_output(self) -> None:
        assert self.popen.stdout is not None
        with self.popen.stdout as out, self.log_path.open("w") as log:
            for raw in out:
                line = raw.decode(errors="replace").rstrip("\n")
                log.write(line + "\n")
                log.flush()
                self.lines.append(line)
                match = LISTENING.search(line)
                if match and self.port is None:
                    self.port = int(match.group(2))
                    self.listening.set()
                metrics = METRICS.search(line)
                if metrics and self.metrics_port is None:
                    self.metrics_port = int(metrics.group(1))
        self.listening.set()  # the process ended: stop waiting


def wait_serving(address: str, deadline: float) -> None:
    """Blocks until grpc.health.v1 answers SERVING at `address`."""
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        last: object = None
        while time.monotonic() < deadline:
            try:
                answer = stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
            except grpc.RpcError as exc:
                last = exc.code()
            time.sleep(0.1)
    raise StackError(f"health check of {address} never answered SERVING (last: {last})")


class LocalStack:
    """The processes of the stack as subprocesses, with their data under `data_dir`."""

    def __init__(self, processes: Mapping[str, Sequence[str]], data_dir: Path) -> None:
        self.processes = {name: list(cmd) for name, cmd in processes.items()}
        self.data_dir = data_dir
        self.running: list[Process] = []
        self.addresses: dict[str, str] = {}  # module -> host:port
        self.forwarder: Forwarder | None = None
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(OWN_PREFIXES)}
        self.env.update(
            DATA_DIR=str(data_dir),
            PYTHONUNBUFFERED="1",
            LOG_LEVEL="INFO",
            CONTENT_ADMIN_KEY=ADMIN_KEY,
            LOOM_SERVICE_TOKEN=SERVICE_TOKEN,
            HF_HUB_OFFLINE="1",
        )
        for prefix in SERVERS.values():
            self.env[f"{prefix}_HOST"] = "127.0.0.1"
            self.env[f"{prefix}_PORT"] = "0"
        self.env["CONTENT_MEDIA_HTTP_PORT"] = "0"
        for prefix in [*SERVERS.values(), "WORKER"]:
            self.env[f"{prefix}_GRACE_SECONDS"] = str(GRACE_SECONDS)
            self.env[f"{prefix}_METRICS_PORT"] = "0"

    def ordered(self) -> list[tuple[str, list[str]]]:
        def rank(item: tuple[str, list[str]]) -> int:
            module = module_of(item[1]) or ""
            return START_ORDER.index(module) if module in START_ORDER else len(START_ORDER)

        return sorted(self.processes.items(), key=rank)

    def start(self) -> StackInfo:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        migrate = subprocess.run(
            MIGRATE, env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        if migrate.returncode != 0:
            raise StackError(
                f"`{' '.join(MIGRATE)}` failed with {migrate.returncode}:\n{migrate.stderr}"
            )
        for name, command in self.ordered():
            self._start_one(name, command)
        return StackInfo(
            content=self.addresses["content_service"],
            vector=self.addresses.get("vector_service"),
            admin_key=ADMIN_KEY,
            worker="image_worker" in modules(self.processes),
            local=self,
        )

    def _start_one(self, name: str, command: list[str]) -> None:
        module = module_of(command) or name
        # Addresses of the servers already up, under the names their clients read.
        if "content_service" in self.addresses:
            content = self.addresses["content_service"]
            self.env["VECTOR_CONTENT_ADDRESS"] = content
            self.env["WORKER_CONTENT_ADDRESS"] = content
        if "vector_service" in self.addresses:
            self.env["WORKER_VECTOR_ADDRESS"] = self.addresses["vector_service"]
        vector_env = content_vector_address_env()
        if module == "content_service" and vector_env:
            self.forwarder = Forwarder()
            self.env[vector_env] = self.forwarder.address
        popen = subprocess.Popen(
            command,
            env=dict(self.env),
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        proc = Process(name, command, self.data_dir / f"{name}.log", popen)
        proc.reader = threading.Thread(target=proc.read_output, name=f"log-{name}", daemon=True)
        proc.reader.start()
        self.running.append(proc)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        try:
            if module in SERVERS:
                proc.listening.wait(STARTUP_TIMEOUT)
                if proc.port is None:
                    raise StackError("never logged `listening on port N`")
                address = f"127.0.0.1:{proc.port}"
                wait_serving(address, deadline)
                self.addresses[module] = address
                if module == "vector_service" and self.forwarder is not None:
                    self.forwarder.point_at(address)
            else:
                time.sleep(WORKER_SETTLE_SECONDS)
            if popen.poll() is not None:
                raise StackError(f"exited with {popen.returncode}")
        except StackError as exc:
            raise StackError(
                f"{name} (`{' '.join(command)}`) did not come up healthy: {exc}\n"
                f"  last output ({proc.log_path}):\n{proc.tail()}"
            ) from None

    def stop(self) -> dict[str, int]:
        """SIGTERM in reverse start order, as compose and honcho do; returns exit codes."""
        codes: dict[str, int] = {}
        for proc in reversed(self.running):
            if proc.popen.poll() is None:
                proc.popen.send_signal(signal.SIGTERM)
            try:
                codes[proc.name] = proc.popen.wait(GRACE_SECONDS + 10)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                codes[proc.name] = proc.popen.wait()
            if proc.reader is not None:
                proc.reader.join(5)
        self.running.clear()
        if self.forwarder is not None:
            self.forwarder.close()
        return codes

    def process(self, name: str) -> Process:
        return next(p for p in self.running if p.name == name)


def parse_addresses(text: str) -> dict[str, str]:
    """`content=HOST:PORT,vector=HOST:PORT` -> {"content": ..., "vector": ...}."""
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or key not in ("content", "vector") or ":" not in value:
            raise StackError(
                f"bad --stack-address part {part!r}: want content=HOST:PORT[,vector=HOST:PORT]"
            )
        out[key] = value
    return out
