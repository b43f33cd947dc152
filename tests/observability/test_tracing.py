"""OpenTelemetry traces through the real servers and clients (the SDK's in-memory exporter):
one trace from a page write through the index outbox into vector_service, one trace per image
job across both services, the request id in every span, statuses, and nothing at all when
tracing is off."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from loom.content.v1 import pages_pb2
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy import text

from servicekit import tracing
from tests.content.tenants_and_pages import make_definition, make_page, make_tenant
from tests.images.helpers import picture
from tests.observability.conftest import ObservedFactory, Spans
from tests.support import ContentServerFactory, raises_status

ROOT = Path(__file__).resolve().parents[2]
CREATE_PAGE = "loom.content.v1.PageService/CreatePage"
UPSERT = "loom.vector.v1.VectorService/UpsertDocuments"


@pytest.fixture
def backend() -> str:
    """Traces do not depend on content_service's database backend."""
    return "sqlite"


def test_a_page_write_and_its_delivery_to_vector_service_are_one_trace(
    spans: Spans, observe: ObservedFactory
) -> None:
    stack = observe()
    definition = make_definition(stack.tenant).id
    make_page(stack.tenant, definition, "pricing", request_id="req-pricing-1")
    stack.drained()

    write = spans.one(CREATE_PAGE, **{tracing.REQUEST_ID_ATTRIBUTE: "req-pricing-1"})
    assert write.kind is SpanKind.SERVER
    assert write.parent is None  # the test's own channel sends no trace context
    assert write.attributes is not None
    assert write.attributes["rpc.grpc.status_code"] == 0
    trace_id = write.context.trace_id
    delivery = spans.wait_for("index outbox delivery")
    assert delivery.kind is SpanKind.CONSUMER
    assert delivery.context.trace_id == trace_id
    assert delivery.parent is not None
    assert delivery.parent.span_id == write.context.span_id
    in_trace = spans.of_trace(trace_id)
    client = [s for s in in_trace if s.name == UPSERT and s.kind is SpanKind.CLIENT]
    server = [s for s in in_trace if s.name == UPSERT and s.kind is SpanKind.SERVER]
    assert client
    assert server
    assert {c.parent.span_id for c in client if c.parent} == {delivery.context.span_id}
    assert {s.parent.span_id for s in server if s.parent} <= {c.context.span_id for c in client}
    embeds = [s for s in in_trace if s.name == "embed"]
    assert embeds, "vector_service embedded the new texts inside the same trace"
    assert {e.parent.span_id for e in embeds if e.parent} <= {s.context.span_id for s in server}
    assert embeds[0].attributes is not None
    assert embeds[0].attributes["loom.embedding.provider"] == "hash"


def test_the_outbox_row_carries_the_writers_trace(
    spans: Spans, content_servers: ContentServerFactory
) -> None:
    server = content_servers()  # no vector_service: the row stays
    tenant = make_tenant(server.admin)
    make_page(tenant, make_definition(tenant).id, "kept", request_id="req-kept")
    write = spans.one(CREATE_PAGE, **{tracing.REQUEST_ID_ATTRIBUTE: "req-kept"})
    with server.db.read() as s:
        (stored,) = s.execute(text("SELECT traceparent FROM index_outbox")).scalars().all()
    version, trace_id, span_id, _flags = stored.split("-")
    assert (version, trace_id, span_id) == (
        "00",
        f"{write.context.trace_id:032x}",
        f"{write.context.span_id:016x}",
    )


def test_with_tracing_off_rows_carry_no_trace(content_servers: ContentServerFactory) -> None:
    assert not tracing.enabled()
    server = content_servers()
    tenant = make_tenant(server.admin)
    make_page(tenant, make_definition(tenant).id, "untraced", request_id="req-untraced")
    with server.db.read() as s:
        assert s.execute(text("SELECT traceparent FROM index_outbox")).scalars().all() == [None]


def test_a_delivery_joining_several_traces_links_to_each(spans: Spans) -> None:
    with tracing.span("first write"):
        first = tracing.traceparent()
    with tracing.span("second write"):
        second = tracing.traceparent()
    with tracing.span_from("several", [first, second, first, None]):
        pass
    with tracing.span_from("one", [first, first]):
        pass
    writes = {s.name: s for s in spans.all()}
    several, one = writes["several"], writes["one"]
    assert several.parent is None
    linked = {link.context.trace_id for link in several.links}
    assert linked == {
        writes["first write"].context.trace_id,
        writes["second write"].context.trace_id,
    }
    assert one.context.trace_id == writes["first write"].context.trace_id
    assert one.parent is not None
    assert one.parent.span_id == writes["first write"].context.span_id


def test_statuses_on_server_and_client_spans(
    spans: Spans, content_servers: ContentServerFactory
) -> None:
    server = content_servers()
    tenant = make_tenant(server.admin)
    with raises_status(grpc.StatusCode.NOT_FOUND):
        tenant.client.pages.GetPage(pages_pb2.GetPageRequest(id="nothing"))
    missing = spans.one("loom.content.v1.PageService/GetPage")
    assert missing.attributes is not None
    assert missing.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    # The caller's mistake, not the server's failure (OpenTelemetry's gRPC conventions).
    assert missing.status.status_code is StatusCode.UNSET
    # A request id is made for a call that brings none, and is the one the edge logs.
    assert missing.attributes[tracing.REQUEST_ID_ATTRIBUTE]


def test_an_image_job_is_one_trace_across_both_services(
    spans: Spans, observe: ObservedFactory
) -> None:
    stack = observe()
    stack.start_worker()
    image = stack.wait_for(stack.upload(picture("PNG", 200, 120, noise_seed=3)).id)
    assert image.state == image.STATE_COMPLETED
    job = spans.wait_for("image job", **{"loom.image_id": image.id})
    assert job.parent is None
    assert job.attributes is not None
    assert job.attributes[tracing.REQUEST_ID_ATTRIBUTE] == f"img-{image.id}-1"
    in_trace = spans.of_trace(job.context.trace_id)
    names = {(s.name, s.kind) for s in in_trace}
    for stage in ("download", "process", "upload", "index", "complete"):
        assert (stage, SpanKind.INTERNAL) in names, stage
    for method in (
        "loom.content.v1.ImageService/DownloadImage",
        "loom.content.v1.ImageJobService/UploadImageVariant",
        "loom.vector.v1.VectorService/UpsertDocuments",
        "loom.content.v1.ImageJobService/CompleteImageJob",
    ):
        assert (method, SpanKind.CLIENT) in names, method
        assert (method, SpanKind.SERVER) in names, method
    servers = [s for s in in_trace if s.kind is SpanKind.SERVER]
    assert {(s.attributes or {}).get(tracing.REQUEST_ID_ATTRIBUTE) for s in servers} == {
        f"img-{image.id}-1"
    }


def test_tracing_off_loads_no_sdk(tmp_path: Path) -> None:
    """Off (the default), the processes import no OpenTelemetry SDK module: no span, no
    processor, no exporter exists."""
    probe = (
        "import sys\n"
        "import content_service.server, vector_service.server, image_worker.worker\n"
        "from servicekit import tracing\n"
        "from servicekit.settings import ServiceSettings\n"
        "tracing.configure(ServiceSettings().traces, 'probe')\n"
        "assert not tracing.enabled()\n"
        "assert tracing.server_interceptor() is None and tracing.traceparent() is None\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry.sdk')))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "DATA_DIR": str(tmp_path), "PYTHONPATH": str(ROOT / "gen")}
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
