"""Media over HTTP: the URLs on Image and ImageVariant, fetched with a real HTTP client
(http.client, which sends a path exactly as given) from a real content_service."""

from __future__ import annotations

import http.client
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import pytest
from loom.content.v1 import images_pb2
from pydantic import ValidationError
from sqlalchemy import update

from content_service.db.models import ImageVariant as VariantRow
from content_service.images.urls import MediaUrls, parse
from tests.content.tenants_and_pages import make_tenant
from tests.images.helpers import (
    Answer,
    claim,
    completed_image,
    fetch,
    images_stub,
    jobs_stub,
    picture,
    sha,
    upload,
    upload_variant,
)
from tests.support import ContentServer, ContentServerFactory, content_settings, raises_status

CACHE_FOREVER = "public, max-age=31536000, immutable"


def assert_media_headers(answer: Answer, mime_type: str, data: bytes) -> None:
    h = answer.headers
    assert h["Content-Type"] == mime_type
    assert h["ETag"] == f'"{sha(data)}"'
    assert h["Cache-Control"] == CACHE_FOREVER
    assert h["X-Content-Type-Options"] == "nosniff"
    assert h["Accept-Ranges"] == "bytes"
    assert h["Access-Control-Allow-Origin"] == "*"
    assert "sandbox" in h["Content-Security-Policy"]


# --- the URLs on the messages, and the bytes behind them ---------------------------------


def test_every_answer_carries_the_original_url_and_it_serves_the_bytes(
    content_server: ContentServer,
) -> None:
    t = make_tenant(content_server.admin)
    images = images_stub(t.client)
    data = picture("PNG", 80, 60)
    uploaded = upload(images, t.env_id, data)
    assert uploaded.url == f"http://{content_server.media_http}/originals/{sha(data)}.png"
    got = images.GetImage(images_pb2.GetImageRequest(id=uploaded.id))
    listed = images.ListImages(images_pb2.ListImagesRequest(environment_id=t.env_id))
    assert got.url == listed.images[0].url == uploaded.url
    # The same bytes again (dedup) answer the same URL.
    assert upload(images, t.env_id, data).url == uploaded.url

    # Public by design: no key, like a CDN link.
    answer = fetch(content_server, uploaded.url)
    assert answer.status == 200
    assert answer.body == data
    assert answer.headers["Content-Length"] == str(len(data))
    assert_media_headers(answer, "image/png", data)


