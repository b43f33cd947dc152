"""Opaque page tokens (AIP-158): the last key seen plus a fingerprint of the request's
filters, so a token cannot be replayed against a different query."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from servicekit.errors import invalid

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
T = TypeVar("T")


@dataclass(frozen=True)
class PageRequest:
    size: int
    after: str | None
    fingerprint: str

    def next_token(self, last_key: str) -> str:
        raw = json.dumps({"a": last_key, "f": self.fingerprint}).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _fingerprint(filters: tuple[object, ...]) -> str:
    return hashlib.sha256(repr(filters).encode()).hexdigest()[:16]


def page_request(page_size: int, page_token: str, *filters: object) -> PageRequest:
    if page_size < 0:
        raise invalid("page_size", "must not be negative")
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    fingerprint = _fingerprint(filters)
    if not page_token:
        return PageRequest(size, None, fingerprint)
    try:
        padded = page_token + "=" * (-len(page_token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        after, token_fp = str(data["a"]), str(data["f"])
    except (ValueError, KeyError, TypeError) as exc:
        raise invalid("page_token", "not a token this service issued") from exc
    if token_fp != fingerprint:
        raise invalid("page_token", "was issued for a request with different filters")
    return PageRequest(size, after, fingerprint)


def page_of(
    rows: Sequence[T], request: PageRequest, key: Callable[[T], str]
) -> tuple[list[T], str]:
    """Given up to size+1 rows (fetch `request.size + 1`), returns the page and the next
    token, which is empty on the last page."""
    if len(rows) > request.size:
        page = list(rows[: request.size])
        return page, request.next_token(key(page[-1]))
    return list(rows), ""
