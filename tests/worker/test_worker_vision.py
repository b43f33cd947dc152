"""Vision: alt text, caption and tags from a local server that speaks OpenAI's
chat-completions protocol; and the image is completed whatever that server does."""

from __future__ import annotations

import base64
import io
import json

import pytest
from google.protobuf import json_format
from PIL import Image as PILImage

from image_worker.vision import parse_answer
from tests.worker import images
from tests.worker.conftest import Image, Stack
from tests.worker.vision_stub import ANSWER, VisionServer


def test_vision_fills_missing_alt_text_and_adds_caption_and_tags(
    stack: Stack, vision_server: VisionServer
) -> None:
    worker = stack.start_worker(
        vision_base_url=vision_server.base_url, vision_model="test-vision", concurrency=1
    )
    bare = stack.upload(images.oriented_jpeg_with_gps(), "exhibit.jpg")
    described = stack.upload(
        images.photo_jpeg(200, 100), "given.jpg", alt_text="Alt text from the uploader"
    )

    image = stack.wait_for(bare.id)
    assert image.state == Image.STATE_COMPLETED, image.error
    assert image.alt_text == ANSWER["alt_text"]
    metadata = json_format.MessageToDict(image.metadata)
    assert metadata["caption"] == ANSWER["caption"]
    assert metadata["tags"] == ["gallery", "minimalism", "red square"]
    # The uploader's alt text wins over the model's.
    kept = stack.wait_for(described.id)
    assert kept.alt_text == "Alt text from the uploader"

    # The model got a JPEG preview and our model name.
    request = vision_server.requests[0]
    assert request["path"] == "/v1/chat/completions"
    assert request["body"]["model"] == "test-vision"
    parts = request["body"]["messages"][0]["content"]
    url = next(p["image_url"]["url"] for p in parts if p["type"] == "image_url")
    assert url.startswith("data:image/jpeg;base64,")
    preview = PILImage.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert preview.format == "JPEG"
    assert max(preview.size) <= 768
    assert "exhibit.jpg" in next(p["text"] for p in parts if p["type"] == "text")

    # Caption and tags are searchable (the model said the same of both images).
    texts = {h.document.id: h.document.text for h in stack.search("minimalism")}
    assert set(texts) == {image.id, kept.id}
    assert ANSWER["alt_text"] in texts[image.id]
    assert "Alt text from the uploader" in texts[kept.id]
    assert "tags: gallery, minimalism, red square" in texts[kept.id]
    assert worker.stats.completed == 2


@pytest.mark.parametrize("reply", [500, "I am sorry, I cannot describe images."])
def test_a_failing_vision_model_never_fails_the_image(
    stack: Stack, vision_server: VisionServer, reply: str | int
) -> None:
    vision_server.reply = reply
    stack.start_worker(vision_base_url=vision_server.base_url, vision_max_retries=1)
    uploaded = stack.upload(images.photo_jpeg(200, 100), "undescribed.jpg")

    image = stack.wait_for(uploaded.id)

    assert image.state == Image.STATE_COMPLETED, image.error
    assert image.alt_text == ""
    assert "caption" not in json_format.MessageToDict(image.metadata)
    # A 500 is retried by the client once; an unusable answer is not.
    assert len(vision_server.requests) == (2 if reply == 500 else 1)


def test_without_a_vision_endpoint_the_image_completes_without_alt_text(stack: Stack) -> None:
    stack.start_worker()
    uploaded = stack.upload(images.photo_jpeg(200, 100), "plain.jpg")
    image = stack.wait_for(uploaded.id)
    assert (image.state, image.alt_text) == (Image.STATE_COMPLETED, "")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (json.dumps(ANSWER), ("A grey wall with a red square in one corner", 3)),
        ('```json\n{"alt_text": "A dog", "tags": "not a list"}\n```', ("A dog", 0)),
        (
            'Sure! {"alt": "  A\\n cat  ", "caption": 7, "tags": ["x", 3, ""]} Hope it helps.',
            ("A cat", 1),
        ),
        ("no json here", None),
        ('{"alt_text": ""}', None),
        ('{"alt_text": "unterminated', None),
        ("[1, 2]", None),
    ],
)
def test_parse_answer_tolerates_chatter_and_checks_types(
    content: str, expected: tuple[str, int] | None
) -> None:
    described = parse_answer(content)
    if expected is None:
        assert described is None
    else:
        assert described is not None
        assert (described.alt_text, len(described.tags)) == expected
