"""Media over HTTP: content_service serves stored originals and variants read-only, on a port
of its own (CONTENT_MEDIA_HTTP_HOST / CONTENT_MEDIA_HTTP_PORT), at the content-addressed URLs
of images/urls.py, for browsers and for a CDN in front. gRPC stays the API for everything
else; nothing here writes.

Public by design: anyone who has a URL can fetch it, as with a CDN link. A URL is a
capability: it carries the sha256 of the bytes, which nobody can guess without having them.
Bytes are served while an image (of any environment) or a variant holds them; a deleted
image's stop at once (404), since every request asks the database which file holds them.

Every answer to a media path:
- 200 with the bytes, `Content-Type` (the type their signature showed at upload),
  `Content-Length`, `ETag: "<sha256>"`, `Cache-Control: public, max-age=31536000,
  immutable` (the bytes behind a URL never change), `Accept-Ranges: bytes`,
  `X-Content-Type-Options: nosniff`, a CSP that lets nothing run, and
  `Access-Control-Allow-Origin: *` / `Cross-Origin-Resource-Policy: cross-origin` (sites on
  any origin may use the image, in a canvas too);
- 304 for a matching If-None-Match (before Range, as RFC 9110 orders them);
- 206 with Content-Range for one byte range; a request for several ranges gets the whole
  file (200), as a server may; 416 for a range past the end or one that does not parse;
- HEAD: the same headers, no body.
Anything else: 404 (an unknown or removed blob, any other path: there is no listing), 405
for a method other than GET and HEAD. Paths are never turned into file names: a path either
spells exactly a URL that MediaUrls makes, or it names nothing; the file comes from the
database row, and MediaStore.open reads only regular files below the media folder (no
symlinks).

The pieces: werkzeug's Request/Response (conditional requests, byte ranges, ETags), served by
cheroot's WSGI server (CherryPy's): a fixed pool of threads, idle keep-alive connections
parked in a selector instead of holding a thread, a timeout on every socket operation for
slow clients, bounded request headers and bodies. (werkzeug's own server is, by its docs, a
development server: a thread per connection and no timeouts.)"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable
from typing import IO, TYPE_CHECKING, Final

from cheroot import wsgi
from werkzeug.datastructures import Headers
from werkzeug.exceptions import RequestedRangeNotSatisfiable
from werkzeug.http import parse_range_header
from werkzeug.wrappers import Request, Response
from werkzeug.wsgi import wrap_file

from content_service.db.engine import Database
from content_service.images import records, urls
from content_service.images.media import CHUNK_BYTES, MediaStore

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

log = logging.getLogger(__name__)

METHODS: Final = ("GET", "HEAD")
CACHE_FOREVER: Final = "public, max-age=31536000, immutable"
# Not cached: a missing blob may be uploaded again.
CACHE_ERRORS: Final = "no-store"
# Opened as a page, an image is shown; nothing in it may run or load anything.
CSP: Final = "default-src 'none'; style-src 'unsafe-inline'; sandbox"
# Request threads (each holds a database connection and a file while it sends).
THREADS: Final = 8
SOCKET_TIMEOUT_SECONDS: Final = 10
MAX_REQUEST_HEADER_BYTES: Final = 16 * 1024
MAX_REQUEST_BODY_BYTES: Final = 16 * 1024
STOP_SECONDS: Final = 5


def _common(headers: Headers) -> None:
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Content-Security-Policy"] = CSP


def _plain(status: int, text: str, **extra: str) -> Response:
    response = Response(f"{text}\n", status=status, content_type="text/plain; charset=utf-8")
    _common(response.headers)
    response.headers["Cache-Control"] = CACHE_ERRORS
    for name, value in extra.items():
        response.headers[name.replace("_", "-")] = value
    return response


class MediaApp:
    """The WSGI application: GET and HEAD of media paths, nothing else."""

    def __init__(self, db: Database, media: MediaStore) -> None:
        self.db = db
        self.media = media

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        try:
            response = self.respond(Request(environ))
        except Exception:
            log.exception("media request %s failed", environ.get("PATH_INFO", "")[:200])
            response = _plain(500, "internal error")
        return response(environ, start_response)

    def respond(self, request: Request) -> Response:
        if request.method not in METHODS:
            return _plain(405, "method not allowed: media is read-only", Allow=", ".join(METHODS))
        # The path exactly as the server decoded it (werkzeug's request.path would fold a
        # leading '//'); only the spelling MediaUrls makes names anything.
        media = urls.parse(request.environ.get("PATH_INFO", ""))
        if media is None:
            return _plain(404, "not found")
        opened = self._open(media)
        if opened is None:
            return _plain(404, "not found")
        try:
            return self._send(request, media, opened)
        except BaseException:
            opened.close()  # otherwise the response closes it once sent
            raise

    def _open(self, media: urls.MediaPath) -> IO[bytes] | None:
        # A delete (or a replaced variant) may remove the file between reading the row and
        # opening it: look again once, when another row may hold the same bytes.
        for _ in range(2):
            with self.db.read_statement() as conn:
                key = records.served_key(conn, media)
            if key is None:
                return None
            try:
                return self.media.open(key)
            except FileNotFoundError:
                continue
        log.warning("media %s/%s: its file is missing", media.kind, media.sha256)
        return None

    def _send(self, request: Request, media: urls.MediaPath, fh: IO[bytes]) -> Response:
        size = _size(fh)
        response = Response(
            wrap_file(request.environ, fh, buffer_size=CHUNK_BYTES // 4),
            status=200,
            content_type=media.mime_type,
            direct_passthrough=True,
        )
        response.content_length = size
        response.set_etag(media.sha256)
        response.headers["Cache-Control"] = CACHE_FOREVER
        response.headers["Accept-Ranges"] = "bytes"
        response.headers["Access-Control-Allow-Origin"] = "*"
        response.headers["Cross-Origin-Resource-Policy"] = "cross-origin"
        _common(response.headers)
        if request.if_none_match.contains_weak(media.sha256):
            response.status_code = 304  # werkzeug sends no body and drops Content-Length
            return response
        environ: WSGIEnvironment = request.environ
        ranges = parse_range_header(environ.get("HTTP_RANGE"))
        if ranges is not None and len(ranges.ranges) > 1:
            # Several ranges: the whole file (a server may ignore Range; no multipart here).
            environ = {k: v for k, v in environ.items() if k != "HTTP_RANGE"}
        try:
            return response.make_conditional(environ, accept_ranges=True, complete_length=size)
        except RequestedRangeNotSatisfiable:
            fh.close()
            return _plain(416, "range not satisfiable", Content_Range=f"bytes */{size}")


def _size(fh: IO[bytes]) -> int:
    return os.fstat(fh.fileno()).st_size


class _Server(wsgi.Server):
    def error_log(self, msg: str = "", level: int = 20, traceback: bool = False) -> None:
        log.log(level, "media HTTP: %s", msg, exc_info=traceback)


class MediaHttpServer:
    """The media HTTP server of one content_service: bound when made (port 0 picks a free
    port; `port` is the one bound), serving from a thread of its own until stop()."""

    def __init__(self, app: MediaApp, host: str, port: int) -> None:
        server = _Server(
            (host, port),
            app,
            numthreads=THREADS,
            max=THREADS,
            server_name="loom-media",
            timeout=SOCKET_TIMEOUT_SECONDS,
            shutdown_timeout=STOP_SECONDS,
        )
        server.max_request_header_size = MAX_REQUEST_HEADER_BYTES
        server.max_request_body_size = MAX_REQUEST_BODY_BYTES
        # How often the connection loop wakes to expire idle connections, and so how long
        # stop() waits for it (cheroot's default: 0.5 s).
        server.expiration_interval = 0.1
        server.prepare()  # binds and listens; raises OSError when it cannot
        self._server = server
        self.host = host
        self.port = int(server.bind_addr[1])
        self._thread = threading.Thread(target=server.serve, name="media-http", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """Where this server answers, as a browser on this machine reaches it (a wildcard
        listen address becomes loopback)."""
        host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)  # noqa: S104
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        """Stops accepting, closes connections, and waits (at most STOP_SECONDS) for requests
        in flight."""
        self._server.stop()
        self._thread.join(STOP_SECONDS)
