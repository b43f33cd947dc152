"""ImageService: upload (client stream), get, list, delete, download (server stream).

Streams are received into a temp file before any write transaction opens: no transaction
(and on SQLite no write lock) is ever held while bytes travel over the network."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from itertools import chain
from typing import BinaryIO, Protocol

import grpc
from google.protobuf import empty_pb2
from loom.content.v1 import images_pb2, images_pb2_grpc

from content_service import scope
from content_service.api.convert import dict_to_struct, ts
from content_service.db.models import ImageVariant
from content_service.db.values import loads_object
from content_service.images import records
from content_service.images.media import CHUNK_BYTES, HEAD_BYTES, TempBlob, sniff
from content_service.images.records import DownloadTarget, ImageView
from content_service.images.runtime import ImageRuntime
from content_service.images.urls import MediaUrls
from servicekit.auth import current_principal
from servicekit.errors import FieldViolation, InvalidArgument, ServiceError, invalid, shown
from servicekit.pagination import page_of, page_request

log = logging.getLogger(__name__)

STATE_TO_DB = {
    images_pb2.Image.STATE_PENDING: "pending",
    images_pb2.Image.STATE_PROCESSING: "processing",
    images_pb2.Image.STATE_COMPLETED: "completed",
    images_pb2.Image.STATE_FAILED: "failed",
}
STATE_FROM_DB = {v: k for k, v in STATE_TO_DB.items()}


# --- protos ------------------------------------------------------------------------------


def variant_proto(row: ImageVariant, urls: MediaUrls) -> images_pb2.ImageVariant:
    mime_type = records.VARIANT_FORMATS.get(row.format, "")
    return images_pb2.ImageVariant(
        width=row.width,
        height=row.height,
        format=row.format,
        size_bytes=row.size,
        mime_type=mime_type,
        sha256=row.hash or "",
        url=urls.variant(row.hash, mime_type),
    )


def image_proto(view: ImageView, urls: MediaUrls) -> images_pb2.Image:
    row = view.image
    return images_pb2.Image(
        id=row.id,
        environment_id=row.environment_id,
        filename=row.filename,
        mime_type=row.mime_type,
        size_bytes=row.size,
        sha256=row.hash,
        state=STATE_FROM_DB.get(row.state, images_pb2.Image.STATE_UNSPECIFIED),
        alt_text=row.alt_text,
        width=row.width or 0,
        height=row.height or 0,
        metadata=dict_to_struct(loads_object(row.metadata_json)),
        variants=[variant_proto(v, urls) for v in view.variants],
        error=row.error or "",
        attempts=row.attempts,
        create_time=ts(row.created_at),
        update_time=ts(row.updated_at),
        url=urls.original(row.hash, row.mime_type),
    )


# --- receiving a stream of chunks -------------------------------------------------------


class ChunkMessage(Protocol):
    @property
    def chunk(self) -> bytes: ...


def receive(
    messages: Iterable[ChunkMessage],
    blob: TempBlob,
    *,
    max_bytes: int,
    header_fields: tuple[str, ...],
) -> None:
    """Writes the chunks of an upload stream into `blob`, enforcing the per-message and
    total size limits as the bytes arrive. Only the first message may set header fields."""
    for i, message in enumerate(messages):
        if i:
            for name in header_fields:
                if getattr(message, name):
                    raise invalid(name, "only the first message of the stream may set it")
        chunk = message.chunk
        if len(chunk) > CHUNK_BYTES:
            raise invalid(
                "chunk", f"at most {CHUNK_BYTES} bytes (1 MiB) per message, got {len(chunk)}"
            )
        if blob.size + len(chunk) > max_bytes:
            raise InvalidArgument(
                FieldViolation("chunk", f"the file is larger than the limit of {max_bytes} bytes"),
                f"the file is larger than the upload limit of {_human(max_bytes)} "
                f"({max_bytes} bytes)",
                reason="IMAGE_TOO_LARGE",
            )
        blob.write(chunk)


def _human(size: int) -> str:
    if size % (1024 * 1024) == 0:
        return f"{size // (1024 * 1024)} MiB"
    if size % 1024 == 0:
        return f"{size // 1024} KiB"
    return f"{size} bytes"


def _signature_checked(messages: Iterable[ChunkMessage], blob: TempBlob) -> Iterator[ChunkMessage]:
    """Passes the messages through; stops early, before the rest of a large file is read,
    once the first bytes show it is not an allowed image at all."""
    checked = False
    for message in messages:
        yield message
        if not checked and len(blob.head) >= HEAD_BYTES:
            checked = True
            if sniff(blob.head) is None:
                return  # checked_type() rejects it with the proper message


class ImageServicer(images_pb2_grpc.ImageServiceServicer):
    def __init__(self, runtime: ImageRuntime) -> None:
        self.rt = runtime
        self.db = runtime.db
        self.media = runtime.media

    def UploadImage(
        self,
        request_iterator: Iterator[images_pb2.UploadImageRequest],
        context: grpc.ServicerContext,
    ) -> images_pb2.Image:
        principal = current_principal()
        first = next(request_iterator, None)
        if first is None:
            raise invalid("environment_id", "the stream was empty: send the header first")
        header = records.upload_header(
            first.environment_id, first.filename, first.mime_type, first.alt_text
        )
        # Before accepting any byte: the caller may write to this environment. (A short
        # read of its own; the write below checks the scope again.)
        with self.db.read() as s:
            scope.environment(s, principal, header.environment_id)
        with self.media.temp() as blob:
            receive(
                _signature_checked(chain([first], request_iterator), blob),
                blob,
                max_bytes=self.rt.max_upload_bytes,
                header_fields=("environment_id", "filename", "mime_type", "alt_text"),
            )
            mime_type = records.checked_type(header, sniff(blob.head), size=blob.size)
            blob.finish()
            try:
                with self.db.write() as s:
                    view, created = records.store_upload(s, principal, blob, header, mime_type)
                    result = image_proto(view, self.rt.urls)
            except BaseException:
                if blob.published_key is not None:
                    self._release(blob.published_key)
                raise
        if created:
            log.info("image %s uploaded (%d bytes, %s)", result.id, result.size_bytes, mime_type)
            self.rt.signal.notify()
        return result

    def _release(self, key: str) -> None:
        """A published original whose transaction failed: remove it unless referenced."""
        try:
            with self.db.write() as s:
                records.release_blob_if_unreferenced(s, self.media, key)
        except Exception:
            log.exception("could not clean up media blob %s", key)

    def GetImage(
        self, request: images_pb2.GetImageRequest, context: grpc.ServicerContext
    ) -> images_pb2.Image:
        with self.db.read() as s:
            image = records.get_image(s, current_principal(), request.id)
            return image_proto(records.load_view(s, image), self.rt.urls)

    def ListImages(
        self, request: images_pb2.ListImagesRequest, context: grpc.ServicerContext
    ) -> images_pb2.ListImagesResponse:
        state: str | None = None
        if request.state != images_pb2.Image.STATE_UNSPECIFIED:
            if request.state not in STATE_TO_DB:
                raise invalid("state", f"unknown state {request.state}")
            state = STATE_TO_DB[request.state]
        page = page_request(request)
        with self.db.read() as s:
            rows = records.list_images(s, current_principal(), request.environment_id, state, page)
            items, token = page_of(
                records.load_views(s, rows),
                page,
                lambda v: v.image.id,
                lambda v: image_proto(v, self.rt.urls),
            )
            return images_pb2.ListImagesResponse(images=items, next_page_token=token)

    def DeleteImage(
        self, request: images_pb2.DeleteImageRequest, context: grpc.ServicerContext
    ) -> empty_pb2.Empty:
        plan: records.DeletePlan | None = None
        try:
            with self.db.write() as s:
                plan = records.delete_image(s, current_principal(), self.media, request.id)
        except BaseException:
            if plan is not None:  # the commit failed: put the moved original back
                self.media.restore(plan.trashed)
            raise
        self.media.remove_all(plan.removable)
        return empty_pb2.Empty()

    def DownloadImage(
        self, request: images_pb2.DownloadImageRequest, context: grpc.ServicerContext
    ) -> Iterator[images_pb2.DownloadImageResponse]:
        variant = None
        if request.HasField("variant"):
            variant = records.variant_key_value(
                request.variant.width, request.variant.format, "variant"
            )
        target, fh = self._open(request.id, variant)
        with fh:
            yield images_pb2.DownloadImageResponse(
                mime_type=target.mime_type,
                size_bytes=target.size,
                width=target.width,
                height=target.height,
                sha256=target.sha256,
                filename=target.filename,
            )
            while chunk := fh.read(CHUNK_BYTES):
                yield images_pb2.DownloadImageResponse(chunk=chunk)

    def _open(
        self, image_id: str, variant: tuple[int, str] | None
    ) -> tuple[DownloadTarget, BinaryIO]:
        principal = current_principal()
        # A delete or a replaced variant may remove the file between reading the row and
        # opening it: look again once (an open file stays readable after removal).
        for attempt in range(2):
            with self.db.read() as s:
                target = records.download_target(s, principal, image_id, variant)
            try:
                return target, self.media.open(target.key)
            except FileNotFoundError:
                if attempt:
                    log.error("image %s: blob %s is missing", image_id, target.key)
        raise ServiceError(f"the stored file of image {shown(image_id)} is missing")
