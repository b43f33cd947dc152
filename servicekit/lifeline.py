"""A process started by `make run`'s supervisor (servicekit.stack) stops when the supervisor
dies, however it dies (SIGKILL, a closed terminal): the supervisor names itself in
LOOM_SUPERVISOR_PID, and the process's wait loop (servicekit.server.wait_for_signal) asks
`gone()` a few times a second.

honcho starts each process through a wrapper process of its own, in a session of its own, so
neither the parent pid nor the process group tells; the supervisor's own pid does. On Linux a
pidfd (readable once that process has exited, even before anyone reaps it) answers exactly;
elsewhere a signal-0 probe does."""

from __future__ import annotations

import logging
import os
import select

log = logging.getLogger(__name__)

ENV = "LOOM_SUPERVISOR_PID"


class Lifeline:
    """The supervisor this process belongs to, if any."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self._fd: int | None = None
        self._gone = False
        if pid is None:
            return
        try:
            self._fd = os.pidfd_open(pid)
        except ProcessLookupError:
            self._gone = True  # died before we looked
        except (AttributeError, OSError):
            self._fd = None  # no pidfd here: probe with signal 0

    @classmethod
    def from_env(cls) -> Lifeline:
        value = os.environ.get(ENV, "")
        return cls(int(value) if value.isdigit() else None)

    def gone(self) -> bool:
        """True once the supervisor has exited (always False without one)."""
        if self.pid is None or self._gone:
            return self._gone
        if self._fd is not None:
            readable, _, _ = select.select([self._fd], [], [], 0)
            self._gone = bool(readable)
        else:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                self._gone = True
            except PermissionError:
                pass  # alive, someone else's (pid reused): keep running
        if self._gone:
            log.warning("the supervisor (pid %d) is gone; stopping", self.pid)
        return self._gone
