"""The media store: image blobs in a folder (CONTENT_MEDIA_DIR, default DATA_DIR/media).

Layout, every path relative to the media folder (a "key"):

    originals/ab/cd/<sha256>               an original, content-addressed (shared by dedup)
    variants/<xy>/<image id>/<w>w-<lease tag>-<random>.<format>
                                           a variant, one file per upload
    tmp/<random>.part                      uploads being received
    trash/<random>                         an original moved aside by a delete, until commit

Writes are atomic: the bytes go to a temp file in tmp/ (same file system), which is fsynced,
renamed into place and the folder fsynced, so a reader sees either no file or the whole
file, and a crash leaves at most a stray temp file (swept at start).

Also here: recognising the allowed image types by their signature (magic bytes), never by
the name or the declared type.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import secrets
import stat
import time
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Final

from servicekit.backupfiles import fsync_dir

log = logging.getLogger(__name__)

# Upload and download messages carry at most this much data.
CHUNK_BYTES: Final = 1024 * 1024
# How many leading bytes sniff() looks at (enough for an ftyp box with many brands).
HEAD_BYTES: Final = 256

_KEY = re.compile(r"^(originals|variants|trash)/[A-Za-z0-9][A-Za-z0-9._/-]*$")


class MediaStore:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._tmp = self.root / "tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)

    # --- keys --------------------------------------------------------------------------

    @staticmethod
    def original_key(sha256: str) -> str:
        return f"originals/{sha256[:2]}/{sha256[2:4]}/{sha256}"

    @staticmethod
    def variant_key(image_id: str, width: int, fmt: str, lease_tag: str) -> str:
        # A new name per upload: a replaced variant's old file is removed only after the new
        # row is committed, and a failed upload never clobbers the file a row points to.
        name = f"{width}w-{lease_tag}-{secrets.token_hex(4)}.{fmt}"
        return f"variants/{image_id[-2:]}/{image_id}/{name}"

    @staticmethod
    def lease_tag_of_variant(key: str) -> str:
        """The lease tag a variant key was written with ('' if it has none)."""
        parts = key.rsplit("/", 1)[-1].split("-")
        return parts[1] if len(parts) == 3 else ""

    def path(self, key: str) -> Path:
        if not _KEY.match(key) or ".." in key.split("/"):
            raise ValueError(f"not a media key: {key!r}")
        return self.root / key

    # --- reading -----------------------------------------------------------------------

    def open(self, key: str) -> BinaryIO:
        """Opens a blob for reading. FileNotFoundError when it is gone, and also when it is
        not a regular file of this folder: a symlink (as the blob or as a folder on its way;
        the media folder itself may be one) or anything but a plain file is never read."""
        path = self.path(key)
        if path.parent.resolve() != path.parent:
            raise FileNotFoundError(f"media blob {key} is behind a symlink")
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # the blob itself is a symlink
                raise FileNotFoundError(f"media blob {key} is a symlink") from None
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise FileNotFoundError(f"media blob {key} is not a regular file")
        return os.fdopen(fd, "rb")

    def sha256(self, key: str) -> str:
        """The sha256 (lowercase hex) of a blob's bytes (FileNotFoundError when it is gone)."""
        digest = hashlib.sha256()
        with self.open(key) as fh:
            while chunk := fh.read(CHUNK_BYTES):
                digest.update(chunk)
        return digest.hexdigest()

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    # --- writing -----------------------------------------------------------------------

    def temp(self) -> TempBlob:
        path = self._tmp / f"{secrets.token_hex(16)}.part"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        return TempBlob(self, path, os.fdopen(fd, "wb"))

    def _place(self, source: Path, key: str) -> None:
        target = self.path(key)
        _make_dirs(self.root, target.parent)
        os.replace(source, target)
        fsync_dir(target.parent)

    def remove(self, key: str) -> None:
        """Removes a blob; a missing one is fine (removal is idempotent)."""
        try:
            self.path(key).unlink(missing_ok=True)
        except OSError:
            log.exception("could not remove media blob %s", key)

    def remove_all(self, keys: list[str]) -> None:
        for key in keys:
            self.remove(key)

    def trash(self, key: str) -> str | None:
        """Moves a blob aside (to trash/) and returns its trash key; None if it was missing.
        Used while a transaction that drops its last reference is still open: the move is
        undone with restore() if that transaction fails, finished with remove() if not."""
        trash_key = f"trash/{secrets.token_hex(16)}"
        try:
            self._place(self.path(key), trash_key)
        except FileNotFoundError:
            return None
        return trash_key

    def restore(self, moves: list[tuple[str, str]]) -> None:
        """Undoes trash(): each (trash key, original key) goes back."""
        for trash_key, key in moves:
            try:
                self._place(self.path(trash_key), key)
            except OSError:
                log.exception("could not restore media blob %s from %s", key, trash_key)

    def sweep(self, older_than_s: float = 3600.0) -> int:
        """Removes temp and trash files left by a crash (older than the given age)."""
        removed = 0
        cutoff = time.time() - older_than_s
        for folder in (self._tmp, self.root / "trash"):
            if not folder.is_dir():
                continue
            for entry in folder.iterdir():
                with contextlib.suppress(OSError):
                    if entry.is_file() and entry.stat().st_mtime < cutoff:
                        entry.unlink()
                        removed += 1
        return removed


