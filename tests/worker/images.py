"""Test images made in memory with Pillow, so the repository holds no binary fixtures."""

from __future__ import annotations

import io
import random
import struct
import zlib

import numpy as np
from PIL import ExifTags, Image, ImageCms, ImageDraw, TiffImagePlugin

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
GREY = (128, 128, 128)

CAMERA_MAKE = "TestCam"
GPS_LATITUDE = (52, 22, 12.34)


def _save(image: Image.Image, fmt: str, **options: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """Photograph-like RGB content: smooth gradients plus sensor-like noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    red = 128 + 100 * np.sin(x / (width / 13 + 1)) * np.cos(y / (height / 15 + 1))
    green = 255 * x / max(1, width - 1)
    blue = 255 * y / max(1, height - 1)
    pixels = np.stack([red, green, blue], axis=-1)
    pixels += rng.normal(0, 12, pixels.shape).astype(np.float32)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def shapes(width: int, height: int, seed: int = 0) -> Image.Image:
    """A photo with a few large random shapes: structure a perceptual hash can see."""
    rng = random.Random(seed)
    image = photo(width, height, seed)
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x0, y0 = rng.uniform(0, 0.7) * width, rng.uniform(0, 0.7) * height
        box = (x0, y0, x0 + rng.uniform(0.2, 0.5) * width, y0 + rng.uniform(0.2, 0.5) * height)
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        if rng.random() < 0.5:
            draw.ellipse(box, fill=colour)
        else:
            draw.rectangle(box, fill=colour)
    return image


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    return _save(image, fmt, **options)


def photo_jpeg(width: int, height: int, quality: int = 90, seed: int = 0) -> bytes:
    return _save(photo(width, height, seed), "JPEG", quality=quality)


def oriented_jpeg_with_gps(width: int = 300, height: int = 200, orientation: int = 6) -> bytes:
    """Stored wider than tall, a red marker in the stored top-left corner, EXIF with GPS.

    Orientation 6 means "rotate 90 degrees clockwise to view": upright, the image is taller
    than wide and the marker sits in the top-right corner.
    """
    image = Image.new("RGB", (width, height), GREY)
    ImageDraw.Draw(image).rectangle((0, 0, width // 5, height // 5), fill=RED)
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = CAMERA_MAKE
    exif[ExifTags.Base.Model] = "X100"
    exif[ExifTags.Base.Orientation] = orientation
    details = exif.get_ifd(ExifTags.IFD.Exif)
    details[ExifTags.Base.DateTimeOriginal] = "2024:05:01 10:11:12"
    details[ExifTags.Base.ExposureTime] = TiffImagePlugin.IFDRational(1, 250)
    details[ExifTags.Base.FNumber] = TiffImagePlugin.IFDRational(28, 10)
    details[ExifTags.Base.ISOSpeedRatings] = 200
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = tuple(TiffImagePlugin.IFDRational(v) for v in GPS_LATITUDE)
    gps[ExifTags.GPS.GPSLongitudeRef] = "E"
    gps[ExifTags.GPS.GPSLongitude] = tuple(TiffImagePlugin.IFDRational(v) for v in (4, 53, 0))
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><exif:GPSLatitude>52,22N</exif:GPSLatitude>'
    xmp += b"</x:xmpmeta>"
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return _save(image, "JPEG", quality=95, exif=exif, xmp=xmp, icc_profile=srgb)


def rgba_png(width: int = 400, height: int = 300) -> bytes:
    """Left half fully transparent, right half opaque blue."""
    image = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    ImageDraw.Draw(image).rectangle((width // 2, 0, width, height), fill=(*BLUE, 255))
    return _save(image, "PNG")


def opaque_rgba_png(width: int = 200, height: int = 100) -> bytes:
    return _save(Image.new("RGBA", (width, height), (*GREEN, 255)), "PNG")


def la_png(width: int = 200, height: int = 100) -> bytes:
    """Grey with alpha: left half transparent."""
    image = Image.new("LA", (width, height), (200, 255))
    ImageDraw.Draw(image).rectangle((0, 0, width // 2 - 1, height), fill=(200, 0))
    return _save(image, "PNG")


def one_bit_png(width: int = 200, height: int = 100) -> bytes:
    image = Image.new("1", (width, height), 0)
    ImageDraw.Draw(image).rectangle((width // 2, 0, width, height), fill=1)
    return _save(image, "PNG")


def cmyk_jpeg(width: int = 400, height: int = 300) -> bytes:
    """Left half pure cyan ink, right half no ink (white)."""
    image = Image.new("CMYK", (width, height), (0, 0, 0, 0))
    ImageDraw.Draw(image).rectangle((0, 0, width // 2 - 1, height), fill=(255, 0, 0, 0))
    return _save(image, "JPEG", quality=95)


def _palette_image(width: int, height: int) -> Image.Image:
    """Index 0 transparent (left half), index 1 red (right half)."""
    image = Image.new("P", (width, height), 0)
    image.putpalette([*GREY, *RED] + [0, 0, 0] * 254)
    ImageDraw.Draw(image).rectangle((width // 2, 0, width, height), fill=1)
    image.info["transparency"] = 0
    return image


def palette_png_with_transparency(width: int = 200, height: int = 100) -> bytes:
    return _save(_palette_image(width, height), "PNG", transparency=0)


def palette_gif_with_transparency(width: int = 200, height: int = 100) -> bytes:
    return _save(_palette_image(width, height), "GIF", transparency=0)


def sixteen_bit_png(width: int = 512, height: int = 32) -> bytes:
    """A 16-bit greyscale ramp from 0 on the left to 65535 on the right."""
    ramp = np.linspace(0, 65535, width).round().astype(np.uint16)
    samples = np.tile(ramp, (height, 1))
    image = Image.frombytes("I;16", (width, height), samples.astype("<u2").tobytes())
    return _save(image, "PNG")


def _frames(colours: list[tuple[int, int, int]], size: tuple[int, int]) -> list[Image.Image]:
    return [Image.new("RGB", size, colour) for colour in colours]


def animated(
    fmt: str, colours: list[tuple[int, int, int]], size: tuple[int, int] = (200, 100)
) -> bytes:
    """An animation whose frames are solid colours; fmt is GIF, WEBP or PNG (APNG)."""
    first, *rest = _frames(colours, size)
    return _save(first, fmt, save_all=True, append_images=rest, duration=100, loop=0)


def truncated_jpeg() -> bytes:
    data = photo_jpeg(400, 300)
    return data[: len(data) // 2]


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def png_header_claiming(width: int, height: int) -> bytes:
    """A well-formed PNG (valid CRCs) whose IHDR claims width x height but holds a few bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )


