"""The integration suite: the stack's real processes, driven through their public gRPC API.

By default a session fixture starts every process of `servicekit.stack.PROCESSES` (with the
same commands `make run` and docker-compose use) on free ports. To target a stack that is
already running (docker-compose, say):

    pytest tests/integration --stack-address content=127.0.0.1:50051,vector=127.0.0.1:50052 \
        --stack-admin-key "$KEY" --stack-worker

or the same through LOOM_STACK_CONTENT, LOOM_STACK_VECTOR, LOOM_STACK_ADMIN_KEY and
LOOM_STACK_WORKER=1 (these also work from the repository root, where pytest does not read
this file's command-line options).

Tests marked `needs_vector` / `needs_worker` are skipped, with the reason, only while the
stack has no such process; once it is in PROCESSES it must come up healthy or the session
fails. `needs_indexing` waits, the same way, for content_service to have a vector_service
address setting (its index outbox dispatcher)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import grpc
import pytest

from servicekit.stack import PROCESSES
from tests.integration.stack import (
    LocalStack,
    StackError,
    StackInfo,
    content_vector_address_env,
    modules,
    parse_addresses,
)
from tests.support import Clients

WAITING_LOCAL = {
    "needs_vector": "waiting on vector_service: servicekit.stack.PROCESSES has no `python -m "
    "vector_service` entry yet",
    "needs_worker": "waiting on image_worker: servicekit.stack.PROCESSES has no `python -m "
    "image_worker` entry yet",
}
WAITING_EXTERNAL = {
    "needs_vector": "the target stack has no vector address (--stack-address vector=HOST:PORT "
    "or LOOM_STACK_VECTOR)",
    "needs_worker": "the target stack was not declared to run image_worker (--stack-worker or "
    "LOOM_STACK_WORKER=1)",
}
WAITING_INDEXING = (
    "waiting on content_service's index outbox dispatcher: ContentSettings has no vector_service "
    "address setting yet, so nothing delivers pages to vector_service"
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("loom integration")
    group.addoption(
        "--stack-address",
        default=None,
        help="target a running stack: content=HOST:PORT[,vector=HOST:PORT] "
        "(env LOOM_STACK_CONTENT / LOOM_STACK_VECTOR)",
    )
    group.addoption(
        "--stack-admin-key", default=None, help="its admin key (env LOOM_STACK_ADMIN_KEY)"
    )
    group.addoption(
        "--stack-worker",
        action="store_true",
        default=False,
        help="it runs image_worker (env LOOM_STACK_WORKER=1)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "needs_vector: the test needs vector_service in the stack under test"
    )
    config.addinivalue_line(
        "markers", "needs_worker: the test needs image_worker in the stack under test"
    )
    config.addinivalue_line(
        "markers",
        "needs_indexing: the test needs content_service to deliver its index outbox to "
        "vector_service",
    )


def external_target(config: pytest.Config) -> dict[str, str] | None:
    """The addresses of an existing stack, or None to start one here."""
    option = config.getoption("stack_address", default=None)
    if option:
        return parse_addresses(option)
    content = os.environ.get("LOOM_STACK_CONTENT")
    if not content:
        return None
    out = {"content": content}
    if os.environ.get("LOOM_STACK_VECTOR"):
        out["vector"] = os.environ["LOOM_STACK_VECTOR"]
    return out


def external_worker(config: pytest.Config) -> bool:
    return bool(config.getoption("stack_worker", default=False)) or os.environ.get(
        "LOOM_STACK_WORKER", ""
    ) not in ("", "0")


def waiting_reason(config: pytest.Config, marker: str) -> str | None:
    """Why a test with this marker cannot run against the stack under test, or None."""
    target = external_target(config)
    if marker == "needs_indexing":
        return None if content_vector_address_env() else WAITING_INDEXING
    if target is None:
        module = {"needs_vector": "vector_service", "needs_worker": "image_worker"}[marker]
        return None if module in modules(PROCESSES) else WAITING_LOCAL[marker]
    if marker == "needs_vector":
        return None if "vector" in target else WAITING_EXTERNAL[marker]
    return None if external_worker(config) else WAITING_EXTERNAL[marker]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for marker in ("needs_vector", "needs_worker", "needs_indexing"):
            if item.get_closest_marker(marker) is None:
                continue
            reason = waiting_reason(config, marker)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))
                break


@pytest.fixture(scope="session")
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StackInfo]:
    config = request.config
    target = external_target(config)
    if target is not None:
        key = config.getoption("stack_admin_key", default=None) or os.environ.get(
            "LOOM_STACK_ADMIN_KEY"
        )
        if not key:
            pytest.fail(
                "an existing stack needs its admin key: --stack-admin-key or "
                "LOOM_STACK_ADMIN_KEY (compose: docker-compose exec -T content_service "
                "cat /data/admin.key)",
                pytrace=False,
            )
        yield StackInfo(
            content=target["content"],
            vector=target.get("vector"),
            admin_key=key,
            worker=external_worker(config),
        )
        return
    local = LocalStack(PROCESSES, tmp_path_factory.mktemp("stack-data"))
    try:
        info = local.start()
    except StackError as exc:
        local.stop()
        pytest.fail(f"the stack did not start: {exc}", pytrace=False)
    yield info
    codes = local.stop()
    unclean = {name: code for name, code in codes.items() if code != 0}
    if unclean:
        pytest.fail(
            f"processes did not stop cleanly on SIGTERM (exit codes {unclean}); their logs "
            f"are under {local.data_dir}",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def content_channel(stack: StackInfo) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(stack.content) as channel:
        yield channel


@pytest.fixture(scope="session")
def vector_channel(stack: StackInfo) -> Iterator[grpc.Channel]:
    if stack.vector is None:
        pytest.fail("this test needs vector_service but the stack has none", pytrace=False)
    with grpc.insecure_channel(stack.vector) as channel:
        yield channel


@pytest.fixture(scope="session")
def admin(stack: StackInfo, content_channel: grpc.Channel) -> Clients:
    return Clients(content_channel, stack.admin_key)
