from __future__ import annotations

import io
import json
import random
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import imagehash
import numpy as np
import pytest
from PIL import Image, ImageFile

from image_worker import processing
from image_worker.image_metadata import describe
from image_worker.processing import (
    Decoded,
    ImageRejected,
    Limits,
    Processed,
    Variant,
    decode,
    make_variants,
    process,
)
from tests.worker import images

SMALL = (100, 150)


def reopen(variant: Variant) -> Image.Image:
    image = Image.open(io.BytesIO(variant.data), formats=[variant.format.upper()])
    image.load()
    return image


def rgb_at(image: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    pixel = image.convert("RGBA").getpixel(xy)
    assert isinstance(pixel, tuple)
    return pixel


def close_to(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 40) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=False))


def assert_no_metadata(variant: Variant) -> None:
    image = reopen(variant)
    assert len(image.getexif()) == 0
    assert "xmp" not in image.info
    assert "XML:com.adobe.xmp" not in image.info
    assert not image.info.get("icc_profile")
    assert images.CAMERA_MAKE.encode() not in variant.data


# --- orientation and privacy --------------------------------------------------------------


def test_exif_orientation_applied_before_resizing() -> None:
    result = process(images.oriented_jpeg_with_gps(300, 200), widths=SMALL)

    assert result.metadata["width"] == 200
    assert result.metadata["height"] == 300
    assert {(v.width, v.height) for v in result.variants} == {(100, 150), (150, 225)}
    for variant in result.variants:
        image = reopen(variant)
        assert image.height > image.width
        w, h = image.size
        # Stored top-left, upright top-right after a 90 degree clockwise turn.
        assert close_to(rgb_at(image, (w - 3, 3))[:3], images.RED)
        assert close_to(rgb_at(image, (3, 3))[:3], images.GREY)
        assert close_to(rgb_at(image, (w - 3, h - 3))[:3], images.GREY)


def test_variants_carry_no_exif_gps_xmp_or_icc() -> None:
    result = process(images.oriented_jpeg_with_gps())

    assert {v.format for v in result.variants} == {"webp", "avif"}
    for variant in result.variants:
        assert_no_metadata(variant)


def test_exif_summary_is_an_allowlist_without_location() -> None:
    metadata = process(images.oriented_jpeg_with_gps(), widths=SMALL).metadata

    assert metadata["exif"] == {
        "make": "TestCam",
        "model": "X100",
        "datetime_original": "2024-05-01T10:11:12",
        "exposure_time": "1/250",
        "f_number": 2.8,
        "iso": 200,
        "orientation": 6,
    }
    text = json.dumps(metadata, allow_nan=False).lower()
    assert "gps" not in text
    assert "lat" not in text
    assert "12.34" not in text


# --- modes --------------------------------------------------------------------------------


def test_png_alpha_is_kept_in_webp_and_avif() -> None:
    result = process(images.rgba_png(400, 300), widths=(320,))

    assert result.metadata["has_alpha"] is True
    assert len(result.variants) == 2
    for variant in result.variants:
        image = reopen(variant)
        assert image.mode == "RGBA"
        assert (variant.width, variant.height) == (320, 240)
        assert rgb_at(image, (20, 120))[3] < 10
        right = rgb_at(image, (300, 120))
        assert right[3] > 245
        assert close_to(right[:3], images.BLUE)


def test_fully_opaque_alpha_is_dropped() -> None:
    decoded = decode(images.opaque_rgba_png(), Limits())

    assert decoded.image.mode == "RGB"
    assert describe(decoded)["has_alpha"] is False


def test_grey_with_alpha_keeps_alpha() -> None:
    decoded = decode(images.la_png(), Limits())

    assert decoded.image.mode == "LA"
    for variant in make_variants(decoded, widths=(100,)):
        image = reopen(variant)
        assert rgb_at(image, (10, 25))[3] < 10
        assert rgb_at(image, (90, 25))[3] > 245


def test_one_bit_becomes_grey() -> None:
    decoded = decode(images.one_bit_png(), Limits())

    assert decoded.source_mode == "1"
    assert decoded.image.mode == "L"
    assert decoded.image.getextrema() == (0, 255)


def test_cmyk_jpeg_becomes_rgb() -> None:
    decoded = decode(images.cmyk_jpeg(), Limits())

    assert decoded.source_mode == "CMYK"
    assert decoded.image.mode == "RGB"
    for variant in make_variants(decoded, widths=(320,)):
        image = reopen(variant)
        assert close_to(rgb_at(image, (40, 120))[:3], (0, 255, 255))
        assert close_to(rgb_at(image, (280, 120))[:3], (255, 255, 255))