def random_bytes(size: int = 4096, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


SVG = (
    b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100">'
    b'<rect width="100" height="100" fill="red"/></svg>'
)

# Photoshop: signature, version 1, six reserved bytes, 3 channels, 100x100, 8 bits, RGB.
PSD_HEADER = b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, 100, 100, 8, 3) + b"\x00" * 64

EPS_HEADER = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\nnewpath 0 0 moveto\n%%EOF\n"


def bmp() -> bytes:
    return _save(Image.new("RGB", (50, 50), RED), "BMP")


def tiff() -> bytes:
    return _save(Image.new("RGB", (50, 50), RED), "TIFF")


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz(x: float, y: float, z: float) -> bytes:
    return b"XYZ " + bytes(4) + _s15(x) + _s15(y) + _s15(z)


def wide_gamut_profile() -> bytes:
    """A minimal ICC v2 RGB profile with Adobe RGB (1998) primaries and gamma 2.2."""
    name = b"Wide test RGB\0"
    description = b"desc" + bytes(4) + struct.pack(">I", len(name)) + name + bytes(8 + 3 + 67)
    gamma = b"curv" + bytes(4) + struct.pack(">IH", 1, 563) + bytes(2)
    tags = [
        (b"desc", description),
        (b"wtpt", _xyz(0.9642, 1.0, 0.8249)),
        (b"rXYZ", _xyz(0.6097, 0.3111, 0.0195)),
        (b"gXYZ", _xyz(0.2053, 0.6257, 0.0609)),
        (b"bXYZ", _xyz(0.1492, 0.0632, 0.7446)),
        (b"rTRC", gamma),
        (b"gTRC", gamma),
        (b"bTRC", gamma),
        (b"cprt", b"text" + bytes(4) + b"none\0"),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for signature, data in tags:
        table += signature + struct.pack(">II", offset + len(body), len(data))
        body += data + bytes(-len(data) % 4)
    header = (
        struct.pack(">I", offset + len(body))
        + bytes(4)
        + struct.pack(">I", 0x02100000)
        + b"mntrRGB XYZ "
        + bytes(12)
        + b"acsp"
        + bytes(28)
        + _xyz(0.9642, 1.0, 0.8249)[8:]
        + bytes(48)
    )
    return header + struct.pack(">I", len(tags)) + table + body


WIDE_GAMUT_GREEN = (50, 200, 50)
# The same colour in sRGB, as LittleCMS converts it: more saturated.
WIDE_GAMUT_GREEN_IN_SRGB = (0, 201, 12)


def wide_gamut(fmt: str, mode: str = "RGB") -> bytes:
    colour = (*WIDE_GAMUT_GREEN, 255)[: len(mode)]
    image = Image.new(mode, (120, 80), colour)
    return _save(image, fmt, icc_profile=wide_gamut_profile())


def png_with_broken_icc(width: int = 120, height: int = 80) -> bytes:
    return _save(Image.new("RGB", (width, height), RED), "PNG", icc_profile=b"not a profile")


def two_colour_png(width: int = 300, height: int = 200) -> bytes:
    """Red on the left two thirds, blue on the right third."""
    image = Image.new("RGB", (width, height), RED)
    ImageDraw.Draw(image).rectangle((width * 2 // 3, 0, width, height), fill=BLUE)
    return _save(image, "PNG")


def png(width: int, height: int, seed: int = 0) -> bytes:
    return _save(photo(width, height, seed), "PNG")