class TempBlob:
    """A file being received into tmp/: hashes (sha256) and counts the bytes as they come,
    keeps the first HEAD_BYTES for sniff(), and is removed on exit unless published."""

    def __init__(self, store: MediaStore, path: Path, fh: BinaryIO) -> None:
        self._store = store
        self._path = path
        self._fh = fh
        self._sha = hashlib.sha256()
        self.size = 0
        self.head = b""
        self.published_key: str | None = None

    def write(self, data: bytes) -> None:
        if len(self.head) < HEAD_BYTES:
            self.head += data[: HEAD_BYTES - len(self.head)]
        self._fh.write(data)
        self._sha.update(data)
        self.size += len(data)

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    def finish(self) -> None:
        """Makes the bytes durable (flush + fsync); call once everything is written."""
        if not self._fh.closed:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()

    def publish(self, key: str) -> None:
        """Renames the finished file to its key (atomically replacing an equal blob) and
        fsyncs the folder."""
        self.finish()
        self._store._place(self._path, key)
        self.published_key = key

    def discard(self) -> None:
        if not self._fh.closed:
            self._fh.close()
        if self.published_key is None:
            self._path.unlink(missing_ok=True)

    def __enter__(self) -> TempBlob:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.discard()


def _make_dirs(root: Path, folder: Path) -> None:
    """mkdir -p that also fsyncs each parent whose entries changed, so a new folder survives
    a crash together with the file renamed into it."""
    missing = []
    current = folder
    while not current.exists() and current != root:
        missing.append(current)
        current = current.parent
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:
            continue
        fsync_dir(path.parent)


# --- signatures ------------------------------------------------------------------------

ALLOWED_TYPES: Final = ("image/jpeg", "image/png", "image/webp", "image/gif", "image/avif")
ALLOWED_NAMES: Final = "JPEG, PNG, WebP, GIF or AVIF"
_ALIASES: Final = {
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "image/x-png": "image/png",
}
_AVIF_BRANDS: Final = {b"avif", b"avis"}


def normalise_mime_type(value: str) -> str:
    """Lowercase, without parameters, with common aliases resolved ('' stays '')."""
    base = value.split(";", 1)[0].strip().lower()
    return _ALIASES.get(base, base)


def sniff(head: bytes) -> str | None:
    """The allowed type whose signature `head` (the file's first bytes) carries, or None.

    JPEG FF D8 FF; PNG 89 'PNG' CR LF 1A LF; GIF 'GIF87a'/'GIF89a'; WebP 'RIFF' <size>
    'WEBP'; AVIF an ISO-BMFF 'ftyp' box whose major or compatible brands include 'avif' or
    'avis' (HEIC and other HEIF brands are not allowed: nothing downstream decodes them)."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if len(head) >= 16 and head[4:8] == b"ftyp":
        box_size = int.from_bytes(head[:4], "big")
        end = min(box_size, len(head)) if box_size >= 16 else 16
        brands = {head[8:12]} | {head[i : i + 4] for i in range(16, end - 3, 4)}
        if brands & _AVIF_BRANDS:
            return "image/avif"
    return None
