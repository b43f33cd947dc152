"""The server's edge: health, reflection, error mapping, request ids, graceful shutdown."""

from __future__ import annotations

import logging
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from loom.content.v1 import pages_pb2, tenancy_pb2

from tests.support import ContentServer, raises_status


def test_health_overall_and_per_service(content_server: ContentServer) -> None:
    stub = health_pb2_grpc.HealthStub(content_server.channel)
    for service in ["", "loom.content.v1.PageService", "loom.content.v1.TenancyService"]:
        resp = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
    with raises_status(grpc.StatusCode.NOT_FOUND):
        stub.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5)


def test_reflection_lists_services_without_a_key(content_server: ContentServer) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(content_server.channel)
    responses = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
    )
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert {
        "loom.content.v1.PageService",
        "loom.content.v1.TenancyService",
        "grpc.health.v1.Health",
    } <= names


def test_unexpected_error_is_internal_without_details(
    content_server: ContentServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from content_service import tenancy

    def boom(*_a: object, **_k: object) -> None:
        raise RuntimeError("secret internals: /etc/passwd")

    monkeypatch.setattr(tenancy, "get_team", boom)
    with caplog.at_level(logging.ERROR), raises_status(grpc.StatusCode.INTERNAL) as err:
        content_server.admin.tenancy.GetTeam(
            tenancy_pb2.GetTeamRequest(id="x"),
            metadata=(
                ("authorization", "Bearer test-admin-key"),
                ("x-request-id", "req-123"),
            ),
        )
    assert "secret internals" not in err["message"]
    assert "req-123" in err["message"]
    assert any("secret internals" in (r.exc_text or "") or r.exc_info for r in caplog.records)


def test_missing_ids_are_invalid_argument_with_the_field(content_server: ContentServer) -> None:
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        content_server.admin.pages.GetPage(pages_pb2.GetPageRequest(id=""))
    assert err["fields"] == ["id"]


def test_graceful_stop_finishes_in_flight_calls(
    content_server: ContentServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from content_service import tenancy

    real = tenancy.get_team
    started = threading.Event()

    def slow(*args: object, **kwargs: object) -> object:
        started.set()
        time.sleep(0.5)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    team = content_server.admin.tenancy.CreateTeam(
        tenancy_pb2.CreateTeamRequest(team=tenancy_pb2.Team(name="t"))
    )
    monkeypatch.setattr(tenancy, "get_team", slow)
    result: dict[str, object] = {}

    def call() -> None:
        result["team"] = content_server.admin.tenancy.GetTeam(
            tenancy_pb2.GetTeamRequest(id=team.id)
        )

    worker = threading.Thread(target=call)
    worker.start()
    assert started.wait(5)
    content_server.running.stop(grace=5)
    worker.join(5)
    assert getattr(result.get("team"), "id", None) == team.id
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(content_server.address))
    with pytest.raises(grpc.RpcError):
        health.Check(health_pb2.HealthCheckRequest(), timeout=1)
