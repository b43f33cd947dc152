"""Every error fits a default client's metadata limit (8 KiB): the status message and each
field violation are cut to a byte budget, and so is the list of violations, in the one
mapping (servicekit.edge.status_for). Messages name a value with `errors.shown` (its first
100 characters); this is the net under every error, whatever it quotes (a JSON Schema
message quoting the content, a field path made of the content's keys).

The budget: the message travels twice, percent-encoded in grpc-message (a non-ASCII byte is
3 bytes there) and inside the base64 google.rpc.Status of grpc-status-details-bin, beside the
details. 512 bytes of message and 2 KiB of violations are at most about 5 KiB of trailers."""

from __future__ import annotations

from collections.abc import Sequence

from servicekit.errors import FieldViolation

MAX_MESSAGE_BYTES = 512
MAX_FIELD_BYTES = 200
MAX_DESCRIPTION_BYTES = 300
MAX_VIOLATIONS_BYTES = 2048
ELLIPSIS = "…"


def clip(text: str, max_bytes: int) -> str:
    """The text, or its longest prefix (whole characters) that fits max_bytes of UTF-8
    together with a trailing ellipsis."""
    raw = text.encode("utf-8", "replace")
    if len(raw) <= max_bytes:
        return text
    room = max_bytes - len(ELLIPSIS.encode())
    return raw[:room].decode("utf-8", "ignore") + ELLIPSIS


def message(text: str) -> str:
    return clip(text, MAX_MESSAGE_BYTES)


def violations(items: Sequence[FieldViolation]) -> list[FieldViolation]:
    """The violations, each cut to size, as many as fit the budget; when some do not, the
    last one says how many were left out."""
    out: list[FieldViolation] = []
    used = 0
    for i, item in enumerate(items):
        one = FieldViolation(
            clip(item.field, MAX_FIELD_BYTES), clip(item.description, MAX_DESCRIPTION_BYTES)
        )
        size = len(one.field.encode()) + len(one.description.encode()) + 8  # + tags, lengths
        if used + size > MAX_VIOLATIONS_BYTES - 64:  # room for the note below
            out.append(FieldViolation("", f"{len(items) - i} more violation(s) not shown"))
            break
        out.append(one)
        used += size
    return out
