"""SiteSettingsService: defaults until written, typed fields, free JSON, update masks."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import field_mask_pb2
from loom.content.v1 import settings_pb2
from sqlalchemy import text

from tests.content.service_stubs import site_settings
from tests.content.tenants_and_pages import Tenant, make_tenant, struct
from tests.support import ContentServer, raises_status


def update(t: Tenant, paths: list[str], **fields: Any) -> settings_pb2.SiteSettings:
    return site_settings(t).UpdateSiteSettings(
        settings_pb2.UpdateSiteSettingsRequest(
            site_settings=settings_pb2.SiteSettings(environment_id=t.env_id, **fields),
            update_mask=field_mask_pb2.FieldMask(paths=paths),
        )
    )


def test_defaults_until_set_then_masked_updates(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    get = settings_pb2.GetSiteSettingsRequest(environment_id=t.env_id)
    defaults = site_settings(t).GetSiteSettings(get)
    assert defaults.site_name == "acme site"  # the site's name
    assert defaults.default_locale == "en"
    assert defaults.theme == "default"
    assert defaults.site_id == t.site_id
    assert not defaults.HasField("update_time")
    assert dict(defaults.extra) == {}

    first = update(
        t,
        ["seo_title", "extra"],
        seo_title="Acme: tools",
        theme="ignored",
        extra=struct({"analytics": {"id": "G-1"}, "flags": [1, 2]}),
    )
    assert first.seo_title == "Acme: tools"
    assert first.theme == "default"
    assert first.extra["analytics"]["id"] == "G-1"
    assert first.HasField("update_time")
    second = update(t, ["default_locale", "theme"], default_locale="pt-br", theme="dark")
    assert second.default_locale == "pt-BR"
    assert second.theme == "dark"
    assert second.seo_title == "Acme: tools"  # untouched
    assert site_settings(t).GetSiteSettings(get) == second
    everything = update(t, [], site_name="New", default_locale="zh-hant-tw")
    assert everything.site_name == "New"
    assert everything.default_locale == "zh-Hant-TW"
    assert everything.seo_title == ""  # an empty mask sets every field
    assert dict(everything.extra) == {}


def test_bad_settings_name_the_field_and_write_nothing(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    cases = [
        (["default_locale"], {"default_locale": "english"}, "site_settings.default_locale"),
        (["default_locale"], {"default_locale": "en_US"}, "site_settings.default_locale"),
        (["default_locale"], {"default_locale": ""}, "site_settings.default_locale"),
        (["site_name"], {"site_name": "x" * 201}, "site_settings.site_name"),
        (["theme"], {"theme": "t" * 101}, "site_settings.theme"),
        (["seo_description"], {"seo_description": "d" * 2001}, "site_settings.seo_description"),
        (["extra"], {"extra": struct({"blob": "x" * 70_000})}, "site_settings.extra"),
        (["colour"], {}, "update_mask"),
    ]
    for paths, fields, field in cases:
        with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
            update(t, paths, **fields)
        assert err["fields"] == [field], fields
    with content_server.db.read() as s:
        assert s.execute(text("select count(*) from site_settings")).scalar() == 0
    for good in ("en", "en-US", "es-419", "sr-Latn-RS", "de-CH-1996"):
        assert update(t, ["default_locale"], default_locale=good).default_locale == good


def test_another_teams_settings_are_not_found(content_server: ContentServer) -> None:
    acme = make_tenant(content_server.admin, "acme")
    other = make_tenant(content_server.admin, "other")
    with raises_status(grpc.StatusCode.NOT_FOUND):
        site_settings(other).GetSiteSettings(
            settings_pb2.GetSiteSettingsRequest(environment_id=acme.env_id)
        )
    with raises_status(grpc.StatusCode.NOT_FOUND):
        site_settings(other).UpdateSiteSettings(
            settings_pb2.UpdateSiteSettingsRequest(
                site_settings=settings_pb2.SiteSettings(environment_id=acme.env_id, theme="x")
            )
        )
