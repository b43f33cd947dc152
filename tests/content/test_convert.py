"""Struct <-> JSON as clients see it: the same values json_format gives, whole numbers as
integers, NaN and infinity refused."""

from __future__ import annotations

import math
from typing import Any

import pytest
from google.protobuf import json_format, struct_pb2

from content_service.api.convert import struct_to_dict


def _reference(value: struct_pb2.Struct) -> Any:
    def ints(v: Any) -> Any:
        if isinstance(v, float) and v.is_integer():
            return int(v)
        if isinstance(v, dict):
            return {k: ints(x) for k, x in v.items()}
        if isinstance(v, list):
            return [ints(x) for x in v]
        return v

    return ints(json_format.MessageToDict(value))


def test_struct_to_dict_matches_json_format_with_integers() -> None:
    value = struct_pb2.Struct()
    value.update(
        {
            "title": "Héllo, wörld",
            "count": 3,
            "ratio": 0.25,
            "big": 2**40,
            "negative": -7.0,
            "flag": False,
            "nothing": None,
            "list": [1, "two", [3.5, {"deep": True}], None],
            "nested": {"a": {"b": {"c": "d"}}, "empty": {}},
            "empty_list": [],
        }
    )
    out = struct_to_dict(value)
    assert out == _reference(value)
    assert isinstance(out["count"], int)
    assert isinstance(out["ratio"], float)
    assert isinstance(out["list"][0], int)


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_refused(number: float) -> None:
    value = struct_pb2.Struct()
    value.update({"x": [{"y": number}]})
    with pytest.raises(ValueError, match="not a JSON number"):
        struct_to_dict(value)
