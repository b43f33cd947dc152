"""A real S3-compatible server for tests: moto's server mode (`moto[server]`) in its own
process on a free loopback port, behind a tests.forwarder.Forwarder that a fault test can cut
and resume (the store "down" from the clients' side, its data kept, which restarting moto would
lose: it holds objects in memory)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.forwarder import Forwarder

REGION = "us-east-1"
ACCESS_KEY = "loom-test-access"
SECRET_KEY = "loom-test-secret"  # moto accepts any credentials


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _moto_answers(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


@dataclass
class S3Server:
    """A running moto server behind a Forwarder. `endpoint` is the gate's URL (what services
    are given); `bucket()` makes a new bucket; `env()` is the standard AWS_* variables."""

    process: subprocess.Popen[bytes]
    moto_port: int
    gate: Forwarder

    @property
    def endpoint(self) -> str:
        return f"http://{self.gate.address}"

    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ENDPOINT": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
        }

    def client(self):  # type: ignore[no-untyped-def]  # boto3 ships no stubs
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{self.moto_port}",
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )

    def bucket(self, prefix: str = "loom") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def down(self) -> None:
        self.gate.cut()

    def up(self) -> None:
        self.gate.resume()


@contextmanager
def serving_s3(log_dir: Path | None = None) -> Iterator[S3Server]:
    """moto's S3 server in its own process for as long as the block runs."""
    port = free_port()
    log = open(log_dir / "moto.log", "wb") if log_dir else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "true"},
    )
    gate: Forwarder | None = None
    try:
        deadline = time.monotonic() + 30
        while not _moto_answers(f"http://127.0.0.1:{port}"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto server did not start on port {port}")
            time.sleep(0.05)
        gate = Forwarder(f"127.0.0.1:{port}")
        yield S3Server(process=process, moto_port=port, gate=gate)
    finally:
        if gate is not None:
            gate.cut()
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if log is not subprocess.DEVNULL:
            log.close()  # type: ignore[union-attr]
