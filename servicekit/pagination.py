"""Page tokens (AIP-158), authenticated, and pages bounded by count and by bytes.

A token is the last key of the page it follows plus an HMAC-SHA256 (truncated to 128 bits) over
that key and the token's scope: the request's message type (so the method), every request
field but `page_size` and `page_token` (the filters that define the list), and the caller's
tenant (role and team). The key comes from a server secret that every replica of one
deployment shares (servicekit.edge sets it for each call; both services derive it from the
service token, see `key_from_secret`). So a forged, tampered or truncated token, one issued
for another query or method, or another tenant's, is INVALID_ARGUMENT on field `page_token`:
a cursor reaches the data layer only when this deployment issued it for exactly this list.
Changing the service token invalidates every outstanding token (a client starts over)."""

from __future__ import annotations

import base64
import binascii
import contextvars
import hashlib
import hmac
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from servicekit.auth import current_principal
from servicekit.errors import invalid

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
# Longest page token accepted: a cursor is an id or a name (at most a few hundred characters).
MAX_TOKEN_CHARS = 1024
# A page's encoded items stay under this (a default client receives at most 4 MiB): a List
# answers a shorter page, with a next_page_token, rather than a response nobody can read.
MAX_PAGE_BYTES = 3 * 1024 * 1024
_VERSION = b"\x01"
_MAC_BYTES = 16
_INVALID = "not a token this service issued for this request (tokens are tied to the method, "
_INVALID += "the request's other fields and the caller; start again without one)"

T = TypeVar("T")
P = TypeVar("P")

# The key of the current call's server (set by servicekit.edge); a process-random one when
# no edge set it (code run outside a call).
_PROCESS_KEY = secrets.token_bytes(32)
signing_key: contextvars.ContextVar[bytes] = contextvars.ContextVar(
    "page_token_key", default=_PROCESS_KEY
)


def key_from_secret(secret: str) -> bytes:
    """The page-token key derived from a deployment's shared secret (never the secret itself:
    a token's MAC says nothing about it)."""
    return hmac.new(secret.encode(), b"loom page tokens v1", hashlib.sha256).digest()


@dataclass(frozen=True)
class PageRequest:
    size: int
    after: str | None
    scope: bytes

    def next_token(self, last_key: str) -> str:
        cursor = last_key.encode()
        raw = _VERSION + cursor + _mac(self.scope, cursor)
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _mac(scope: bytes, cursor: bytes) -> bytes:
    digest = hmac.new(signing_key.get(), _VERSION + scope + cursor, hashlib.sha256).digest()
    return digest[:_MAC_BYTES]


def _scope(request: Any) -> bytes:
    """What a token is bound to: the message type, its fields but the page ones, the caller."""
    shape = type(request)()
    shape.CopyFrom(request)
    shape.ClearField("page_token")
    if "page_size" in type(request).DESCRIPTOR.fields_by_name:
        shape.ClearField("page_size")
    shape.DiscardUnknownFields()
    principal = current_principal()
    caller = f"{principal.role.value}:{principal.visible_team or '*'}"
    digest = hashlib.sha256(type(request).DESCRIPTOR.full_name.encode() + b"\0")
    digest.update(caller.encode() + b"\0")
    digest.update(shape.SerializeToString(deterministic=True))
    return digest.digest()


def page_request(
    request: Any, *, default_size: int = DEFAULT_PAGE_SIZE, max_size: int = MAX_PAGE_SIZE
) -> PageRequest:
    """The page a List request asks for (its `page_size` and `page_token` fields), its token
    checked against this request and caller."""
    page_size = int(getattr(request, "page_size", 0))
    if page_size < 0:
        raise invalid("page_size", "must not be negative")
    size = min(page_size or default_size, max_size)
    scope = _scope(request)
    token: str = request.page_token
    if not token:
        return PageRequest(size, None, scope)
    if len(token) > MAX_TOKEN_CHARS:
        raise invalid("page_token", _INVALID)
    try:
        raw = base64.urlsafe_b64decode((token + "=" * (-len(token) % 4)).encode("ascii"))
    except (ValueError, binascii.Error, UnicodeEncodeError):
        raise invalid("page_token", _INVALID) from None
    version, cursor, mac = raw[:1], raw[1:-_MAC_BYTES], raw[-_MAC_BYTES:]
    if version != _VERSION or len(raw) < 1 + _MAC_BYTES:
        raise invalid("page_token", _INVALID)
    if not hmac.compare_digest(mac, _mac(scope, cursor)):
        raise invalid("page_token", _INVALID)
    try:
        after = cursor.decode()
    except UnicodeDecodeError:  # only if the key leaked: we never sign such a cursor
        raise invalid("page_token", _INVALID) from None
    return PageRequest(size, after, scope)


def page_of(
    rows: Sequence[T],
    request: PageRequest,
    key: Callable[[T], str],
    proto: Callable[[T], P],
    *,
    max_bytes: int = MAX_PAGE_BYTES,
) -> tuple[list[P], str]:
    """Given up to size+1 rows (fetch `request.size + 1`), returns the page's messages and the
    next token, which is empty on the last page. The page ends early, with a token, once its
    messages would pass `max_bytes` (the first always goes in: every stored resource fits)."""
    out: list[P] = []
    used = 0
    for row in rows[: request.size]:
        message = proto(row)
        size = message.ByteSize()  # type: ignore[attr-defined]
        if out and used + size > max_bytes:
            return out, request.next_token(key(rows[len(out) - 1]))
        out.append(message)
        used += size + 8  # the field's tag and length in the response
    if len(rows) > request.size:
        return out, request.next_token(key(rows[request.size - 1]))
    return out, ""
