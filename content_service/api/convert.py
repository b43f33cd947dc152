"""Conversions between stored values (content_service.db.values) and protobuf types."""

from __future__ import annotations

import math
from typing import Any

from google.protobuf import struct_pb2, timestamp_pb2

from content_service.db.values import loads_object
from servicekit.errors import invalid


def ts(seconds: int | None) -> timestamp_pb2.Timestamp | None:
    if seconds is None:
        return None
    return timestamp_pb2.Timestamp(seconds=seconds)


def struct_to_dict(value: struct_pb2.Struct) -> dict[str, Any]:
    """The Struct as plain JSON values. Walked directly rather than through
    json_format.MessageToDict, which costs several times more (this runs for every section
    of every page written); strings, the common case, inline. Raises ValueError for NaN or
    infinity, which JSON cannot hold."""
    fields = value.fields
    out: dict[str, Any] = {}
    for key in fields:  # iterating the map itself: .items() goes through a Python-level view
        item = fields[key]
        kind = item.WhichOneof("kind")
        out[key] = item.string_value if kind == "string_value" else _plain(item, kind)
    return out


def _plain(value: struct_pb2.Value, kind: str | None) -> Any:
    if kind == "number_value":
        number = value.number_value
        if not math.isfinite(number):
            raise ValueError(f"{number} is not a JSON number")
        # Struct carries every number as a double; give back integers where the double is
        # whole, so JSON Schema "integer" and round-trips behave as a client expects.
        return int(number) if number.is_integer() else number
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return struct_to_dict(value.struct_value)
    if kind == "list_value":
        return [_plain(item, item.WhichOneof("kind")) for item in value.list_value.values]
    if kind == "null_value":
        return None
    raise ValueError("a Value with no kind set")


def dict_to_struct(value: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(value)
    return out


# Stored JSON text -> Struct, memoized: a read of a popular page parses the same section
# content again and again. The key is the text itself, so an entry can never be stale; small
# texts only (larger ones are rarer and would crowd the cache), a bounded number of them.
_CACHED_TEXT_MAX = 8 * 1024
_struct_cache: dict[str, struct_pb2.Struct] = {}
_STRUCT_CACHE_MAX = 4096


def struct_from_json(text: str, into: struct_pb2.Struct) -> None:
    """Fills `into` (an empty Struct) with a stored JSON object, as
    dict_to_struct(loads_object(text)) would."""
    cached = _struct_cache.get(text)
    if cached is None:
        cached = dict_to_struct(loads_object(text))
        if len(text) <= _CACHED_TEXT_MAX:
            if len(_struct_cache) >= _STRUCT_CACHE_MAX:
                _struct_cache.clear()  # crude, but O(1) and rare; no LRU bookkeeping per hit
            _struct_cache[text] = cached
    into.CopyFrom(cached)


def struct_field_to_json(message: Any, field: str, path: str) -> dict[str, Any]:
    """A Struct field as a dict; an unset field is {}."""
    if not message.HasField(field):
        return {}
    try:
        return struct_to_dict(getattr(message, field))
    except (ValueError, TypeError) as exc:  # NaN/inf cannot be stored as JSON
        raise invalid(path, f"not representable as JSON: {exc}") from exc
