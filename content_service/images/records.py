"""Images and their variants: plain functions over a session (and the media store).

Dedup is the database's job: UNIQUE(environment_id, hash) on images. An upload inserts in a
savepoint; when the insert hits the constraint (the same bytes are already there, or another
upload of them just committed) the savepoint is rolled back and the existing row returned.
Nothing checks first and inserts after, so concurrent uploads cannot race past it.

Originals are content-addressed and may be shared by images of several environments. Who
adds or drops a reference to an original takes a lock on its key first (a transaction-level
advisory lock on PostgreSQL; on SQLite every write transaction already holds the database's
write lock), so a delete that sees no reference left cannot remove a blob that an upload is
just about to reference."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from content_service import indexing, scope
from content_service.db.models import Image, ImageVariant
from content_service.db.raw import RawSelect, StatementConnection
from content_service.db.values import now
from content_service.images.media import (
    ALLOWED_NAMES,
    ALLOWED_TYPES,
    MediaStore,
    TempBlob,
    normalise_mime_type,
)
from content_service.images.urls import MediaPath
from servicekit.auth import Principal
from servicekit.errors import NotFound, invalid, shown
from servicekit.ids import new_id
from servicekit.pagination import PageRequest

VARIANT_FORMATS = {"webp": "image/webp", "avif": "image/avif"}
MAX_FILENAME = 255
MAX_ALT_TEXT = 2000
MAX_VARIANT_WIDTH = 16384


@dataclass
class ImageView:
    """An image with its variants, loaded in the RPC's session and turned into a proto after."""

    image: Image
    variants: list[ImageVariant] = field(default_factory=list)


@dataclass(frozen=True)
class UploadHeader:
    environment_id: str
    filename: str
    declared_type: str  # normalised; '' means "take the signature's"
    alt_text: str


def upload_header(
    environment_id: str, filename: str, mime_type: str, alt_text: str
) -> UploadHeader:
    """Validates the first message of an upload (before any byte is accepted)."""
    scope.require_id(environment_id, "environment_id")
    if not filename.strip():
        raise invalid("filename", "is required (the first message carries it)")
    if len(filename) > MAX_FILENAME:
        raise invalid("filename", f"at most {MAX_FILENAME} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in filename):
        raise invalid("filename", "must not contain control characters")
    declared = normalise_mime_type(mime_type)
    if declared and declared not in ALLOWED_TYPES:
        raise invalid(
            "mime_type", f"{shown(mime_type)} is not allowed; allowed: {', '.join(ALLOWED_TYPES)}"
        )
    return UploadHeader(environment_id, filename, declared, alt_text_value(alt_text, "alt_text"))


def alt_text_value(value: str, field_name: str) -> str:
    if len(value) > MAX_ALT_TEXT:
        raise invalid(field_name, f"at most {MAX_ALT_TEXT} characters")
    return value


def checked_type(header: UploadHeader, sniffed: str | None, *, size: int) -> str:
    """The image's type: its signature's, which must agree with the declared one."""
    if size == 0:
        raise invalid("chunk", "the file is empty")
    if sniffed is None:
        raise invalid(
            "chunk", f"not a {ALLOWED_NAMES} file (judged by its signature, not its name)"
        )
    if header.declared_type and header.declared_type != sniffed:
        raise invalid(
            "mime_type",
            f"declared {header.declared_type} but the file's signature is {sniffed}",
        )
    return sniffed


def lock_blob(session: Session, key: str) -> None:
    """Serialises everyone who adds or drops a reference to one blob until commit."""
    if session.get_bind().dialect.name == "postgresql":
        lock_id = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)
        session.execute(select(func.pg_advisory_xact_lock(lock_id)))
    # SQLite: the write transaction (BEGIN IMMEDIATE) already excludes every other writer.


