"""Logs of our processes, configured once in each __main__ (LOG_LEVEL, LOG_FORMAT):

- `text` (the default): `time level logger [request id] message`, for people;
- `json`: one JSON object per line, for log pipelines: `time` (UTC, ISO 8601), `level`,
  `logger`, `message`, `request_id` (null outside a call), with tracing on (servicekit.tracing)
  `trace_id` and `span_id` of the current span (null outside one), and `exception` (the
  traceback) when there is one.

The request id is that of the call being served (set by servicekit.edge, or by the image
worker for its job)."""

from __future__ import annotations

import contextvars
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from servicekit import tracing

__all__ = ["LogFormat", "configure", "request_id_var"]

LogFormat = Literal["text", "json"]

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (a traceback is a field, not more lines)."""

    def format(self, record: logging.LogRecord) -> str:
        request_id = getattr(record, "request_id", request_id_var.get())
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": None if request_id == "-" else request_id,
        }
        if tracing.enabled():
            ids = tracing.current_ids()
            line["trace_id"], line["span_id"] = ids if ids else (None, None)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(line, default=str).decode()


def configure(level: str = "INFO", fmt: LogFormat = "text") -> None:
    """Configures the root logger once, in a process's __main__."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestIdFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
