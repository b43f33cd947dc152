"""Helpers shared by the servicers: update masks and the content status enum."""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf import field_mask_pb2
from loom.content.v1 import common_pb2

from servicekit.errors import invalid, shown

STATUS_TO_DB = {
    common_pb2.CONTENT_STATUS_DRAFT: "draft",
    common_pb2.CONTENT_STATUS_PUBLISHED: "published",
    common_pb2.CONTENT_STATUS_ARCHIVED: "archived",
}
STATUS_FROM_DB = {v: k for k, v in STATUS_TO_DB.items()}


def status_to_db(value: int, field: str, *, default: str | None) -> str | None:
    if value == common_pb2.CONTENT_STATUS_UNSPECIFIED:
        return default
    try:
        return STATUS_TO_DB[value]  # type: ignore[index]
    except KeyError:
        raise invalid(field, f"unknown status {value}") from None


def mask_paths(
    mask: field_mask_pb2.FieldMask, allowed: Iterable[str], field: str = "update_mask"
) -> set[str]:
    """The paths to update; an empty mask means every updatable field (AIP-134)."""
    allowed_set = set(allowed)
    paths = set(mask.paths) if mask.paths else set(allowed_set)
    unknown = sorted(paths - allowed_set)
    if unknown:
        raise invalid(
            field,
            f"unknown or read-only paths {shown(', '.join(unknown))}; "
            f"allowed: {sorted(allowed_set)}",
        )
    return paths
