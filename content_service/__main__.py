"""`python -m content_service [serve|migrate]`."""

from __future__ import annotations

import argparse
import logging
import sys

from content_service.db.engine import UnsafeSqliteError
from content_service.db.migrate import StaleSchemaError, upgrade
from content_service.server import create_server, open_database
from content_service.settings import ContentSettings
from servicekit import logs
from servicekit.server import PortInUse, serve_until_signalled

log = logging.getLogger("content_service")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m content_service")
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "migrate"])
    args = parser.parse_args(argv)
    settings = ContentSettings()
    logs.configure(settings.log_level)
    try:
        if args.command == "migrate":
            db = open_database(settings)
            upgrade(db)
            log.info("database at %s is up to date", db.url.split("@")[-1])
            db.dispose()
            return 0
        running = create_server(settings)
    except (StaleSchemaError, UnsafeSqliteError) as exc:
        log.error("%s", exc)
        return 2
    except PortInUse as exc:
        # The media HTTP port is bound first; a clash there names its own setting.
        taken = (
            "CONTENT_MEDIA_HTTP_PORT" if exc.port == settings.media_http_port else "CONTENT_PORT"
        )
        log.error("%s; set %s to another port", exc, taken)
        return 2
    serve_until_signalled(running, settings.grace_seconds, "content_service")
    return 0


if __name__ == "__main__":
    sys.exit(main())
