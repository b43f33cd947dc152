"""Time-ordered ids: sorting by id is sorting by creation time, which keyset pagination uses.

A ULID in lowercase Crockford base32: 26 digits, the first 10 the 48-bit millisecond
timestamp (two leading zero bits), the last 16 eighty random bits."""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lowercase
# Each random byte -> one digit (its low 5 bits; 256 is a multiple of 32, so every digit is
# equally likely): sixteen random digits are 80 random bits, made by one C call per batch.
_RANDOM_DIGITS = bytes.maketrans(bytes(range(256)), _ALPHABET.encode("ascii") * 8)
_last_prefix: tuple[int, str] = (-1, "")


def _time_prefix(millis: int) -> str:
    global _last_prefix
    cached = _last_prefix
    if cached[0] == millis:
        return cached[1]
    prefix = "".join(_ALPHABET[(millis >> shift) & 31] for shift in range(45, -1, -5))
    _last_prefix = (millis, prefix)
    return prefix


def new_id() -> str:
    """A 26-character ULID-style id: 48 bits of milliseconds, then 80 random bits."""
    return new_ids(1)[0]


def new_ids(count: int) -> list[str]:
    """`count` ids of the same millisecond: what a bulk write needs, at a fraction of the cost
    of as many new_id() calls (ids are made for every row written)."""
    prefix = _time_prefix(int(time.time() * 1000))
    digits = os.urandom(16 * count).translate(_RANDOM_DIGITS).decode("ascii")
    return [prefix + digits[i : i + 16] for i in range(0, 16 * count, 16)]