@pytest.mark.parametrize(
    "data", [images.palette_png_with_transparency(), images.palette_gif_with_transparency()]
)
def test_palette_with_transparency_becomes_rgba(data: bytes) -> None:
    decoded = decode(data, Limits())

    assert decoded.source_mode == "P"
    assert decoded.image.mode == "RGBA"
    for variant in make_variants(decoded, widths=(200,)):
        image = reopen(variant)
        assert rgb_at(image, (20, 50))[3] < 10
        assert close_to(rgb_at(image, (180, 50)), (*images.RED, 255))


def test_sixteen_bit_png_is_scaled_not_clipped() -> None:
    decoded = decode(images.sixteen_bit_png(512, 32), Limits())

    assert decoded.source_mode.startswith("I")
    assert decoded.image.mode == "L"
    ramp = np.asarray(decoded.image)[0]
    assert ramp[0] == 0
    assert ramp[-1] == 255
    assert 120 <= ramp[256] <= 135
    assert len(np.unique(ramp)) == 256
    for variant in make_variants(decoded, widths=(320,)):
        row = np.asarray(reopen(variant).convert("L"))[16]
        assert row[5] < 20
        assert 100 < row[160] < 155
        assert row[-5] > 235


@pytest.mark.parametrize(("fmt", "mode"), [("JPEG", "RGB"), ("PNG", "RGB"), ("PNG", "RGBA")])
def test_colour_profile_is_converted_to_srgb_then_dropped(fmt: str, mode: str) -> None:
    result = process(images.wide_gamut(fmt, mode), widths=(100,))

    for variant in result.variants:
        image = reopen(variant)
        assert close_to(rgb_at(image, (50, 30))[:3], images.WIDE_GAMUT_GREEN_IN_SRGB, 8)
        assert not image.info.get("icc_profile")


def test_thirty_two_bit_grey_holding_sixteen_bit_samples_is_scaled() -> None:
    # Older Pillow versions decode 16-bit greyscale PNGs to mode "I".
    ramp = np.linspace(0, 65535, 256).round().astype(np.int32)
    image = Image.fromarray(np.tile(ramp, (4, 1)))
    assert image.mode == "I"

    grey = np.asarray(processing._normalise(image))

    assert grey.dtype == np.uint8
    assert grey[0, 0] == 0
    assert grey[0, -1] == 255
    assert len(np.unique(grey[0])) == 256


def test_broken_icc_profile_is_ignored() -> None:
    result = process(images.png_with_broken_icc(), widths=(100,))

    for variant in result.variants:
        assert close_to(rgb_at(reopen(variant), (50, 30))[:3], images.RED)


# --- animation ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_animation_uses_first_frame_and_counts_frames(fmt: str) -> None:
    data = images.animated(fmt, [images.RED, images.GREEN, images.BLUE])

    result = process(data, widths=(100,))

    assert result.metadata["animated"] is True
    assert result.metadata["frames"] == 3
    assert len(result.variants) == 2
    for variant in result.variants:
        assert close_to(rgb_at(reopen(variant), (50, 25))[:3], images.RED)


def test_still_image_is_not_animated() -> None:
    metadata = process(images.png(120, 80), widths=(100,)).metadata

    assert metadata["animated"] is False
    assert metadata["frames"] == 1


# --- rejection ----------------------------------------------------------------------------

ALLOWED = "not an image in an allowed format (JPEG, PNG, WebP, GIF, AVIF)"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        pytest.param(b"", "empty file", id="empty"),
        pytest.param(images.random_bytes(), ALLOWED, id="random"),
        pytest.param(images.SVG, ALLOWED, id="svg"),
        pytest.param(images.PSD_HEADER, ALLOWED, id="psd"),
        pytest.param(images.EPS_HEADER, ALLOWED, id="eps"),
        pytest.param(images.bmp(), ALLOWED, id="bmp"),
        pytest.param(images.tiff(), ALLOWED, id="tiff"),
    ],
)
def test_not_an_allowed_image_is_rejected(data: bytes, reason: str) -> None:
    with pytest.raises(ImageRejected) as caught:
        process(data)

    assert caught.value.reason == reason
    assert str(caught.value) == reason


def test_truncated_jpeg_is_rejected() -> None:
    with pytest.raises(ImageRejected, match=r"^file is truncated or corrupt: .*truncated"):
        process(images.truncated_jpeg())


def test_format_outside_the_limits_allowlist_is_rejected() -> None:
    limits = Limits(allowed_formats=("JPEG",))

    with pytest.raises(ImageRejected, match=r"allowed format \(JPEG\)$"):
        decode(images.png(50, 50), limits)


def test_file_over_the_byte_limit_is_rejected_before_parsing() -> None:
    data = images.png(200, 200)

    with pytest.raises(ImageRejected, match=r"^file is 0\.\d+ MiB, over the 0\.05 MiB limit$"):
        decode(data, Limits(max_bytes=int(0.05 * 2**20)))


