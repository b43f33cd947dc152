"""The "openai" provider against a local server that answers POST /v1/embeddings like OpenAI.

The server stands in for the paid API only; everything of ours runs for real, including the
openai client and its HTTP stack.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest

from vector_service.embeddings import (
    EmbedderConfig,
    EmbeddingError,
    EmbeddingUnavailable,
    create_embedder,
)
from vector_service.embeddings.openai_provider import OpenAIEmbedder

DIMENSIONS = 8
SECRET_TEXT = "my private draft about the surprise launch"

Body = Callable[[dict[str, Any]], object]


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: Body | None = None  # None: a correct answer to the request
    delay_s: float = 0.0
    raw: bytes | None = None  # sent as is instead of a JSON body


class FakeEmbeddingsServer:
    """Answers from a script of replies, then correctly; records every request body."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.authorizations: list[str | None] = []
        self.script: list[Reply] = []
        self.always: Reply | None = None
        self.native_dimensions = DIMENSIONS
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{port}/v1"
        # A short poll interval keeps shutdown() (and so each test's teardown) quick.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._closing.set()  # wakes handlers that are sleeping to provoke a timeout
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    @staticmethod
    def vector_for(text: str, dimensions: int) -> list[float]:
        rng = np.random.default_rng(zlib.crc32(text.encode()))
        vector = rng.normal(size=dimensions)
        return [float(x) for x in vector / np.linalg.norm(vector)]

    def correct_answer(self, request: dict[str, Any]) -> dict[str, Any]:
        dimensions = int(request.get("dimensions", self.native_dimensions))
        data = [
            {"object": "embedding", "index": i, "embedding": self.vector_for(text, dimensions)}
            for i, text in enumerate(request["input"])
        ]
        # Reversed on purpose: only the index field says which text a vector belongs to.
        return {
            "object": "list",
            "data": data[::-1],
            "model": request["model"],
            "usage": {"prompt_tokens": 1, "total_tokens": 1},
        }

    def _next_reply(self) -> Reply:
        with self._lock:
            if self.script:
                return self.script.pop(0)
            return self.always or Reply()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                request = json.loads(self.rfile.read(length))
                with server._lock:
                    server.requests.append(request)
                    server.authorizations.append(self.headers.get("Authorization"))
                reply = server._next_reply()
                if self.path != "/v1/embeddings":
                    reply = Reply(status=404, body=lambda _: {"error": {"message": "no route"}})
                if reply.delay_s and server._closing.wait(reply.delay_s):
                    return
                make_body = reply.body or server.correct_answer
                # allow_nan: the point of some tests is a server that sends NaN or Infinity.
                payload = reply.raw or json.dumps(make_body(request), allow_nan=True).encode()
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting, which is what a timeout test wants

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


def error_body(message: str, code: str) -> Body:
    return lambda _: {"error": {"message": message, "type": "error", "code": code}}


def vectors_body(vectors: list[list[float]]) -> Body:
    return lambda request: {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": vector}
            for i, vector in enumerate(vectors)
        ],
        "model": request["model"],
        "usage": {"prompt_tokens": 1, "total_tokens": 1},
    }


@pytest.fixture
def server() -> Iterator[FakeEmbeddingsServer]:
    fake = FakeEmbeddingsServer()
    yield fake
    fake.close()


@pytest.fixture
def make_embedder() -> Iterator[Callable[..., OpenAIEmbedder]]:
    made: list[OpenAIEmbedder] = []

    def make(base_url: str, **overrides: Any) -> OpenAIEmbedder:
        settings: dict[str, Any] = {
            "provider": "openai",
            "base_url": base_url,
            "api_key": "test-key",
            "model": "test-embed",
            "dimensions": DIMENSIONS,
            "timeout_s": 5.0,
            "max_retries": 2,
        }
        settings.update(overrides)
        embedder = OpenAIEmbedder(
            EmbedderConfig(**settings), backoff_initial_s=0.01, backoff_max_s=0.05
        )
        made.append(embedder)
        return embedder

    yield make
    for embedder in made:
        embedder.close()


def expected(texts: list[str], dimensions: int = DIMENSIONS) -> np.ndarray:
    return np.array(
        [FakeEmbeddingsServer.vector_for(t, dimensions) for t in texts], dtype=np.float32
    )


