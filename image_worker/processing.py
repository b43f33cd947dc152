"""The image worker's pure processing core: untrusted bytes in, web variants out.

No gRPC, no network, no files: everything works on ``bytes`` in memory.

Security (after Pillow's security handbook):

* The byte size is checked before any parser sees the data.
* ``Image.open(..., formats=...)`` gets an allowlist (JPEG, PNG, WebP, GIF, AVIF by default;
  never more than those five), so Pillow's many other parsers (PSD, EPS, TIFF, ...) are never
  reached with untrusted input.
* The width x height that the header claims is checked against ``Limits.max_pixels`` before
  any pixel is decoded, so a 30000 x 30000 PNG costs a header parse, not gigabytes.
* Pillow's own decompression-bomb guard stays on (``Image.MAX_IMAGE_PIXELS`` is never changed)
  and its warning is turned into an error while the header is parsed. It fires at about
  89 MP, so ``Limits.max_pixels`` above that has no effect.
* Truncated files are rejected: ``ImageFile.LOAD_TRUNCATED_IMAGES`` is never set.
* Every failure of the third-party decoders is caught at one boundary (``_rejecting``) and
  becomes ``ImageRejected`` with a reason a person can read; nothing else escapes for a bad
  image. ``ValueError`` is raised only for a caller's bad arguments.
* Outputs carry no metadata: no EXIF (so no GPS), no XMP, no ICC profile. Colours are converted
  to sRGB first, so dropping the profile does not shift them.

Policies:

* Animated images (GIF, animated WebP, APNG, AVIF sequences): only the first frame is decoded
  and turned into variants; ``Decoded.animated`` and ``Decoded.frames`` record what was there.
  Multi-picture JPEGs (MPO) are treated the same way, as a JPEG.
* EXIF orientation is applied before resizing, so variants are upright and their width is the
  upright width.
* Variants are never upscaled: requested widths wider than the image are skipped, and an image
  narrower than every requested width gets one variant at its own width. No variant side
  exceeds 16383 px (WebP's limit): a very tall image gets a narrower widest variant instead.
* Output modes: RGB, RGBA, L or LA. CMYK becomes RGB, palettes with transparency become RGBA,
  16-bit greyscale is scaled (not clipped) to 8 bits, 1-bit becomes L, and an alpha channel
  that is opaque everywhere is dropped.
* The time budget (``Limits.time_budget_s``) is cooperative: ``process`` checks the clock
  between steps (after decoding, after each encoded variant, after the metadata); a single
  step that runs long is not interrupted.

Threading: give each image its own thread (and never share a ``Decoded`` between threads).
Each call also uses two short-lived helper threads of its own: the variants' encoders, the
metadata and the first, largest resize run side by side (Pillow's codecs release the GIL), so
one image keeps two cores busy. Calls share no mutable state, with one exception: turning the
decompression-bomb warning into an error needs ``warnings.catch_warnings``, which swaps the
interpreter-wide filter list (Python 3.11 has no per-thread filters). A module lock keeps our
own threads from interleaving those swaps; it is held only while the header is parsed.
"""

from __future__ import annotations

import io
import logging
import math
import re
import struct
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Final

import numpy as np
from PIL import Image, ImageCms, ImageFile, ImageOps, UnidentifiedImageError

from image_worker.decoded import Decoded
from image_worker.image_metadata import describe

__all__ = [
    "DEFAULT_FORMATS",
    "DEFAULT_WIDTHS",
    "Decoded",
    "ImageRejected",
    "Limits",
    "Processed",
    "Variant",
    "check_byte_size",
    "decode",
    "make_variants",
    "process",
]

logger = logging.getLogger(__name__)

DEFAULT_WIDTHS: Final[tuple[int, ...]] = (320, 640, 1024, 1920)
DEFAULT_FORMATS: Final[tuple[str, ...]] = ("webp", "avif")

# The formats whose Pillow decoders we accept untrusted input for. Limits may narrow this set
# but never widen it.
SUPPORTED_INPUT_FORMATS: Final[tuple[str, ...]] = ("JPEG", "PNG", "WEBP", "GIF", "AVIF")
_FORMAT_NAMES: Final[dict[str, str]] = {"WEBP": "WebP"}

