"""Alt text, a caption and tags from a vision model behind an OpenAI-compatible
chat-completions endpoint (OpenAI, vLLM, Ollama, llama.cpp server, ...).

Optional: without WORKER_VISION_BASE_URL there is no client and nothing is asked. Vision is an
extra, never a reason to fail an image: every failure (timeout, refusal, an answer that is not
the JSON we asked for) is logged and the job goes on without it.

The model sees a JPEG preview (at most 768 px) made from one of our own variants: JPEG because
every compatible server accepts it (not all take WebP or AVIF), and small because vision
models scale images down anyway while the request size and latency grow with the bytes.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from PIL import Image

from image_worker.processing import Variant

if TYPE_CHECKING:
    import openai

    from image_worker.settings import WorkerSettings

__all__ = ["DEFAULT_MODEL", "Description", "VisionClient", "create_vision", "preview_jpeg"]

log = logging.getLogger(__name__)

DEFAULT_MODEL: Final = "gpt-4o-mini"
# content_service's limit for alt text.
MAX_ALT_TEXT: Final = 2000
MAX_CAPTION: Final = 2000
MAX_TAGS: Final = 12
MAX_TAG: Final = 64
_PREVIEW_SIDE: Final = 768
_PREVIEW_MIN_WIDTH: Final = 512
_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)

_PROMPT: Final = (
    "Describe this image for a website. Answer with only a JSON object, no other text:\n"
    '{"alt_text": "<one sentence for a screen reader, at most 125 characters>", '
    '"caption": "<one or two sentences>", '
    '"tags": ["<up to 8 short lowercase keywords>"]}\n'
    "The file is named {filename}."
)


@dataclass(frozen=True)
class Description:
    alt_text: str
    caption: str
    tags: tuple[str, ...]


def _one_line(value: object, limit: int) -> str:
    if not isinstance(value, str):
        return ""
    return " ".join(value.split())[:limit]


def parse_answer(content: str) -> Description | None:
    """The model's JSON answer, tolerating code fences and chatter around it."""
    match = _JSON_OBJECT.search(content)
    if match is None:
        return None
    try:
        data = json.loads(match.group(0))
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    tags: list[str] = []
    raw_tags = data.get("tags")
    for tag in raw_tags if isinstance(raw_tags, list) else []:
        text = _one_line(tag, MAX_TAG).lower()
        if text and text not in tags:
            tags.append(text)
    described = Description(
        alt_text=_one_line(data.get("alt_text") or data.get("alt"), MAX_ALT_TEXT),
        caption=_one_line(data.get("caption"), MAX_CAPTION),
        tags=tuple(tags[:MAX_TAGS]),
    )
    if not (described.alt_text or described.caption or described.tags):
        return None
    return described


def preview_jpeg(variants: Sequence[Variant]) -> bytes:
    """A JPEG of at most 768 px from the narrowest variant at least 512 px wide (or the widest
    there is), flattened on white."""
    if not variants:
        raise ValueError("no variants to preview")
    ordered = sorted(variants, key=lambda v: v.width)
    chosen = next((v for v in ordered if v.width >= _PREVIEW_MIN_WIDTH), ordered[-1])
    with Image.open(io.BytesIO(chosen.data), formats=[chosen.format.upper()]) as image:
        image.load()
        picture = image.convert("RGBA")
    flat = Image.new("RGB", picture.size, (255, 255, 255))
    flat.paste(picture, mask=picture.getchannel("A"))
    flat.thumbnail((_PREVIEW_SIDE, _PREVIEW_SIDE), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    flat.save(out, "JPEG", quality=85)
    return out.getvalue()


class VisionClient:
    """Thread-safe (the OpenAI client is); close() frees its connections."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str = "",
        model: str = "",
        timeout: float = 30.0,
        max_retries: int = 2,
    ) -> None:
        # Imported here: the openai package takes most of a second to import, and most
        # workers run without vision.
        import openai

        self.model = model or DEFAULT_MODEL
        # The client's own retries: 408/409/429/5xx and connection failures, with exponential
        # backoff that honours Retry-After; other answers fail at once.
        self._client: openai.OpenAI = openai.OpenAI(
            base_url=base_url,
            # Self-hosted compatible servers often need no key, but the client insists on one.
            api_key=api_key or "unused",
            timeout=timeout,
            max_retries=max_retries,
        )

    def close(self) -> None:
        self._client.close()

    def describe(self, variants: Sequence[Variant], *, filename: str) -> Description | None:
        """What the model sees in the image, or None when it could not tell us (logged)."""
        try:
            preview = preview_jpeg(variants)
            content = self._ask(preview, filename)
        except Exception as exc:  # noqa: BLE001 - vision must never fail the image
            # The message only: the client's errors can carry the response body.
            log.warning(
                "vision model %s gave no description: %s: %s",
                self.model,
                type(exc).__name__,
                str(exc)[:200],
            )
            return None
        described = parse_answer(content)
        if described is None:
            log.warning(
                "vision model %s answered without the JSON asked for (%d characters)",
                self.model,
                len(content),
            )
        return described

    def _ask(self, preview: bytes, filename: str) -> str:
        url = "data:image/jpeg;base64," + base64.b64encode(preview).decode("ascii")
        messages: Any = [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": _PROMPT.replace("{filename}", json.dumps(filename))},
                    {"type": "image_url", "image_url": {"url": url}},
                ],
            }
        ]
        response = self._client.chat.completions.create(model=self.model, messages=messages)
        if not response.choices:
            return ""
        return response.choices[0].message.content or ""


def create_vision(settings: WorkerSettings) -> VisionClient | None:
    if not settings.vision_enabled:
        return None
    return VisionClient(
        settings.vision_base_url,
        api_key=settings.vision_api_key,
        model=settings.vision_model,
        timeout=settings.vision_timeout_seconds,
        max_retries=settings.vision_max_retries,
    )
