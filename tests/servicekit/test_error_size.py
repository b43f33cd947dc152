"""An error quotes at most a short prefix of a value and always fits a default client's
metadata limit (8 KiB), however large the bad value (servicekit.error_size, errors.shown)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from loom.content.v1 import navigation_pb2, pages_pb2, settings_pb2

from servicekit import error_size
from servicekit.errors import FieldViolation, shown
from tests.content.service_stubs import nav, site_settings
from tests.content.tenants_and_pages import make_definition, make_page, make_tenant, struct
from tests.support import ContentServer, errors_of

HUGE = 3 * 1024 * 1024  # a few MiB: the values of the issue were up to 15 MiB in trailers


def _trailers_bytes(error: grpc.RpcError) -> int:
    call: Any = error
    return sum(len(k) + len(v) for k, v in call.trailing_metadata() or ())


def _check(call: Callable[[], Any], code: grpc.StatusCode) -> dict[str, Any]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    got = errors_of(info.value)  # type: ignore[arg-type]
    assert got["code"] == code, got  # not RESOURCE_EXHAUSTED "metadata ... exceeds hard limit"
    size = _trailers_bytes(info.value)  # type: ignore[arg-type]
    assert size < 6 * 1024, size
    return got


def test_huge_values_on_several_methods(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    hero = make_definition(t)
    page = make_page(t, hero.id)
    ascii_huge = "x" * HUGE
    wide_huge = "é" * (HUGE // 2)  # two bytes each, three times that percent-encoded

    got = _check(
        lambda: t.client.pages.CreatePage(
            pages_pb2.CreatePageRequest(
                environment_id=t.env_id, page=pages_pb2.Page(slug=ascii_huge, title="t")
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert got["fields"] == ["page.slug"]
    assert f"({HUGE} characters)" in got["message"]  # the prefix and the length, not the value

    got = _check(
        lambda: t.client.pages.GetPageBySlug(
            pages_pb2.GetPageBySlugRequest(environment_id=t.env_id, slug=wide_huge)
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    assert len(got["message"]) < 200

    # A JSON Schema failure quotes the content, and its field path is made of the content's
    # keys: both cut.
    got = _check(
        lambda: t.client.pages.UpdateSection(
            pages_pb2.UpdateSectionRequest(
                page_id=page.id,
                section_id=page.sections[0].id,
                content=struct({"title": 42, wide_huge[:300_000]: ascii_huge}),
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )

    # Many violations, each huge: as many as fit, and a note of how many more.
    items = [navigation_pb2.MenuItem(label=wide_huge[:20_000], url="ftp://x") for _ in range(150)]
    got = _check(
        lambda: nav(t).SetMenu(
            navigation_pb2.SetMenuRequest(
                environment_id=t.env_id, menu=navigation_pb2.Menu(name="main", items=items)
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert 1 < len(got["fields"]) < 150

    _check(
        lambda: site_settings(t).UpdateSiteSettings(
            settings_pb2.UpdateSiteSettingsRequest(
                site_settings=settings_pb2.SiteSettings(
                    environment_id=t.env_id, default_locale=wide_huge
                ),
                update_mask=field_mask_pb2.FieldMask(paths=["default_locale"]),
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    _check(
        lambda: t.client.pages.UpdatePage(
            pages_pb2.UpdatePageRequest(
                page=pages_pb2.Page(id=page.id),
                update_mask=field_mask_pb2.FieldMask(paths=[ascii_huge[:1_000_000], "zz"]),
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


def test_shown_quotes_a_prefix_and_the_length() -> None:
    assert shown("slug") == "'slug'"
    long = shown("a" * 5000)
    assert long.startswith("'" + "a" * 100 + "'…")
    assert "5000 characters" in long


def test_clip_keeps_whole_characters() -> None:
    text = "é" * 1000
    cut = error_size.clip(text, 101)
    assert len(cut.encode()) <= 101
    assert cut.endswith("…")
    assert "\ufffd" not in cut
    assert error_size.clip("short", 100) == "short"
    many = [FieldViolation("f" * 1000, "d" * 1000) for _ in range(100)]
    kept = error_size.violations(many)
    assert sum(len(v.field) + len(v.description) for v in kept) <= error_size.MAX_VIOLATIONS_BYTES
    assert kept[-1].description.startswith(f"{100 - len(kept) + 1} more")
