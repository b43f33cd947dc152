from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from content_service.db.engine import Database
from content_service.db.migrate import upgrade
from content_service.server import create_server
from content_service.settings import ContentSettings
from servicekit.server import Running
from tests.support import ADMIN_KEY, SERVICE_TOKEN, Clients, database_url, postgres_wanted
from tests.worker.vision_stub import VisionServer, serving_vision


def backends() -> list[str]:
    return ["sqlite", "postgres"] if postgres_wanted() else ["sqlite"]


@pytest.fixture(params=backends())
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_url(backend: str, tmp_path: Path) -> Iterator[str]:
    with database_url(backend, tmp_path) as url:
        yield url


@pytest.fixture
def migrated_db(db_url: str) -> Iterator[Database]:
    db = Database(db_url)
    upgrade(db)
    yield db
    db.dispose()


@dataclass
class ContentServer:
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


def content_settings(tmp_path: Path, db_url: str, **overrides: object) -> ContentSettings:
    values: dict[str, object] = {
        "data_dir": tmp_path,
        "database_url_override": db_url,
        "admin_key": ADMIN_KEY,
        "service_token": SERVICE_TOKEN,
        "port": 0,
        # No dispatcher unless a test gives it a vector_service (tests/indexing does).
        "vector_address": "",
        **overrides,
    }
    return ContentSettings(**values)  # type: ignore[arg-type]


@pytest.fixture
def content_server(migrated_db: Database, tmp_path: Path) -> Iterator[ContentServer]:
    settings = content_settings(tmp_path, migrated_db.url)
    running = create_server(settings, database=migrated_db)
    running.server.start()
    address = f"127.0.0.1:{running.port}"
    channel = grpc.insecure_channel(address)
    try:
        yield ContentServer(running, migrated_db, settings, address, channel)
    finally:
        channel.close()
        running.stop(grace=1)


@pytest.fixture
def vision_server() -> Iterator[VisionServer]:
    """tests/worker/vision_stub.py: a local stand-in for the vision model's HTTP API."""
    with serving_vision() as state:
        yield state
