"""The worker end to end against real services: variants, metadata, index, bad input."""

from __future__ import annotations

import io
import json

import pytest
from google.protobuf import json_format
from loom.vector.v1 import vector_pb2
from PIL import Image as PILImage

from tests.worker import images
from tests.worker.conftest import Image, Stack

GOOD = Image.STATE_COMPLETED


def opened(data: bytes, fmt: str) -> PILImage.Image:
    image = PILImage.open(io.BytesIO(data), formats=[fmt.upper()])
    image.load()
    return image


def is_red(pixel: object) -> bool:
    assert isinstance(pixel, tuple)
    red, green, blue = pixel[:3]
    return bool(red > 200 and green < 60 and blue < 60)


def test_photo_with_orientation_and_gps_is_completed_upright_private_and_searchable(
    stack: Stack,
) -> None:
    # Stored 1300 wide and 2000 tall with orientation 6: upright it is 2000 x 1300, so every
    # default width fits, and the red marker of the stored top-left corner is top-right.
    data = images.oriented_jpeg_with_gps(width=1300, height=2000, orientation=6)
    uploaded = stack.upload(
        data, "coast-lighthouse.jpg", "image/jpeg", alt_text="A red marker on a lighthouse wall"
    )
    worker = stack.start_worker(widths=(320, 640, 1024, 1920))

    image = stack.wait_for(uploaded.id)

    assert image.state == GOOD, image.error
    assert (image.width, image.height, image.attempts) == (2000, 1300, 1)
    assert image.alt_text == "A red marker on a lighthouse wall"
    assert sorted((v.format, v.width) for v in image.variants) == sorted(
        (fmt, w) for fmt in ("webp", "avif") for w in (320, 640, 1024, 1920)
    )
    for variant in image.variants:
        assert variant.height == round(1300 * variant.width / 2000)
        assert variant.mime_type == f"image/{variant.format}"
        data = stack.download(image.id, (variant.width, variant.format))
        assert len(data) == variant.size_bytes
        picture = opened(data, variant.format)
        assert picture.size == (variant.width, variant.height)
        # Upright: the marker is in the top-right corner, the bottom-left is grey.
        w, h = picture.size
        rgb = picture.convert("RGB")
        assert is_red(rgb.getpixel((int(w * 0.95), int(h * 0.05)))), variant
        assert not is_red(rgb.getpixel((int(w * 0.05), int(h * 0.95)))), variant
        # No metadata at all: no EXIF (so no GPS), no XMP.
        assert len(picture.getexif()) == 0, variant
        assert not {"exif", "xmp", "XML:com.adobe.xmp"} & set(picture.info), variant

    metadata = json_format.MessageToDict(image.metadata)
    assert metadata["format"] == "JPEG"
    assert metadata["has_alpha"] is False
    assert metadata["dominant_colours"]
    assert isinstance(metadata["blurhash"], str)
    assert len(metadata["blurhash"]) > 6
    assert len(metadata["phash"]) == 16
    assert metadata["exif"]["make"] == images.CAMERA_MAKE
    assert metadata["exif"]["orientation"] == 6
    assert "gps" not in json.dumps(metadata).lower()

    for mode in (vector_pb2.SEARCH_MODE_FULL_TEXT, vector_pb2.SEARCH_MODE_VECTOR):
        results = stack.search("lighthouse", mode)
        assert [r.document.id for r in results][:1] == [image.id], mode
        document = results[0].document
        assert document.source_id == image.id
        assert (document.scope.team_id, document.scope.environment_id) == (
            stack.tenant.team_id,
            stack.tenant.env_id,
        )
        assert "coast-lighthouse.jpg" in document.text
        assert "A red marker on a lighthouse wall" in document.text
    assert worker.stats.completed == 1


ODD_BUT_FINE = {
    "alpha.png": images.rgba_png(),
    "cmyk.jpg": images.cmyk_jpeg(),
    "palette.png": images.palette_png_with_transparency(),
    "sixteen-bit.png": images.sixteen_bit_png(),
    "animated.gif": images.animated("GIF", [images.RED, images.GREEN, images.BLUE]),
}
BAD = {
    "truncated.jpg": (images.truncated_jpeg(), "truncated"),
    "huge-header.png": (images.png_header_claiming(30000, 30000), "limit"),
    # A WebP signature in front of garbage gets past the upload's signature check.
    "garbage.webp": (
        b"RIFF" + (4000).to_bytes(4, "little") + b"WEBPVP8 " + images.random_bytes(4000),
        "",
    ),
}


def test_odd_and_hostile_files_end_completed_or_failed_and_the_worker_lives_on(
    stack: Stack,
) -> None:
    worker = stack.start_worker()
    ids = {name: stack.upload(data, name).id for name, data in ODD_BUT_FINE.items()}
    bad_ids = {name: stack.upload(data, name).id for name, (data, _) in BAD.items()}

    for name, image_id in ids.items():
        image = stack.wait_for(image_id)
        assert image.state == GOOD, (name, image.error)
        assert image.variants, name
        # Never upscaled: a 100 px wide file gets one 100 px variant per format, not 128.
        fitting = {w for w in (64, 128) if w <= image.width} or {image.width}
        assert {v.width for v in image.variants} == fitting, name
        for variant in image.variants:
            opened(stack.download(image_id, (variant.width, variant.format)), variant.format)
        metadata = json_format.MessageToDict(image.metadata)
        if name in ("alpha.png", "palette.png"):
            assert metadata["has_alpha"] is True, name
        if name == "animated.gif":
            assert (metadata["animated"], metadata["frames"]) == (True, 3)

    for name, image_id in bad_ids.items():
        image = stack.wait_for(image_id)
        assert image.state == Image.STATE_FAILED, name
        assert image.attempts == 1, name  # a bad image is not retried
        assert not image.variants
        words = BAD[name][1]
        assert words in image.error, (name, image.error)
        assert 10 < len(image.error) < 300, image.error
        assert "Traceback" not in image.error

    # Still claiming, and still good at it.
    assert worker.alive
    after = stack.upload(images.photo_jpeg(300, 200), "after.jpg")
    assert stack.wait_for(after.id).state == GOOD
    stats = worker.stats
    assert (stats.completed, stats.failed, stats.retried) == (len(ids) + 1, len(bad_ids), 0)


@pytest.mark.parametrize("mode", ["threads", "processes"])
def test_both_modes_process_images(stack: Stack, mode: str) -> None:
    stack.start_worker(mode=mode, concurrency=1)
    good = stack.upload(images.photo_jpeg(200, 100), "good.jpg")
    bad = stack.upload(images.truncated_jpeg(), "bad.jpg")
    assert stack.wait_for(good.id).state == GOOD
    failed = stack.wait_for(bad.id)
    assert failed.state == Image.STATE_FAILED
    assert "truncated" in failed.error
