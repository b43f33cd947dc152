"""Ids sort by creation time (keyset pagination relies on it) and carry that time."""

from __future__ import annotations

import time

from servicekit.ids import new_id

ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def decode_millis(value: str) -> int:
    number = 0
    for char in value:
        number = number * 32 + ALPHABET.index(char)
    return number >> 80


def test_ids_are_26_crockford_digits_that_sort_by_time_and_carry_it() -> None:
    before = int(time.time() * 1000)
    first = new_id()
    time.sleep(0.002)
    second = new_id()
    after = int(time.time() * 1000)
    assert len(first) == len(second) == 26
    assert set(first + second) <= set(ALPHABET)
    assert first < second
    assert before <= decode_millis(first) < decode_millis(second) <= after
    assert len({new_id() for _ in range(10_000)}) == 10_000