def store_upload(
    session: Session,
    principal: Principal,
    blob: TempBlob,
    header: UploadHeader,
    mime_type: str,
) -> tuple[ImageView, bool]:
    """Inserts the uploaded image as pending and publishes its blob; or, when these bytes are
    already in the environment, returns that image. Returns (view, created)."""
    env = scope.environment(session, principal, header.environment_id)
    sha = blob.sha256
    key = MediaStore.original_key(sha)
    lock_blob(session, key)
    ts = now()
    row = Image(
        id=new_id(),
        environment_id=env.environment_id,
        filename=header.filename,
        blob_key=key,
        mime_type=mime_type,
        size=blob.size,
        width=None,
        height=None,
        hash=sha,
        state="pending",
        alt_text=header.alt_text,
        metadata_json="{}",
        error=None,
        attempts=0,
        lease_token=None,
        lease_expires_at=None,
        created_at=ts,
        updated_at=ts,
    )
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        existing = session.scalars(
            select(Image).where(Image.environment_id == env.environment_id, Image.hash == sha)
        ).first()
        if existing is None:  # not a duplicate: the environment went away meanwhile
            raise NotFound("environment", header.environment_id) from None
        return load_view(session, existing), False
    # Inside the transaction and under the blob lock: a concurrent delete of the last other
    # reference waits for our commit, then sees this row.
    blob.publish(key)
    return ImageView(row), True


def release_blob_if_unreferenced(session: Session, media: MediaStore, key: str) -> None:
    """After a failed upload transaction: removes a published original no row refers to."""
    lock_blob(session, key)
    if not session.scalar(select(func.count()).select_from(Image).where(Image.blob_key == key)):
        media.remove(key)


def get_image(
    session: Session, principal: Principal, image_id: str, *, for_update: bool = False
) -> Image:
    return scope.in_environment(session, principal, Image, image_id, "image", lock=for_update)[0]


def load_view(session: Session, image: Image) -> ImageView:
    return load_views(session, [image])[0]


def load_views(session: Session, rows: list[Image]) -> list[ImageView]:
    """The images with their variants, in one query for all of them."""
    by_image: dict[str, list[ImageVariant]] = {r.id: [] for r in rows}
    if rows:
        for variant in session.scalars(
            select(ImageVariant)
            .where(ImageVariant.image_id.in_(list(by_image)))
            .order_by(ImageVariant.format, ImageVariant.width)
        ):
            by_image[variant.image_id].append(variant)
    return [ImageView(r, by_image[r.id]) for r in rows]


def list_images(
    session: Session,
    principal: Principal,
    environment_id: str,
    state: str | None,
    page: PageRequest,
) -> list[Image]:
    env = scope.environment(session, principal, environment_id)
    stmt = (
        select(Image)
        .where(Image.environment_id == env.environment_id)
        .order_by(Image.id)
        .limit(page.size + 1)
    )
    if state is not None:
        stmt = stmt.where(Image.state == state)
    if page.after:
        stmt = stmt.where(Image.id > page.after)
    return list(session.scalars(stmt))


@dataclass
class DeletePlan:
    """What a delete leaves to do with files: originals moved to trash/ under the blob lock
    (restore them if the transaction fails, remove them once it committed) and variant
    files to remove after the commit."""

    trashed: list[tuple[str, str]] = field(default_factory=list)  # (trash key, key)
    remove: list[str] = field(default_factory=list)

    @property
    def removable(self) -> list[str]:
        return [trash for trash, _ in self.trashed] + self.remove


def delete_image(
    session: Session, principal: Principal, media: MediaStore, image_id: str
) -> DeletePlan:
    image = get_image(session, principal, image_id, for_update=True)
    plan = DeletePlan(
        remove=list(
            session.scalars(select(ImageVariant.path).where(ImageVariant.image_id == image.id))
        )
    )
    lock_blob(session, image.blob_key)
    # Variants go with the image (ON DELETE CASCADE).
    session.execute(delete(Image).where(Image.id == image.id))
    indexing.image_deleted(session, image)
    others = session.scalar(
        select(func.count()).select_from(Image).where(Image.blob_key == image.blob_key)
    )
    if not others:
        trash_key = media.trash(image.blob_key)
        if trash_key is not None:
            plan.trashed.append((trash_key, image.blob_key))
    return plan


