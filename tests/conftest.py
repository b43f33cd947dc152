from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from content_service.db.engine import Database
from content_service.db.migrate import upgrade
from tests.support import (
    ContentServer,
    ContentServerFactory,
    content_settings,
    database_url,
    postgres_wanted,
    start_content,
)
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


@pytest.fixture
def content_servers(
    migrated_db: Database, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ContentServerFactory]:
    """`content_servers(data_dir=None, **overrides)` starts a content server on the test's
    database with settings overrides, e.g. `content_servers(lease_seconds=1, max_attempts=2)`,
    in its own new data folder unless one is given. Every server started is stopped at the end
    (a test may stop one itself first)."""
    started: list[ContentServer] = []

    def start(data_dir: Path | None = None, **overrides: object) -> ContentServer:
        folder = data_dir or tmp_path_factory.mktemp("data")
        server = start_content(content_settings(folder, migrated_db.url, **overrides), migrated_db)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def content_server(content_servers: ContentServerFactory, tmp_path: Path) -> ContentServer:
    return content_servers(tmp_path)


@pytest.fixture
def vision_server() -> Iterator[VisionServer]:
    """tests/worker/vision_stub.py: a local stand-in for the vision model's HTTP API."""
    with serving_vision() as state:
        yield state
