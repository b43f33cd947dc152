"""Conversions between stored values (JSON text, integer seconds) and protobuf types."""

from __future__ import annotations

import json
import math
import time
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2

from servicekit.errors import invalid


def now() -> int:
    return int(time.time())


def ts(seconds: int | None) -> timestamp_pb2.Timestamp | None:
    if seconds is None:
        return None
    return timestamp_pb2.Timestamp(seconds=seconds)


def struct_to_dict(value: struct_pb2.Struct) -> dict[str, Any]:
    return _ints(json_format.MessageToDict(value))  # type: ignore[no-any-return]


def _ints(value: Any) -> Any:
    # Struct carries every number as a double; give back integers where the double is whole,
    # so JSON Schema "integer" and round-trips behave as a client expects.
    if isinstance(value, float) and value.is_integer() and math.isfinite(value):
        return int(value)
    if isinstance(value, dict):
        return {k: _ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_ints(v) for v in value]
    return value


def dict_to_struct(value: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(value)
    return out


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def loads_object(text: str) -> dict[str, Any]:
    value = json.loads(text) if text else {}
    return value if isinstance(value, dict) else {}


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
