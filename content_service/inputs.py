"""Input checks shared by posts, navigation, settings and chat, on top of validation.py."""

from __future__ import annotations

from typing import Any

from content_service import validation
from content_service.convert import dumps
from servicekit.errors import invalid

# google.protobuf.Timestamp's range: 0001-01-01 to 9999-12-31.
MIN_SECONDS = -62_135_596_800
MAX_SECONDS = 253_402_300_799


text = validation.text


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
