"""NavigationService: named menus of an environment."""

from __future__ import annotations

import grpc
from google.protobuf import empty_pb2
from loom.content.v1 import navigation_pb2, navigation_pb2_grpc

from content_service import navigation
from content_service.api.convert import ts
from content_service.db.engine import Database
from servicekit.auth import current_principal
from servicekit.pagination import page_of, page_request


def _item_proto(item: navigation.MenuItem, slugs: dict[str, str]) -> navigation_pb2.MenuItem:
    out = navigation_pb2.MenuItem(
        label=item.label,
        children=[_item_proto(c, slugs) for c in item.children],
        visible=item.visible,
    )
    if item.page_id:
        out.page_id = item.page_id
        out.page_slug = slugs.get(item.page_id, "")
    elif item.url:
        out.url = item.url
    return out


def menu_proto(view: navigation.MenuView) -> navigation_pb2.Menu:
    row = view.row
    return navigation_pb2.Menu(
        id=row.id,
        environment_id=row.environment_id,
        name=row.name,
        items=[_item_proto(i, view.slugs) for i in view.items],
        create_time=ts(row.created_at),
        update_time=ts(row.updated_at),
    )


def _item_input(item: navigation_pb2.MenuItem, depth: int) -> navigation.MenuItem:
    # Children deeper than the limit are kept (one level) so the limit check can name them.
    children = (
        [_item_input(c, depth + 1) for c in item.children]
        if depth <= navigation.MAX_DEPTH
        else [navigation.MenuItem(label=c.label or "-") for c in item.children]
    )
    target = item.WhichOneof("target")
    return navigation.MenuItem(
        label=item.label,
        page_id=item.page_id if target == "page_id" else "",
        url=item.url if target == "url" else "",
        children=children,
        visible=item.visible if item.HasField("visible") else True,
    )


class NavigationServicer(navigation_pb2_grpc.NavigationServiceServicer):
    def __init__(self, db: Database) -> None:
        self.db = db

    def GetMenu(
        self, request: navigation_pb2.GetMenuRequest, context: grpc.ServicerContext
    ) -> navigation_pb2.Menu:
        with self.db.read() as s:
            return menu_proto(
                navigation.get_menu(s, current_principal(), request.environment_id, request.name)
            )

    def ListMenus(
        self, request: navigation_pb2.ListMenusRequest, context: grpc.ServicerContext
    ) -> navigation_pb2.ListMenusResponse:
        page = page_request(request)
        with self.db.read() as s:
            items, token = page_of(
                navigation.list_menus(s, current_principal(), request.environment_id, page),
                page,
                lambda v: v.row.name,
                menu_proto,
            )
            return navigation_pb2.ListMenusResponse(menus=items, next_page_token=token)

    def SetMenu(
        self, request: navigation_pb2.SetMenuRequest, context: grpc.ServicerContext
    ) -> navigation_pb2.Menu:
        items = [_item_input(i, 1) for i in request.menu.items]
        with self.db.write() as s:
            return menu_proto(
                navigation.set_menu(
                    s, current_principal(), request.environment_id, request.menu.name, items
                )
            )

    def DeleteMenu(
        self, request: navigation_pb2.DeleteMenuRequest, context: grpc.ServicerContext
    ) -> empty_pb2.Empty:
        with self.db.write() as s:
            navigation.delete_menu(s, current_principal(), request.environment_id, request.name)
        return empty_pb2.Empty()
