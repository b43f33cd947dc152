"""The one error type of the backup command: its message is what the person reads."""

from __future__ import annotations


class BackupError(Exception):
    """A backup, restore, verify or reconcile that cannot go on; the message says why and,
    where there is one, what to do."""
