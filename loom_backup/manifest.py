"""The manifest: what a backup holds, written last (its presence marks a complete backup).

    {
      "format": "loom-backup", "format_version": 1,
      "loom_version": "0.1.0", "started_at": "...Z", "completed_at": "...Z",
      "content": {"backend", "server_version", "schema_revision", "snapshot_time",
                  "database_file", "tables": {name: rows}, "outbox": {"pending_count",
                  "max_id"}, "media": {"files", "bytes"}, "attempts"},
      "vector": {"lancedb_version", "tables": [{"collection", "table", "path",
                 "source_version", "backup_version", "rows", "provider", "model",
                 "dimensions", "indexed_columns", "snapshot_time"}]},
      "files": [{"path", "size", "sha256"}, ...],        every file but the manifest
      "totals": {"files", "bytes"},
      "manifest_sha256": "..."                            of everything above, canonical JSON
    }

The manifest seals itself: `manifest_sha256` is the sha256 of the canonical JSON (sorted
keys, no spaces) of every other field, so an edited or truncated manifest is refused as
surely as a damaged data file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

from loom_backup.errors import BackupError
from servicekit.backupfiles import FileEntry

FORMAT = "loom-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
# Where each service's half lives inside a backup.
CONTENT_PREFIX = "content"
VECTOR_PREFIX = "vector"
SEAL = "manifest_sha256"


def iso(seconds: float) -> str:
    return (
        datetime.fromtimestamp(seconds, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _canonical(data: dict[str, Any]) -> bytes:
    body = {k: v for k, v in data.items() if k != SEAL}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def seal(data: dict[str, Any]) -> bytes:
    """The manifest's bytes, with its own checksum added."""
    sealed = dict(data)
    sealed[SEAL] = hashlib.sha256(_canonical(data)).hexdigest()
    return (json.dumps(sealed, indent=2, sort_keys=True) + "\n").encode()


def safe_path(path: str) -> bool:
    """A relative path inside one of the two halves, with no way out of the backup."""
    pure = PurePosixPath(path)
    return (
        bool(path)
        and "\\" not in path
        and not pure.is_absolute()
        and ".." not in pure.parts
        and "." not in pure.parts
        and pure.parts[0] in (CONTENT_PREFIX, VECTOR_PREFIX)
        and len(pure.parts) >= 2
        and pure.as_posix() == path
    )


@dataclass(frozen=True)
class Manifest:
    data: dict[str, Any]

    @property
    def files(self) -> list[FileEntry]:
        return [FileEntry(f["path"], int(f["size"]), f["sha256"]) for f in self.data["files"]]

    @property
    def content(self) -> dict[str, Any]:
        content: dict[str, Any] = self.data["content"]
        return content

    @property
    def vector_tables(self) -> list[dict[str, Any]]:
        tables: list[dict[str, Any]] = self.data["vector"]["tables"]
        return tables

    @property
    def backend(self) -> str:
        return str(self.content["backend"])

    @property
    def total_bytes(self) -> int:
        return int(self.data["totals"]["bytes"])


def _damaged(why: str) -> BackupError:
    return BackupError(f"the backup's {MANIFEST} is damaged: {why}; refusing to use this backup")


def load(raw: bytes) -> Manifest:
    """Parses and checks a manifest: format, version, its own checksum, and the shape of
    everything a restore reads."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _damaged(f"not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise _damaged("not a JSON object")
    if data.get("format") != FORMAT:
        raise BackupError(
            f"{MANIFEST} is not a loom backup manifest (format {data.get('format')!r})"
        )
    if data.get("format_version") != FORMAT_VERSION:
        raise BackupError(
            f"backup format version {data.get('format_version')!r} is not one this loom reads "
            f"({FORMAT_VERSION}); use the loom version that wrote it"
        )
    expected = data.get(SEAL)
    if not isinstance(expected, str) or hashlib.sha256(_canonical(data)).hexdigest() != expected:
        raise _damaged("its checksum does not match its contents (edited or corrupted)")
    try:
        files = data["files"]
        seen: set[str] = set()
        for entry in files:
            path, size, digest = entry["path"], entry["size"], entry["sha256"]
            if not (isinstance(path, str) and safe_path(path)):
                raise _damaged(f"unsafe file path {path!r}")
            if not isinstance(size, int) or size < 0 or not isinstance(digest, str):
                raise _damaged(f"bad entry for {path}")
            if path in seen:
                raise _damaged(f"{path} is listed twice")
            seen.add(path)
        content = data["content"]
        if content["backend"] not in ("sqlite", "postgresql"):
            raise _damaged(f"unknown database backend {content['backend']!r}")
        if f"{CONTENT_PREFIX}/{content['database_file']}" not in seen:
            raise _damaged("the database file is not listed")
        for name, rows in content["tables"].items():
            if not isinstance(name, str) or not isinstance(rows, int):
                raise _damaged("bad row counts")
        for table in data["vector"]["tables"]:
            if not isinstance(table["rows"], int) or not safe_path(table["path"]):
                raise _damaged(f"bad vector table entry {table.get('table')!r}")
        int(data["totals"]["bytes"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise _damaged(f"missing or malformed field ({exc!r})") from None
    return Manifest(data)
