"""Test support: databases on both backends, in-process servers on port 0, and clients."""

from __future__ import annotations

import os
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from loom.vector.v1 import vector_pb2_grpc
from numpy.typing import NDArray
from prometheus_client.parser import text_string_to_metric_families

from content_service.db.engine import Database
from content_service.server import create_server as create_content_server
from content_service.settings import ContentSettings
from image_worker.settings import WorkerSettings
from servicekit.server import Running
from vector_service.embeddings import Embedder, EmbedderConfig, create_embedder
from vector_service.settings import VectorSettings

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


# ------------------------------------------------------------- servers, in process on port 0


@dataclass
class ContentServer:
    """content_service in process (`start_content`), its database and settings, and a channel
    to it."""

    running: Running
    db: Database
    settings: ContentSettings
    address: str
    channel: grpc.Channel

    @property
    def admin(self) -> Clients:
        return Clients(self.channel, ADMIN_KEY)

    def client(self, key: str | None) -> Clients:
        return Clients(self.channel, key)

    @property
    def media_http(self) -> str:
        """host:port of its media HTTP server, as bound (port 0 in the tests' settings)."""
        return f"127.0.0.1:{self.running.listeners['media_http']}"

    def stop(self, grace: float = 1) -> None:
        self.channel.close()
        self.running.stop(grace=grace)


ContentServerFactory = Callable[..., ContentServer]


def content_settings(tmp_path: Path, db_url: str, **overrides: object) -> ContentSettings:
    values: dict[str, object] = {
        "data_dir": tmp_path,
        "database_url_override": db_url,
        "admin_key": ADMIN_KEY,
        "service_token": SERVICE_TOKEN,
        "port": 0,
        "media_http_port": 0,
        # No dispatcher unless a test gives it a vector_service (tests/indexing does).
        "vector_address": "",
        **overrides,
    }
    return ContentSettings(**values)  # type: ignore[arg-type]


def start_content(settings: ContentSettings, db: Database) -> ContentServer:
    """content_service's own create_server over `db`, started, with a channel to it. Tests get
    one through the `content_server` / `content_servers` fixtures (tests/conftest.py)."""
    running = create_content_server(settings, database=db)
    running.server.start()
    address = f"127.0.0.1:{running.port}"
    return ContentServer(running, db, settings, address, grpc.insecure_channel(address))


class CountingEmbedder:
    """Wraps a real embedder, counting calls and texts; `delay` slows every call down (to
    watch a reindex while it runs)."""

    def __init__(self, inner: Embedder, delay: float = 0.0) -> None:
        self.inner = inner
        self.delay = delay
        self.calls = 0
        self.texts = 0
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def model(self) -> str:
        return self.inner.model

    @property
    def dimensions(self) -> int:
        return self.inner.dimensions

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        with self._lock:
            self.calls += 1
            self.texts += len(texts)
        if self.delay:
            time.sleep(self.delay)
        return self.inner.embed(texts)


def hash_embedder(dimensions: int = 384, delay: float = 0.0) -> CountingEmbedder:
    return CountingEmbedder(
        create_embedder(EmbedderConfig(provider="hash", dimensions=dimensions)), delay
    )


def vector_settings(tmp_path: Path, **overrides: Any) -> VectorSettings:
    values: dict[str, Any] = {
        "data_dir": tmp_path,
        "lancedb_uri": str(tmp_path / "lancedb"),
        "embedder": "hash",
        "port": 0,
        "service_token": SERVICE_TOKEN,
        # Nothing listens there: a tenant key is UNAVAILABLE unless a test starts content.
        "content_address": "127.0.0.1:9",
        "content_timeout_seconds": 1.0,
        **overrides,
    }
    return VectorSettings(**values)


class VectorServer:
    """vector_service's own create_server in process, started, with a channel to it that
    outlives restarts: `stop` and `start` again on the same port and LanceDB folder, as an
    operator would restart it."""

    def __init__(self, settings: VectorSettings, embedder: CountingEmbedder) -> None:
        self.settings = settings
        self.embedder = embedder
        self.running: Running | None = None
        self.port = settings.port
        self.start()
        self.channel = grpc.insecure_channel(self.address)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        # Imported here: LanceDB takes about a second to import, which only the tests that
        # start a vector_service need to pay.
        from vector_service.server import create_server as create_vector_server

        settings = self.settings.model_copy(update={"port": self.port})
        self.running = create_vector_server(settings, embedder=self.embedder)
        self.running.server.start()
        self.port = self.running.port

    def stop(self, grace: float = 0) -> None:
        if self.running is not None:
            self.running.stop(grace=grace)
            self.running = None

    def close(self, grace: float = 0) -> None:
        self.channel.close()
        self.stop(grace)

    def stub(self, key: str | None = SERVICE_TOKEN) -> Any:
        return Stub(vector_pb2_grpc.VectorServiceStub(self.channel), key, timeout=60)

    @property
    def service(self) -> Any:
        return self.stub()


@contextmanager
def serving_vector(settings: VectorSettings, embedder: CountingEmbedder) -> Iterator[VectorServer]:
    """A VectorServer for as long as the block runs."""
    server = VectorServer(settings, embedder)
    try:
        yield server
    finally:
        server.close(grace=5)


def worker_settings(
    data_dir: Path, content_address: str, vector_address: str, **overrides: Any
) -> WorkerSettings:
    """An image worker's settings against in-process servers (the tests' service token)."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "service_token": SERVICE_TOKEN,
        "content_address": content_address,
        "vector_address": vector_address,
        **overrides,
    }
    return WorkerSettings(**values)


# ---------------------------------------------------------------- metrics, scraped over HTTP


@dataclass(frozen=True)
class Scrape:
    """One scrape of a Prometheus endpoint: every sample, by name and labels, and every
    family it declares (name -> type; a family of labelled series may have no sample yet)."""

    samples: tuple[tuple[str, dict[str, str], float], ...]
    families: dict[str, str]

    @property
    def names(self) -> set[str]:
        """Every sample name (a histogram's `_bucket`, `_count` and `_sum` included)."""
        return {name for name, _, _ in self.samples}

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples `name` whose labels include `labels` (0 when none)."""
        return sum(
            value
            for sample, found, value in self.samples
            if sample == name and all(found.get(k) == v for k, v in labels.items())
        )

    def has(self, name: str, **labels: str) -> bool:
        return any(
            sample == name and all(found.get(k) == v for k, v in labels.items())
            for sample, found, _ in self.samples
        )


def scrape(port: int | None) -> Scrape:
    """GET http://127.0.0.1:PORT/metrics, parsed."""
    assert port, "this server serves no metrics (give it metrics_port=0)"
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    families = list(text_string_to_metric_families(text))
    return Scrape(
        tuple(
            (sample.name, dict(sample.labels), float(sample.value))
            for family in families
            for sample in family.samples
        ),
        {family.name: family.type for family in families},
    )
