"""The media HTTP server's lookups (one per request) are index searches, never a scan of
every image or variant: captured while real requests run, explained on SQLite."""

from __future__ import annotations

import pytest

from tests.content.tenants_and_pages import make_tenant
from tests.content.test_query_plans import captured, full_scans, plan
from tests.images.helpers import completed_image, fetch
from tests.support import ContentServer


@pytest.fixture
def backend() -> str:
    """EXPLAIN QUERY PLAN is SQLite's."""
    return "sqlite"


def test_media_lookups_use_indexes(content_server: ContentServer) -> None:
    done = completed_image(content_server, make_tenant(content_server.admin))
    urls = [done.image.url, *(v.url for v in done.image.variants)]
    with captured(content_server) as statements:
        for url in urls:
            assert fetch(content_server, url).status == 200
    lookups = [(sql, args) for sql, args in statements if "images" in sql or "variants" in sql]
    assert len(lookups) == len(urls)
    for statement, parameters in lookups:
        lines = plan(content_server, statement, parameters)
        assert full_scans(lines) == [], (statement, lines)
        assert any("USING" in line and "INDEX" in line for line in lines), (statement, lines)
