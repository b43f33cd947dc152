"""Requests that do not deserialize: INVALID_ARGUMENT at the edge, for every method.

grpc answers a request its deserializer cannot parse (invalid UTF-8 in a string field, a
Struct nested deeper than protobuf's recursion limit, truncated bytes) with INTERNAL
"Exception deserializing request!". That is the client's fault, not ours, so the edge wraps
every method's deserializer with `tolerant`: a failure becomes an `Undecodable` marker, which
`checked` (unary requests) or `checked_stream` (request streams) turns into INVALID_ARGUMENT
with a field violation naming the request message, before any servicer code runs."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from servicekit.errors import FieldViolation, InvalidArgument

log = logging.getLogger(__name__)

Deserializer = Callable[[bytes], Any]


@dataclass(frozen=True)
class Undecodable:
    """What `tolerant` returns for bytes its deserializer refused (never None: grpc takes
    None as its own deserialization failure)."""

    message_name: str
    size: int
    reason: str


def message_name(deserializer: Deserializer | None) -> str:
    """The full name of the message a generated `FromString` parses ("request" otherwise)."""
    owner = getattr(deserializer, "__self__", None)
    descriptor = getattr(owner, "DESCRIPTOR", None)
    name = getattr(descriptor, "full_name", None)
    return name if isinstance(name, str) else "request"


def tolerant(deserializer: Deserializer | None) -> Deserializer | None:
    if deserializer is None:
        return None
    name = message_name(deserializer)

    def deserialize(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        # Whatever the deserializer raises (protobuf's DecodeError, a RecursionError...) means
        # these bytes are not this message.
        except Exception as exc:  # noqa: BLE001
            return Undecodable(name, len(raw), type(exc).__name__)

    return deserialize


def refusal(marker: Undecodable) -> InvalidArgument:
    log.info(
        "refused %d bytes that are not a %s (%s)", marker.size, marker.message_name, marker.reason
    )
    return InvalidArgument(
        FieldViolation(
            "request",
            f"the {marker.size} bytes received do not parse as a {marker.message_name} "
            "(invalid UTF-8 in a string field, nesting deeper than 100 levels, or malformed "
            "protobuf encoding)",
        ),
        reason="UNDECODABLE_REQUEST",
    )


def checked(request: Any) -> Any:
    """The request of a unary call, or INVALID_ARGUMENT when it did not parse."""
    if isinstance(request, Undecodable):
        raise refusal(request)
    return request


def checked_stream(requests: Iterator[Any]) -> Iterator[Any]:
    """A request stream whose first message that did not parse ends the call with
    INVALID_ARGUMENT."""
    for request in requests:
        yield checked(request)
