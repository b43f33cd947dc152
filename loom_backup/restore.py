"""`python -m loom_backup restore BACKUP --data-dir DIR`: a backup into an empty data folder,
proved before anything is put in place. `verify BACKUP` runs the same checks and writes
nothing.

Offline: the stack must be stopped, and the target must be empty (or not exist). In order:

1. The manifest: present (a backup without one was interrupted), sealed (its own checksum),
   of a format and schema revision this loom knows.
2. Every file the manifest lists is read once, hashed and compared (size and sha256) while it
   is copied into a hidden temp folder beside the target. A missing, truncated or changed
   file stops the restore, naming the file.
3. The copies are opened: SQLite `integrity_check` and the row count of every table, the
   schema revision and outbox position; each LanceDB table's row count, version and model.
   PostgreSQL: the dump is restored into the given (empty) database in one transaction,
   then every table's rows are counted.
4. Only then the temp folder becomes the data folder (one rename).

Layout of the restored data folder (the services' defaults under DATA_DIR):

    content.db      <- content/content.db        (SQLite backups)
    media/...       <- content/media/...
    lancedb/...     <- vector/lancedb/...
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import os
import secrets
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sqlalchemy.engine import make_url

from loom_backup import manifest as mf
from loom_backup.errors import BackupError
from loom_backup.progress import Printer, size
from servicekit.backupfiles import COPY_CHUNK, FileEntry, fsync_dir, sync_filesystem

SQLITE_FILE = "content.db"
DUMP_FILE = ".content.dump"
MEDIA_FOLDER = "media"
LANCEDB_FOLDER = "lancedb"


@dataclass
class RestoreOutcome:
    data_dir: Path
    manifest: mf.Manifest
    seconds: float
    files: int
    bytes: int
    warnings: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------ sources


class Source(abc.ABC):
    """A backup to read: a folder or a tar."""

    path: Path

    @abc.abstractmethod
    def manifest_bytes(self) -> bytes: ...

    @abc.abstractmethod
    def open(self, relative: str) -> contextlib.AbstractContextManager[IO[bytes]]: ...

    @abc.abstractmethod
    def names(self) -> set[str]: ...

    def close(self) -> None:  # noqa: B027 (nothing to close for a folder)
        pass


def _missing_manifest(path: Path) -> BackupError:
    return BackupError(
        f"{path} has no {mf.MANIFEST}: it is not a complete backup (an interrupted backup never "
        "gets one); refusing to use it"
    )


class FolderSource(Source):
    def __init__(self, path: Path) -> None:
        self.path = path

    def manifest_bytes(self) -> bytes:
        try:
            return (self.path / mf.MANIFEST).read_bytes()
        except FileNotFoundError:
            raise _missing_manifest(self.path) from None

    @contextlib.contextmanager
    def open(self, relative: str) -> Iterator[IO[bytes]]:
        file = self.path / relative
        if file.is_symlink() or not file.is_file():
            raise BackupError(f"the backup is damaged: {relative} is missing")
        with file.open("rb") as fh:
            yield fh

    def names(self) -> set[str]:
        return {
            p.relative_to(self.path).as_posix()
            for p in self.path.rglob("*")
            if p.is_file() or p.is_symlink()
        }


class TarSource(Source):
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._tar = tarfile.open(path, "r:")  # noqa: SIM115 (closed by close())
        except (tarfile.TarError, OSError) as exc:
            raise BackupError(f"{path} is not a readable tar ({exc}); refusing to use it") from None
        try:
            members = self._tar.getmembers()
        except (tarfile.TarError, OSError, EOFError) as exc:
            self._tar.close()
            raise BackupError(f"{path} is a damaged tar ({exc}); refusing to use it") from None
        self._members = {m.name: m for m in members}

    def manifest_bytes(self) -> bytes:
        member = self._members.get(mf.MANIFEST)
        if member is None or not member.isfile():
            raise _missing_manifest(self.path)
        return self._read(member)

    def _read(self, member: tarfile.TarInfo) -> bytes:
        fh = self._tar.extractfile(member)
        if fh is None:
            raise BackupError(f"the backup is damaged: {member.name} is not a file")
        with fh:
            return fh.read()

    @contextlib.contextmanager
    def open(self, relative: str) -> Iterator[IO[bytes]]:
        member = self._members.get(relative)
        if member is None:
            raise BackupError(f"the backup is damaged: {relative} is missing")
        if not member.isfile():
            raise BackupError(f"the backup is damaged: {relative} is not a regular file")
        fh = self._tar.extractfile(member)
        if fh is None:
            raise BackupError(f"the backup is damaged: {relative} is not a regular file")
        with fh:
            yield fh

    def names(self) -> set[str]:
        return set(self._members)

    def close(self) -> None:
        self._tar.close()


def open_source(path: Path) -> Source:
    if path.is_dir():
        return FolderSource(path)
    if path.is_file():
        return TarSource(path)
    raise BackupError(f"no backup at {path}")


# ------------------------------------------------------------------------------ checks


def destination(relative: str) -> str | None:
    """Where a backup file goes in the data folder (None: nowhere this loom knows)."""
    parts = relative.split("/", 2)
    if relative == f"{mf.CONTENT_PREFIX}/{SQLITE_FILE}":
        return SQLITE_FILE
    if relative == f"{mf.CONTENT_PREFIX}/content.dump":
        return DUMP_FILE
    if len(parts) == 3 and parts[0] == mf.CONTENT_PREFIX and parts[1] == MEDIA_FOLDER:
        return f"{MEDIA_FOLDER}/{parts[2]}"
    if len(parts) == 3 and parts[0] == mf.VECTOR_PREFIX and parts[1] == LANCEDB_FOLDER:
        return f"{LANCEDB_FOLDER}/{parts[2]}"
    return None


def check_target(data_dir: Path) -> None:
    if data_dir.exists() or data_dir.is_symlink():
        if not data_dir.is_dir():
            raise BackupError(f"{data_dir} exists and is not a folder")
        if any(data_dir.iterdir()):
            raise BackupError(
                f"{data_dir} is not empty; a restore only writes into an empty or new data "
                "folder. Stop the stack and move the old folder aside (or delete it) first"
            )
    elif not data_dir.parent.is_dir():
        data_dir.parent.mkdir(parents=True)


def check_schema(manifest: mf.Manifest) -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    from content_service.db.migrate import MIGRATIONS

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    script = ScriptDirectory.from_config(config)
    for revision in filter(None, str(manifest.content["schema_revision"]).split(",")):
        try:
            found = script.get_revision(revision)
        except CommandError:
            found = None
        if found is None:
            raise BackupError(
                f"the backup's schema revision {revision} is unknown to this loom (made by a "
                "newer version?); restore it with the loom version that made it"
            )


def check_database_url(manifest: mf.Manifest, database_url: str) -> str:
    """The PostgreSQL URL to restore into ('' for SQLite), checked against the backup."""
    backend = make_url(database_url).get_backend_name() if database_url else "sqlite"
    if manifest.backend == "postgresql":
        if backend != "postgresql":
            raise BackupError(
                "this is a backup of a PostgreSQL database: give the (empty) database to restore "
                "it into with --database-url postgresql://USER@HOST:PORT/DBNAME (or "
                "CONTENT_DATABASE_URL)"
            )
        return database_url
    if backend != "sqlite":
        raise BackupError(
            "this is a backup of a SQLite database; it is restored into DATA_DIR/content.db. "
            "Unset CONTENT_DATABASE_URL (or --database-url) to restore it"
        )
    return ""


def check_empty_postgres(url: str) -> None:
    from content_service.backup import table_counts_postgres

    try:
        tables = table_counts_postgres(url)["tables"]
    except Exception as exc:  # noqa: BLE001 (any driver error: the message says it)
        raise BackupError(f"cannot connect to the target database: {exc}") from None
    if tables:
        raise BackupError(
            f"the target database already has tables ({', '.join(sorted(tables)[:5])}...); a "
            "restore needs an empty database (createdb a new one)"
        )


def copy_checked(source: Source, entry: FileEntry, target: Path | None) -> None:
    """Copies one backup file to target (or only reads it, for None), checking its size and
    sha256 against the manifest."""
    digest = hashlib.sha256()
    got = 0
    with contextlib.ExitStack() as stack:
        reader = stack.enter_context(source.open(entry.path))
        out: IO[bytes] | None = None
        if target is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            out = stack.enter_context(target.open("xb"))
        while chunk := reader.read(COPY_CHUNK):
            digest.update(chunk)
            got += len(chunk)
            if out is not None:
                out.write(chunk)
        if out is not None:
            out.flush()  # made durable all at once before the folder is put in place
    if got != entry.size:
        raise BackupError(
            f"the backup is damaged: {entry.path} has {got} bytes, the manifest says "
            f"{entry.size} (truncated or changed); refusing to restore"
        )
    if digest.hexdigest() != entry.sha256:
        raise BackupError(
            f"the backup is damaged: the sha256 of {entry.path} does not match the manifest "
            "(corrupted or changed); refusing to restore"
        )


def check_sqlite(path: Path, manifest: mf.Manifest) -> None:
    from content_service.backup import table_counts_sqlite

    try:
        integrity, info = table_counts_sqlite(path)
    except Exception as exc:  # noqa: BLE001 (any driver error: the message says it)
        raise BackupError(f"content/{SQLITE_FILE} cannot be read as a database: {exc}") from None
    if integrity != ["ok"]:
        raise BackupError(f"content/{SQLITE_FILE} fails integrity_check: {integrity[:5]}")
    compare_counts(info, manifest, f"content/{SQLITE_FILE}")


def compare_counts(info: dict[str, Any], manifest: mf.Manifest, what: str) -> None:
    want: dict[str, int] = manifest.content["tables"]
    have: dict[str, int] = info["tables"]
    for table in sorted(set(want) | set(have)):
        if want.get(table) != have.get(table):
            raise BackupError(
                f"{what}: table {table} has {have.get(table, 'no')} rows, the manifest says "
                f"{want.get(table, 'none')}; refusing to restore"
            )
    if info["schema_revision"] != manifest.content["schema_revision"]:
        raise BackupError(
            f"{what}: schema revision {info['schema_revision']}, the manifest says "
            f"{manifest.content['schema_revision']}"
        )


def check_lancedb(folder: Path, manifest: mf.Manifest) -> None:
    import lancedb

    if not manifest.vector_tables:
        return
    db = lancedb.connect(str(folder))
    for entry in manifest.vector_tables:
        name = entry["table"]
        try:
            table: Any = db.open_table(name)
            rows = int(table.count_rows())
            version = int(table.version)
            meta = table.schema.metadata or {}
        except Exception as exc:  # noqa: BLE001 (LanceDB raises many types)
            raise BackupError(
                f"{entry['path']} cannot be opened as a LanceDB table: {exc}"
            ) from None
        if rows != entry["rows"]:
            raise BackupError(
                f"{entry['path']}: {rows} rows, the manifest says {entry['rows']}; refusing to "
                "restore"
            )
        if version != entry["backup_version"]:
            raise BackupError(
                f"{entry['path']}: version {version}, the manifest says {entry['backup_version']}"
            )
        model = meta.get(b"loom.model", b"").decode()
        if model != entry["model"]:
            raise BackupError(
                f"{entry['path']}: vectors of model {model!r}, the manifest says {entry['model']!r}"
            )


def pg_tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise BackupError(
            f"`{name}` is not on PATH: install the PostgreSQL client tools (`make setup` does, "
            "or apt-get install postgresql-client)"
        )
    return found


def restore_postgres(dump: Path, url: str, manifest: mf.Manifest) -> None:
    from content_service.backup import client_env, libpq_target, table_counts_postgres

    conninfo, password = libpq_target(url)
    result = subprocess.run(
        [
            pg_tool("pg_restore"),
            "--no-owner",
            "--no-privileges",
            "--exit-on-error",
            "--single-transaction",
            f"--dbname={conninfo}",
            str(dump),
        ],
        env=client_env(password),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise BackupError(
            f"pg_restore failed (exit {result.returncode}; one transaction, so the database is "
            f"still empty): {result.stderr.strip()[-2000:]}"
        )
    compare_counts(table_counts_postgres(url), manifest, "the restored PostgreSQL database")


def list_dump(dump: Path) -> None:
    result = subprocess.run(
        [pg_tool("pg_restore"), "--list", str(dump)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise BackupError(f"content/content.dump is not a readable dump: {result.stderr.strip()}")


# ------------------------------------------------------------------------------ restore


def _temp_folder(data_dir: Path) -> Path:
    tag = secrets.token_hex(4)
    if data_dir.is_dir():
        return data_dir / f".restore-{tag}"
    return data_dir.parent / f".{data_dir.name}.restore-{tag}"


def _copy_all(
    source: Source, manifest: mf.Manifest, temp: Path, printer: Printer, *, verify_only: bool
) -> list[str]:
    """Reads and checks every file of the manifest, copying it into temp (when verifying only,
    media blobs are only read: nothing opens them). Returns warnings."""
    files = manifest.files
    total = sum(f.size for f in files)
    done = 0
    for count, entry in enumerate(files, 1):
        where = destination(entry.path)
        if where is None:
            raise BackupError(f"the backup lists {entry.path}, which this loom cannot place")
        skip = verify_only and where.startswith(f"{MEDIA_FOLDER}/")
        copy_checked(source, entry, None if skip else temp / where)
        done += entry.size
        printer.status(f"checking {count}/{len(files)} files, {size(done)} / {size(total)}")
    printer.line(f"{len(files)} files ({size(total)}): every size and sha256 matches the manifest")
    listed = {f.path for f in files} | {mf.MANIFEST}
    extra = sorted(source.names() - listed)
    return [f"ignored {len(extra)} file(s) not in the manifest, e.g. {extra[0]}"] if extra else []


def restore(
    backup: Path,
    data_dir: Path,
    *,
    database_url: str = "",
    printer: Printer,
    verify_only: bool = False,
) -> RestoreOutcome:
    """Restores (or, verify_only, only checks) a backup. Raises BackupError, having written
    nothing in place, when anything does not check out."""
    clock = time.monotonic()
    backup = Path(os.path.abspath(backup.expanduser()))
    data_dir = Path(os.path.abspath(data_dir.expanduser()))
    if not verify_only:
        check_target(data_dir)
    source = open_source(backup)
    temp: Path | None = None
    try:
        manifest = mf.load(source.manifest_bytes())
        printer.line(
            f"backup of {manifest.data['started_at']}: {manifest.backend} schema "
            f"{manifest.content['schema_revision']}, {len(manifest.files)} files, "
            f"{size(manifest.total_bytes)}, {len(manifest.vector_tables)} vector table(s)"
        )
        check_schema(manifest)
        url = "" if verify_only else check_database_url(manifest, database_url)
        if url:
            check_empty_postgres(url)
        if verify_only:
            temp = backup.parent / f".{backup.name}.verify-{secrets.token_hex(4)}"
        else:
            temp = _temp_folder(data_dir)
        temp.mkdir()
        warnings = _copy_all(source, manifest, temp, printer, verify_only=verify_only)
        if manifest.backend == "sqlite":
            check_sqlite(temp / SQLITE_FILE, manifest)
            printer.line(
                f"content.db: integrity_check ok, {len(manifest.content['tables'])} tables with "
                "the manifest's row counts"
            )
        elif verify_only:
            list_dump(temp / DUMP_FILE)
            printer.line("content.dump: readable (row counts are checked when it is restored)")
        check_lancedb(temp / LANCEDB_FOLDER, manifest)
        if manifest.vector_tables:
            printer.line(
                f"lancedb: {len(manifest.vector_tables)} table(s) open with the manifest's rows, "
                "versions and models"
            )
        if not verify_only:
            if url:
                restore_postgres(temp / DUMP_FILE, url, manifest)
                (temp / DUMP_FILE).unlink()
                printer.line("PostgreSQL: dump restored, every table has the manifest's row count")
            for folder in (MEDIA_FOLDER, LANCEDB_FOLDER):
                (temp / folder).mkdir(exist_ok=True)
            sync_filesystem(temp)
            _put_in_place(temp, data_dir)
            temp = None
            printer.line(f"restored into {data_dir}")
    finally:
        source.close()
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
    return RestoreOutcome(
        data_dir,
        manifest,
        time.monotonic() - clock,
        len(manifest.files),
        manifest.total_bytes,
        warnings,
    )


def _put_in_place(temp: Path, data_dir: Path) -> None:
    if temp.parent == data_dir:
        # The data folder existed (empty; maybe a mount point): move the entries up.
        for entry in sorted(temp.iterdir()):
            os.rename(entry, data_dir / entry.name)
        temp.rmdir()
    else:
        if data_dir.exists():
            raise BackupError(f"{data_dir} appeared while restoring; not overwriting it")
        os.rename(temp, data_dir)
    fsync_dir(data_dir)
    fsync_dir(data_dir.parent)