def _forbid_pixel_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixels were loaded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


@pytest.mark.parametrize(
    ("width", "height", "reason"),
    [
        # Over our limit, under Pillow's own guard: our header check, with the size.
        (8000, 8000, "image is 8000x8000 = 64 MP, over the 50 MP limit"),
        # Pillow's warning (about 89 MP), made an error.
        (10000, 10000, "image is 100 MP, over the 50 MP limit"),
        # Pillow's hard error (about 179 MP).
        (30000, 30000, "image is 900 MP, over the 50 MP limit"),
    ],
)
def test_huge_header_is_rejected_without_decoding(
    monkeypatch: pytest.MonkeyPatch, width: int, height: int, reason: str
) -> None:
    data = images.png_header_claiming(width, height)
    _forbid_pixel_loading(monkeypatch)
    started = time.perf_counter()

    with pytest.raises(ImageRejected) as caught:
        process(data)

    assert time.perf_counter() - started < 1.0
    assert caught.value.reason == reason


def test_pixel_limit_is_configurable() -> None:
    with pytest.raises(ImageRejected, match=r"^image is 300x200 = 0\.06 MP, over the 0\.05 MP"):
        decode(images.png(300, 200), Limits(max_pixels=50_000))


def test_time_budget_is_enforced() -> None:
    with pytest.raises(ImageRejected, match=r"^processing took longer than the 1e-09 s budget$"):
        process(images.png(300, 200), Limits(time_budget_s=1e-9))


