"""`python -m loom_backup backup|restore|verify|reconcile` (docs/backup.md).

Exit status: 0 done; 1 refused or failed (the message says why); 2 bad usage; 3 restored but
the vector side did not come level (drift remains); 130 interrupted."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from loom_backup.errors import BackupError
from loom_backup.progress import Printer, size
from loom_backup.reconcile import LevelReport, describe
from loom_backup.settings import BackupSettings
from servicekit import logs
from servicekit.clients import open_channel

EXIT_DRIFT = 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loom_backup",
        description="Backup and restore of a loom stack: database, media and vector tables.",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    parser.add_argument("-v", "--verbose", action="store_true", help="the services' logs too")
    commands = parser.add_subparsers(dest="command", required=True)

    backup = commands.add_parser("backup", help="back up a running stack into a folder or .tar")
    backup.add_argument("target", type=Path, help="new folder, or a file name ending in .tar")
    backup.add_argument("--content", help="content_service address (BACKUP_CONTENT_ADDRESS)")
    backup.add_argument("--vector", help="vector_service address (BACKUP_VECTOR_ADDRESS)")
    backup.add_argument(
        "--no-verify", action="store_true", help="skip reading every file back at the end"
    )

    restore = commands.add_parser("restore", help="restore a backup into an empty data folder")
    restore.add_argument("backup", type=Path, help="a backup folder or .tar")
    restore.add_argument("--data-dir", type=Path, help="the data folder to create (DATA_DIR)")
    restore.add_argument(
        "--database-url",
        help="PostgreSQL backups: the empty database to restore into (CONTENT_DATABASE_URL)",
    )
    restore.add_argument(
        "--no-level",
        action="store_true",
        help="do not start the services to bring the vector side level (run `reconcile` later)",
    )

    verify = commands.add_parser("verify", help="check a backup without restoring it")
    verify.add_argument("backup", type=Path)

    reconcile = commands.add_parser(
        "reconcile", help="drain the outbox and repair vector drift of a running stack"
    )
    reconcile.add_argument("--content", help="content_service address (BACKUP_CONTENT_ADDRESS)")
    return parser


def main(argv: list[str] | None = None, *, configure_logs: bool = True) -> int:
    args = _parser().parse_args(argv)
    if configure_logs:
        logs.configure("INFO" if args.verbose else "WARNING")
    settings = BackupSettings()
    if getattr(args, "content", None):
        settings.content_address = args.content
    if getattr(args, "vector", None):
        settings.vector_address = args.vector
    printer = Printer(quiet=args.quiet)
    try:
        if args.command == "backup":
            return _backup(args, settings, printer)
        if args.command == "restore":
            return _restore(args, settings, printer)
        if args.command == "verify":
            return _verify(args, printer)
        return _reconcile(settings, printer)
    except BackupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; nothing was left behind that looks complete", file=sys.stderr)
        return 130


def _backup(args: argparse.Namespace, settings: BackupSettings, printer: Printer) -> int:
    from loom_backup.backup import create_backup

    outcome = create_backup(args.target, settings, printer, verify=not args.no_verify)
    content = outcome.manifest.content
    print(
        f"backup complete: {outcome.target}\n"
        f"  {outcome.files} files, {size(outcome.bytes)}"
        + (f" ({size(outcome.archive_bytes)} tar)" if outcome.target.suffix == ".tar" else "")
        + f", {outcome.seconds:.1f} s\n"
        f"  database: {content['backend']} {content['server_version']}, schema "
        f"{content['schema_revision']}, {sum(content['tables'].values())} rows in "
        f"{len(content['tables'])} tables, snapshot at {content['snapshot_time']}\n"
        f"  index outbox: {content['outbox']['pending_count']} pending (max id "
        f"{content['outbox']['max_id']})\n"
        f"  media: {content['media']['files']} blobs, {size(content['media']['bytes'])}"
    )
    for table in outcome.manifest.vector_tables:
        print(
            f"  vector: {table['table']} version {table['source_version']}, {table['rows']} rows, "
            f"{table['provider']}/{table['model']} ({table['dimensions']} dimensions)"
        )
    return 0


def _restore(args: argparse.Namespace, settings: BackupSettings, printer: Printer) -> int:
    from loom_backup.reconcile import CALL_TIMEOUT, level, restored_stack  # imports both services
    from loom_backup.restore import restore

    data_dir = args.data_dir or settings.data_dir
    database_url = args.database_url if args.database_url is not None else settings.database_url
    outcome = restore(args.backup, data_dir, database_url=database_url, printer=printer)
    for warning in outcome.warnings:
        printer.line(f"warning: {warning}")
    print(
        f"restored {outcome.files} files ({size(outcome.bytes)}) into {outcome.data_dir} in "
        f"{outcome.seconds:.1f} s; every checksum and row count checked"
    )
    if args.no_level:
        print(
            "not levelled: start the stack, then run `python -m loom_backup reconcile` "
            "(make reconcile) to bring the vector side level"
        )
        return 0
    backend = outcome.manifest.backend
    with (
        restored_stack(
            outcome.data_dir, database_url if backend == "postgresql" else "", printer
        ) as (address, token),
        open_channel(address, token, timeout=CALL_TIMEOUT) as channel,
    ):
        report = level(channel, token, printer, settings.level_timeout_seconds)
    return _report(report)


def _report(report: LevelReport) -> int:
    print(
        f"vector side levelled in {report.seconds:.1f} s: found {describe(report.found)}; "
        f"now {describe(report.final)}"
    )
    if report.drift:
        print(f"drift remains: {report.drift}", file=sys.stderr)
        return EXIT_DRIFT
    print("zero drift: the vector side is level with the content side")
    return 0


def _verify(args: argparse.Namespace, printer: Printer) -> int:
    from loom_backup.restore import restore

    outcome = restore(args.backup, args.backup, printer=printer, verify_only=True)
    for warning in outcome.warnings:
        printer.line(f"warning: {warning}")
    print(
        f"backup {args.backup} is intact: {outcome.files} files ({size(outcome.bytes)}), every "
        f"checksum and row count matches its manifest ({outcome.seconds:.1f} s)"
    )
    return 0


def _reconcile(settings: BackupSettings, printer: Printer) -> int:
    from loom_backup.backup import service_channel
    from loom_backup.reconcile import level

    with service_channel(settings, settings.content_address, "content_service") as channel:
        report = level(channel, settings.token(), printer, settings.level_timeout_seconds)
    return _report(report)


if __name__ == "__main__":
    sys.exit(main())
