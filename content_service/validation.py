"""Input rules, each stated once: slugs, names, titles, JSON Schema checks."""

from __future__ import annotations

import re
from typing import Any

import jsonschema
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from content_service.convert import dumps
from servicekit.errors import FieldViolation, InvalidArgument, invalid

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
            f"{max_len} characters, no leading/trailing hyphen); got {value!r}",
        )
    return value


def environment_name(value: str, field: str) -> str:
    if not ENV_NAME_RE.match(value or ""):
        raise invalid(field, f"must match [a-z0-9-], 1-63 characters; got {value!r}")
    return value


def definition_name(value: str, field: str) -> str:
    if not DEFINITION_NAME_RE.match(value or ""):
        raise invalid(field, f"must match [a-z0-9_-], 1-63 characters; got {value!r}")
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


def json_schema(schema: dict[str, Any], field: str) -> Draft202012Validator:
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path)
        raise invalid(f"{field}{'/' + where if where else ''}", exc.message) from exc
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def content(validator: Draft202012Validator, value: dict[str, Any], field: str) -> None:
    """Checks content against a definition's schema; every failure becomes a field violation
    whose field is the path inside the content (e.g. `page.sections[0].content.title`)."""
    errors: list[jsonschema.ValidationError] = sorted(
        validator.iter_errors(value), key=lambda e: list(map(str, e.absolute_path))
    )
    if errors:
        raise InvalidArgument(
            [
                FieldViolation(
                    field + "".join(_path_part(p) for p in error.absolute_path), error.message
                )
                for error in errors[:20]
            ]
        )


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
