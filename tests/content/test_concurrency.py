"""8 clients writing at once: no errors (no "database is locked"), no lost updates."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from google.protobuf import field_mask_pb2
from loom.content.v1 import pages_pb2

from tests.content.tenants_and_pages import make_definition, make_page, make_tenant, struct
from tests.support import ContentServer

CLIENTS = 8


def test_concurrent_creates_updates_and_section_adds_lose_nothing(
    content_server: ContentServer,
) -> None:
    t = make_tenant(content_server.admin)
    hero = make_definition(t)
    shared = make_page(t, hero.id, slug="shared", n_sections=0)
    per_client = 10

    def work(n: int) -> list[str]:
        slugs = []
        for i in range(per_client):
            page = make_page(t, hero.id, slug=f"c{n}-p{i}", n_sections=1)
            t.client.pages.UpdatePage(
                pages_pb2.UpdatePageRequest(
                    page=pages_pb2.Page(id=page.id, title=f"updated {n}-{i}"),
                    update_mask=field_mask_pb2.FieldMask(paths=["title"]),
                )
            )
            # Read-modify-write on one shared page: positions are computed inside the
            # transaction, so none may be lost or duplicated.
            t.client.pages.AddSection(
                pages_pb2.AddSectionRequest(
                    page_id=shared.id,
                    section=pages_pb2.Section(
                        definition_id=hero.id, content=struct({"title": f"{n}-{i}"})
                    ),
                )
            )
            slugs.append(page.slug)
        return slugs

    with ThreadPoolExecutor(CLIENTS) as pool:
        results = list(pool.map(work, range(CLIENTS)))  # any RpcError propagates and fails

    created = {slug for r in results for slug in r}
    assert len(created) == CLIENTS * per_client
    listed, token = [], ""
    while True:
        resp = t.client.pages.ListPages(
            pages_pb2.ListPagesRequest(environment_id=t.env_id, page_size=100, page_token=token)
        )
        listed += list(resp.pages)
        token = resp.next_page_token
        if not token:
            break
    assert {p.slug for p in listed} == created | {"shared"}
    assert all(p.title.startswith("updated") for p in listed if p.slug != "shared")
    final = t.client.pages.GetPage(pages_pb2.GetPageRequest(id=shared.id))
    assert sorted(s.content["title"] for s in final.sections) == sorted(
        f"{n}-{i}" for n in range(CLIENTS) for i in range(per_client)
    )
    assert [s.position for s in final.sections] == list(range(CLIENTS * per_client))
