"""Hostile input at every method of both services, found through server reflection: a method
added later is driven here without a test of its own. Requests are built from the
descriptors (oversized strings, invalid UTF-8 on the wire, nesting 10,000 deep, huge repeated
fields, random ids and another tenant's, forged page tokens, extreme numbers, JSON that names
a URL or recurses), sent as nobody, as tenant B, as the admin key and as the service token,
against real servers (content_service on SQLite and PostgreSQL, vector_service).

The suite fails on any INTERNAL or UNKNOWN status, on an answer slower than SLOW_SECONDS, on
any request reaching the recording HTTP server whose URLs the inputs are full of, and on any
change to tenant A's data after tenant B's turn."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from loom.content.v1 import (
    chat_pb2,
    images_pb2,
    images_pb2_grpc,
    navigation_pb2,
    pages_pb2,
    posts_pb2,
    search_pb2,
    settings_pb2,
    tenancy_pb2,
)
from loom.vector.v1 import vector_pb2

from tests.content.service_stubs import (
    chat,
    make_chat,
    make_post,
    nav,
    posts,
    search_stub,
    site_settings,
)
from tests.content.tenants_and_pages import Tenant, make_definition, make_page, make_tenant
from tests.hostile import wire
from tests.hostile.methods import (
    ENDLESS,
    Method,
    discover,
    fill,
    invoke,
    message_paths,
    recursive_field,
    set_path,
    string_paths,
    struct_paths,
)
from tests.hostile.values import Hostile, Ids
from tests.support import (
    ADMIN_KEY,
    SERVICE_TOKEN,
    ContentServer,
    Stub,
    hash_embedder,
    serving_http,
    serving_vector,
    vector_settings,
)
from tests.worker import images

SLOW_SECONDS = 5.0
CALL_TIMEOUT = 10.0
# Examples hypothesis draws per method and caller (bounded: the whole suite runs in make test).
EXAMPLES = 4
BAD_CODES = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)


class Recorder(BaseHTTPRequestHandler):
    """Records every request: none may arrive (no server-side fetch of anything sent)."""

    requests: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        Recorder.requests.append(f"GET {self.path}")
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def do_POST(self) -> None:
        Recorder.requests.append(f"POST {self.path}")
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        pass


@dataclass
class Outcome:
    calls: int = 0
    codes: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


@dataclass
class Target:
    """A server, the methods it offers, and how to call it as whom."""

    channel: grpc.Channel
    methods: list[Method]


def _metadata(key: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),) if key else ()


def _send(
    target: Target,
    method: Method,
    requests: list[bytes],
    key: str | None,
    case: str,
    out: Outcome,
) -> None:
    out.calls += 1
    start = time.monotonic()
    code = grpc.StatusCode.OK
    details = ""
    try:
        invoke(target.channel, method, requests, _metadata(key), CALL_TIMEOUT)
    except grpc.RpcError as exc:
        code = exc.code()  # type: ignore[attr-defined]
        details = exc.details() or ""  # type: ignore[attr-defined]
    took = time.monotonic() - start
    out.codes[code.name] = out.codes.get(code.name, 0) + 1
    if code in BAD_CODES:
        out.failures.append(f"{method.full_name} [{case}]: {code.name} {details[:200]}")
    elif code == grpc.StatusCode.RESOURCE_EXHAUSTED and "metadata" in details:
        # An error too large for a default client's metadata limit (8 KiB): the client never
        # sees the server's status.
        out.failures.append(f"{method.full_name} [{case}]: error too large ({details[:100]})")
    elif took > SLOW_SECONDS or code == grpc.StatusCode.DEADLINE_EXCEEDED:
        out.failures.append(f"{method.full_name} [{case}]: {took:.1f} s ({code.name})")


def _serialized(method: Method, messages: list[Message]) -> list[bytes]:
    return [m.SerializeToString() for m in messages]


def _build(method: Method, hostile: Hostile, count: int) -> list[Message]:
    hostile.method = method.name
    return [fill(method.request(), hostile) for _ in range(count)]


def _stream_count(method: Method) -> int:
    return 3 if method.client_streaming else 1


def drive(
    target: Target,
    key: str | None,
    url: str,
    out: Outcome,
    *,
    ids: list[Ids],
    thorough: bool,
    seed: int,
) -> None:
    """Every method, every case, as the caller `key`."""
    for method in target.methods:
        if method.full_name in ENDLESS:
            continue
        rng = random.Random(f"{seed}:{method.full_name}")
        n = _stream_count(method)
        _send(target, method, [b""] * n, key, "empty", out)
        for who in [None, *ids]:
            hostile = Hostile(url, rng, ids=who)
            case = f"hostile, ids of {who.team if who else 'nobody'}"
            _send(target, method, _serialized(method, _build(method, hostile, n)), key, case, out)
        if not thorough:
            continue
        # The same value in every string field, ids included: NUL (which PostgreSQL cannot
        # even compare), a URL of the recording server, a forged page token.
        for value in ("a\x00b", f"{url}/every.json", "A" * 2000):
            uniform = Hostile(url, rng, uniform=value)
            messages = _build(method, uniform, n)
            _send(
                target,
                method,
                _serialized(method, messages),
                key,
                f"every string {value[:9]!r}",
                out,
            )
        descriptor = method.request_class.DESCRIPTOR
        # Huge repeated fields: 10,000 items each (small ones, under the 8 MiB request limit).
        huge = Hostile(url, rng, ids=ids[0] if ids else None, repeat=lambda f: 10_000)
        huge.strings = ["x"]
        huge_request = method.request()
        for f in descriptor.fields:
            if f.is_repeated and f.type != f.TYPE_MESSAGE:
                getattr(huge_request, f.name).extend([huge.scalar(f)] * 10_000)
            elif f.is_repeated and not f.message_type.GetOptions().map_entry:
                for _ in range(2_000):
                    getattr(huge_request, f.name).add()
        _send(target, method, [huge_request.SerializeToString()] * n, key, "huge repeated", out)
        # One oversized string at a time (1 MiB; ASCII and 2-byte characters alternately).
        for i, path in enumerate(string_paths(descriptor)):
            base = fill(method.request(), Hostile(url, rng, ids=ids[0] if ids else None))
            set_path(base, path, ("x" if i % 2 else "é") * (1024 * 1024 // (1 + i % 2)))
            name = ".".join(f.name for f in path)
            _send(target, method, [base.SerializeToString()] * n, key, f"1 MiB {name}", out)
        # Invalid UTF-8 on the wire.
        raw = wire.with_invalid_utf8(descriptor)
        if raw is not None:
            _send(target, method, [raw] * n, key, "invalid UTF-8", out)
        # Nesting 10,000 deep: in every Struct, and in every self-recursive message.
        for path in struct_paths(descriptor):
            _send(target, method, [_nested(path, wire.deep_struct(10_000))] * n, key, "deep", out)
        for path in message_paths(descriptor):
            own = recursive_field(path[-1].message_type)
            if own is not None:
                deep = wire.deep_self(own.number, 10_000)
                _send(target, method, [_nested(path, deep)] * n, key, "deep self", out)


def _nested(path: list[Any], payload: bytes) -> bytes:
    for f in reversed(path):
        payload = wire.field(f.number, payload)
    return payload


def drive_hypothesis(target: Target, key: str | None, url: str, out: Outcome, ids: Ids) -> None:
    """Property-based: hypothesis picks the values field by field (bounded examples)."""

    def property_for(method: Method) -> Callable[[], None]:
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(st.data())
        def run(data: st.DataObject) -> None:
            seed = data.draw(st.integers(0, 2**32), label="seed")
            use_ids = data.draw(st.booleans(), label="real ids")
            hostile = Hostile(url, random.Random(seed), ids=ids if use_ids else None)
            text = data.draw(st.text(max_size=200), label="text")
            hostile.strings = [*hostile.strings, text]
            messages = _build(method, hostile, _stream_count(method))
            _send(target, method, _serialized(method, messages), key, f"hypothesis {seed}", out)

        return run  # type: ignore[no-any-return]

    for method in target.methods:
        if method.full_name not in ENDLESS:
            property_for(method)()


# ------------------------------------------------------------------------ the stack


@dataclass
class Stack:
    content: ContentServer
    vector_channel: grpc.Channel
    a: Tenant
    b: Tenant
    a_ids: Ids
    b_ids: Ids
    url: str


def _seed(server: ContentServer, vector: Any, t: Tenant) -> Ids:
    """A tenant with one of everything."""
    hero = make_definition(t)
    page = make_page(t, hero.id, slug="home", n_sections=2)
    post = make_post(t, "hello", body="walrus " * 5)
    nav(t).SetMenu(
        navigation_pb2.SetMenuRequest(
            environment_id=t.env_id,
            menu=navigation_pb2.Menu(
                name="main", items=[navigation_pb2.MenuItem(label="Home", page_id=page.id)]
            ),
        )
    )
    site_settings(t).UpdateSiteSettings(
        settings_pb2.UpdateSiteSettingsRequest(
            site_settings=settings_pb2.SiteSettings(environment_id=t.env_id, theme="dark"),
            update_mask=field_mask_pb2.FieldMask(paths=["theme"]),
        )
    )
    session = make_chat(t)
    uploads = Stub(images_pb2_grpc.ImageServiceStub(server.channel), t.key)
    image = uploads.UploadImage(
        iter(
            [
                images_pb2.UploadImageRequest(
                    environment_id=t.env_id,
                    filename="a.png",
                    mime_type="image/png",
                    chunk=images.rgba_png(8, 8),
                )
            ]
        )
    )
    vector.UpsertDocuments(
        vector_pb2.UpsertDocumentsRequest(
            collection=vector_pb2.COLLECTION_PAGES,
            documents=[
                vector_pb2.Document(
                    id=f"page:{page.id}",
                    scope=vector_pb2.Scope(
                        team_id=t.team_id, site_id=t.site_id, environment_id=t.env_id
                    ),
                    source_id=page.id,
                    text="plans for every team",
                )
            ],
        )
    )
    keys = server.admin.tenancy.ListApiKeys(tenancy_pb2.ListApiKeysRequest(team_id=t.team_id))
    return Ids(
        team=t.team_id,
        site=t.site_id,
        environment=t.env_id,
        page=page.id,
        section=page.sections[0].id,
        definition=hero.id,
        post=post.id,
        session=session.id,
        key=keys.api_keys[0].id,
        image=image.id,
    )


def _without_scores(answer: search_pb2.SearchResponse) -> search_pb2.SearchResponse:
    """bm25 scores move with every other document in the index (B's too): not A's data."""
    for result in answer.results:
        result.ClearField("score")
    return answer


def snapshot(stack: Stack) -> list[bytes]:
    """Everything of tenant A, as the admin key and the service token read it."""
    admin = stack.content.admin
    a = stack.a_ids
    env = a.environment
    calls: list[Callable[[], Message]] = [
        lambda: admin.tenancy.GetTeam(tenancy_pb2.GetTeamRequest(id=a.team)),
        lambda: admin.tenancy.ListSites(tenancy_pb2.ListSitesRequest(team_id=a.team)),
        lambda: admin.tenancy.ListEnvironments(tenancy_pb2.ListEnvironmentsRequest(site_id=a.site)),
        lambda: admin.tenancy.ListApiKeys(tenancy_pb2.ListApiKeysRequest(team_id=a.team)),
        lambda: admin.pages.ListSectionDefinitions(
            pages_pb2.ListSectionDefinitionsRequest(environment_id=env)
        ),
        lambda: admin.pages.ListPages(pages_pb2.ListPagesRequest(environment_id=env)),
        lambda: admin.pages.GetPage(pages_pb2.GetPageRequest(id=a.page)),
    ]
    t = Tenant(a.team, ADMIN_KEY, a.site, env, admin)
    calls += [
        lambda: posts(t).ListPosts(posts_pb2.ListPostsRequest(environment_id=env)),
        lambda: nav(t).ListMenus(navigation_pb2.ListMenusRequest(environment_id=env)),
        lambda: site_settings(t).GetSiteSettings(
            settings_pb2.GetSiteSettingsRequest(environment_id=env)
        ),
        lambda: chat(t).ListSessions(chat_pb2.ListSessionsRequest(site_id=a.site)),
        lambda: chat(t).ListMessages(chat_pb2.ListMessagesRequest(session_id=a.session)),
        lambda: Stub(images_pb2_grpc.ImageServiceStub(stack.content.channel), ADMIN_KEY).ListImages(
            images_pb2.ListImagesRequest(environment_id=env)
        ),
        lambda: _without_scores(
            search_stub(t).Search(search_pb2.SearchRequest(environment_id=env, query="walrus"))
        ),
    ]
    from loom.vector.v1 import vector_pb2_grpc

    vector = Stub(vector_pb2_grpc.VectorServiceStub(stack.vector_channel), SERVICE_TOKEN)
    for collection in vector_pb2.Collection.values():
        if collection:
            calls.append(
                lambda collection=collection: vector.ListDocuments(  # type: ignore[misc]
                    vector_pb2.ListDocumentsRequest(
                        collection=collection, scope=vector_pb2.Scope(team_id=a.team)
                    )
                )
            )
    return [call().SerializeToString(deterministic=True) for call in calls]


@pytest.fixture
def stack(content_server: ContentServer, tmp_path: Path) -> Iterator[Stack]:
    Recorder.requests = []
    with serving_http(Recorder) as http:
        url = f"http://127.0.0.1:{http.server_address[1]}"
        settings_ = vector_settings(tmp_path / "vector", content_address=content_server.address)
        with serving_vector(settings_, hash_embedder()) as vector:
            a = make_tenant(content_server.admin, "victim")
            b = make_tenant(content_server.admin, "attacker")
            a_ids = _seed(content_server, vector.stub(), a)
            b_ids = _seed(content_server, vector.stub(), b)
            yield Stack(content_server, vector.channel, a, b, a_ids, b_ids, url)
        assert Recorder.requests == [], f"the servers fetched: {Recorder.requests[:5]}"


def test_hostile_input_at_every_method(stack: Stack) -> None:
    targets = [
        Target(stack.content.channel, discover(stack.content.channel)),
        Target(stack.vector_channel, discover(stack.vector_channel)),
    ]
    names = {m.full_name for t in targets for m in t.methods}
    assert "loom.content.v1.PageService/CreatePage" in names  # reflection found ours
    assert "loom.vector.v1.VectorService/EmbedTexts" in names
    out = Outcome()
    before = snapshot(stack)
    for target in targets:
        drive(target, None, stack.url, out, ids=[stack.a_ids], thorough=False, seed=1)
        drive(
            target,
            stack.b.key,
            stack.url,
            out,
            ids=[stack.b_ids, stack.a_ids],
            thorough=True,
            seed=2,
        )
        drive_hypothesis(target, stack.b.key, stack.url, out, stack.a_ids)
    assert snapshot(stack) == before, "tenant B's calls changed tenant A's data"
    for target in targets:
        for key in (ADMIN_KEY, SERVICE_TOKEN):
            drive(target, key, stack.url, out, ids=[], thorough=True, seed=3)
            drive_hypothesis(target, key, stack.url, out, stack.b_ids)
    assert not out.failures, f"{len(out.failures)} of {out.calls} calls failed:\n" + "\n".join(
        out.failures[:40]
    )
    # The servers are fine afterwards.
    assert snapshot(stack)
    for target in targets:
        health = health_pb2_grpc.HealthStub(target.channel)
        status = health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING
    print(f"{out.calls} calls to {len(names)} methods: {sorted(out.codes.items())}")
