"""The public URLs of stored media: how they are made (for the Image and ImageVariant
messages) and read back (by the media HTTP server, images/http.py).

    <base>/originals/<sha256>.<ext>     an original: the sha256 of its bytes
    <base>/variants/<sha256>.<ext>      a variant: the sha256 of its bytes

<base> is CONTENT_MEDIA_PUBLIC_URL (a CDN, say), else the media HTTP server's own address.
A path names bytes, not an image: what it serves can never change, only stop (404) once no
image or variant holds those bytes any more. So it is cached for a year as immutable, and it
is the same for every image that shares the bytes (dedup), in any environment. The extension
follows from the bytes too (their signature decides the type), so a path has one spelling.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

# The type of the bytes -> the extension in their URL, and back.
EXTENSIONS: Final = {
    "image/jpeg": "jpg",
    "image/png": "png",
    "image/gif": "gif",
    "image/webp": "webp",
    "image/avif": "avif",
}
TYPES: Final = {ext: mime for mime, ext in EXTENSIONS.items()}

Kind = Literal["originals", "variants"]
_PATH = re.compile(r"/(originals|variants)/([0-9a-f]{64})\.([a-z]{3,4})")


@dataclass(frozen=True)
class MediaPath:
    """A parsed media path: which kind of blob, the sha256 of its bytes and their type."""

    kind: Kind
    sha256: str
    mime_type: str


def parse(path: str) -> MediaPath | None:
    """The media a request path names, or None for anything else (a listing, a folder, a
    dot-segment, an upper-case hash, an unknown extension, a trailing slash...): only the
    exact spelling that MediaUrls makes is a media path."""
    match = _PATH.fullmatch(path)
    if match is None or match.group(3) not in TYPES:
        return None
    kind: Kind = "originals" if match.group(1) == "originals" else "variants"
    return MediaPath(kind, match.group(2), TYPES[match.group(3)])


@dataclass(frozen=True)
class MediaUrls:
    """Makes media URLs under one base (no trailing slash)."""

    base: str

    def original(self, sha256: str, mime_type: str) -> str:
        return f"{self.base}/originals/{sha256}.{EXTENSIONS[mime_type]}"

    def variant(self, sha256: str | None, mime_type: str) -> str:
        """The variant's URL; '' while its hash is not known (a variant stored before the
        hashes were recorded whose file a server start could not read)."""
        if not sha256:
            return ""
        return f"{self.base}/variants/{sha256}.{EXTENSIONS[mime_type]}"
