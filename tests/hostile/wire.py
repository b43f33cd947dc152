"""Protobuf wire encoding by hand, for requests no well-behaved client would send: invalid
UTF-8 in a string field, messages nested deeper than any parser accepts."""

from __future__ import annotations

from google.protobuf.descriptor import Descriptor, FieldDescriptor

LEN = 2  # wire type of strings, bytes and messages


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    """One length-delimited field."""
    return varint(number << 3 | LEN) + varint(len(payload)) + payload


INVALID_UTF8 = b"\xff\xfe\xc3\x28 not utf-8"


def string_fields(descriptor: Descriptor) -> list[FieldDescriptor]:
    return [f for f in descriptor.fields if f.type == FieldDescriptor.TYPE_STRING]


def with_invalid_utf8(descriptor: Descriptor) -> bytes | None:
    """A message whose first string field (at any depth) holds invalid UTF-8, or None when
    the message has no string field reachable within a few levels."""

    def build(d: Descriptor, depth: int) -> bytes | None:
        strings = string_fields(d)
        if strings:
            return field(strings[0].number, INVALID_UTF8)
        if depth > 4:
            return None
        for f in d.fields:
            if f.type == FieldDescriptor.TYPE_MESSAGE:
                inner = build(f.message_type, depth + 1)
                if inner is not None:
                    return field(f.number, inner)
        return None

    return build(descriptor, 0)


def deep_list_value(depth: int) -> bytes:
    """A google.protobuf.Value nested `depth` list levels deep: [[[[...]]]]."""
    value = b""
    for _ in range(depth):
        value = field(6, field(1, value))  # Value.list_value -> ListValue.values
    return value


def deep_struct(depth: int) -> bytes:
    """A google.protobuf.Struct {"a": [[[...]]]} nested `depth` levels deep."""
    return field(1, field(1, b"a") + field(2, deep_list_value(depth)))


def deep_self(number: int, depth: int) -> bytes:
    """A message nested in its own field `number` (MenuItem.children) `depth` levels deep."""
    inner = b""
    for _ in range(depth):
        inner = field(number, inner)
    return inner