@dataclass(frozen=True)
class DownloadTarget:
    key: str
    mime_type: str
    size: int
    width: int
    height: int
    sha256: str
    filename: str


def download_target(
    session: Session,
    principal: Principal,
    image_id: str,
    variant: tuple[int, str] | None,
) -> DownloadTarget:
    image = get_image(session, principal, image_id)
    if variant is None:
        return DownloadTarget(
            key=image.blob_key,
            mime_type=image.mime_type,
            size=image.size,
            width=image.width or 0,
            height=image.height or 0,
            sha256=image.hash,
            filename=image.filename,
        )
    width, fmt = variant
    row = session.scalars(
        select(ImageVariant).where(
            ImageVariant.image_id == image.id,
            ImageVariant.width == width,
            ImageVariant.format == fmt,
        )
    ).first()
    if row is None:
        raise NotFound("image variant", f"{image_id}/{width}/{fmt}")
    return DownloadTarget(
        key=row.path,
        mime_type=VARIANT_FORMATS.get(row.format, "application/octet-stream"),
        size=row.size,
        width=row.width,
        height=row.height,
        sha256=row.hash or "",
        filename=image.filename,
    )


def variant_key_value(width: int, fmt: str, field_prefix: str) -> tuple[int, str]:
    """Validates a (width, format) naming a variant; field_prefix '' for top-level fields."""
    prefix = f"{field_prefix}." if field_prefix else ""
    if not 1 <= width <= MAX_VARIANT_WIDTH:
        raise invalid(f"{prefix}width", f"must be 1-{MAX_VARIANT_WIDTH}")
    fmt = fmt.strip().lower()
    if fmt not in VARIANT_FORMATS:
        raise invalid(f"{prefix}format", f"must be one of {', '.join(VARIANT_FORMATS)}")
    return width, fmt


# --- serving media by URL (images/http.py) ---------------------------------------------

# What holds the bytes a media URL names, one indexed select each (images.blob_key follows
# from the hash; image_variants.hash), on the driver's cursor (db.raw). Several rows may share
# the bytes (dedup; two widths of a small image): one file of them is as good as another.
_ORIGINAL_TYPES = RawSelect(
    select(Image.mime_type).where(Image.blob_key == bindparam("key")).distinct()
)
_VARIANT_BY_HASH = RawSelect(
    select(func.min(ImageVariant.path).label("path"), ImageVariant.format)
    .where(ImageVariant.hash == bindparam("hash"))
    .group_by(ImageVariant.format)
)


def served_key(conn: StatementConnection, media: MediaPath) -> str | None:
    """The media key of a file with the bytes `media` names, while an image or a variant
    holds them with that type; None otherwise (a deleted image's bytes are gone from here
    the moment its delete commits, before its files are removed)."""
    if media.kind == "originals":
        key = MediaStore.original_key(media.sha256)
        types = {row.mime_type for row in _ORIGINAL_TYPES.all(conn, {"key": key})}
        return key if media.mime_type in types else None
    for row in _VARIANT_BY_HASH.all(conn, {"hash": media.sha256}):
        if VARIANT_FORMATS.get(row.format) == media.mime_type:
            return str(row.path)
    return None


# --- variants stored before their hash was recorded (0007_add_variant_hashes) ------------


def variants_without_hash(session: Session, after: str, limit: int) -> list[tuple[str, str]]:
    """(id, media key) of variants with no recorded hash, by id after `after`."""
    rows = session.execute(
        select(ImageVariant.id, ImageVariant.path)
        .where(ImageVariant.hash.is_(None), ImageVariant.id > after)
        .order_by(ImageVariant.id)
        .limit(limit)
    )
    return [(row.id, row.path) for row in rows]


def record_variant_hash(session: Session, variant_id: str, key: str, sha256: str) -> None:
    """Records the hash read from a variant's file, unless the variant meanwhile points at
    another file (a new upload, which recorded its own) or has one already."""
    session.execute(
        update(ImageVariant)
        .where(
            ImageVariant.id == variant_id,
            ImageVariant.path == key,
            ImageVariant.hash.is_(None),
        )
        .values(hash=sha256)
    )
