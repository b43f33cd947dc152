"""What the content store keeps about an image: size, colours, placeholder, hash, EXIF summary.

Everything is computed from a small preview (at most 128 px on a side) of the decoded first
frame, so the cost does not grow with the photo. Transparent images are judged as seen on
white, except for dominant colours, which count only the visible pixels.

Privacy: the EXIF summary is an allowlist: camera make and model, original date and time,
exposure time, f-number, ISO and orientation. GPS, and every other tag that could place or
identify a person (owner name, serial numbers, maker notes, user comments), is never read into
the result.
"""

from __future__ import annotations

import math
import numbers
import re
import struct
from typing import Final

import blurhash  # type: ignore[import-untyped]
import imagehash
import numpy as np
from PIL import Image

from image_worker.decoded import Decoded

__all__ = ["describe", "exif_summary"]

_PREVIEW_SIDE: Final = 128
_PALETTE_SIZE: Final = 12
_DOMINANT_COUNT: Final = 5
_DISTINCT_DISTANCE: Final = 24
_BLURHASH_WIDTH: Final = 32
# Keeps the pure-Python encoder's work bounded for very tall images; blurhash components are
# normalised to the image, so squashing the sample grid changes nothing a viewer sees.
_BLURHASH_MAX_HEIGHT: Final = 64
_BLURHASH_COMPONENTS: Final = (4, 3)
_MAX_TEXT: Final = 64

_EXIF_IFD: Final = 0x8769
_MAKE: Final = 0x010F
_MODEL: Final = 0x0110
_ORIENTATION: Final = 0x0112
_DATETIME_ORIGINAL: Final = 0x9003
_EXPOSURE_TIME: Final = 0x829A
_F_NUMBER: Final = 0x829D
_ISO: Final = 0x8827
_EXIF_DATETIME = re.compile(r"(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})")

# What Pillow's lazy EXIF parsing raises on malformed data (Warning: under `-W error`).
_EXIF_ERRORS: Final[tuple[type[BaseException], ...]] = (
    OSError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    SyntaxError,
    ZeroDivisionError,
    struct.error,
    Warning,
)


def describe(decoded: Decoded) -> dict[str, object]:
    """JSON-serialisable facts about ``decoded`` (sizes are the full upright size)."""
    preview = _preview(decoded.image)
    on_white = _on_white(preview)
    return {
        "width": decoded.width,
        "height": decoded.height,
        "format": decoded.format,
        "mode": decoded.source_mode,
        "has_alpha": decoded.has_alpha,
        "animated": decoded.animated,
        "frames": decoded.frames,
        "byte_size": decoded.byte_size,
        "dominant_colours": _dominant_colours(preview),
        "blurhash": _blurhash(on_white),
        "phash": str(imagehash.phash(on_white)),
        "exif": exif_summary(decoded.exif),
    }


def _preview(image: Image.Image) -> Image.Image:
    scale = min(1.0, _PREVIEW_SIDE / max(image.size))
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    if size == image.size:
        return image
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)


def _on_white(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def _dominant_colours(preview: Image.Image) -> list[str]:
    pixels = np.asarray(preview.convert("RGB")).reshape(-1, 3)
    if preview.mode in ("RGBA", "LA"):
        visible = np.asarray(preview.getchannel("A")).reshape(-1) >= 128
        if visible.any():
            pixels = pixels[visible]
    strip = Image.fromarray(np.ascontiguousarray(pixels.reshape(1, -1, 3)))
    quantized = strip.quantize(colors=_PALETTE_SIZE, method=Image.Quantize.MEDIANCUT)
    palette = quantized.getpalette() or []
    chosen: list[tuple[int, int, int]] = []
    for _count, index in sorted(quantized.getcolors() or [], reverse=True):
        assert isinstance(index, int)
        red, green, blue = palette[3 * index : 3 * index + 3]
        # Median cut splits a big flat area (plus its compression noise) into near-twins.
        if all(
            (red - r) ** 2 + (green - g) ** 2 + (blue - b) ** 2 > _DISTINCT_DISTANCE**2
            for r, g, b in chosen
        ):
            chosen.append((red, green, blue))
        if len(chosen) == _DOMINANT_COUNT:
            break
    return [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in chosen]


def _blurhash(rgb: Image.Image) -> str:
    height = round(_BLURHASH_WIDTH * rgb.height / rgb.width)
    height = min(max(1, height), _BLURHASH_MAX_HEIGHT)
    small = rgb.resize((_BLURHASH_WIDTH, height), Image.Resampling.LANCZOS)
    x_components, y_components = _BLURHASH_COMPONENTS
    # Nested lists: the encoder indexes pixel by pixel, which is slow on numpy arrays.
    result = blurhash.encode(np.asarray(small).tolist(), x_components, y_components)
    return str(result)


def _clean_text(value: object) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if not isinstance(value, str):
        return None
    text = "".join(c for c in value if c.isprintable()).strip()
    return text[:_MAX_TEXT] or None


def _number(value: object) -> float | None:
    if isinstance(value, tuple):
        value = value[0] if value else None
    if not isinstance(value, numbers.Real):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _exposure(value: object) -> str | None:
    seconds = _number(value)
    if seconds is None:
        return None
    if seconds < 1:
        return f"1/{round(1 / seconds)}"
    return f"{seconds:g}"


def _datetime(value: object) -> str | None:
    text = _clean_text(value)
    match = _EXIF_DATETIME.fullmatch(text or "")
    if match is None:
        return None
    year, month, day, hour, minute, second = match.groups()
    return f"{year}-{month}-{day}T{hour}:{minute}:{second}"


def exif_summary(exif: Image.Exif) -> dict[str, object]:
    """The allowlisted camera facts; malformed EXIF gives as much as could be read."""
    summary: dict[str, object] = {}
    try:
        base = dict(exif)
        details = dict(exif.get_ifd(_EXIF_IFD))
    except _EXIF_ERRORS:
        return summary
    for tag, key in ((_MAKE, "make"), (_MODEL, "model")):
        if (text := _clean_text(base.get(tag))) is not None:
            summary[key] = text
    taken = _datetime(details.get(_DATETIME_ORIGINAL))
    if taken is not None:
        summary["datetime_original"] = taken
    if (exposure := _exposure(details.get(_EXPOSURE_TIME))) is not None:
        summary["exposure_time"] = exposure
    if (f_number := _number(details.get(_F_NUMBER))) is not None:
        summary["f_number"] = round(f_number, 1)
    if (iso := _number(details.get(_ISO))) is not None:
        summary["iso"] = round(iso)
    orientation = base.get(_ORIENTATION)
    if isinstance(orientation, int) and 1 <= orientation <= 8:
        summary["orientation"] = orientation
    return summary