def test_vectors_come_back_in_input_order(
    server: FakeEmbeddingsServer, make_embedder: Callable[..., OpenAIEmbedder]
) -> None:
    texts = ["pricing", "about us", "contact"]

    vectors = make_embedder(server.url).embed(texts)

    assert vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, expected(texts), atol=1e-6)
    assert server.authorizations == ["Bearer test-key"]
    assert server.requests[0]["model"] == "test-embed"


def test_rate_limit_waits_for_retry_after_then_succeeds(
    server: FakeEmbeddingsServer, make_embedder: Callable[..., OpenAIEmbedder]
) -> None:
    server.script = [
        Reply(429, {"Retry-After": "1"}, error_body("Rate limit reached", "rate_limit_exceeded"))
    ]
    embedder = make_embedder(server.url)

    started = time.monotonic()
    vectors = embedder.embed(["hello"])
    elapsed = time.monotonic() - started

    np.testing.assert_allclose(vectors, expected(["hello"]), atol=1e-6)
    assert len(server.requests) == 2
    # The backoff alone would have waited about 0.01 s; the server asked for 1 s.
    assert elapsed >= 0.95


def test_server_error_is_retried(
    server: FakeEmbeddingsServer, make_embedder: Callable[..., OpenAIEmbedder]
) -> None:
    server.script = [Reply(500, body=error_body("The server had an error", "server_error"))]

    vectors = make_embedder(server.url).embed(["hello"])

    np.testing.assert_allclose(vectors, expected(["hello"]), atol=1e-6)
    assert len(server.requests) == 2


def test_persistent_server_error_makes_the_provider_unavailable(
    server: FakeEmbeddingsServer, make_embedder: Callable[..., OpenAIEmbedder]
) -> None:
    server.always = Reply(503, body=error_body("Overloaded", "server_overloaded"))

    with pytest.raises(EmbeddingUnavailable, match="503"):
        make_embedder(server.url, max_retries=3).embed(["hello"])

    assert len(server.requests) == 4


def test_client_error_is_not_retried_and_does_not_quote_the_text(
    server: FakeEmbeddingsServer, make_embedder: Callable[..., OpenAIEmbedder]
) -> None:
    server.always = Reply(
        400, body=error_body(f"Invalid input: {SECRET_TEXT!r} is too long", "invalid_input")
    )

    with pytest.raises(EmbeddingError) as raised:
        make_embedder(server.url).embed([SECRET_TEXT])

    assert not isinstance(raised.value, EmbeddingUnavailable)
    assert len(server.requests) == 1
    assert "400" in str(raised.value)
    chain: BaseException | None = raised.value
    while chain is not None:
        assert SECRET_TEXT not in str(chain)
        chain = chain.__cause__


@pytest.mark.parametrize(
    "vectors",
    [
        [[0.1] * (DIMENSIONS - 1), [0.1] * DIMENSIONS],
        [[0.1] * DIMENSIONS],
        [[0.1] * DIMENSIONS, [0.1] * DIMENSIONS, [0.1] * DIMENSIONS],
    ],
    ids=["wrong-length", "too-few", "too-many"],
)
def test_malformed_vectors_are_refused(
    server: FakeEmbeddingsServer,
    make_embedder: Callable[..., OpenAIEmbedder],
    vectors: list[list[float]],
) -> None:
    server.always = Reply(body=vectors_body(vectors))

    with pytest.raises(EmbeddingError) as raised:
        make_embedder(server.url).embed(["one", "two"])

    assert not isinstance(raised.value, EmbeddingUnavailable)
    assert len(server.requests) == 1


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 1e39], ids=["nan", "inf", "huge"])
def test_non_finite_values_are_refused(
    server: FakeEmbeddingsServer, make_embedder: Callable[..., OpenAIEmbedder], bad: float
) -> None:
    vector = [0.1] * DIMENSIONS
    vector[3] = bad
    server.always = Reply(body=vectors_body([vector]))

    with pytest.raises(EmbeddingError, match="NaN"):
        make_embedder(server.url).embed(["one"])


