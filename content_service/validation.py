"""Input rules, each stated once: slugs, names, titles, JSON Schema checks."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from math import inf
from typing import Any

import jsonschema
import jsonschema_rs
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError
from referencing.exceptions import Unresolvable

from content_service import schemas
from content_service.db.values import dumps
from servicekit.errors import (
    Aborted,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    invalid,
    shown,
)

SLUG_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
ENV_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
DEFINITION_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9_-]{0,61}[a-z0-9])?$")


def slug(value: str, field: str, max_len: int = 200) -> str:
    if not value:
        raise invalid(field, "is required")
    if len(value) > max_len or not SLUG_RE.match(value):
        raise invalid(
            field,
            f"must be lowercase letters, digits and single hyphens ([a-z0-9-], at most "
            f"{max_len} characters, no leading/trailing hyphen); got {shown(value)}",
        )
    return value


def environment_name(value: str, field: str) -> str:
    if not ENV_NAME_RE.match(value or ""):
        raise invalid(field, f"must match [a-z0-9-], 1-63 characters; got {shown(value)}")
    return value


def definition_name(value: str, field: str) -> str:
    if not DEFINITION_NAME_RE.match(value or ""):
        raise invalid(field, f"must match [a-z0-9_-], 1-63 characters; got {shown(value)}")
    return value


def text(value: str, field: str, *, max_len: int, required: bool = True) -> str:
    stripped = value.strip()
    if required and not stripped:
        raise invalid(field, "is required")
    if len(value) > max_len:
        raise invalid(field, f"must be at most {max_len} characters")
    if "\x00" in value:
        # PostgreSQL cannot store NUL in text; refusing it everywhere keeps backends alike.
        raise invalid(field, "must not contain NUL characters")
    return value


def json_schema(schema: dict[str, Any], field: str) -> ContentValidator:
    """A definition's schema, checked: valid for the 2020-12 meta-schema, self-contained and
    never recursing in place (content_service.schemas), so that content checks against it
    neither fetch anything nor fail. Pure computation: run it before a write transaction."""
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path)
        raise invalid(f"{field}{'/' + where if where else ''}", exc.message) from exc
    except RecursionError:
        raise invalid(field, "is nested too deeply") from None
    schemas.check(schema, field)
    return ContentValidator(schema)


class CheckedFirst:
    """The content checks of one write, made before its transaction (checked_first)."""

    def __init__(self) -> None:
        self.passed: set[tuple[str, str]] = set()
        self.in_write = False

    def writing(self) -> None:
        """From here on content() evaluates nothing: the write transaction is about to open."""
        self.in_write = True


_checked = threading.local()


@contextmanager
def checked_first() -> Iterator[CheckedFirst]:
    """Runs a write's content checks before its transaction, so no schema is evaluated while
    the write lock is held. Inside the block, content() records every (schema, content) pair it
    passes; after `.writing()` it only looks a pair up. A pair not seen before means the
    definition's schema changed between the check and the write (or a path was not checked
    first): ABORTED, nothing written, the client retries."""
    outer = getattr(_checked, "current", None)
    checks = CheckedFirst()
    _checked.current = checks
    try:
        yield checks
    finally:
        _checked.current = outer


def content(validator: ContentValidator, value: dict[str, Any], field: str) -> None:
    """Checks content against a definition's schema; every failure becomes a field violation
    whose field is the path inside the content (e.g. `page.sections[0].content.title`)."""
    checks: CheckedFirst | None = getattr(_checked, "current", None)
    if checks is None:
        _check(validator, value, field)
        return
    key = (validator.key, dumps(value))
    if checks.in_write:
        if key not in checks.passed:
            raise Aborted(
                f"the section definition behind {field} changed while this write was being "
                "checked; nothing was written: retry the request",
                reason="DEFINITION_CHANGED",
            )
        return
    _check(validator, value, field)
    checks.passed.add(key)


def _check(validator: ContentValidator, value: dict[str, Any], field: str) -> None:
    if validator.surely_valid(value):
        return
    _budget.left = MAX_EVALUATIONS
    _budget.deadline = getattr(_budget, "window", None) or time.monotonic() + MAX_CHECK_SECONDS
    try:
        errors: list[jsonschema.ValidationError] = sorted(
            validator.python.iter_errors(value), key=lambda e: list(map(str, e.absolute_path))
        )
    except _TooCostly:
        raise invalid(
            field,
            f"takes more than {MAX_EVALUATIONS} schema evaluations or {MAX_CHECK_SECONDS:.0f} s "
            "to check against its definition's schema (a recursive schema with several "
            "branches per level); make the content shallower or the schema simpler",
        ) from None
    except (Unresolvable, RecursionError) as exc:
        # Only a schema stored before the checks of json_schema() existed gets here.
        raise FailedPrecondition(
            "the section definition's schema cannot be applied (it refers outside itself, or "
            f"recurses without end: {type(exc).__name__}); update the definition's schema",
            reason="SCHEMA_UNUSABLE",
        ) from None
    if errors:
        raise InvalidArgument(
            [
                FieldViolation(
                    field + "".join(_path_part(p) for p in error.absolute_path), error.message
                )
                for error in errors[:20]
            ]
        )


def _pattern(
    validator: Any, pattern: str, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not schemas.pattern_matches(pattern, instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(
    validator: Any, patterns: dict[str, Any], instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if schemas.pattern_matches(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(
    validator: Any, additional: Any, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    """python-jsonschema's additionalProperties, its patternProperties matched on our engine."""
    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    extras = [
        key
        for key in instance
        if key not in properties and not any(schemas.pattern_matches(p, key) for p in patterns)
    ]
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        listed = ", ".join(repr(each) for each in sorted(extras, key=str))
        verb = "was" if len(extras) == 1 else "were"
        if patterns:
            yield ValidationError(
                f"{listed} {'does' if len(extras) == 1 else 'do'} not match any of the "
                f"regexes: {', '.join(repr(p) for p in sorted(patterns))}"
            )
        else:
            yield ValidationError(
                f"Additional properties are not allowed ({listed} {verb} unexpected)"
            )


