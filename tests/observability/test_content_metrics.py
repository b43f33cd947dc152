"""content_service's metrics, scraped over HTTP from a real server after real calls (SQLite
and PostgreSQL): the per-RPC families of servicekit, the outbox, image jobs and leases, and
the database's write queue, busy errors, files and pools."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from loom.content.v1 import pages_pb2

from content_service.db.engine import sqlite_module
from tests.content.tenants_and_pages import make_definition, make_page, make_tenant
from tests.images.helpers import claim, images_stub, jobs_stub, picture, upload
from tests.observability.conftest import ObservedFactory
from tests.support import ContentServerFactory, Scrape, raises_status, scrape, wait_until

PAGES = {"grpc_service": "loom.content.v1.PageService"}


def test_every_rpc_is_counted_by_method_and_code_and_timed(
    content_servers: ContentServerFactory,
) -> None:
    server = content_servers(metrics_port=0)
    port = server.running.metrics_port
    assert port
    before = scrape(port)
    tenant = make_tenant(server.admin)
    page = make_page(tenant, make_definition(tenant).id)
    tenant.client.pages.GetPage(pages_pb2.GetPageRequest(id=page.id))
    with raises_status(grpc.StatusCode.NOT_FOUND):
        tenant.client.pages.GetPage(pages_pb2.GetPageRequest(id="no-such-page"))
    with raises_status(grpc.StatusCode.UNAUTHENTICATED):
        server.client("not-a-key").pages.GetPage(pages_pb2.GetPageRequest(id=page.id))
    after = scrape(port)

    def moved(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    get_page = {**PAGES, "grpc_method": "GetPage", "grpc_type": "unary"}
    assert moved("grpc_server_started_total", **get_page) == 3
    assert moved("grpc_server_handled_total", **get_page, grpc_code="OK") == 1
    assert moved("grpc_server_handled_total", **get_page, grpc_code="NOT_FOUND") == 1
    assert moved("grpc_server_handled_total", **get_page, grpc_code="UNAUTHENTICATED") == 1
    assert moved("grpc_server_handling_seconds_count", **get_page) == 3
    assert moved("grpc_server_handling_seconds_sum", **get_page) > 0
    assert after.value("grpc_server_calls_in_flight", **get_page) == 0
    create = {**PAGES, "grpc_method": "CreatePage"}
    assert moved("grpc_server_handled_total", **create, grpc_code="OK") == 1
    # The histogram's buckets are cumulative: the largest holds every call.
    assert moved("grpc_server_handling_seconds_bucket", **get_page, le="+Inf") == 3
    # The process-wide collectors come along.
    assert after.has("process_cpu_seconds_total")


def test_a_call_in_progress_is_in_flight(content_servers: ContentServerFactory) -> None:
    server = content_servers(metrics_port=0)
    claim_job = {"grpc_method": "ClaimImageJob", "grpc_service": "loom.content.v1.ImageJobService"}
    jobs = jobs_stub(server.admin)
    waiting = threading.Thread(target=claim, args=(jobs, 1.5))
    waiting.start()
    wait_until(
        lambda: (
            scrape(server.running.metrics_port).value("grpc_server_calls_in_flight", **claim_job)
            == 1
        ),
        10,
        "the long-poll claim to be in flight",
    )
    waiting.join()
    assert (
        scrape(server.running.metrics_port).value("grpc_server_calls_in_flight", **claim_job) == 0
    )


def test_outbox_gauges_follow_the_rows(content_servers: ContentServerFactory) -> None:
    """No vector_service here: every write's outbox row stays pending."""
    server = content_servers(metrics_port=0)
    port = server.running.metrics_port
    empty = scrape(port)
    assert empty.value("loom_outbox_pending_rows") == 0
    assert empty.value("loom_outbox_oldest_pending_age_seconds") == 0
    assert empty.value("loom_scrape_collector_up", collector="outbox") == 1
    tenant = make_tenant(server.admin)
    definition = make_definition(tenant).id
    make_page(tenant, definition, "one")
    make_page(tenant, definition, "two")
    time.sleep(1.1)  # created_at is in whole seconds
    found = scrape(port)
    assert found.value("loom_outbox_pending_rows") == 2
    assert found.value("loom_outbox_failing_rows") == 0
    assert found.value("loom_outbox_oldest_pending_age_seconds") >= 0.1


def test_image_jobs_by_state_and_lease_expiries(content_servers: ContentServerFactory) -> None:
    server = content_servers(metrics_port=0, lease_seconds=1)
    port = server.running.metrics_port
    tenant = make_tenant(server.admin)
    upload(images_stub(tenant.client), tenant.env_id, picture())
    found = scrape(port)
    assert found.value("loom_image_jobs", state="pending") == 1
    assert found.value("loom_image_jobs", state="processing") == 0
    jobs = jobs_stub(server.admin)
    first = claim(jobs).job
    found = scrape(port)
    assert found.value("loom_image_jobs", state="pending") == 0
    assert found.value("loom_image_jobs", state="processing") == 1
    assert found.value("loom_image_jobs_expired_leases") == 0

    wait_until(
        lambda: scrape(port).value("loom_image_jobs_expired_leases") == 1,
        5,
        "the 1 s lease to expire",
    )
    before = scrape(port).value("loom_image_lease_expiries_total")
    again = claim(jobs).job
    assert (again.image_id, again.attempt) == (first.image_id, 2)
    after = scrape(port)
    assert after.value("loom_image_lease_expiries_total") - before == 1
    assert after.value("loom_image_jobs_expired_leases") == 0
    assert after.value("loom_image_jobs", state="processing") == 1


