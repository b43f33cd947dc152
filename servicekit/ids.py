"""Time-ordered ids: sorting by id is sorting by creation time, which keyset pagination uses."""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lowercase
# Two digits (10 bits) per lookup: half the steps of one digit at a time, and ids are made
# for every row written (eleven per page with five sections).
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]
_SHIFTS = tuple(range(120, -1, -10))


def new_id() -> str:
    """A 26-character ULID-style id: 48 bits of milliseconds, then 80 random bits."""
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    return "".join([_PAIRS[(value >> shift) & 1023] for shift in _SHIFTS])