@pytest.mark.parametrize(
    "reply",
    [
        Reply(body=lambda _: {"object": "list", "model": "test-embed"}),
        Reply(raw=b"<html>Bad gateway</html>"),
        Reply(
            body=lambda request: {
                "object": "list",
                "data": [
                    {"object": "embedding", "index": 0, "embedding": [0.1] * DIMENSIONS},
                    {"object": "embedding", "index": 0, "embedding": [0.2] * DIMENSIONS},
                ],
                "model": request["model"],
            }
        ),
    ],
    ids=["no-data", "not-json", "index-repeated"],
)
def test_unreadable_answer_is_refused(
    server: FakeEmbeddingsServer, make_embedder: Callable[..., OpenAIEmbedder], reply: Reply
) -> None:
    server.always = reply

    with pytest.raises(EmbeddingError) as raised:
        make_embedder(server.url).embed(["one", "two"])

    assert not isinstance(raised.value, EmbeddingUnavailable)


def test_timeout_makes_the_provider_unavailable(
    server: FakeEmbeddingsServer, make_embedder: Callable[..., OpenAIEmbedder]
) -> None:
    server.always = Reply(delay_s=10)
    embedder = make_embedder(server.url, timeout_s=0.25, max_retries=1)

    started = time.monotonic()
    with pytest.raises(EmbeddingUnavailable, match=r"0\.25s"):
        embedder.embed(["hello"])

    assert time.monotonic() - started < 3
    assert len(server.requests) == 2


def test_unreachable_endpoint_makes_the_provider_unavailable(
    make_embedder: Callable[..., OpenAIEmbedder],
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]

    with pytest.raises(EmbeddingUnavailable):
        make_embedder(f"http://127.0.0.1:{closed_port}/v1", max_retries=1).embed(["hello"])


def test_texts_are_sent_in_batches_of_batch_size(
    server: FakeEmbeddingsServer, make_embedder: Callable[..., OpenAIEmbedder]
) -> None:
    texts = [f"page {i}" for i in range(10)]

    vectors = make_embedder(server.url, batch_size=4).embed(texts)

    assert [request["input"] for request in server.requests] == [
        texts[0:4],
        texts[4:8],
        texts[8:10],
    ]
    np.testing.assert_allclose(vectors, expected(texts), atol=1e-6)


def test_empty_input_sends_nothing(
    server: FakeEmbeddingsServer, make_embedder: Callable[..., OpenAIEmbedder]
) -> None:
    vectors = make_embedder(server.url).embed([])

    assert vectors.shape == (0, DIMENSIONS)
    assert server.requests == []


def test_dimensions_are_sent_only_when_they_change_the_size(
    server: FakeEmbeddingsServer,
) -> None:
    server.native_dimensions = 1536
    base = EmbedderConfig(
        provider="openai", base_url=server.url, api_key="k", model="text-embedding-3-small"
    )
    embedders = [
        create_embedder(base),
        create_embedder(replace(base, dimensions=1536)),  # as recorded for an existing table
        create_embedder(replace(base, dimensions=256)),
    ]
    try:
        assert [e.name for e in embedders] == ["openai"] * 3
        assert [e.embed(["a"]).shape for e in embedders] == [(1, 1536), (1, 1536), (1, 256)]
    finally:
        for embedder in embedders:
            assert isinstance(embedder, OpenAIEmbedder)
            embedder.close()

    assert [request.get("dimensions") for request in server.requests] == [None, None, 256]


@pytest.mark.parametrize(
    "config",
    [
        EmbedderConfig(provider="openai", api_key="k", model="some-unknown-model"),
        EmbedderConfig(provider="openai", api_key=""),
        EmbedderConfig(provider="openai", api_key="k", batch_size=0),
        EmbedderConfig(provider="openai", api_key="k", timeout_s=0),
    ],
    ids=["unknown-size", "no-key", "no-batch", "no-timeout"],
)
def test_unusable_configuration_is_refused_up_front(config: EmbedderConfig) -> None:
    with pytest.raises(EmbeddingError):
        create_embedder(config)


def test_api_key_is_not_shown_in_config_repr() -> None:
    assert "sk-secret" not in repr(EmbedderConfig(provider="openai", api_key="sk-secret"))
