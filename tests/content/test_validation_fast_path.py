"""validation.ContentValidator: jsonschema-rs answers "valid" only for schemas whose every
keyword both libraries implement alike, and there it agrees with python-jsonschema on every
value; anything else, and every invalid value, gets python-jsonschema's verdict."""

from __future__ import annotations

import random
import zlib
from typing import Any

import pytest

from content_service import validation
from servicekit.errors import InvalidArgument

SAME_IN_BOTH: list[dict[str, Any]] = [
    {"type": "object", "properties": {"title": {"type": "string", "minLength": 1}}},
    {"type": "object", "required": ["a", "b"], "additionalProperties": False,
     "properties": {"a": {"type": "integer"}, "b": {"type": ["string", "null"]}}},
    {"properties": {"n": {"type": "number", "minimum": 0, "exclusiveMaximum": 10}}},
    {"properties": {"s": {"maxLength": 3}, "e": {"enum": [1, "x", None, [1], {"k": True}]}}},
    {"properties": {"c": {"const": {"k": [1, 2]}}, "b": {"const": True}}},
    {"properties": {"l": {"type": "array", "items": {"type": "integer"}, "minItems": 1,
                          "maxItems": 3, "uniqueItems": True}}},
    {"properties": {"t": {"prefixItems": [{"type": "string"}, {"type": "integer"}],
                          "items": False}}},
    {"properties": {"l": {"contains": {"type": "string"}, "minContains": 2}}},
    {"minProperties": 1, "maxProperties": 3, "propertyNames": {"maxLength": 2}},
    {"anyOf": [{"required": ["a"]}, {"required": ["b"]}], "not": {"required": ["c"]}},
    {"oneOf": [{"properties": {"a": {"type": "string"}}},
               {"properties": {"a": {"type": "integer"}}}]},
    {"allOf": [{"required": ["a"]}, {"properties": {"a": {"minimum": 2}}}]},
    {"if": {"required": ["a"]}, "then": {"required": ["b"]}, "else": {"required": ["c"]}},
    {"dependentRequired": {"a": ["b"]}, "dependentSchemas": {"c": {"required": ["a"]}}},
    {"$defs": {"item": {"type": "object", "properties": {
        "kids": {"type": "array", "items": {"$ref": "#/$defs/item"}}}}},
     "$ref": "#/$defs/item", "title": "tree", "description": "recursive", "default": {}},
    {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object"},
    {"type": "object", "properties": {"a": True, "b": False}},
]  # fmt: skip

NOT_SAME: list[dict[str, Any]] = [
    {"properties": {"s": {"pattern": "^[a-z]+$"}}},
    {"patternProperties": {"^x-": {"type": "string"}}},
    {"properties": {"e": {"format": "email"}}},
    {"properties": {"n": {"multipleOf": 0.1}}},
    {"$id": "https://example.com/s", "type": "object"},
    {"$ref": "https://example.com/other.json"},
    {"$defs": {"a": {"$anchor": "x"}}, "$ref": "#x"},
    {"unevaluatedProperties": False},
    {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object"},
    {"properties": {"deep": {"items": {"properties": {"s": {"pattern": "a"}}}}}},
]

KEYS = ["a", "b", "c", "title", "n", "s", "e", "l", "t", "kids", "x-y", "toolong"]


def value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.choice([0, 1, 2, -1, 5, 10, 11, 2**53, rng.randint(-100, 100)])
    if kind == 3:
        return rng.choice([0.5, -2.5, 9.99, 10.0001, 1e300, rng.uniform(-20, 20)])
    if kind == 4:
        return rng.choice(["", "x", "ab", "abc", "abcd", "é✓", "ab\u0301", "🙂🙂🙂", "x" * 10])
    if kind == 5:
        return rng.choice([[1], {"k": True}, {"k": [1, 2]}, [1, 1], ["a", "b"]])
    if kind in (6, 7):
        return {k: value(rng, depth + 1) for k in rng.sample(KEYS, rng.randrange(4))}
    return [value(rng, depth + 1) for _ in range(rng.randrange(4))]


@pytest.mark.parametrize("schema", SAME_IN_BOTH, ids=range(len(SAME_IN_BOTH)))
def test_the_fast_path_agrees_with_python_jsonschema(schema: dict[str, Any]) -> None:
    checker = validation.ContentValidator(schema)
    assert checker.fast is not None
    rng = random.Random(zlib.crc32(repr(schema).encode()))  # the same values every run
    values = [value(rng) for _ in range(400)]
    values += [{k: value(rng, 1) for k in ("a", "b")} for _ in range(200)]
    verdicts = set()
    for v in values:
        python = bool(checker.python.is_valid(v))
        assert checker.fast.is_valid(v) == python, (schema, v)
        verdicts.add(python)
    assert verdicts == {True, False}  # the values reach both answers


@pytest.mark.parametrize("schema", NOT_SAME, ids=range(len(NOT_SAME)))
def test_schemas_with_other_keywords_get_no_fast_path(schema: dict[str, Any]) -> None:
    assert validation.ContentValidator(schema).fast is None


def test_python_jsonschema_decides_when_the_fast_path_cannot_take_a_value() -> None:
    checker = validation.json_schema(
        {"properties": {"n": {"type": "integer", "maximum": 10**30}}}, "schema"
    )
    assert checker.fast is not None
    # Beyond 64 bits jsonschema-rs may refuse the value; python-jsonschema still answers.
    validation.content(checker, {"n": 10**30}, "content")
    with pytest.raises(InvalidArgument) as err:
        validation.content(checker, {"n": 10**30 + 1}, "content")
    assert [v.field for v in err.value.violations] == ["content.n"]


def test_invalid_content_gets_python_jsonschemas_messages_and_paths() -> None:
    checker = validation.json_schema(
        {"type": "object", "required": ["title"],
         "properties": {"title": {"type": "string"}, "cta": {"properties": {"n": {"maximum": 1}}}}},
        "schema",
    )  # fmt: skip
    with pytest.raises(InvalidArgument) as err:
        validation.content(checker, {"cta": {"n": 5}}, "page.sections[0].content")
    assert {(v.field, v.description) for v in err.value.violations} == {
        ("page.sections[0].content", "'title' is a required property"),
        ("page.sections[0].content.cta.n", "5 is greater than the maximum of 1"),
    }
