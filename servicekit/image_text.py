"""The text an image is searched by: one rule for the image worker (which indexes it before
it completes the job) and content_service (whose reconcile rebuilds it from what the job
stored: file name, alt text, and the vision caption and tags kept in the image metadata)."""

from __future__ import annotations

from collections.abc import Sequence


def image_text(
    image_id: str, filename: str, alt_text: str, caption: str = "", tags: Sequence[str] = ()
) -> str:
    """File name, alt text, caption and tags, one per line, blanks collapsed, repeats dropped;
    the image id when all are empty (vector_service refuses an empty text)."""
    parts = [filename, alt_text, caption]
    if tags:
        parts.append("tags: " + ", ".join(tags))
    lines = [" ".join(p.split()) for p in parts]
    return "\n".join(dict.fromkeys(line for line in lines if line)) or image_id
