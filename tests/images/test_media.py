"""The media store and signature sniffing, without a server."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from content_service.images.media import MediaStore, normalise_mime_type, sniff
from tests.images.helpers import picture, sha


@pytest.mark.parametrize(
    ("fmt", "mime"),
    [
        ("JPEG", "image/jpeg"),
        ("PNG", "image/png"),
        ("GIF", "image/gif"),
        ("WEBP", "image/webp"),
        ("AVIF", "image/avif"),
    ],
)
def test_sniff_recognises_allowed_types(fmt: str, mime: str) -> None:
    assert sniff(picture(fmt)[:256]) == mime


@pytest.mark.parametrize(
    "head",
    [
        b"",
        b"<svg xmlns='http://www.w3.org/2000/svg'/>",
        b"8BPS\x00\x01",  # PSD
        b"%!PS-Adobe-3.0 EPSF-3.0",
        b"II*\x00",  # TIFF
        b"BM\x00\x00",  # BMP
        b"RIFF\x00\x00\x00\x00WAVE",  # RIFF, but audio
        b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic",  # HEIC: not AVIF
        b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00isommp42",  # MP4
        b"GIF88a",
    ],
)
def test_sniff_rejects_everything_else(head: bytes) -> None:
    assert sniff(head) is None


def test_sniff_finds_avif_among_compatible_brands() -> None:
    head = b"\x00\x00\x00\x1cftypmif1\x00\x00\x00\x00mif1miafavif"
    assert sniff(head) == "image/avif"


def test_mime_types_are_normalised() -> None:
    assert normalise_mime_type(" Image/JPG; charset=binary") == "image/jpeg"
    assert normalise_mime_type("") == ""


def test_temp_blob_publishes_atomically_or_leaves_nothing(tmp_path: Path) -> None:
    store = MediaStore(tmp_path / "media")
    data = picture()
    with store.temp() as blob:
        blob.write(data[:10])
        blob.write(data[10:])
        assert (blob.size, blob.sha256, blob.head) == (len(data), sha(data), data[:256])
        key = store.original_key(blob.sha256)
        blob.publish(key)
    assert key == f"originals/{sha(data)[:2]}/{sha(data)[2:4]}/{sha(data)}"
    assert store.path(key).read_bytes() == data
    with store.temp() as blob:
        blob.write(b"partial")
    assert list((tmp_path / "media" / "tmp").iterdir()) == []


def test_trash_and_restore(tmp_path: Path) -> None:
    store = MediaStore(tmp_path)
    with store.temp() as blob:
        blob.write(b"x")
        blob.publish("originals/aa/bb/k")
    trash = store.trash("originals/aa/bb/k")
    assert trash is not None
    assert not store.exists("originals/aa/bb/k")
    store.restore([(trash, "originals/aa/bb/k")])
    assert store.path("originals/aa/bb/k").read_bytes() == b"x"
    assert store.trash("originals/aa/bb/missing") is None


def test_keys_cannot_escape_the_media_folder(tmp_path: Path) -> None:
    store = MediaStore(tmp_path)
    for key in ["../etc/passwd", "/etc/passwd", "originals/../../x", "tmp/x", ""]:
        with pytest.raises(ValueError, match="not a media key"):
            store.path(key)


def test_variant_keys_carry_the_lease_tag(tmp_path: Path) -> None:
    key = MediaStore.variant_key("01jabcdefghjkmnpqrstvwxyz0", 640, "webp", "0123456789abcdef")
    assert key.startswith("variants/z0/01jabcdefghjkmnpqrstvwxyz0/640w-0123456789abcdef-")
    assert key.endswith(".webp")
    assert MediaStore.lease_tag_of_variant(key) == "0123456789abcdef"


def test_sweep_removes_only_old_leftovers(tmp_path: Path) -> None:
    store = MediaStore(tmp_path)
    old = tmp_path / "tmp" / "old.part"
    new = tmp_path / "tmp" / "new.part"
    old.write_bytes(b"o")
    new.write_bytes(b"n")
    an_hour_ago = time.time() - 7200
    os.utime(old, (an_hour_ago, an_hour_ago))
    assert store.sweep(older_than_s=3600) == 1
    assert not old.exists()
    assert new.exists()
