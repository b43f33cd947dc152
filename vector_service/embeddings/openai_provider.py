"""Embeddings from OpenAI or any server that speaks its POST /v1/embeddings.

Retries are ours rather than the client's (it is built with max_retries=0) so that the policy is
explicit and testable: 429, 5xx, timeouts and connection failures are retried with exponential
backoff, honouring Retry-After; other 4xx fail at once. Errors never quote the texts, and never
chain the client's exception when its message carries the response body, which may echo them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import numpy as np
import openai
import tenacity
from numpy.typing import NDArray

from vector_service.embeddings.base import (
    EmbedderConfig,
    EmbeddingError,
    EmbeddingUnavailable,
    validate_texts,
    validate_vectors,
)

__all__ = ["DEFAULT_MODEL", "KNOWN_DIMENSIONS", "OpenAIEmbedder"]

DEFAULT_MODEL = "text-embedding-3-small"
# Native sizes, used when EmbedderConfig.dimensions is 0; any other model needs it configured,
# since the table schema must be known before the first request.
KNOWN_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
_FLOAT32_MAX = float(np.finfo(np.float32).max)

_log = logging.getLogger(__name__)


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code == 429 or exc.status_code >= 500
    # APITimeoutError is a subclass.
    return isinstance(exc, openai.APIConnectionError)


def _retry_after_s(exc: BaseException | None) -> float | None:
    """The server's requested delay: retry-after-ms (OpenAI's), or Retry-After in s or a date."""
    if not isinstance(exc, openai.APIStatusError):
        return None
    headers = exc.response.headers
    milliseconds = headers.get("retry-after-ms")
    if milliseconds is not None:
        try:
            return max(0.0, float(milliseconds) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _clip(text: object) -> str:
    return str(text)[:64]


class OpenAIEmbedder:
    """The "openai" provider. Thread-safe; call close() (or use `with`) to free connections."""

    def __init__(
        self,
        config: EmbedderConfig,
        *,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 20.0,
        retry_after_max_s: float = 60.0,
    ) -> None:
        """backoff_* shape the exponential wait between retries when the server gives no
        Retry-After; retry_after_max_s caps how long a Retry-After may hold a request."""
        if config.batch_size < 1:
            raise EmbeddingError(f"batch_size must be at least 1, got {config.batch_size}")
        if config.max_retries < 0:
            raise EmbeddingError(f"max_retries must not be negative, got {config.max_retries}")
        if not config.timeout_s > 0:
            raise EmbeddingError(f"timeout_s must be positive, got {config.timeout_s}")
        if config.dimensions < 0:
            raise EmbeddingError(f"dimensions must not be negative, got {config.dimensions}")

        self.name = "openai"
        self.model = config.model or DEFAULT_MODEL
        if config.dimensions:
            self.dimensions = config.dimensions
        elif self.model in KNOWN_DIMENSIONS:
            self.dimensions = KNOWN_DIMENSIONS[self.model]
        else:
            raise EmbeddingError(
                f"the size of model {self.model!r} is unknown: configure its dimensions"
            )
        # Only sent when configured, and not when it is a known model's native size: older models
        # (ada-002) and some compatible servers reject the parameter.
        send_dimensions = config.dimensions and config.dimensions != KNOWN_DIMENSIONS.get(
            self.model
        )
        self._requested_dimensions: int | openai.Omit = (
            config.dimensions if send_dimensions else openai.omit
        )
        self._batch_size = config.batch_size
        self._timeout_s = config.timeout_s

        api_key = config.api_key
        if not api_key:
            if not config.base_url:
                raise EmbeddingError("the openai provider needs an API key")
            # Self-hosted compatible servers often need none, but the client insists on one.
            api_key = "unused"
        self._client = openai.OpenAI(
            api_key=api_key,
            base_url=config.base_url or None,
            timeout=config.timeout_s,
            max_retries=0,
        )

        self._backoff = tenacity.wait_exponential_jitter(
            multiplier=backoff_initial_s, max=backoff_max_s, jitter=backoff_initial_s
        )
        self._retry_after_max_s = retry_after_max_s
        self._retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(config.max_retries + 1),
            wait=self._wait,
            retry=tenacity.retry_if_exception(_is_transient),
            before_sleep=self._log_retry,
            reraise=True,
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> OpenAIEmbedder:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Embeds in requests of at most batch_size texts, in order.

        Raises EmbeddingUnavailable when the endpoint stays overloaded, failing or silent through
        every retry, and EmbeddingError for any other refusal or a malformed answer.
        """
        items = validate_texts(texts)
        out = np.empty((len(items), self.dimensions), dtype=np.float32)
        for start in range(0, len(items), self._batch_size):
            batch = items[start : start + self._batch_size]
            out[start : start + len(batch)] = self._embed_batch(batch)
        return validate_vectors(out, len(items), self.dimensions, self.name)

    def _embed_batch(self, batch: list[str]) -> NDArray[np.float32]:
        retrying = self._retrying.copy()
        try:
            response = retrying(self._request, batch)
        except openai.APIError as exc:
            attempts = retrying.statistics.get("attempt_number", 1)
            what = f"embedding request to model {self.model!r} failed after {attempts} attempt(s)"
            cause = exc if isinstance(exc, openai.APIConnectionError) else None
            if _is_transient(exc):
                raise EmbeddingUnavailable(f"{what}: {self._describe(exc)}") from cause
            raise EmbeddingError(f"{what}: {self._describe(exc)}") from cause
        except ValueError as exc:
            # A 200 whose body is not JSON, or not the expected shape; the message of such
            # errors can quote the body, so only the type is kept.
            raise EmbeddingError(
                f"embedding response from model {self.model!r} is unreadable ({type(exc).__name__})"
            ) from None
        return self._parse(response, len(batch))

    def _request(self, batch: list[str]) -> object:
        return self._client.embeddings.create(
            input=batch,
            model=self.model,
            dimensions=self._requested_dimensions,
            # Compatible servers do not all implement base64, and floats are easier to check.
            encoding_format="float",
        )

    def _wait(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        requested = _retry_after_s(exc)
        if requested is not None:
            return min(requested, self._retry_after_max_s)
        return self._backoff(state)

    def _log_retry(self, state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        delay = state.upcoming_sleep
        _log.warning(
            "embedding request to %s failed (%s); retry %d in %.2fs",
            self.model,
            self._describe(exc) if isinstance(exc, openai.APIError) else type(exc).__name__,
            state.attempt_number,
            delay,
        )

    def _describe(self, exc: openai.APIError) -> str:
        # Status, error code and request id identify a failure; the message is left out because
        # servers may quote the input in it.
        if isinstance(exc, openai.APIStatusError):
            parts = [f"HTTP {exc.status_code}"]
            if exc.code:
                parts.append(f"code {_clip(exc.code)}")
            elif exc.type:
                parts.append(f"type {_clip(exc.type)}")
            if exc.request_id:
                parts.append(f"request id {_clip(exc.request_id)}")
            return ", ".join(parts)
        if isinstance(exc, openai.APITimeoutError):
            return f"no answer within {self._timeout_s}s"
        if isinstance(exc, openai.APIConnectionError):
            return f"connection failed: {exc.__cause__ or exc}"
        return type(exc).__name__

    def _parse(self, response: object, expected: int) -> NDArray[np.float32]:
        data = getattr(response, "data", None)
        if not isinstance(data, list):
            raise EmbeddingError(f"embedding response has no data list ({type(response).__name__})")
        if len(data) != expected:
            raise EmbeddingError(f"asked for {expected} embeddings, the response has {len(data)}")
        rows = np.empty((expected, self.dimensions), dtype=np.float64)
        filled = np.zeros(expected, dtype=bool)
        for item in data:
            index = getattr(item, "index", None)
            vector = getattr(item, "embedding", None)
            # Position in `data` is not a promise; the index field is.
            if (
                not isinstance(index, int)
                or isinstance(index, bool)
                or not 0 <= index < expected
                or filled[index]
            ):
                raise EmbeddingError(
                    f"embedding response has a missing or repeated index {_clip(index)}"
                )
            if not isinstance(vector, list) or len(vector) != self.dimensions:
                size = len(vector) if isinstance(vector, list) else type(vector).__name__
                raise EmbeddingError(
                    f"embedding {index} has {size} values, expected {self.dimensions}"
                )
            try:
                rows[index] = vector
            except (TypeError, ValueError):
                raise EmbeddingError(f"embedding {index} holds non-numbers") from None
            filled[index] = True
        # Checked in float64 so that a value too large for float32 is refused, not turned to inf.
        bad = ~(np.abs(rows) <= _FLOAT32_MAX).all(axis=1)
        if bad.any():
            raise EmbeddingError(
                f"{int(bad.sum())} of {expected} embeddings hold NaN or out-of-range values"
            )
        return rows.astype(np.float32)