def test_database_pools_and_write_queue(
    content_servers: ContentServerFactory, backend: str
) -> None:
    server = content_servers(metrics_port=0)
    port = server.running.metrics_port
    before = scrape(port)
    make_tenant(server.admin)
    after = scrape(port)
    assert after.value("loom_scrape_collector_up", collector="database") == 1
    assert after.value("loom_db_pool_size_connections", pool="write") >= 1
    assert after.has("loom_db_pool_connections", pool="write", state="checked_out")
    assert after.has("loom_db_pool_connections", pool="write", state="idle")
    if backend == "sqlite":
        # make_tenant wrote four times, each waiting its turn in the writer queue.
        waits = "loom_db_write_lock_wait_seconds_count"
        assert after.value(waits) - before.value(waits) >= 4
        assert after.value("loom_sqlite_wal_bytes") > 0
        assert after.value("loom_sqlite_database_bytes") > 0
        assert after.has("loom_db_pool_size_connections", pool="read")
    else:
        assert not after.has("loom_sqlite_wal_bytes")


@pytest.mark.parametrize("backend", ["sqlite"])
def test_database_busy_is_counted(
    content_servers: ContentServerFactory, backend: str, tmp_path: Path
) -> None:
    """Another process's writer holds SQLite's write lock past the busy timeout."""
    server = content_servers(metrics_port=0, sqlite_busy_timeout_ms=100)
    tenant = make_tenant(server.admin)
    definition = make_definition(tenant).id
    port = server.running.metrics_port
    before = scrape(port).value("loom_db_busy_total")
    path = server.db.sqlite_path
    assert path is not None
    holder = sqlite_module().connect(str(path), isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        with raises_status(grpc.StatusCode.UNAVAILABLE) as error:
            make_page(tenant, definition, "blocked")
        assert error["reason"] == "DATABASE_BUSY"
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    after = scrape(port)
    assert after.value("loom_db_busy_total") - before == 1
    assert (
        after.value("grpc_server_handled_total", grpc_method="CreatePage", grpc_code="UNAVAILABLE")
        >= 1
    )


def test_outbox_deliveries_and_failures(observe: ObservedFactory) -> None:
    stack = observe()
    tenant = stack.tenant
    definition = make_definition(tenant).id
    before = stack.content_metrics()
    make_page(tenant, definition, "delivered")
    stack.drained()
    delivered = stack.content_metrics()

    def moved(name: str, since: Scrape = before, **labels: str) -> float:
        return delivered.value(name, **labels) - since.value(name, **labels)

    assert moved("loom_outbox_delivery_attempts_total") >= 1
    assert moved("loom_outbox_delivered_rows_total") >= 1
    assert moved("loom_outbox_embedded_texts_total") >= 3  # the page and its two sections
    assert moved("loom_outbox_delivery_seconds_count") >= 1
    assert delivered.value("loom_outbox_pending_rows") == 0

    stack.vector.stop()
    make_page(tenant, definition, "waiting")
    wait_until(
        lambda: stack.content_metrics().value("loom_outbox_failing_rows") == 1,
        15,
        "a failed delivery",
    )
    failing = stack.content_metrics()
    assert (
        failing.value("loom_outbox_delivery_failures_total", grpc_code="UNAVAILABLE")
        - delivered.value("loom_outbox_delivery_failures_total", grpc_code="UNAVAILABLE")
        >= 1
    )
    assert failing.value("loom_outbox_pending_rows") == 1
    stack.vector.start()
    stack.drained()
    assert stack.content_metrics().value("loom_outbox_pending_rows") == 0


def test_concurrent_calls_are_counted_exactly(content_servers: ContentServerFactory) -> None:
    """The RPC counters take no lock (one set of cells per server thread, summed at scrape
    time): concurrent calls from many threads still add up to the exact number."""
    server = content_servers(metrics_port=0, workers=8)
    port = server.running.metrics_port
    check = {"grpc_service": "grpc.health.v1.Health", "grpc_method": "Check"}
    before = scrape(port)
    health = health_pb2_grpc.HealthStub(server.channel)
    threads, calls = 8, 60

    def client() -> None:
        for _ in range(calls):
            health.Check(health_pb2.HealthCheckRequest(), timeout=10)

    pool = [threading.Thread(target=client) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    after = scrape(port)
    total = threads * calls

    def moved(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    assert moved("grpc_server_started_total", **check) == total
    assert moved("grpc_server_handled_total", **check, grpc_code="OK") == total
    assert moved("grpc_server_handling_seconds_count", **check) == total
    assert moved("grpc_server_handling_seconds_bucket", **check, le="+Inf") == total
    assert after.value("grpc_server_calls_in_flight", **check) == 0
    # Cumulative buckets never decrease.
    buckets = sorted(
        (float(labels["le"]), value)
        for name, labels, value in after.samples
        if name == "grpc_server_handling_seconds_bucket"
        and all(labels.get(k) == v for k, v in check.items())
    )
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)
