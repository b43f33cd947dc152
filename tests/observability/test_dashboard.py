"""docs/grafana-dashboard.json is a valid dashboard, and every metric its queries name is one
our processes really export: scraped from content_service, vector_service and an image worker
after a page was delivered and an image processed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from loom.vector.v1 import vector_pb2

from tests.content.tenants_and_pages import make_definition, make_page
from tests.images.helpers import picture
from tests.observability.conftest import ObservedFactory
from tests.support import scrape

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"
METRIC = re.compile(r"\b((?:loom|grpc_server|process)_[a-z0-9_]+)\b")
# A histogram's or counter's series names -> the family's name and type.
SUFFIXES = {"_bucket": "histogram", "_count": "histogram", "_sum": "histogram", "_total": "counter"}


@pytest.fixture
def backend() -> str:
    return "sqlite"


def _queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"]
    assert dashboard["uid"]
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(panels) >= 20
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    queries = [t["expr"] for p in panels for t in p["targets"]]
    assert all(p["targets"] for p in panels)
    return queries


def _family(series: str) -> tuple[str, str | None]:
    for suffix, kind in SUFFIXES.items():
        if series.endswith(suffix):
            return series.removesuffix(suffix), kind
    return series, None


def test_every_metric_the_dashboard_queries_is_exported(observe: ObservedFactory) -> None:
    named = {m for q in _queries() for m in METRIC.findall(q)}
    assert len(named) >= 30

    stack = observe()
    tenant = stack.tenant
    make_page(tenant, make_definition(tenant).id)
    stack.drained()
    worker = stack.start_worker()
    image = stack.wait_for(stack.upload(picture("PNG", 200, 100)).id)
    assert image.state == image.STATE_COMPLETED
    stack.vector.service.Search(
        vector_pb2.SearchRequest(
            collections=[vector_pb2.COLLECTION_PAGES],
            scope=vector_pb2.Scope(team_id=tenant.team_id),
            query_text="page",
        )
    )
    scrapes = [stack.content_metrics(), stack.vector_metrics(), scrape(worker.metrics_port)]
    families: dict[str, str] = {}
    for found in scrapes:
        families.update(found.families)
    missing = []
    for series in sorted(named):
        name, kind = _family(series)
        if families.get(name) is None or (kind is not None and families[name] != kind):
            missing.append(series)
    assert missing == []
