"""Image test fixtures: content servers with image settings of the test's choosing."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc
import pytest

from content_service.db.engine import Database
from content_service.server import create_server
from tests.conftest import ContentServer, content_settings

ServerFactory = Callable[..., ContentServer]


@pytest.fixture
def server_factory(
    migrated_db: Database, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerFactory]:
    """Starts content servers on the test's database with settings overrides, e.g.
    `server_factory(lease_seconds=1, max_attempts=2)`; each gets its own data folder."""
    started: list[ContentServer] = []

    def make(**overrides: object) -> ContentServer:
        settings = content_settings(tmp_path_factory.mktemp("data"), migrated_db.url, **overrides)
        running = create_server(settings, database=migrated_db)
        running.server.start()
        address = f"127.0.0.1:{running.port}"
        server = ContentServer(
            running, migrated_db, settings, address, grpc.insecure_channel(address)
        )
        started.append(server)
        return server

    yield make
    for server in started:
        server.channel.close()
        server.running.stop(grace=1)
