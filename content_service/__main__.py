"""`python -m content_service [serve|migrate]`."""

from __future__ import annotations

import argparse
import logging
import sys

from content_service.db.engine import UnsafeSqliteError
from content_service.db.migrate import StaleSchemaError, upgrade
from content_service.server import create_server, open_database
from content_service.settings import ContentSettings
from servicekit import logs, tracing
from servicekit.server import serve_main

log = logging.getLogger("content_service")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m content_service")
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "migrate"])
    args = parser.parse_args(argv)
    settings = ContentSettings()
    logs.configure(settings.log_level, settings.log_format)
    if args.command == "serve":
        tracing.configure(settings.traces, "content_service")
    try:
        if args.command == "migrate":
            db = open_database(settings)
            upgrade(db)
            log.info("database at %s is up to date", db.url.split("@")[-1])
            db.dispose()
            return 0
        return serve_main(
            lambda: create_server(settings),
            what="content_service",
            grace=settings.grace_seconds,
            # The media HTTP port is bound first; a clash there names its own setting.
            port_setting=lambda exc: (
                "CONTENT_MEDIA_HTTP_PORT"
                if exc.port == settings.media_http_port
                else "CONTENT_PORT"
            ),
            metrics_setting="CONTENT_METRICS_PORT",
        )
    except (StaleSchemaError, UnsafeSqliteError) as exc:
        log.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
