"""Hostile values for request fields, chosen by a field's type and name: oversized and odd
strings, URLs of a server that records every request, ids of another tenant, forged page
tokens, extreme numbers, JSON meant to make a server fetch, recurse or choke."""

from __future__ import annotations

import base64
import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.descriptor import FieldDescriptor

from tests.hostile.methods import (
    BOOL,
    BYTES,
    ENUM,
    FLOAT_TYPES,
    FLOATS,
    INT_RANGES,
    MESSAGE,
    STRING,
)


@dataclass
class Ids:
    """One tenant's real ids, by what they name."""

    team: str = ""
    site: str = ""
    environment: str = ""
    page: str = ""
    section: str = ""
    definition: str = ""
    post: str = ""
    session: str = ""
    key: str = ""
    image: str = ""
    menu: str = "main"

    def for_field(self, name: str, method: str) -> str | None:
        by_field = {
            "team_id": self.team,
            "site_id": self.site,
            "environment_id": self.environment,
            "source_environment_id": self.environment,
            "page_id": self.page,
            "section_id": self.section,
            "definition_id": self.definition,
            "session_id": self.session,
            "image_id": self.image,
            "source_id": self.page,
        }
        if name in by_field:
            return by_field[name]
        if name == "id":
            for word, value in (
                ("SectionDefinition", self.definition),
                ("Section", self.section),
                ("Page", self.page),
                ("Post", self.post),
                ("Session", self.session),
                ("ApiKey", self.key),
                ("Image", self.image),
                ("Environment", self.environment),
                ("Site", self.site),
                ("Team", self.team),
            ):
                if word in method:
                    return value
            return self.page
        if name == "name" and "Menu" in method:
            return self.menu
        return None


def old_style_token(cursor: str) -> str:
    raw = json.dumps({"a": cursor, "f": "0" * 16}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@dataclass
class Hostile:
    """The pools, with a seeded random choice among them. `url` is the recording server's."""

    url: str
    rng: random.Random
    ids: Ids | None = None  # whose ids go into id fields (None: random ones)
    method: str = ""
    repeat: Callable[[FieldDescriptor], int] | None = None  # items per repeated field
    strings: list[str] = field(default_factory=list)
    uniform: str | None = None  # this in every string field, ids included

    def __post_init__(self) -> None:
        url = self.url
        self.strings = [
            "",
            " ",
            "\x00",
            "a\x00b",
            "é" * 300,
            "😀" * 200,
            "\u202e\ufeff\u200b",
            "../../../../etc/passwd",
            "/etc/passwd",
            "' OR '1'='1",
            '"; DROP TABLE pages; --',
            "<script>alert(1)</script>",
            "%s%s%s%n",
            "${jndi:ldap://127.0.0.1/x}",
            url,
            f"{url}/schema.json",
            "file:///etc/passwd",
            'NEAR("a" OR *',
            "x" * 5_000,
            "9" * 30,
            "-1",
            "NaN",
            "{}",
            "#",
            "//evil.example",
            "Z" * 65,
        ]

    # ---- scalars by type and name

    def string(self, name: str) -> str:
        if self.uniform is not None:
            return self.uniform
        if self.ids is not None:
            value = self.ids.for_field(name, self.method)
            if value is not None and self.rng.random() < 0.8:
                return value
        if name == "page_token":
            return self.rng.choice(
                ["garbage", old_style_token("9" * 30), old_style_token("-1"), "A" * 2000, "é"]
            )
        if name in ("url", "uri", "base_url", "image_url"):
            return self.rng.choice([self.url, f"{self.url}/x.png", "file:///etc/passwd"])
        if name in ("directory", "path"):
            return self.rng.choice(
                ["/", "/etc", "relative", "/tmp/" + "d" * 300, "/tmp/a\nb", "/proc/self"]
            )
        if name.endswith("id") and self.rng.random() < 0.5:
            return self.rng.choice(
                ["0" * 26, "01" + "z" * 24, "x" * 300, "*", "%", "'", "../x", ""]
            )
        return self.rng.choice(self.strings)

    def small_int(self) -> int:
        return self.rng.choice([-1, 0, 1])

    def int64(self) -> int:
        return self.rng.choice([0, 1, -1, 2**63 - 1, -(2**63), 253_402_300_800, -62_135_596_801])

    def integer(self, kind: int) -> int:
        low, high = INT_RANGES[kind]
        return self.rng.choice([0, 1, -1 if low < 0 else 2, low, high, high // 2])

    def enum(self, field: FieldDescriptor) -> int:
        values = [v.number for v in field.enum_type.values]
        return self.rng.choice([*values, max(values) + 1, 999, -1])

    def json(self, depth: int) -> dict[str, Any]:
        url = self.url
        deep: Any = "bottom"
        for _ in range(60):
            deep = [deep]
        return self.rng.choice(
            [
                {},
                {"$ref": f"{url}/s.json"},
                {"$ref": "#"},
                {"$ref": "#", "pattern": "a"},
                {"$schema": f"{url}/meta.json", "$id": f"{url}/root", "$ref": "x.json"},
                {"type": "object", "properties": {"a": {"$ref": f"{url}/a.json"}}},
                {"title": "x" * 20_000},
                {"": None, "a": [0] * 2_000},
                {"deep": deep},
                {"text": "é" * 5_000, "n": 1e308, "b": True},
                {"type": "string", "minLength": 2**62},
                {"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"},
            ]
        )

    def mask_paths(self) -> list[str]:
        return self.rng.choice([[], ["*"], ["title"], ["x" * 300], ["", "."], ["a.b.c"]])

    # ---- the chooser fill() takes

    def __call__(self, field: FieldDescriptor, depth: int) -> Any:
        repeated = field.is_repeated
        if field.type == MESSAGE:
            if repeated:
                return self.repeat(field) if self.repeat else self.rng.choice([0, 1, 2])
            return 1 if self.rng.random() < 0.8 else None
        if self.rng.random() < 0.1:
            return None
        count = (self.repeat(field) if self.repeat else self.rng.choice([1, 2])) if repeated else 1
        values = [self.scalar(field) for _ in range(count)]
        return values if repeated else values[0]

    @property
    def hostile(self) -> Hostile:
        return self

    def scalar(self, field: FieldDescriptor) -> Any:
        kind = field.type
        if kind == STRING:
            return self.string(field.name)
        if kind == BYTES:
            return self.rng.choice([b"", b"\x89PNG\r\n\x1a\n" + b"\0" * 64, bytes(range(256))])
        if kind == BOOL:
            return self.rng.random() < 0.5
        if kind == ENUM:
            return self.enum(field)
        if kind in FLOAT_TYPES:
            value = self.rng.choice(FLOATS)
            if field.type == FieldDescriptor.TYPE_FLOAT and math.isfinite(value):
                value = max(min(value, 3e38), -3e38)
            return value
        if kind in INT_RANGES:
            return self.integer(kind)
        return None
