"""``Decoded``: what ``processing.decode`` makes of an upload and what both the variants
(``processing``) and the metadata (``image_metadata``) are made from."""

from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image

__all__ = ["Decoded"]


@dataclass(frozen=True, slots=True, eq=False)
class Decoded:
    """A decoded first frame, upright, sRGB, in mode RGB, RGBA, L or LA, without metadata.

    ``width`` and ``height`` are the full upright size. ``image`` can be smaller when a JPEG
    was decoded at reduced scale for the widths passed to ``processing.decode``.
    """

    image: Image.Image
    width: int
    height: int
    format: str
    source_mode: str
    frames: int
    animated: bool
    orientation: int
    byte_size: int
    # Read before the orientation was applied; summarised (never copied) by image_metadata.
    exif: Image.Exif = field(repr=False)

    @property
    def has_alpha(self) -> bool:
        return self.image.mode in ("RGBA", "LA")