# What one content check may take on python-jsonschema: this many keyword evaluations or this
# long, whichever comes first. A recursive schema with two branches per level is 2^depth
# evaluations (content_service.schemas); a 256 KiB section of tiny values with a keyword-heavy
# schema is a few hundred thousand (0.1 s for 42,000 here).
MAX_EVALUATIONS = 1_000_000
MAX_CHECK_SECONDS = 2.0
_CLOCK_EVERY = 4096  # evaluations between looks at the clock
_budget = threading.local()


class _TooCostly(Exception):
    pass


@contextmanager
def one_budget() -> Iterator[None]:
    """Every content check inside shares one MAX_CHECK_SECONDS (a batch of pages of many
    sections is one write: it must not hold the write lock for seconds per section)."""
    outer = getattr(_budget, "window", None)
    if outer is None:
        _budget.window = time.monotonic() + MAX_CHECK_SECONDS
    try:
        yield
    finally:
        if outer is None:
            _budget.window = None


def _counted(keyword: Any) -> Any:
    def counted(validator: Any, value: Any, instance: Any, schema: Any) -> Any:
        left = getattr(_budget, "left", MAX_EVALUATIONS)
        if left <= 0 or (
            left % _CLOCK_EVERY == 0 and time.monotonic() > getattr(_budget, "deadline", inf)
        ):
            raise _TooCostly
        _budget.left = left - 1
        return keyword(validator, value, instance, schema)

    return counted


# Draft 2020-12 with its regular expressions on jsonschema-rs's engine (content_service.schemas):
# Python's `re` backtracks without bound and holds the GIL while it does; every keyword counted
# against the budget of one content check.
_Validator = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
    Draft202012Validator,
    validators={
        name: _counted(keyword)
        for name, keyword in {
            **Draft202012Validator.VALIDATORS,
            "pattern": _pattern,
            "patternProperties": _pattern_properties,
            "additionalProperties": _additional_properties,
        }.items()
    },
)


