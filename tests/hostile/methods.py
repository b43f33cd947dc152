"""Every method a server offers, found through its reflection service (no proto files, no
generated code), and requests built from the descriptors: a new method is covered the moment
it is served."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

# Streams that never end by design: health's Watch sends a status whenever it changes.
ENDLESS = {"grpc.health.v1.Health/Watch"}


@dataclass(frozen=True)
class Method:
    service: str
    name: str
    descriptor: MethodDescriptor
    request_class: type[Message]

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"

    @property
    def full_name(self) -> str:
        return f"{self.service}/{self.name}"

    @property
    def client_streaming(self) -> bool:
        return bool(self.descriptor.client_streaming)

    @property
    def server_streaming(self) -> bool:
        return bool(self.descriptor.server_streaming)

    def request(self) -> Message:
        return self.request_class()


def discover(channel: grpc.Channel) -> list[Method]:
    """Every method of every service the server lists through reflection."""
    database = ProtoReflectionDescriptorDatabase(channel)
    pool = descriptor_pool.DescriptorPool(database)
    methods = []
    for service_name in sorted(database.get_services()):
        service = pool.FindServiceByName(service_name)
        for method in service.methods:
            methods.append(
                Method(
                    service_name,
                    method.name,
                    method,
                    message_factory.GetMessageClass(method.input_type),
                )
            )
    return methods


def invoke(
    channel: grpc.Channel,
    method: Method,
    requests: list[bytes],
    metadata: tuple[tuple[str, str], ...],
    timeout: float,
) -> None:
    """Calls the method with already serialized request(s), reading a stream to its end.
    Raises grpc.RpcError for a non-OK status."""
    if method.client_streaming and method.server_streaming:
        for _ in channel.stream_stream(method.path)(
            iter(requests), metadata=metadata, timeout=timeout
        ):
            pass
    elif method.client_streaming:
        channel.stream_unary(method.path)(iter(requests), metadata=metadata, timeout=timeout)
    elif method.server_streaming:
        for _ in channel.unary_stream(method.path)(requests[0], metadata=metadata, timeout=timeout):
            pass
    else:
        channel.unary_unary(method.path)(requests[0], metadata=metadata, timeout=timeout)


# ------------------------------------------------------------------ building requests


INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
FLOATS = [0.0, -1.0, 1e308, -1e308, math.nan, math.inf, -math.inf, 5e-324]
STRING = FieldDescriptor.TYPE_STRING
BYTES = FieldDescriptor.TYPE_BYTES
MESSAGE = FieldDescriptor.TYPE_MESSAGE
ENUM = FieldDescriptor.TYPE_ENUM
BOOL = FieldDescriptor.TYPE_BOOL
FLOAT_TYPES = (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT)

# A value for one field: (field, depth) -> value, or None to leave it unset.
Chooser = Callable[[FieldDescriptor, int], Any]


def fill(message: Message, choose: Chooser, depth: int = 0, max_depth: int = 4) -> Message:
    """Sets the message's fields with `choose`, recursing into sub-messages (up to
    max_depth); the well-known types get values of their own meaning (special_value)."""
    descriptor: Descriptor = message.DESCRIPTOR
    if special_value(message, choose, depth):
        return message
    for field in descriptor.fields:
        value = choose(field, depth)
        if value is None:
            continue
        if field.type == MESSAGE:
            if depth >= max_depth:
                continue
            target = getattr(message, field.name)
            if field.message_type.GetOptions().map_entry:
                continue  # maps of ours are only inside Struct
            if field.is_repeated:
                for _ in range(int(value)):
                    fill(target.add(), choose, depth + 1, max_depth)
            else:
                sub = target
                fill(sub, choose, depth + 1, max_depth)
                sub.SetInParent()
            continue
        try:
            if field.is_repeated:
                getattr(message, field.name).extend(value)
            else:
                setattr(message, field.name, value)
        except (ValueError, TypeError):
            pass  # a value this field cannot hold (an int out of its range): leave it
    return message


def special_value(message: Message, choose: Chooser, depth: int) -> bool:
    """Struct, Timestamp, Duration and FieldMask: filled as themselves. True if handled."""
    name = message.DESCRIPTOR.full_name
    hostile = getattr(choose, "hostile", None)
    if name == "google.protobuf.Struct":
        value = hostile.json(depth) if hostile else {}
        message.update(value)  # type: ignore[attr-defined]
        return True
    if name == "google.protobuf.Duration":
        # A long-poll waits as long as it is asked (ClaimImageJob): at most a second here.
        seconds = hostile.small_int() if hostile else 0
        message.seconds = max(-1, min(1, seconds))  # type: ignore[attr-defined]
        return True
    if name == "google.protobuf.FieldMask":
        paths = hostile.mask_paths() if hostile else []
        message.paths.extend(paths)  # type: ignore[attr-defined]
        return True
    if name == "google.protobuf.Timestamp":
        seconds = hostile.int64() if hostile else 0
        message.seconds = seconds  # type: ignore[attr-defined]
        return True
    return False


def string_paths(descriptor: Descriptor, depth: int = 0) -> Iterator[list[FieldDescriptor]]:
    """Paths (lists of fields) to every string field reachable within a few levels."""
    for field in descriptor.fields:
        if field.type == STRING:
            yield [field]
        elif field.type == MESSAGE and depth < 3 and not field.message_type.GetOptions().map_entry:
            if field.message_type.full_name.startswith("google.protobuf."):
                continue
            for rest in string_paths(field.message_type, depth + 1):
                yield [field, *rest]


def set_path(message: Message, path: list[FieldDescriptor], value: str) -> None:
    target = message
    for field in path[:-1]:
        sub = getattr(target, field.name)
        target = sub.add() if field.is_repeated else sub
    last = path[-1]
    if last.is_repeated:
        getattr(target, last.name).append(value)
    else:
        setattr(target, last.name, value)


def struct_paths(descriptor: Descriptor, depth: int = 0) -> Iterator[list[FieldDescriptor]]:
    """Paths to every google.protobuf.Struct field within a few levels."""
    for field in descriptor.fields:
        if field.type != MESSAGE or field.message_type.GetOptions().map_entry:
            continue
        if field.message_type.full_name == "google.protobuf.Struct":
            yield [field]
        elif depth < 3 and not field.message_type.full_name.startswith("google.protobuf."):
            for rest in struct_paths(field.message_type, depth + 1):
                yield [field, *rest]


def recursive_field(descriptor: Descriptor) -> FieldDescriptor | None:
    """A field of the message's own type (MenuItem.children), if it has one."""
    for field in descriptor.fields:
        if field.type == MESSAGE and field.message_type.full_name == descriptor.full_name:
            return field
    return None


def message_paths(descriptor: Descriptor, depth: int = 0) -> Iterator[list[FieldDescriptor]]:
    """Paths to every message field within a few levels (for recursive types)."""
    for field in descriptor.fields:
        if field.type != MESSAGE or field.message_type.GetOptions().map_entry:
            continue
        if field.message_type.full_name.startswith("google.protobuf."):
            continue
        yield [field]
        if depth < 3:
            for rest in message_paths(field.message_type, depth + 1):
                yield [field, *rest]
