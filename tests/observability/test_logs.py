"""LOG_FORMAT=json: one JSON object per line with time, level, logger, message, request id and,
with tracing on, the trace and span ids; text stays the default."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import grpc
import pytest
from loom.content.v1 import pages_pb2

from servicekit import logs, tracing
from servicekit.settings import ServiceSettings
from tests.content.tenants_and_pages import make_tenant
from tests.observability.conftest import Spans
from tests.support import ContentServerFactory, raises_status

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def backend() -> str:
    return "sqlite"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """logs.configure replaces the root logger's handlers; put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def _lines(err: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in err.splitlines() if line.strip()]


def test_json_lines(capsys: pytest.CaptureFixture[str], restore_logging: None) -> None:
    logs.configure("INFO", "json")
    log = logging.getLogger("loom.test")
    token = logs.request_id_var.set("req-json-1")
    try:
        log.info("hello %s", "world")
        try:
            raise ValueError("broken\nacross lines")
        except ValueError:
            log.exception("it failed")
    finally:
        logs.request_id_var.reset(token)
    log.debug("below the level")
    log.warning("outside a call")
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 3  # a traceback stays inside its line
    hello, failed, outside = _lines(err)
    assert hello == {
        "time": hello["time"],
        "level": "INFO",
        "logger": "loom.test",
        "message": "hello world",
        "request_id": "req-json-1",
    }
    assert datetime.fromisoformat(str(hello["time"])).utcoffset() is not None
    assert failed["level"] == "ERROR"
    assert "ValueError: broken\nacross lines" in str(failed["exception"])
    assert outside["request_id"] is None
    assert "trace_id" not in outside  # tracing is off


def test_text_stays_the_default(
    capsys: pytest.CaptureFixture[str], restore_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LOG_FORMAT", raising=False)
    settings = ServiceSettings()
    assert settings.log_format == "text"
    logs.configure(settings.log_level, settings.log_format)
    token = logs.request_id_var.set("req-text")
    try:
        logging.getLogger("loom.test").info("plain")
    finally:
        logs.request_id_var.reset(token)
    line = capsys.readouterr().err.strip()
    assert line.endswith("INFO loom.test [req-text] plain")


def test_a_calls_log_lines_carry_its_request_and_trace_ids(
    spans: Spans,
    content_servers: ContentServerFactory,
    capsys: pytest.CaptureFixture[str],
    restore_logging: None,
) -> None:
    server = content_servers()
    tenant = make_tenant(server.admin)
    logs.configure("INFO", "json")
    with raises_status(grpc.StatusCode.NOT_FOUND):
        tenant.client.pages.GetPage(
            pages_pb2.GetPageRequest(id="missing"),
            metadata=(("authorization", f"Bearer {tenant.key}"), ("x-request-id", "req-404")),
        )
    call = spans.one("loom.content.v1.PageService/GetPage")
    lines = [line for line in _lines(capsys.readouterr().err) if line["request_id"] == "req-404"]
    assert lines, "the edge logs the NOT_FOUND"
    assert {line["trace_id"] for line in lines} == {f"{call.context.trace_id:032x}"}
    assert {line["span_id"] for line in lines} == {f"{call.context.span_id:016x}"}
    assert tracing.enabled()


def test_a_process_started_with_log_format_json_logs_json(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONTENT_", "LOG_", "LOOM_"))}
    env.update(DATA_DIR=str(tmp_path), LOG_FORMAT="json")
    done = subprocess.run(
        [sys.executable, "-m", "content_service", "migrate"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = _lines(done.stderr)
    assert lines
    assert {"time", "level", "logger", "message", "request_id"} <= set(lines[-1])
    assert "is up to date" in str(lines[-1]["message"])


def test_a_taken_metrics_port_is_one_line_naming_its_setting(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("CONTENT_", "WORKER_", "LOG_", "LOOM_"))
        }
        env.update(DATA_DIR=str(tmp_path), WORKER_METRICS_PORT=str(port))
        done = subprocess.run(
            [sys.executable, "-m", "image_worker"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert f"127.0.0.1:{port} is already in use; set WORKER_METRICS_PORT" in lines[0]