_MIME_TYPES: Final[dict[str, str]] = {"webp": "image/webp", "avif": "image/avif"}
_WEBP_QUALITY: Final = 80
_WEBP_METHOD: Final = 4
# libavif's quality 60 looks like WebP 80 at a smaller size; speed 8 is about 3x faster than
# Pillow's default 6 for a few percent more bytes.
_AVIF_QUALITY: Final = 60
_AVIF_SPEED: Final = 8
# Parallelism comes from encoding the variants side by side (_HELPER_THREADS); libaom's own
# threads barely help a single image at speed 8 and would oversubscribe the cores.
_AVIF_THREADS: Final = 1
# Per call, threads that encode variants, compute the metadata and resize the widest variant
# in two bands while the calling thread waits. Pillow's codecs release the GIL.
_HELPER_THREADS: Final = 2
# Below this many source pixels, splitting a resize costs more than it saves.
_BANDED_MIN_PIXELS: Final = 4_000_000
# With a gap of 3, Pillow's box reduction before LANCZOS is indistinguishable from LANCZOS
# alone and much cheaper for large ratios.
_REDUCING_GAP: Final = 3.0
# WebP's hard limit; also well inside what browsers decode for AVIF.
_MAX_SIDE: Final = 16383
# A JPEG decoded at 1/2, 1/4 or 1/8 scale keeps good quality as long as it stays at least
# this many times the widest variant.
_DRAFT_MARGIN: Final = 2

_SIXTEEN_BIT_MODES: Final = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_KEPT_MODES: Final = frozenset({"RGB", "RGBA", "L", "LA"})
_ORIENTATION_TAG: Final = 0x0112
_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")

# Exceptions Pillow's decoders and encoders raise for bad input. Warning is here because a
# process run with warnings as errors (pytest, `python -W error`) gets Pillow's warnings about
# corrupt data as exceptions.
_DECODER_ERRORS: Final[tuple[type[BaseException], ...]] = (
    OSError,
    ValueError,
    SyntaxError,
    TypeError,
    EOFError,
    IndexError,
    KeyError,
    ZeroDivisionError,
    # libavif reports malformed files this way.
    RuntimeError,
    struct.error,
    ImageCms.PyCMSError,
    Warning,
)

_warnings_lock = threading.Lock()
_SRGB: Final = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