def test_variants_carry_their_hash_and_url_in_every_answer(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    images, jobs = images_stub(t.client), jobs_stub(content_server.admin)
    upload(images, t.env_id, picture("JPEG", 100, 50), mime_type="image/jpeg")
    job = claim(jobs).job
    webp = picture("WEBP", 50, 25)
    uploaded = upload_variant(jobs, job, webp, 50, 25, "webp")
    base = f"http://{content_server.media_http}"
    assert uploaded.sha256 == sha(webp)
    assert uploaded.url == f"{base}/variants/{sha(webp)}.webp"
    done = completed_image(content_server, make_tenant(content_server.admin, "beta"))
    image = done.image
    assert image.url == f"{base}/originals/{sha(done.original)}.png"
    by_format = {v.format: v for v in image.variants}
    for fmt, data in (("webp", done.webp), ("avif", done.avif)):
        variant = by_format[fmt]
        assert (variant.sha256, variant.url) == (sha(data), f"{base}/variants/{sha(data)}.{fmt}")
        answer = fetch(content_server, variant.url)
        assert (answer.status, answer.body) == (200, data)
        assert_media_headers(answer, f"image/{fmt}", data)
    beta = images_stub(make_tenant(content_server.admin, "gamma").client)
    with raises_status(grpc.StatusCode.NOT_FOUND):  # the URL is public, the resource is not
        beta.GetImage(images_pb2.GetImageRequest(id=image.id))
    assert done.image == images_stub(content_server.admin).GetImage(
        images_pb2.GetImageRequest(id=image.id)
    )


def test_a_replaced_variant_is_a_new_url_and_the_old_one_stops(
    content_server: ContentServer,
) -> None:
    t = make_tenant(content_server.admin)
    jobs = jobs_stub(content_server.admin)
    upload(images_stub(t.client), t.env_id, picture())
    job = claim(jobs).job
    first = upload_variant(jobs, job, picture("WEBP", 40, 30, noise_seed=5), 40, 30, "webp")
    assert fetch(content_server, first.url).status == 200
    second = upload_variant(jobs, job, picture("WEBP", 40, 30, noise_seed=6), 40, 30, "webp")
    assert second.url != first.url
    assert fetch(content_server, second.url).status == 200
    assert fetch(content_server, first.url).status == 404  # gone, never other bytes


# --- HTTP semantics ------------------------------------------------------------------------


def test_conditional_requests_ranges_and_head(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    data = picture("PNG", 64, 64, noise_seed=9)
    url = upload(images_stub(t.client), t.env_id, data).url
    etag, size = f'"{sha(data)}"', len(data)

    for tags in (etag, f"W/{etag}", '"other", ' + etag, "*"):
        not_modified = fetch(content_server, url, If_None_Match=tags)
        assert (not_modified.status, not_modified.body) == (304, b""), tags
        assert not_modified.headers["ETag"] == etag
        assert not_modified.headers["Cache-Control"] == CACHE_FOREVER
    assert fetch(content_server, url, If_None_Match='"other"').status == 200

    part = fetch(content_server, url, Range="bytes=0-9")
    assert (part.status, part.body) == (206, data[:10])
    assert part.headers["Content-Range"] == f"bytes 0-9/{size}"
    assert part.headers["Content-Length"] == "10"
    assert_media_headers(part, "image/png", data)
    assert fetch(content_server, url, Range="bytes=100-").body == data[100:]
    assert fetch(content_server, url, Range="bytes=-7").body == data[-7:]
    assert fetch(content_server, url, Range=f"bytes=10-{size + 50}").body == data[10:]
    # If-Range: the range only while the ETag still matches (it always will).
    assert fetch(content_server, url, Range="bytes=0-3", If_Range=etag).status == 206
    assert fetch(content_server, url, Range="bytes=0-3", If_Range='"old"').body == data
    # If-None-Match comes before Range.
    assert fetch(content_server, url, Range="bytes=0-3", If_None_Match=etag).status == 304
    # Several ranges: the whole file (no multipart responses).
    whole = fetch(content_server, url, Range="bytes=0-1,5-6")
    assert (whole.status, whole.body) == (200, data)

    for bad in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}", "bytes=9-2", "pages=1-2"):
        refused = fetch(content_server, url, Range=bad)
        assert refused.status == 416, bad
        assert refused.headers["Content-Range"] == f"bytes */{size}", bad
        assert refused.headers["X-Content-Type-Options"] == "nosniff"

    head = fetch(content_server, url, method="HEAD")
    assert (head.status, head.body) == (200, b"")
    assert head.headers["Content-Length"] == str(size)
    assert_media_headers(head, "image/png", data)
    head_range = fetch(content_server, url, method="HEAD", Range="bytes=0-9")
    assert (head_range.status, head_range.headers["Content-Length"]) == (206, "10")


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "PROPFIND"])
def test_only_get_and_head_are_allowed(content_server: ContentServer, method: str) -> None:
    t = make_tenant(content_server.admin)
    url = upload(images_stub(t.client), t.env_id, picture()).url
    for target in (url, "/", "/originals/"):
        answer = fetch(content_server, target, method=method)
        assert answer.status == 405, target
        assert answer.headers["Allow"] == "GET, HEAD"
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert fetch(content_server, url).status == 200  # still there


