"""ImageService: upload, dedup, limits, signatures, download, list, delete, isolation."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from loom.content.v1 import images_pb2

from tests.content.tenants_and_pages import make_tenant
from tests.images.helpers import (
    download,
    images_stub,
    media_files,
    picture,
    sha,
    upload,
    upload_requests,
)
from tests.support import ContentServer, ContentServerFactory, raises_status

Image = images_pb2.Image


def nothing_left_behind(server: ContentServer) -> None:
    media = server.settings.media_dir
    assert media_files(media, "tmp") == []
    assert media_files(media, "originals") == []


def test_upload_stores_a_pending_image(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    stub = images_stub(t.client)
    data = picture("PNG", 80, 60)
    image = upload(stub, t.env_id, data, filename="hero.png", alt_text="A red square")
    assert image.id
    assert image.environment_id == t.env_id
    assert image.filename == "hero.png"
    assert image.mime_type == "image/png"
    assert image.size_bytes == len(data)
    assert image.sha256 == sha(data)
    assert image.state == Image.STATE_PENDING
    assert image.alt_text == "A red square"
    assert (image.width, image.height, image.attempts, image.error) == (0, 0, 0, "")
    assert list(image.variants) == []
    assert image.create_time.seconds > 0
    assert stub.GetImage(images_pb2.GetImageRequest(id=image.id)) == image
    # Stored under its content address; nothing left in tmp/.
    blob = content_server.settings.media_dir / "originals" / sha(data)[:2] / sha(data)[2:4]
    assert (blob / sha(data)).read_bytes() == data
    assert media_files(content_server.settings.media_dir, "tmp") == []


@pytest.mark.parametrize(
    ("fmt", "declared", "expected"),
    [
        ("JPEG", "image/jpeg", "image/jpeg"),
        ("JPEG", "image/jpg", "image/jpeg"),
        ("GIF", "image/gif", "image/gif"),
        ("WEBP", "image/webp", "image/webp"),
        ("AVIF", "image/avif", "image/avif"),
        ("PNG", "", "image/png"),  # nothing declared: the signature decides
    ],
)
def test_allowed_types_are_recognised_by_signature(
    content_server: ContentServer, fmt: str, declared: str, expected: str
) -> None:
    t = make_tenant(content_server.admin)
    image = upload(images_stub(t.client), t.env_id, picture(fmt), mime_type=declared)
    assert image.mime_type == expected


SVG = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>'
PSD = b"8BPS\x00\x01" + bytes(200)
EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n" + bytes(200)


@pytest.mark.parametrize(
    ("data", "declared", "field", "words"),
    [
        pytest.param(
            picture("JPEG"), "image/png", "mime_type", "signature is image/jpeg", id="jpeg-as-png"
        ),
        pytest.param(SVG, "image/svg+xml", "mime_type", "not allowed", id="svg-declared"),
        pytest.param(SVG, "image/png", "chunk", "not a JPEG, PNG", id="svg-as-png"),
        pytest.param(PSD, "image/png", "chunk", "not a JPEG, PNG", id="psd"),
        pytest.param(EPS, "", "chunk", "not a JPEG, PNG", id="eps"),
        pytest.param(
            random.Random(7).randbytes(5000), "image/png", "chunk", "not a JPEG", id="random"
        ),
        pytest.param(b"", "image/png", "chunk", "empty", id="empty"),
    ],
)
def test_bad_files_are_rejected_and_leave_nothing(
    content_server: ContentServer, data: bytes, declared: str, field: str, words: str
) -> None:
    t = make_tenant(content_server.admin)
    stub = images_stub(t.client)
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        upload(stub, t.env_id, data, mime_type=declared)
    assert err["fields"] == [field]
    assert words in err["message"]
    nothing_left_behind(content_server)
    listed = stub.ListImages(images_pb2.ListImagesRequest(environment_id=t.env_id))
    assert list(listed.images) == []


def test_a_big_random_file_is_rejected_before_it_is_read_to_the_end(
    content_server: ContentServer,
) -> None:
    t = make_tenant(content_server.admin)
    stub = images_stub(t.client)
    sent = 0

    def requests() -> Iterator[images_pb2.UploadImageRequest]:
        nonlocal sent
        yield images_pb2.UploadImageRequest(
            environment_id=t.env_id, filename="x.png", mime_type="image/png"
        )
        for _ in range(20):
            sent += 1
            yield images_pb2.UploadImageRequest(chunk=b"\x00" * 1024 * 1024)

    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        stub.UploadImage(requests())
    assert err["fields"] == ["chunk"]
    assert sent < 20
    nothing_left_behind(content_server)


def test_upload_header_is_validated(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    stub = images_stub(t.client)
    data = picture()
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        upload(stub, "", data)
    assert err["fields"] == ["environment_id"]
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        upload(stub, t.env_id, data, filename="")
    assert err["fields"] == ["filename"]
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        stub.UploadImage(iter([]))
    # Header fields only in the first message.
    requests = list(upload_requests(t.env_id, data))
    requests.append(images_pb2.UploadImageRequest(filename="again.png"))
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        stub.UploadImage(iter(requests))
    assert err["fields"] == ["filename"]
    nothing_left_behind(content_server)


def test_size_limit_is_enforced_as_bytes_arrive(content_servers: ContentServerFactory) -> None:
    server = content_servers(max_upload_bytes=50_000)
    t = make_tenant(server.admin)
    stub = images_stub(t.client)
    big = picture("PNG", 200, 200, noise_seed=1)  # ~120 KB of noise
    assert len(big) > 50_000
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        upload(stub, t.env_id, big)
    assert err["reason"] == "IMAGE_TOO_LARGE"
    assert "upload limit" in err["message"]
    nothing_left_behind(server)
    small = picture("PNG", 20, 20)
    assert upload(stub, t.env_id, small).size_bytes == len(small)


def test_a_chunk_over_one_mib_is_rejected(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    data = b"\x89PNG\r\n\x1a\n" + bytes(1024 * 1024)
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        upload(images_stub(t.client), t.env_id, data, chunk=len(data))
    assert err["fields"] == ["chunk"]
    assert "1 MiB" in err["message"]
    nothing_left_behind(content_server)


def test_same_bytes_in_one_environment_are_one_image(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    stub = images_stub(t.client)
    data = picture("JPEG", 30, 30)
    first = upload(stub, t.env_id, data, filename="a.jpg", mime_type="image/jpeg")
    again = upload(stub, t.env_id, data, filename="b.jpg", mime_type="image/jpeg")
    assert again == first  # the existing image, unchanged (filename stays "a.jpg")
    other = upload(stub, t.env_id, picture("JPEG", 31, 30), mime_type="image/jpeg")
    assert other.id != first.id


def test_concurrent_uploads_of_the_same_bytes_make_one_image(
    content_server: ContentServer,
) -> None:
    t = make_tenant(content_server.admin)
    stub = images_stub(t.client)
    data = picture("PNG", 300, 200, noise_seed=3)
    clients = 8
    barrier = threading.Barrier(clients)

    def one(_: int) -> str:
        barrier.wait()
        return upload(stub, t.env_id, data, chunk=16 * 1024).id

    with ThreadPoolExecutor(clients) as pool:
        ids = set(pool.map(one, range(clients)))
    assert len(ids) == 1
    listed = stub.ListImages(images_pb2.ListImagesRequest(environment_id=t.env_id))
    assert [i.id for i in listed.images] == list(ids)
    media = content_server.settings.media_dir
    assert [p.name for p in media_files(media, "originals")] == [sha(data)]
    assert media_files(media, "tmp") == []


def test_download_round_trip_in_chunks_of_at_most_one_mib(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    stub = images_stub(t.client)
    data = picture("PNG", 1000, 900, noise_seed=5)  # ~2.7 MB
    image = upload(stub, t.env_id, data, filename="big.png", chunk=1024 * 1024)
    first, got, sizes = download(stub, image.id)
    assert got == data
    assert (first.mime_type, first.size_bytes, first.sha256, first.filename) == (
        "image/png",
        len(data),
        sha(data),
        "big.png",
    )
    assert first.chunk == b""
    assert len(sizes) >= 3
    assert max(sizes) <= 1024 * 1024
    with raises_status(grpc.StatusCode.NOT_FOUND):
        download(stub, image.id, (640, "webp"))  # no such variant
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        download(stub, image.id, (640, "tiff"))
    assert err["fields"] == ["variant.format"]


def test_list_paginates_and_filters_by_state(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    stub = images_stub(t.client)
    ids = [upload(stub, t.env_id, picture("PNG", 10 + i, 10)).id for i in range(5)]
    seen, token = [], ""
    while True:
        page = stub.ListImages(
            images_pb2.ListImagesRequest(environment_id=t.env_id, page_size=2, page_token=token)
        )
        assert len(page.images) <= 2
        seen += [i.id for i in page.images]
        token = page.next_page_token
        if not token:
            break
    assert seen == ids
    pending = stub.ListImages(
        images_pb2.ListImagesRequest(environment_id=t.env_id, state=Image.STATE_PENDING)
    )
    assert len(pending.images) == 5
    done = stub.ListImages(
        images_pb2.ListImagesRequest(environment_id=t.env_id, state=Image.STATE_COMPLETED)
    )
    assert list(done.images) == []
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        stub.ListImages(
            images_pb2.ListImagesRequest(
                environment_id=t.env_id,
                state=Image.STATE_COMPLETED,
                page_token=page.next_page_token or "x",
            )
        )
    assert err["fields"] == ["page_token"]


def test_a_shared_blob_is_removed_with_its_last_image(content_server: ContentServer) -> None:
    acme = make_tenant(content_server.admin, "acme")
    globex = make_tenant(content_server.admin, "globex")
    data = picture("WEBP", 40, 40)
    a = upload(images_stub(acme.client), acme.env_id, data, mime_type="image/webp")
    g = upload(images_stub(globex.client), globex.env_id, data, mime_type="image/webp")
    assert a.id != g.id  # separate images ...
    assert a.sha256 == g.sha256  # ... of one blob
    media = content_server.settings.media_dir
    assert len(media_files(media, "originals")) == 1

    images_stub(acme.client).DeleteImage(images_pb2.DeleteImageRequest(id=a.id))
    with raises_status(grpc.StatusCode.NOT_FOUND):
        images_stub(acme.client).GetImage(images_pb2.GetImageRequest(id=a.id))
    assert len(media_files(media, "originals")) == 1  # globex still refers to it
    assert download(images_stub(globex.client), g.id)[1] == data

    images_stub(globex.client).DeleteImage(images_pb2.DeleteImageRequest(id=g.id))
    assert media_files(media, "originals") == []
    assert media_files(media, "trash") == []
    with raises_status(grpc.StatusCode.NOT_FOUND):
        images_stub(globex.client).DeleteImage(images_pb2.DeleteImageRequest(id=g.id))
    # The same bytes can come back afterwards.
    again = upload(images_stub(acme.client), acme.env_id, data, mime_type="image/webp")
    assert download(images_stub(acme.client), again.id)[1] == data


def test_another_teams_image_is_not_found(content_server: ContentServer) -> None:
    acme = make_tenant(content_server.admin, "acme")
    evil = make_tenant(content_server.admin, "evil")
    image = upload(images_stub(acme.client), acme.env_id, picture())
    theirs = images_stub(evil.client)
    with raises_status(grpc.StatusCode.NOT_FOUND):
        theirs.GetImage(images_pb2.GetImageRequest(id=image.id))
    with raises_status(grpc.StatusCode.NOT_FOUND):
        download(theirs, image.id)
    with raises_status(grpc.StatusCode.NOT_FOUND):
        theirs.DeleteImage(images_pb2.DeleteImageRequest(id=image.id))
    with raises_status(grpc.StatusCode.NOT_FOUND):
        theirs.ListImages(images_pb2.ListImagesRequest(environment_id=acme.env_id))
    with raises_status(grpc.StatusCode.NOT_FOUND):
        upload(theirs, acme.env_id, picture("PNG", 9, 9))
    # Still there for its owner.
    assert images_stub(acme.client).GetImage(images_pb2.GetImageRequest(id=image.id)) == image
    with raises_status(grpc.StatusCode.UNAUTHENTICATED):
        images_stub(acme.client.as_key(None)).GetImage(images_pb2.GetImageRequest(id=image.id))
