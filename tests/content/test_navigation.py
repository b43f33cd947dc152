"""NavigationService: named menus, trees of items pointing at pages or URLs."""

from __future__ import annotations

import grpc
from loom.content.v1 import navigation_pb2, pages_pb2, tenancy_pb2
from sqlalchemy import text

from tests.content.service_stubs import collect, nav
from tests.content.tenants_and_pages import Tenant, make_definition, make_page, make_tenant
from tests.support import ContentServer, raises_status

Item = navigation_pb2.MenuItem


def set_menu(t: Tenant, name: str, items: list[navigation_pb2.MenuItem]) -> navigation_pb2.Menu:
    return nav(t).SetMenu(
        navigation_pb2.SetMenuRequest(
            environment_id=t.env_id, menu=navigation_pb2.Menu(name=name, items=items)
        )
    )


def test_set_get_list_and_replace_a_menu_tree(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    hero = make_definition(t)
    home = make_page(t, hero.id, slug="home")
    pricing = make_page(t, hero.id, slug="pricing")
    items = [
        Item(label="Home", page_id=home.id),
        Item(
            label="Product",
            children=[
                Item(label="Pricing", page_id=pricing.id),
                Item(label="Docs", url="https://docs.example.com/start?x=1#top"),
                Item(label="FAQ", url="/pricing#faq"),
            ],
        ),
        Item(label="Contact", url="mailto:hello@example.com"),
        Item(label="Top", url="#top"),
    ]
    menu = set_menu(t, "main", items)
    assert menu.name == "main"
    assert menu.id
    assert [i.label for i in menu.items] == ["Home", "Product", "Contact", "Top"]
    assert menu.items[0].page_slug == "home"
    assert menu.items[1].children[0].page_slug == "pricing"
    assert menu.items[1].children[1].url == "https://docs.example.com/start?x=1#top"
    assert menu.items[1].children[1].WhichOneof("target") == "url"
    assert menu.items[1].WhichOneof("target") is None

    got = nav(t).GetMenu(navigation_pb2.GetMenuRequest(environment_id=t.env_id, name="main"))
    assert got == menu

    replaced = set_menu(t, "main", [Item(label="Only", page_id=home.id)])
    assert replaced.id == menu.id
    assert [i.label for i in replaced.items] == ["Only"]

    for name in ("footer", "legal", "aside"):
        set_menu(t, name, [Item(label="x", url="/x")])
    listed = collect(
        lambda token: nav(t).ListMenus(
            navigation_pb2.ListMenusRequest(environment_id=t.env_id, page_size=2, page_token=token)
        ),
        "menus",
    )
    assert [m.name for m in listed] == ["aside", "footer", "legal", "main"]


def test_a_deleted_page_leaves_its_item_with_no_slug(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    hero = make_definition(t)
    page = make_page(t, hero.id, slug="temp")
    set_menu(t, "main", [Item(label="Temp", page_id=page.id)])
    t.client.pages.DeletePage(pages_pb2.DeletePageRequest(id=page.id))
    got = nav(t).GetMenu(navigation_pb2.GetMenuRequest(environment_id=t.env_id, name="main"))
    assert got.items[0].page_id == page.id
    assert got.items[0].page_slug == ""


def test_page_references_must_be_pages_of_this_environment(
    content_server: ContentServer,
) -> None:
    t = make_tenant(content_server.admin)
    hero = make_definition(t)
    mine = make_page(t, hero.id, slug="mine")
    staging = t.client.tenancy.CreateEnvironment(
        tenancy_pb2.CreateEnvironmentRequest(
            site_id=t.site_id, environment=tenancy_pb2.Environment(name="staging")
        )
    )
    staging_hero = t.client.pages.CreateSectionDefinition(
        pages_pb2.CreateSectionDefinitionRequest(environment_id=staging.id, section_definition=hero)
    )
    elsewhere = t.client.pages.CreatePage(
        pages_pb2.CreatePageRequest(
            environment_id=staging.id,
            page=pages_pb2.Page(
                slug="x",
                title="X",
                sections=[pages_pb2.Section(definition_id=staging_hero.id)],
            ),
        )
    )
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        set_menu(
            t,
            "main",
            [
                Item(label="Mine", page_id=mine.id),
                Item(
                    label="Group",
                    children=[
                        Item(label="Other env", page_id=elsewhere.id),
                        Item(label="Missing", page_id="01nosuchpage"),
                    ],
                ),
            ],
        )
    assert err["fields"] == [
        "menu.items[1].children[0].page_id",
        "menu.items[1].children[1].page_id",
    ]
    with content_server.db.read() as s:
        assert s.execute(text("select count(*) from navigation")).scalar() == 0


BAD_ITEMS = [
    (Item(label="", url="/x"), "menu.items[0].label"),
    (Item(label="x" * 101, url="/x"), "menu.items[0].label"),
    (Item(label="x"), "menu.items[0]"),
    (Item(label="x", url="javascript:alert(1)"), "menu.items[0].url"),
    (Item(label="x", url="//evil.example.com"), "menu.items[0].url"),
    (Item(label="x", url="https://"), "menu.items[0].url"),
    (Item(label="x", url="ftp://example.com/file"), "menu.items[0].url"),
    (Item(label="x", url="/has space"), "menu.items[0].url"),
    (Item(label="x", url="mailto:"), "menu.items[0].url"),
    (Item(label="x", url="https://example.com/" + "a" * 2000), "menu.items[0].url"),
    (Item(label="x", url="relative/path"), "menu.items[0].url"),
]


def test_bad_items_name_their_field(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    for item, field in BAD_ITEMS:
        with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
            set_menu(t, "main", [item])
        assert err["fields"] == [field], item


def test_depth_and_size_limits(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)

    def chain(depth: int) -> navigation_pb2.MenuItem:
        item = Item(label=f"level {depth}", url="/x")
        for level in range(depth - 1, 0, -1):
            item = Item(label=f"level {level}", url="/x", children=[item])
        return item

    assert set_menu(t, "four", [chain(4)]).items[0].children[0].children[0].children[0].label
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        set_menu(t, "five", [chain(5)])
    assert err["fields"] == ["menu.items[0].children[0].children[0].children[0].children"]
    set_menu(t, "big", [Item(label=str(i), url="/x") for i in range(200)])
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        set_menu(t, "bigger", [Item(label=str(i), url="/x") for i in range(201)])
    assert err["fields"] == ["menu.items"]
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        set_menu(t, "Bad Name", [])
    assert err["fields"] == ["menu.name"]


def test_delete_and_another_teams_menu_is_not_found(content_server: ContentServer) -> None:
    acme = make_tenant(content_server.admin, "acme")
    other = make_tenant(content_server.admin, "other")
    set_menu(acme, "main", [Item(label="x", url="/x")])
    get = navigation_pb2.GetMenuRequest(environment_id=acme.env_id, name="main")
    for call in (
        lambda: nav(other).GetMenu(get),
        lambda: nav(other).ListMenus(navigation_pb2.ListMenusRequest(environment_id=acme.env_id)),
        lambda: set_menu(
            Tenant(other.team_id, other.key, other.site_id, acme.env_id, other.client), "main", []
        ),
        lambda: nav(other).DeleteMenu(
            navigation_pb2.DeleteMenuRequest(environment_id=acme.env_id, name="main")
        ),
    ):
        with raises_status(grpc.StatusCode.NOT_FOUND):
            call()
    assert nav(acme).GetMenu(get).items[0].label == "x"
    nav(acme).DeleteMenu(navigation_pb2.DeleteMenuRequest(environment_id=acme.env_id, name="main"))
    with raises_status(grpc.StatusCode.NOT_FOUND):
        nav(acme).GetMenu(get)


def test_hidden_items_stay_hidden_and_unset_means_shown(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    menu = set_menu(
        t,
        "main",
        [
            navigation_pb2.MenuItem(label="Home", url="/"),
            navigation_pb2.MenuItem(
                label="Beta",
                url="/beta",
                visible=False,
                children=[navigation_pb2.MenuItem(label="Docs", url="/beta/docs", visible=True)],
            ),
        ],
    )
    for items in (
        menu.items,
        nav(t).GetMenu(navigation_pb2.GetMenuRequest(environment_id=t.env_id, name="main")).items,
    ):
        assert [(i.label, i.HasField("visible"), i.visible) for i in items] == [
            ("Home", True, True),
            ("Beta", True, False),
        ]
        assert items[1].children[0].visible
    with content_server.db.read() as s:
        stored = s.execute(text("select items from navigation where name = 'main'")).scalar()
    assert '"visible":false' in stored.replace(" ", "")
    assert stored.count("visible") == 1  # only the hidden item stores the flag