def test_unknown_media_listings_and_path_escapes_are_404(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    data = picture()
    digest = sha(data)
    upload(images_stub(t.client), t.env_id, data)
    (content_server.settings.data_dir / "secret.txt").write_text("not media")
    stored = f"originals/{digest[:2]}/{digest[2:4]}/{digest}"
    targets = [
        f"/originals/{'0' * 64}.png",  # no such bytes
        f"/variants/{digest}.webp",  # an original's hash is not a variant
        f"/originals/{digest}.jpg",  # not its type
        f"/originals/{digest}",
        f"/originals/{digest.upper()}.png",
        f"/originals/{digest}.png/",
        f"//originals/{digest}.png",
        f"/originals//{digest}.png",
        f"/{stored}",  # the storage layout is not the URL layout
        f"/media/{stored}",
        "/",
        "/originals",
        "/originals/",
        "/variants/",
        "/tmp/",
        "/trash/",
        "/content.db",
        "/secret.txt",
        "/originals/../content.db",
        "/originals/../../secret.txt",
        "/originals/%2e%2e/%2e%2e/secret.txt",
        "/originals/..%2F..%2Fsecret.txt",
        "/originals/%2F..%2Fcontent.db",
        "/%2Fetc%2Fpasswd",
        "/etc/passwd",
        f"/originals/{digest}.png%00.txt",
        f"/originals/{digest}.png;.txt",
        str(content_server.settings.data_dir / "secret.txt"),
    ]
    for target in targets:
        answer = fetch(content_server, target)
        assert answer.status in (400, 404), (target, answer.status)
        assert digest.encode() not in answer.body, target
        assert b"not media" not in answer.body, target
        assert answer.headers["Cache-Control"] != CACHE_FOREVER, target
    assert fetch(content_server, f"/originals/{digest}.png?v=2").status == 200  # query ignored
    # A percent-encoded '.' is the same URL (RFC 3986 6.2.2.2), so the same bytes.
    assert fetch(content_server, f"/originals/{digest}%2Epng").status == 200


def test_a_symlink_in_the_media_folder_is_never_followed(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    media = content_server.settings.media_dir
    secret = content_server.settings.data_dir / "secret.png"
    secret.write_bytes(b"\x89PNG\r\n\x1a\n secret")
    first, second = picture(colour=(1, 2, 3)), picture(colour=(4, 5, 6))
    url_first = upload(images_stub(t.client), t.env_id, first).url
    url_second = upload(images_stub(t.client), t.env_id, second).url
    # The blob itself a symlink.
    blob = media / "originals" / sha(first)[:2] / sha(first)[2:4] / sha(first)
    blob.unlink()
    blob.symlink_to(secret)
    # A folder on the way a symlink, to a folder holding the real bytes.
    folder = media / "originals" / sha(second)[:2]
    moved = content_server.settings.data_dir / "elsewhere"
    folder.rename(moved)
    folder.symlink_to(moved, target_is_directory=True)
    for url in (url_first, url_second):
        answer = fetch(content_server, url)
        assert answer.status == 404, url
        assert b"secret" not in answer.body


def test_deleted_media_is_404_but_bytes_shared_by_dedup_stay(
    content_server: ContentServer,
) -> None:
    a, b = make_tenant(content_server.admin, "a"), make_tenant(content_server.admin, "b")
    done = completed_image(content_server, a)
    in_b = upload(images_stub(b.client), b.env_id, done.original)
    assert in_b.url == done.image.url  # the same bytes, the same URL, in another team
    variant_urls = [v.url for v in done.image.variants]

    images_stub(a.client).DeleteImage(images_pb2.DeleteImageRequest(id=done.image.id))
    assert fetch(content_server, done.image.url).status == 200  # b still holds the bytes
    for url in variant_urls:
        assert fetch(content_server, url).status == 404

    images_stub(b.client).DeleteImage(images_pb2.DeleteImageRequest(id=in_b.id))
    gone = fetch(content_server, done.image.url)
    assert gone.status == 404
    assert gone.headers["Cache-Control"] == "no-store"
    assert fetch(content_server, done.image.url, method="HEAD").status == 404


def test_a_row_without_its_file_is_404(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    data = picture()
    url = upload(images_stub(t.client), t.env_id, data).url
    media = content_server.settings.media_dir
    (media / "originals" / sha(data)[:2] / sha(data)[2:4] / sha(data)).unlink()
    assert fetch(content_server, url).status == 404


def test_keep_alive_and_concurrent_clients_and_a_prompt_stop(
    content_servers: ContentServerFactory,
) -> None:
    server = content_servers()
    t = make_tenant(server.admin)
    data = picture("PNG", 200, 200, noise_seed=4)
    path = urlsplit(upload(images_stub(t.client), t.env_id, data).url).path
    host, port = server.media_http.rsplit(":", 1)
    idle = http.client.HTTPConnection(host, int(port), timeout=10)
    for _ in range(3):  # one connection, several requests
        idle.request("GET", path)
        answer = idle.getresponse()
        assert (answer.status, answer.read()) == (200, data)

    def one(_: int) -> bytes:
        return fetch(server, path).body

    with ThreadPoolExecutor(max_workers=24) as pool:  # more clients than request threads
        assert set(pool.map(one, range(48))) == {data}

    started = time.monotonic()
    server.stop()  # with a keep-alive connection still open
    assert time.monotonic() - started < 5
    idle.close()


# --- settings, ports, and variants from before their hashes ---------------------------------


def test_the_public_url_setting_is_the_base_of_every_url(
    content_servers: ContentServerFactory,
) -> None:
    server = content_servers(media_public_url="https://cdn.example.com/media/")
    t = make_tenant(server.admin)
    done = completed_image(server, t)
    digest = sha(done.original)
    assert done.image.url == f"https://cdn.example.com/media/originals/{digest}.png"
    for variant in done.image.variants:
        assert variant.url.startswith("https://cdn.example.com/media/variants/")
    # What the CDN asks this server for: the path after the base.
    assert fetch(server, f"/originals/{digest}.png").body == done.original


@pytest.mark.parametrize(
    "value",
    ["cdn.example.com", "ftp://cdn.example.com", "https://", "https://x/?a=1", "http://x/#f"],
)
def test_a_public_url_must_be_an_http_base(tmp_path: Path, value: str) -> None:
    with pytest.raises(ValidationError, match="media_public_url"):
        content_settings(tmp_path, "sqlite://", media_public_url=value)


def test_port_zero_is_bound_reported_and_logged(
    content_servers: ContentServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="content_service.server"):
        server = content_servers()
    port = server.running.listeners["media_http"]
    assert port > 0
    assert port != server.running.port
    line = next(r.getMessage() for r in caplog.records if "media served over HTTP" in r.message)
    assert f"http://127.0.0.1:{port}/" in line
    server.stop()
    with pytest.raises(ConnectionRefusedError):  # stopped with the gRPC server
        fetch(server, "/")


def test_variants_stored_before_their_hashes_get_them_at_start(
    content_servers: ContentServerFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Migration 0006 adds image_variants.hash empty; a server start hashes the files."""
    first = content_servers(tmp_path)
    done = completed_image(first, make_tenant(first.admin))
    webp = next(v for v in done.image.variants if v.format == "webp")
    avif = next(v for v in done.image.variants if v.format == "avif")
    first.stop()
    with first.db.write() as s:
        s.execute(update(VariantRow).values(hash=None))
    # One file is gone meanwhile: that variant keeps no hash and has no URL.
    avif_file = next((first.settings.media_dir / "variants").rglob("*.avif"))
    os.unlink(avif_file)
    with caplog.at_level(logging.INFO):
        second = content_servers(tmp_path)
    assert any("recorded the sha256 of 1 variant" in r.getMessage() for r in caplog.records)
    assert any("is missing; it has no URL" in r.getMessage() for r in caplog.records)
    got = images_stub(second.admin).GetImage(images_pb2.GetImageRequest(id=done.image.id))
    by_format = {v.format: v for v in got.variants}
    # The same path (the port is a new one: port 0 in the tests).
    assert by_format["webp"].sha256 == webp.sha256
    assert urlsplit(by_format["webp"].url).path == urlsplit(webp.url).path
    assert fetch(second, by_format["webp"].url).body == done.webp
    assert (by_format["avif"].sha256, by_format["avif"].url) == ("", "")
    assert fetch(second, urlsplit(avif.url).path).status == 404


# --- the URL layout, without a server ------------------------------------------------------


def test_urls_parse_back_to_what_they_name() -> None:
    urls = MediaUrls("https://cdn.example.com")
    digest = "ab" * 32
    original = urls.original(digest, "image/jpeg")
    variant = urls.variant(digest, "image/avif")
    assert original == f"https://cdn.example.com/originals/{digest}.jpg"
    assert variant == f"https://cdn.example.com/variants/{digest}.avif"
    found = parse(urlsplit(original).path)
    assert found is not None
    assert (found.kind, found.sha256, found.mime_type) == ("originals", digest, "image/jpeg")
    assert urls.variant(None, "image/webp") == ""
    for path in (f"/originals/{digest}.svg", f"/originals/{digest}.jpeg", f"/thumbs/{digest}.png"):
        assert parse(path) is None, path
