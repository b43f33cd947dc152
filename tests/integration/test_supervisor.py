"""`make run`'s supervisor (python -m servicekit.stack): its processes never outlive it, and a
port that is already taken is one clear line, not a traceback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from servicekit.lifeline import ENV, Lifeline
from tests.integration.stack import OWN_PREFIXES, ROOT
from tests.support import wait_until


def clean_env(data_dir: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(OWN_PREFIXES)}
    return {
        **env,
        "DATA_DIR": str(data_dir),
        "VECTOR_EMBEDDER": "hash",
        "CONTENT_GRACE_SECONDS": "1",
        "VECTOR_GRACE_SECONDS": "1",
        "WORKER_GRACE_SECONDS": "1",
        # Never the default media port, which a running `make run` may hold.
        "CONTENT_MEDIA_HTTP_PORT": "0",
        **settings,
    }


@contextmanager
def listening() -> Iterator[int]:
    """A port something listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def children_of(supervisor: int) -> set[int]:
    """The processes started under this supervisor (they carry its pid in LOOM_SUPERVISOR_PID)."""
    marker = f"{ENV}={supervisor}".encode()
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                found.add(int(entry.name))
        except OSError:
            continue  # gone meanwhile, or not ours to read
    return found


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_lifeline_sees_its_supervisor_exit() -> None:
    supervisor = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        line = Lifeline(supervisor.pid)
        assert not line.gone()
        supervisor.kill()
        wait_until(line.gone, timeout=10, what="the lifeline to see the exit")  # before reaping
    finally:
        supervisor.kill()
        supervisor.wait()
    assert not Lifeline(None).gone()  # no supervisor: never gone


def test_services_stop_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    env = clean_env(tmp_path / "data", CONTENT_PORT="0", VECTOR_PORT="0")
    stack = subprocess.Popen(
        [sys.executable, "-m", "servicekit.stack"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert stack.stdout is not None
    services: set[int] = set()
    try:
        seen: list[str] = []
        deadline = time.monotonic() + 90
        while sum("listening on port" in line for line in seen) < 2:
            line = stack.stdout.readline()
            assert line, "the stack ended early:\n" + "".join(seen)
            seen.append(line)
            assert time.monotonic() < deadline, "the stack did not start:\n" + "".join(seen)
        commands = {
            pid: (Path("/proc") / str(pid) / "cmdline").read_bytes()
            for pid in children_of(stack.pid)
        }
        services = {pid for pid, cmd in commands.items() if b"-m\0" in cmd}
        started = {cmd.split(b"-m\0")[1].split(b"\0")[0] for cmd in commands.values()}
        assert {b"content_service", b"vector_service", b"image_worker"} <= started

        stack.send_signal(signal.SIGKILL)
        stack.wait()
        wait_until(
            lambda: not any(alive(pid) for pid in services),
            timeout=30,
            what="every service to stop after the supervisor was killed",
        )
    finally:
        stack.kill()
        stack.wait()
        stack.stdout.close()
        for pid in services:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_taken_port_is_one_line_from_the_supervisor(tmp_path: Path) -> None:
    with listening() as port:
        run = subprocess.run(
            [sys.executable, "-m", "servicekit.stack"],
            cwd=ROOT,
            env=clean_env(tmp_path / "data", CONTENT_PORT=str(port)),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert run.returncode != 0
    lines = [line for line in (run.stdout + run.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert str(port) in lines[0]
    assert "CONTENT_PORT" in lines[0]


@pytest.mark.parametrize(
    ("module", "setting"),
    [
        ("content_service", "CONTENT_PORT"),
        ("content_service", "CONTENT_MEDIA_HTTP_PORT"),
        ("vector_service", "VECTOR_PORT"),
    ],
)
def test_a_service_on_a_taken_port_says_which_setting_moves_it(
    tmp_path: Path, module: str, setting: str
) -> None:
    env = clean_env(tmp_path / "data", **{"CONTENT_PORT": "0", "VECTOR_PORT": "0", setting: "0"})
    if module == "content_service":
        subprocess.run(
            [sys.executable, "-m", "content_service", "migrate"], cwd=ROOT, env=env, check=True
        )
    with listening() as port:
        run = subprocess.run(
            [sys.executable, "-m", module],
            cwd=ROOT,
            env={**env, setting: str(port)},
            capture_output=True,
            text=True,
            timeout=90,
        )
    output = run.stdout + run.stderr
    assert run.returncode == 2, output
    assert "Traceback" not in output
    assert f"127.0.0.1:{port} is already in use" in output
    assert setting in output