def _mutants(data: bytes, count: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    out = [data[:cut] for cut in (8, 30, 100, len(data) // 3, len(data) - 10)]
    for _ in range(count):
        mutant = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            mutant[rng.randrange(len(mutant))] = rng.randrange(256)
        out.append(bytes(mutant))
    return out


@pytest.mark.parametrize(
    "factory",
    [
        lambda: images.photo_jpeg(64, 48),
        lambda: images.png(64, 48),
        lambda: images.animated("GIF", [images.RED, images.BLUE], (64, 48)),
        lambda: images.animated("WEBP", [images.RED, images.BLUE], (64, 48)),
        lambda: images.animated("PNG", [images.RED, images.BLUE], (64, 48)),
        lambda: images.encode(images.photo(64, 48), "AVIF"),
        lambda: images.oriented_jpeg_with_gps(64, 48),
    ],
    ids=["jpeg", "png", "gif", "webp", "apng", "avif", "jpeg-exif"],
)
def test_damaged_files_give_variants_or_image_rejected(factory: Callable[[], bytes]) -> None:
    reasons: list[str] = []
    for mutant in _mutants(factory(), count=25, seed=7):
        try:
            result = process(mutant, widths=(32,))
        except ImageRejected as rejected:
            reasons.append(rejected.reason)
        else:
            assert result.variants
    assert all(reasons)


# --- sizes --------------------------------------------------------------------------------


def test_never_upscales() -> None:
    result = process(images.png(500, 300))

    assert {(v.width, v.height, v.format) for v in result.variants} == {
        (320, 192, "webp"),
        (320, 192, "avif"),
    }


def test_image_narrower_than_every_width_gets_one_variant_per_format() -> None:
    result = process(images.png(200, 120))

    assert [(v.width, v.height, v.format) for v in result.variants] == [
        (200, 120, "webp"),
        (200, 120, "avif"),
    ]


def test_very_tall_image_gets_variants_that_fit_webp() -> None:
    result = process(images.encode(Image.new("L", (100, 20000), 200), "PNG"), widths=(64, 100))

    sizes = {(v.width, v.height) for v in result.variants}
    assert sizes == {(64, 12800), (81, 16200)}


def test_default_widths_give_every_variant_narrowest_first() -> None:
    result = process(images.photo_jpeg(2400, 1600))

    assert [(v.width, v.format) for v in result.variants] == [
        (w, f) for w in (320, 640, 1024, 1920) for f in ("webp", "avif")
    ]
    for variant in result.variants:
        image = reopen(variant)
        assert image.size == (variant.width, variant.height)
        assert variant.height == round(variant.width * 1600 / 2400)
        assert variant.mime_type == f"image/{variant.format}"


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_resizing_in_two_bands_matches_one_resize(mode: str) -> None:
    bands = [Image.effect_noise((2048, 2048), 60) for _ in mode]
    source = Image.merge(mode, bands)
    size = (1000, 1000)
    assert source.width * source.height >= processing._BANDED_MIN_PIXELS

    with processing._helpers() as pool:
        banded = processing._resize(source, size, pool)

    assert np.array_equal(
        np.asarray(banded), np.asarray(source.resize(size, Image.Resampling.LANCZOS))
    )


def test_large_jpeg_is_decoded_at_reduced_scale() -> None:
    data = images.photo_jpeg(2400, 1600)

    full = decode(data, Limits())
    drafted = decode(data, Limits(), widths=(320,))

    assert full.image.size == (2400, 1600)
    assert (drafted.width, drafted.height) == (2400, 1600)
    assert drafted.image.size == (1200, 800)
    [webp, avif] = make_variants(drafted, widths=(320,))
    assert (webp.width, webp.height) == (avif.width, avif.height) == (320, 213)


def test_reduced_scale_respects_orientation() -> None:
    data = images.oriented_jpeg_with_gps(2400, 1600)

    decoded = decode(data, Limits(), widths=(320,))

    assert (decoded.width, decoded.height) == (1600, 2400)
    assert decoded.image.size == (800, 1200)
    variants = make_variants(decoded, widths=(320,))
    assert {(v.width, v.height) for v in variants} == {(320, 480)}


def test_variants_wider_than_the_reduced_decode_are_refused() -> None:
    decoded = decode(images.photo_jpeg(2400, 1600), Limits(), widths=(320,))

    with pytest.raises(ValueError, match="decode it again"):
        make_variants(decoded, widths=(1920,))


@pytest.mark.parametrize(
    ("widths", "formats"), [((), ("webp",)), ((0,), ("webp",)), ((320,), ("gif",))]
)
def test_bad_arguments_are_value_errors(widths: tuple[int, ...], formats: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="must be"):
        process(images.png(50, 50), widths=widths, formats=formats)


def test_limits_cannot_allow_unvetted_formats() -> None:
    with pytest.raises(ValueError, match="unsupported input formats"):
        Limits(allowed_formats=("PSD",))


# --- metadata -----------------------------------------------------------------------------


def test_metadata_is_json_and_complete() -> None:
    metadata = process(images.two_colour_png(300, 200), widths=(100,)).metadata

    assert json.loads(json.dumps(metadata, allow_nan=False)) == metadata
    assert metadata["width"] == 300
    assert metadata["height"] == 200
    assert metadata["format"] == "PNG"
    assert metadata["mode"] == "RGB"
    assert metadata["has_alpha"] is False
    assert metadata["exif"] == {}
    colours = metadata["dominant_colours"]
    assert isinstance(colours, list)
    assert 1 <= len(colours) <= 5
    assert colours[:2] == ["#ff0000", "#0000ff"]
    assert isinstance(metadata["blurhash"], str)
    assert len(metadata["blurhash"]) == 28
    assert isinstance(metadata["phash"], str)
    assert len(metadata["phash"]) == 16
    int(metadata["phash"], 16)


def test_dominant_colours_ignore_transparent_pixels() -> None:
    metadata = describe(decode(images.rgba_png(200, 100), Limits()))

    assert metadata["dominant_colours"] == ["#0000ff"]


def test_phash_is_stable_across_sizes_and_tells_images_apart() -> None:
    def phash(data: bytes) -> imagehash.ImageHash:
        value = describe(decode(data, Limits()))["phash"]
        assert isinstance(value, str)
        return imagehash.hex_to_hash(value)

    picture = images.shapes(600, 400, seed=3)
    original = phash(images.encode(picture, "PNG"))
    smaller = phash(images.encode(picture.resize((300, 200)), "PNG"))
    recompressed = phash(images.encode(picture, "JPEG", quality=50))
    different = phash(images.encode(images.shapes(600, 400, seed=4), "PNG"))

    assert original - smaller <= 4
    assert original - recompressed <= 4
    assert original - different > 12


# --- concurrency --------------------------------------------------------------------------


def _signature(result: Processed) -> tuple[object, ...]:
    variants = tuple((v.width, v.height, v.format, v.data) for v in result.variants)
    return variants, json.dumps(result.metadata, sort_keys=True)


def test_threads_give_the_same_results_and_leave_warning_filters_alone() -> None:
    inputs = [
        images.oriented_jpeg_with_gps(),
        images.rgba_png(),
        images.animated("GIF", [images.RED, images.BLUE]),
        images.png_header_claiming(30000, 30000),
        images.photo_jpeg(800, 600),
    ] * 3
    filters_before = list(warnings.filters)

    def run(data: bytes) -> object:
        try:
            return _signature(process(data, widths=SMALL))
        except ImageRejected as rejected:
            return rejected.reason

    expected = [run(data) for data in inputs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        actual = list(pool.map(run, inputs))

    assert actual == expected
    assert warnings.filters == filters_before


def test_decoded_is_plain_data() -> None:
    decoded = decode(images.png(50, 40), Limits())

    assert isinstance(decoded, Decoded)
    assert decoded.image.info == {}
    assert decoded.byte_size > 0
