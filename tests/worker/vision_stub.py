"""A stand-in for an OpenAI-compatible vision endpoint (the one paid API the worker calls):
a local HTTP server speaking the chat-completions protocol. The `vision_server` fixture
(tests/conftest.py) serves one per test."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.support import serving_http

ANSWER = {
    "alt_text": "A grey wall with a red square in one corner",
    "caption": "Minimalist art on a gallery wall.",
    "tags": ["Gallery", "minimalism", "red square", "gallery"],
}


@dataclass
class VisionServer:
    """POST /v1/chat/completions answering `reply` (a string for the message content, or an
    int for an HTTP error status); records every request body."""

    reply: str | int = json.dumps(ANSWER)
    requests: list[dict[str, Any]] = field(default_factory=list)
    base_url: str = ""


def _handler(state: VisionServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.requests.append({"path": self.path, "body": json.loads(body)})
            if isinstance(state.reply, int):
                payload = json.dumps({"error": {"message": "model overloaded"}}).encode()
                self.send_response(state.reply)
            else:
                payload = json.dumps(
                    {
                        "id": "chatcmpl-test",
                        "object": "chat.completion",
                        "created": 0,
                        "model": "test-vision",
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": state.reply},
                                "finish_reason": "stop",
                            }
                        ],
                    }
                ).encode()
                self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def serving_vision() -> Iterator[VisionServer]:
    """A VisionServer on a free loopback port, for as long as the block runs."""
    state = VisionServer()
    with serving_http(_handler(state)) as server:
        state.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        yield state