class ImageRejected(Exception):
    """The bytes are not an image this worker will process; ``reason`` says why, for people."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Limits:
    max_bytes: int = 25 * 1024 * 1024
    max_pixels: int = 50_000_000
    allowed_formats: tuple[str, ...] = SUPPORTED_INPUT_FORMATS
    time_budget_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_bytes <= 0 or self.max_pixels <= 0 or self.time_budget_s <= 0:
            raise ValueError("limits must be positive")
        if not self.allowed_formats:
            raise ValueError("allowed_formats must not be empty")
        unknown = [f for f in self.allowed_formats if f not in SUPPORTED_INPUT_FORMATS]
        if unknown:
            raise ValueError(
                f"unsupported input formats {unknown}; choose from {SUPPORTED_INPUT_FORMATS}"
            )


@dataclass(frozen=True, slots=True)
class Variant:
    width: int
    height: int
    format: str
    data: bytes = field(repr=False)
    mime_type: str
    # Time its encoder took (the encoders of one image run side by side).
    encode_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class Processed:
    variants: list[Variant]
    metadata: dict[str, object]
    # Time of the steps besides encoding: decode, resize (all sizes), metadata.
    stage_seconds: dict[str, float] = field(default_factory=dict)


_DEFAULT_LIMITS: Final = Limits()


class _Deadline:
    def __init__(self, budget_s: float) -> None:
        self._budget_s = budget_s
        self._end = time.monotonic() + budget_s

    def check(self) -> None:
        if time.monotonic() > self._end:
            raise ImageRejected(f"processing took longer than the {self._budget_s:g} s budget")


def _human_formats(formats: Sequence[str]) -> str:
    return ", ".join(_FORMAT_NAMES.get(f, f) for f in formats)


def _mebibytes(size: int) -> str:
    return f"{size / 2**20:.3g} MiB"


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1_000_000:.3g} MP"


def check_byte_size(size: int, max_bytes: int) -> None:
    """Rejects a file over the byte limit (the worker asks before it downloads one)."""
    if size > max_bytes:
        raise ImageRejected(f"file is {_mebibytes(size)}, over the {_mebibytes(max_bytes)} limit")


def _describe_error(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]


_FAILURES: Final[dict[str, str]] = {
    "decoding": "file is truncated or corrupt",
    "encoding": "image could not be encoded",
    "describing": "image could not be described",
}


@contextmanager
def _rejecting(stage: str, limits: Limits) -> Iterator[None]:
    """The one place where decoder and encoder failures become ``ImageRejected``."""
    try:
        yield
    except ImageRejected:
        raise
    except UnidentifiedImageError as exc:
        logger.debug("image rejected while %s", stage, exc_info=True)
        raise ImageRejected(
            f"not an image in an allowed format ({_human_formats(limits.allowed_formats)})"
        ) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own guard fired before we could read the size; its message has the count.
        match = _BOMB_PIXELS.search(str(exc))
        size = _megapixels(int(match.group(1))) if match else "too large"
        raise ImageRejected(
            f"image is {size}, over the {_megapixels(limits.max_pixels)} limit"
        ) from exc
    except MemoryError as exc:
        raise ImageRejected("image needs more memory than the worker has") from exc
    except _DECODER_ERRORS as exc:
        logger.debug("image rejected while %s", stage, exc_info=True)
        raise ImageRejected(f"{_FAILURES[stage]}: {_describe_error(exc)}") from exc


def _plan_sizes(
    source_width: int, source_height: int, widths: Sequence[int]
) -> list[tuple[int, int]]:
    """Variant sizes, widest first: none wider than the source (never upscale) and none with
    a side over what WebP can hold (a tall screenshot gets a narrower top variant instead)."""
    fitting = sorted({w for w in widths if w <= source_width}, reverse=True) or [source_width]
    sizes: list[tuple[int, int]] = []
    for wanted in fitting:
        width = min(wanted, _MAX_SIDE, math.floor(source_width * _MAX_SIDE / source_height))
        if width < 1:
            raise ImageRejected(
                f"image is {source_width}x{source_height}, too narrow for its height to fit "
                f"a web image ({_MAX_SIDE} px on a side at most)"
            )
        height = min(_MAX_SIDE, max(1, round(source_height * width / source_width)))
        if (width, height) not in sizes:
            sizes.append((width, height))
    return sizes


def _validate_widths(widths: Sequence[int]) -> None:
    if not widths or any(not isinstance(w, int) or w <= 0 for w in widths):
        raise ValueError(f"widths must be positive integers, got {widths!r}")


def _validate_request(widths: Sequence[int], formats: Sequence[str]) -> None:
    _validate_widths(widths)
    if not formats or any(f not in _MIME_TYPES for f in formats):
        raise ValueError(f"formats must be among {tuple(_MIME_TYPES)}, got {formats!r}")


def _open_header(data: bytes, limits: Limits) -> ImageFile.ImageFile:
    with _warnings_lock, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return Image.open(io.BytesIO(data), formats=list(limits.allowed_formats))


def _read_exif(im: Image.Image) -> tuple[Image.Exif, int]:
    # Broken EXIF must not cost the picture: fall back to no EXIF and no rotation.
    try:
        exif = im.getexif()
        orientation = exif.get(_ORIENTATION_TAG, 1)
    except _DECODER_ERRORS:
        logger.debug("ignoring unreadable EXIF", exc_info=True)
        return Image.Exif(), 1
    if not isinstance(orientation, int) or not 1 <= orientation <= 8:
        orientation = 1
    return exif, orientation


def _maybe_draft(im: ImageFile.ImageFile, orientation: int, widths: Sequence[int] | None) -> None:
    if widths is None or im.format not in ("JPEG", "MPO"):
        return
    stored_w, stored_h = im.size
    upright_w, upright_h = (stored_h, stored_w) if orientation >= 5 else (stored_w, stored_h)
    needed = _plan_sizes(upright_w, upright_h, widths)[0][0] * _DRAFT_MARGIN
    if upright_w < 2 * needed:
        return
    ratio = needed / upright_w
    im.draft(im.mode, (math.ceil(stored_w * ratio), math.ceil(stored_h * ratio)))


def _sixteen_bit_to_eight(im: Image.Image) -> Image.Image:
    # Pillow's convert("L") clips 16-bit samples at 255 (a gradient turns white); scale instead.
    # Mode "I" from these decoders holds 16-bit samples too.
    samples = np.asarray(im)
    if samples.dtype != np.uint16:
        samples = np.clip(samples, 0, 65535).astype(np.uint16)
    grey = Image.fromarray((samples >> 8).astype(np.uint8))
    transparency = im.info.get("transparency")
    if isinstance(transparency, int):
        alpha = Image.fromarray(np.where(samples == transparency, 0, 255).astype(np.uint8))
        grey = Image.merge("LA", (grey, alpha))
    return grey


def _to_srgb(im: Image.Image, icc: object) -> Image.Image:
    """Convert to sRGB using the embedded profile; without a usable one, assume sRGB."""
    target_mode = "RGBA" if im.mode == "RGBA" else "RGB"
    if isinstance(icc, bytes) and icc and im.mode in ("RGB", "RGBA", "CMYK"):
        try:
            profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            if im.mode != "CMYK" and "sRGB" in ImageCms.getProfileDescription(profile):
                return im
            converted = ImageCms.profileToProfile(im, profile, _SRGB, outputMode=target_mode)
            if converted is not None:
                return converted
        except _DECODER_ERRORS:
            logger.debug("ignoring unusable ICC profile", exc_info=True)
    return im if im.mode == target_mode else im.convert(target_mode)


def _normalise(im: Image.Image) -> Image.Image:
    mode = im.mode
    icc = im.info.get("icc_profile")
    if mode in _SIXTEEN_BIT_MODES:
        out = _sixteen_bit_to_eight(im)
    elif mode == "1":
        out = im.convert("L")
    elif mode in ("P", "PA"):
        out = im.convert("RGBA" if im.has_transparency_data else "RGB")
    elif mode in ("L", "RGB") and "transparency" in im.info:
        out = im.convert("LA" if mode == "L" else "RGBA")
    elif mode == "CMYK":
        out = _to_srgb(im, icc)
    elif mode in _KEPT_MODES:
        out = im
    else:
        out = im.convert("RGBA" if im.has_transparency_data else "RGB")
    if out.mode in ("RGB", "RGBA") and mode != "CMYK":
        out = _to_srgb(out, icc)
    if out.mode in ("RGBA", "LA") and out.getchannel("A").getextrema() == (255, 255):
        # Opaque alpha only costs bytes in every variant.
        out = out.convert("RGB" if out.mode == "RGBA" else "L")
    return out


def _decode(data: bytes, limits: Limits, widths: Sequence[int] | None) -> Decoded:
    if not data:
        raise ImageRejected("empty file")
    check_byte_size(len(data), limits.max_bytes)
    with _rejecting("decoding", limits):
        im = _open_header(data, limits)
        width, height = im.size
        if width * height > limits.max_pixels:
            raise ImageRejected(
                f"image is {width}x{height} = {_megapixels(width * height)}, "
                f"over the {_megapixels(limits.max_pixels)} limit"
            )
        fmt = "JPEG" if im.format == "MPO" else str(im.format)
        # Counting a GIF's frames walks the whole file; later frames are never decoded.
        frames = int(getattr(im, "n_frames", 1))
        animated = bool(getattr(im, "is_animated", False)) and im.format != "MPO"
        source_mode = im.mode
        exif, orientation = _read_exif(im)

        _maybe_draft(im, orientation, widths)
        im.load()
        upright: Image.Image = im
        if orientation != 1:
            upright = ImageOps.exif_transpose(im)
        image = _normalise(upright)
        if image is im and frames > 1:
            # Let go of the decoder state that holds the other frames.
            image = im.copy()
        # Nothing from the source's metadata may reach an encoder by inheritance.
        image.info = {}

    upright_w, upright_h = (height, width) if orientation >= 5 else (width, height)
    return Decoded(
        image=image,
        width=upright_w,
        height=upright_h,
        format=fmt,
        source_mode=source_mode,
        frames=frames,
        animated=animated,
        orientation=orientation,
        byte_size=len(data),
        exif=exif,
    )


def decode(data: bytes, limits: Limits, *, widths: Sequence[int] | None = None) -> Decoded:
    """Decode untrusted bytes under ``limits``, or raise ``ImageRejected``.

    Pass the ``widths`` that will be given to ``make_variants`` to let a large JPEG decode at
    1/2, 1/4 or 1/8 scale (never below twice the widest variant that fits).
    """
    if widths is not None:
        _validate_widths(widths)
    return _decode(data, limits, widths)


def _encode(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    # No exif/xmp arguments, and icc_profile=None because Pillow's AVIF encoder otherwise
    # falls back to image.info: the output must carry no metadata at all.
    if fmt == "webp":
        image.save(buf, "WEBP", quality=_WEBP_QUALITY, method=_WEBP_METHOD, icc_profile=None)
    else:
        image.save(
            buf,
            "AVIF",
            quality=_AVIF_QUALITY,
            speed=_AVIF_SPEED,
            max_threads=_AVIF_THREADS,
            icc_profile=None,
        )
    return buf.getvalue()


def _variant(image: Image.Image, fmt: str) -> Variant:
    started = time.perf_counter()
    data = _encode(image, fmt)
    return Variant(
        image.width, image.height, fmt, data, _MIME_TYPES[fmt], time.perf_counter() - started
    )


def _timed(stages: dict[str, float], stage: str, started: float) -> None:
    stages[stage] = stages.get(stage, 0.0) + time.perf_counter() - started


@contextmanager
def _helpers() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(_HELPER_THREADS, thread_name_prefix="image-worker")
    try:
        yield pool
    finally:
        # On a rejection, queued work is dropped; a running encoder cannot be interrupted.
        pool.shutdown(wait=True, cancel_futures=True)


def _resize(image: Image.Image, size: tuple[int, int], pool: ThreadPoolExecutor) -> Image.Image:
    width, height = size
    ratio = max(image.width / width, image.height / height)
    if height < 2 or image.width * image.height < _BANDED_MIN_PIXELS or ratio >= 2 * _REDUCING_GAP:
        return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=_REDUCING_GAP)
    # Two horizontal bands at once. With a box, Pillow's LANCZOS still reads the source rows
    # beyond it, so the seam is invisible: the result is identical to one resize.
    cut = height // 2
    source_cut = cut * image.height / height
    lower = pool.submit(
        image.resize,
        (width, height - cut),
        Image.Resampling.LANCZOS,
        (0, source_cut, image.width, image.height),
    )
    upper = image.resize((width, cut), Image.Resampling.LANCZOS, (0, 0, image.width, source_cut))
    result = Image.new(image.mode, size)
    result.paste(upper, (0, 0))
    result.paste(lower.result(), (0, cut))
    return result


def _make_variants(
    decoded: Decoded,
    widths: Sequence[int],
    formats: Sequence[str],
    limits: Limits,
    deadline: _Deadline | None,
    pool: ThreadPoolExecutor,
    stages: dict[str, float] | None = None,
) -> list[Variant]:
    sizes = _plan_sizes(decoded.width, decoded.height, widths)
    stages = {} if stages is None else stages
    if sizes[0][0] > decoded.image.width:
        raise ValueError(
            f"the image was decoded at reduced scale ({decoded.image.width} px wide) for "
            f"narrower widths; decode it again with widths={tuple(widths)!r}"
        )
    pending: list[Future[Variant]] = []
    with _rejecting("encoding", limits):
        current = decoded.image
        for size in sizes:
            if current.size != size:
                # Each smaller variant comes from the previous one: far less work than going
                # back to the full image every time, for no visible loss.
                started = time.perf_counter()
                current = _resize(current, size, pool)
                _timed(stages, "resize", started)
            # Image.save writes attributes on the image, so concurrent encoders of one size
            # need their own objects. Resizing only reads, so the first can share `current`.
            pending += [
                pool.submit(_variant, current if index == 0 else current.copy(), fmt)
                for index, fmt in enumerate(formats)
            ]
            if deadline is not None:
                deadline.check()
        variants: list[Variant] = []
        for future in pending:
            variants.append(future.result())
            if deadline is not None:
                deadline.check()
    rank = {fmt: index for index, fmt in enumerate(formats)}
    variants.sort(key=lambda v: (v.width, rank[v.format]))
    return variants


def make_variants(
    decoded: Decoded,
    widths: Sequence[int] = DEFAULT_WIDTHS,
    formats: Sequence[str] = DEFAULT_FORMATS,
) -> list[Variant]:
    """Resized, metadata-free encodings of ``decoded``, narrowest first.

    Widths wider than the image are skipped; an image narrower than all of them gets one
    variant per format at its own width. Raises ``ImageRejected`` if an encoder fails.
    """
    _validate_request(widths, formats)
    with _helpers() as pool:
        return _make_variants(decoded, widths, formats, _DEFAULT_LIMITS, None, pool)


def process(
    data: bytes,
    limits: Limits | None = None,
    widths: Sequence[int] = DEFAULT_WIDTHS,
    formats: Sequence[str] = DEFAULT_FORMATS,
) -> Processed:
    """Decode, make variants and describe one image within ``limits.time_budget_s``.

    Raises ``ImageRejected`` for any image that cannot be processed, including one that runs
    over the (cooperative) time budget.
    """
    limits = limits or _DEFAULT_LIMITS
    _validate_request(widths, formats)
    deadline = _Deadline(limits.time_budget_s)
    stages: dict[str, float] = {}
    started = time.perf_counter()
    decoded = _decode(data, limits, widths)
    _timed(stages, "decode", started)
    deadline.check()

    def described() -> dict[str, object]:
        began = time.perf_counter()
        try:
            return describe(decoded)
        finally:
            _timed(stages, "metadata", began)

    with _helpers() as pool:
        # The metadata needs only a small preview: it runs while the first variant is resized.
        description = pool.submit(described)
        variants = _make_variants(decoded, widths, formats, limits, deadline, pool, stages)
        with _rejecting("describing", limits):
            metadata = description.result()
    deadline.check()
    return Processed(variants=variants, metadata=metadata, stage_seconds=stages)