class ContentValidator:
    """A definition's schema, checked by python-jsonschema (the rules and the messages) with
    jsonschema-rs as a fast "valid" for schemas whose every keyword means the same in both:
    checking a section's content is the largest share of a page write's CPU otherwise (~16 us
    against ~0.2 us). Invalid content always gets python-jsonschema's verdict and errors."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        self.key = dumps(schema)  # names the schema in checked_first's record
        self.python = _Validator(
            schema,
            format_checker=Draft202012Validator.FORMAT_CHECKER,
            registry=schemas.NO_RETRIEVAL,  # never fetches a remote $ref
        )
        self.fast: jsonschema_rs.Validator | None = None
        if _same_in_both(schema):
            try:
                self.fast = jsonschema_rs.Draft202012Validator(
                    schema, validate_formats=False, retriever=schemas.refuse_retrieval
                )
            except (ValueError, jsonschema_rs.ValidationError):
                self.fast = None

    def surely_valid(self, value: Any) -> bool:
        """True when the fast path finds the value valid; False means "ask python-jsonschema"."""
        if self.fast is None:
            return False
        try:
            return bool(self.fast.is_valid(value))
        except (ValueError, TypeError, OverflowError):
            return False  # a value the fast path cannot take


@lru_cache(maxsize=512)
def validator_for(schema_text: str) -> ContentValidator:
    """The validator of a stored schema (its JSON text), built once per process."""
    return ContentValidator(json.loads(schema_text))


# Draft 2020-12 keywords that jsonschema-rs and python-jsonschema implement alike (checked by
# tests/content/test_validation_fast_path.py). Left out on purpose: "pattern" and
# "patternProperties" (Python's re and jsonschema-rs's Rust engine are different dialects),
# "format" (python-jsonschema checks formats), "multipleOf" (float arithmetic differs),
# "$id", "$anchor", "$dynamicRef" and remote "$ref" (resolution), "unevaluated*".
_ANNOTATIONS = {
    "title", "description", "default", "examples", "$comment", "deprecated", "readOnly",
    "writeOnly",
}  # fmt: skip
_ASSERTIONS = {
    "type", "enum", "const", "required", "dependentRequired",
    "minLength", "maxLength", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "minItems", "maxItems", "uniqueItems", "minContains", "maxContains",
    "minProperties", "maxProperties",
}  # fmt: skip
_ONE_SUBSCHEMA = {
    "items", "additionalProperties", "not", "if", "then", "else", "contains", "propertyNames",
}  # fmt: skip
_SUBSCHEMA_LISTS = {"prefixItems", "allOf", "anyOf", "oneOf"}
_SUBSCHEMA_MAPS = {"properties", "$defs", "dependentSchemas"}
_DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"


def _same_in_both(schema: Any) -> bool:
    if isinstance(schema, bool):
        return True
    if not isinstance(schema, dict):
        return False
    for key, value in schema.items():
        if key in _ANNOTATIONS or key in _ASSERTIONS:
            continue
        if key in _ONE_SUBSCHEMA:
            ok = _same_in_both(value)
        elif key in _SUBSCHEMA_LISTS:
            ok = isinstance(value, list) and all(_same_in_both(v) for v in value)
        elif key in _SUBSCHEMA_MAPS:
            ok = isinstance(value, dict) and all(_same_in_both(v) for v in value.values())
        elif key == "$ref":
            ok = isinstance(value, str) and (value == "#" or value.startswith("#/"))
        elif key == "$schema":
            ok = value == _DRAFT_2020_12
        else:
            ok = False
        if not ok:
            return False
    return True


def _path_part(part: str | int) -> str:
    return f"[{part}]" if isinstance(part, int) else f".{part}"


# google.protobuf.Timestamp's range: 0001-01-01 to 9999-12-31.
MIN_SECONDS = -62_135_596_800
MAX_SECONDS = 253_402_300_799


def json_object(value: dict[str, Any], field: str, *, max_bytes: int) -> str:
    """The value as stored JSON text, refusing anything larger than max_bytes."""
    stored = dumps(value)
    if len(stored.encode()) > max_bytes:
        raise invalid(field, f"must be at most {max_bytes // 1024} KiB as JSON")
    return stored


def seconds(value: int, field: str) -> int:
    if not MIN_SECONDS <= value <= MAX_SECONDS:
        raise invalid(field, "is out of range")
    return value


# --- sizes -----------------------------------------------------------------------------
# Every stored resource and every response must fit a default client's 4 MiB receive limit,
# so content is measured as it travels: its encoded size as a google.protobuf.Struct, which
# for some JSON is several times its JSON text (a list of small numbers: 11 bytes an item
# against 2).

# The most an encoded Struct can exceed its JSON text (compact, UTF-8), by that list.
STRUCT_PER_JSON_BYTE = 6


def _varint_len(value: int) -> int:
    return max(1, (value.bit_length() + 6) // 7)


def _delimited(length: int) -> int:
    """A length-delimited field of `length` bytes: tag, length, payload."""
    return 1 + _varint_len(length) + length


def encoded_size(value: dict[str, Any]) -> int:
    """The exact encoded size of `value` as a google.protobuf.Struct (what Struct.ByteSize()
    gives), computed without building one."""
    total = 0
    for key, item in value.items():
        entry = _delimited(len(key.encode())) + _delimited(_value_size(item))
        total += _delimited(entry)
    return total


def _value_size(item: Any) -> int:
    if item is None or isinstance(item, bool):
        return 2
    if isinstance(item, int | float):
        return 9
    if isinstance(item, str):
        return _delimited(len(item.encode()))
    if isinstance(item, dict):
        return _delimited(encoded_size(item))
    if isinstance(item, list):
        return _delimited(sum(_delimited(_value_size(v)) for v in item))
    raise TypeError(f"not a JSON value: {type(item).__name__}")


def stored_size(text: str) -> int:
    """The encoded size of stored JSON object text, exact only when it matters: a text whose
    bound (STRUCT_PER_JSON_BYTE times its length) is small is counted at the bound."""
    bound = STRUCT_PER_JSON_BYTE * len(text.encode())
    if bound <= 1024:
        return bound
    loaded = json.loads(text)
    return encoded_size(loaded) if isinstance(loaded, dict) else bound


def struct_bytes(size: int, field: str, *, max_bytes: int) -> int:
    """`size` (an encoded Struct's), or INVALID_ARGUMENT when it passes max_bytes."""
    if size > max_bytes:
        raise invalid(
            field,
            f"must be at most {_kib(max_bytes)} encoded (as a google.protobuf.Struct); "
            f"this is {size} bytes",
        )
    return size


def _kib(size: int) -> str:
    return f"{size // (1024 * 1024)} MiB" if size % (1024 * 1024) == 0 else f"{size // 1024} KiB"
