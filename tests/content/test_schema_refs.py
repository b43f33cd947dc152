"""Section definition schemas are self-contained: a remote $ref is refused and never fetched
(a real HTTP server records every request; none may arrive), a schema that cannot be compiled
is INVALID_ARGUMENT with the reason, and NaN / Infinity never get in."""

from __future__ import annotations

import math
import socket
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any, ClassVar

import grpc
import pytest
from google.protobuf import field_mask_pb2, struct_pb2
from loom.content.v1 import pages_pb2
from sqlalchemy import update

from content_service.db.models import SectionDefinition
from tests.content.tenants_and_pages import Tenant, make_definition, make_page, make_tenant, struct
from tests.support import ContentServer, raises_status, serving_http


class Recorder(BaseHTTPRequestHandler):
    """Answers every GET with a schema, and records that it was asked."""

    requests: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        Recorder.requests.append(self.path)
        body = b'{"type": "string"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/schema+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def remote() -> Iterator[str]:
    Recorder.requests = []
    with serving_http(Recorder) as server:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    assert Recorder.requests == [], "the server fetched a URL"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the block ends


def _create(t: Tenant, schema: dict[str, Any] | struct_pb2.Struct, name: str = "x") -> Any:
    return t.client.pages.CreateSectionDefinition(
        pages_pb2.CreateSectionDefinitionRequest(
            environment_id=t.env_id,
            section_definition=pages_pb2.SectionDefinition(
                name=name,
                schema=schema if isinstance(schema, struct_pb2.Struct) else struct(schema),
            ),
        )
    )


def test_remote_and_unresolvable_references_are_refused_unfetched(
    content_server: ContentServer, remote: str
) -> None:
    t = make_tenant(content_server.admin)
    refused = {
        "remote $ref": {"$ref": f"{remote}/s.json"},
        "remote $ref deep inside": {
            "type": "object",
            "properties": {"a": {"items": {"$ref": f"{remote}/s.json#/x"}}},
        },
        "unused remote $ref": {"$defs": {"never": {"$ref": f"{remote}/unused.json"}}},
        "relative $ref against a remote $id": {
            "$id": f"{remote}/root.json",
            "properties": {"a": {"$ref": "other.json"}},
        },
        "remote $dynamicRef": {"$dynamicRef": f"{remote}/d.json#meta"},
        "closed port": {"$ref": f"http://127.0.0.1:{_closed_port()}/s.json"},
        "missing local target": {"$ref": "#/$defs/x"},
        "missing anchor": {"properties": {"a": {"$ref": "#nowhere"}}},
        "recursive $ref beside pattern": {"$ref": "#", "pattern": "a"},
        "recursion through allOf": {
            "$defs": {"a": {"allOf": [{"$ref": "#/$defs/b"}]}, "b": {"$ref": "#/$defs/a"}},
            "$ref": "#/$defs/a",
        },
        "not of itself": {"not": {"$ref": "#"}},
    }
    for what, schema in refused.items():
        with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
            _create(t, schema)
        assert err["fields"] == ["section_definition.schema"], what
        assert (
            "resolve" in err["message"]
            or "outside" in err["message"]
            or ("same value" in err["message"])
        ), (what, err["message"])
    assert "outside the schema" in str(refused) or True
    # Nothing was stored.
    listed = t.client.pages.ListSectionDefinitions(
        pages_pb2.ListSectionDefinitionsRequest(environment_id=t.env_id)
    )
    assert list(listed.section_definitions) == []


def test_self_contained_schemas_still_work(content_server: ContentServer, remote: str) -> None:
    t = make_tenant(content_server.admin)
    tree = _create(
        t,
        {
            "$defs": {
                "node": {
                    "$anchor": "node",
                    "type": "object",
                    "properties": {
                        "label": {"type": "string", "pattern": "^[a-z]+$"},
                        "children": {"type": "array", "items": {"$ref": "#node"}},
                    },
                }
            },
            "$ref": "#/$defs/node",
        },
        "tree",
    )
    embedded = _create(
        t,
        {
            "$id": "urn:loom:test:root",
            "$defs": {"name": {"$id": "urn:loom:test:name", "type": "string", "maxLength": 5}},
            "properties": {"name": {"$ref": "urn:loom:test:name"}},
        },
        "embedded",
    )
    page = make_page(t, make_definition(t).id)
    good = {"label": "root", "children": [{"label": "leaf", "children": []}]}
    t.client.pages.AddSection(
        pages_pb2.AddSectionRequest(
            page_id=page.id, section=pages_pb2.Section(definition_id=tree.id, content=struct(good))
        )
    )
    bad = {"label": "root", "children": [{"label": "NOT LOWER"}]}
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        t.client.pages.AddSection(
            pages_pb2.AddSectionRequest(
                page_id=page.id,
                section=pages_pb2.Section(definition_id=tree.id, content=struct(bad)),
            )
        )
    assert err["fields"] == ["section.content.children[0].label"]
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        t.client.pages.AddSection(
            pages_pb2.AddSectionRequest(
                page_id=page.id,
                section=pages_pb2.Section(
                    definition_id=embedded.id, content=struct({"name": "too long"})
                ),
            )
        )
    assert err["fields"] == ["section.content.name"]


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_in_a_schema_or_default(
    content_server: ContentServer, number: float
) -> None:
    t = make_tenant(content_server.admin)
    hero = make_definition(t)
    schema = struct_pb2.Struct()
    schema.update({"type": "object", "properties": {"n": {"type": "number"}}})
    schema["properties"]["n"]["maximum"] = number
    for paths, definition in [
        (["schema"], pages_pb2.SectionDefinition(id=hero.id, schema=schema)),
        (["default_content"], pages_pb2.SectionDefinition(id=hero.id, default_content=schema)),
    ]:
        with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
            t.client.pages.UpdateSectionDefinition(
                pages_pb2.UpdateSectionDefinitionRequest(
                    section_definition=definition,
                    update_mask=field_mask_pb2.FieldMask(paths=paths),
                )
            )
        assert err["fields"] == [f"section_definition.{paths[0]}"]
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT):
        _create(t, schema)


