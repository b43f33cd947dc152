"""Test support: databases on both backends, in-process servers on port 0, and clients."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

ADMIN_KEY = "test-admin-key"
SERVICE_TOKEN = "test-service-token"
POSTGRES_ADMIN_URL = os.environ.get(
    "LOOM_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def postgres_wanted() -> bool:
    return os.environ.get("LOOM_TEST_POSTGRES", "1") not in ("0", "skip", "no")


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    import psycopg

    name = f"loom_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is unreachable at {POSTGRES_ADMIN_URL} ({exc}). The content tests run "
            "on both backends; start PostgreSQL, point LOOM_TEST_POSTGRES_URL at one, or set "
            "LOOM_TEST_POSTGRES=0 to run SQLite only (never in CI).",
            pytrace=False,
        )
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}".replace("postgresql://", "postgresql+psycopg://", 1)
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'content.db'}"
    else:
        with postgres_database() as url:
            yield url


def wait_until(
    check: Callable[[], Any], timeout: float = 30.0, what: str = "condition", interval: float = 0.05
) -> Any:
    """Polls `check` every `interval` seconds until it returns something truthy, and returns
    that."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


@contextmanager
def serving_http(handler: type[BaseHTTPRequestHandler]) -> Iterator[ThreadingHTTPServer]:
    """An HTTP server on a free loopback port, in a thread, for as long as the block runs: the
    stand-in for an external paid API (embeddings, vision) that tests talk to."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def errors_of(exc: grpc.RpcError) -> dict[str, Any]:
    """The status code, message, ErrorInfo reason and BadRequest field violations."""
    out: dict[str, Any] = {
        "code": exc.code(),
        "message": exc.details(),
        "fields": [],
        "reason": None,
    }
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            out["fields"] = [v.field for v in bad.field_violations]
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            out["reason"] = info.reason
    return out


@contextmanager
def raises_status(code: grpc.StatusCode) -> Iterator[dict[str, Any]]:
    box: dict[str, Any] = {}
    with pytest.raises(grpc.RpcError) as info:
        yield box
    box.update(errors_of(info.value))  # type: ignore[arg-type]
    assert box["code"] == code, box


class Stub:
    """Wraps a generated stub so every call carries the caller's key and a deadline."""

    def __init__(self, stub: Any, key: str | None, timeout: float = 30.0) -> None:
        self._stub = stub
        self._metadata = (("authorization", f"Bearer {key}"),) if key else ()
        self._timeout = timeout

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._stub, name)

        def call(request: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("metadata", self._metadata)
            kwargs.setdefault("timeout", self._timeout)
            return method(request, **kwargs)

        return call


@dataclass
class Clients:
    channel: grpc.Channel
    key: str | None
    _cache: dict[str, Stub] = field(default_factory=dict)

    def stub(self, stub_class: Any) -> Stub:
        name = stub_class.__name__
        if name not in self._cache:
            self._cache[name] = Stub(stub_class(self.channel), self.key)
        return self._cache[name]

    @property
    def tenancy(self) -> Stub:
        from loom.content.v1 import tenancy_pb2_grpc

        return self.stub(tenancy_pb2_grpc.TenancyServiceStub)

    @property
    def pages(self) -> Stub:
        from loom.content.v1 import pages_pb2_grpc

        return self.stub(pages_pb2_grpc.PageServiceStub)

    def as_key(self, key: str | None) -> Clients:
        return Clients(self.channel, key)