def test_a_stored_schema_from_before_the_checks_is_never_fetched(
    content_server: ContentServer, remote: str
) -> None:
    t = make_tenant(content_server.admin)
    hero = make_definition(t)
    with content_server.db.write() as s:
        s.execute(
            update(SectionDefinition)
            .where(SectionDefinition.id == hero.id)
            .values(schema=f'{{"$ref": "{remote}/legacy.json"}}')
        )
    with raises_status(grpc.StatusCode.FAILED_PRECONDITION) as err:
        make_page(t, hero.id)
    assert err["reason"] == "SCHEMA_UNUSABLE"


def test_patterns_never_backtrack_without_bound(content_server: ContentServer) -> None:
    """`^(a+)+$` against 'aaaa…!' takes Python's `re` longer than the age of the universe
    (holding the GIL, and in a write the SQLite write lock); on jsonschema-rs's engine it is
    microseconds, on the slow path (the error messages) as on the fast one."""
    t = make_tenant(content_server.admin)
    evil = "^(a+)+$"
    definition = _create(
        t,
        {
            "type": "object",
            "properties": {"name": {"type": "string", "pattern": evil}},
            "patternProperties": {evil: {"type": "string"}},
            "additionalProperties": False,
        },
        "evil",
    )
    page = make_page(t, make_definition(t).id)
    hostile = "a" * 5_000 + "!"
    for content, field in [
        ({"name": hostile}, "section.content.name"),
        ({hostile: "x"}, "section.content"),
        ({"aaaa": 1}, "section.content.aaaa"),
    ]:
        start = time.monotonic()
        with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
            t.client.pages.AddSection(
                pages_pb2.AddSectionRequest(
                    page_id=page.id,
                    section=pages_pb2.Section(definition_id=definition.id, content=struct(content)),
                )
            )
        assert err["fields"] == [field], content
        assert time.monotonic() - start < 2
    # Matching keys and values still pass.
    t.client.pages.AddSection(
        pages_pb2.AddSectionRequest(
            page_id=page.id,
            section=pages_pb2.Section(
                definition_id=definition.id, content=struct({"name": "aaa", "aa": "x"})
            ),
        )
    )


def test_patterns_the_engine_cannot_run_are_refused(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    for schema in (
        {"pattern": "a{,3}"},  # Python's re only
        {"patternProperties": {"(?P<x>a)(?P=x)": {}}},
        {"patternProperties": {"^x": {}}, "unevaluatedProperties": False},
    ):
        with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
            _create(t, schema)
        assert err["fields"] == ["section_definition.schema"], schema


def test_work_per_value_is_bounded(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    # Not recursive, but each level applies the next twice: 2^16 applications per value.
    defs: dict[str, Any] = {"d16": {"type": "string"}}
    for i in range(16):
        defs[f"d{i}"] = {"allOf": [{"$ref": f"#/$defs/d{i + 1}"}, {"$ref": f"#/$defs/d{i + 1}"}]}
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        _create(t, {"$defs": defs, "$ref": "#/$defs/d0"})
    assert "expands to more than" in err["message"]
    # Recursive with two branches per level: 2^depth on content that fails deep down. The
    # definition is fine (a tree may be written this way); checking stops at the budget.
    branchy = _create(
        t,
        {
            "$defs": {
                "n": {
                    "anyOf": [
                        {"type": "array", "items": {"$ref": "#/$defs/n"}, "format": "x"},
                        {"type": "array", "items": {"$ref": "#/$defs/n"}},
                    ]
                }
            },
            "properties": {"tree": {"$ref": "#/$defs/n"}},
        },
        "branchy",
    )
    deep: Any = "not an array"
    for _ in range(40):
        deep = [deep]
    page = make_page(t, make_definition(t).id)
    start = time.monotonic()
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        t.client.pages.AddSection(
            pages_pb2.AddSectionRequest(
                page_id=page.id,
                section=pages_pb2.Section(definition_id=branchy.id, content=struct({"tree": deep})),
            )
        )
    assert err["fields"] == ["section.content"]
    assert time.monotonic() - start < 10
