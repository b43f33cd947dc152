"""What a user of the stack does, end to end, over the public gRPC API of the running
processes (see conftest.py for which stack that is)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from loom.content.v1 import common_pb2, pages_pb2, tenancy_pb2

from tests.content.tenants_and_pages import struct
from tests.images.helpers import upload_requests
from tests.integration.stack import StackInfo
from tests.support import Clients, errors_of, wait_until

HERO = {
    "type": "object",
    "properties": {"title": {"type": "string", "minLength": 1}, "body": {"type": "string"}},
    "required": ["title"],
}
PRICING_TEXT = "Transparent pricing: the starter plan costs nine euros a month, billed yearly."


@dataclass
class Tenant:
    team: tenancy_pb2.Team
    key: tenancy_pb2.CreateApiKeyResponse
    client: Clients
    site: tenancy_pb2.Site
    env: tenancy_pb2.Environment
    hero: pages_pb2.SectionDefinition
    page: pages_pb2.Page


def onboard(admin: Clients, label: str) -> Tenant:
    """team -> key -> site -> environment -> definition -> page with sections."""
    name = f"{label}-{uuid.uuid4().hex[:8]}"
    team = admin.tenancy.CreateTeam(tenancy_pb2.CreateTeamRequest(team=tenancy_pb2.Team(name=name)))
    key = admin.tenancy.CreateApiKey(tenancy_pb2.CreateApiKeyRequest(team_id=team.id, name="ci"))
    assert key.secret
    assert key.api_key.team_id == team.id
    client = admin.as_key(key.secret)
    site = client.tenancy.CreateSite(
        tenancy_pb2.CreateSiteRequest(site=tenancy_pb2.Site(name=f"{name} site"))
    )
    env = client.tenancy.CreateEnvironment(
        tenancy_pb2.CreateEnvironmentRequest(
            site_id=site.id, environment=tenancy_pb2.Environment(name="prod")
        )
    )
    hero = client.pages.CreateSectionDefinition(
        pages_pb2.CreateSectionDefinitionRequest(
            environment_id=env.id,
            section_definition=pages_pb2.SectionDefinition(
                name="hero", schema=struct(HERO), default_content=struct({"title": "Welcome"})
            ),
        )
    )
    page = client.pages.CreatePage(
        pages_pb2.CreatePageRequest(
            environment_id=env.id,
            request_id=uuid.uuid4().hex,
            page=pages_pb2.Page(
                slug="pricing",
                title="Pricing",
                status=common_pb2.CONTENT_STATUS_PUBLISHED,
                metadata=struct({"seo": {"description": "Plans and prices"}}),
                sections=[
                    pages_pb2.Section(
                        definition_id=hero.id,
                        content=struct({"title": "Plans for every team", "body": PRICING_TEXT}),
                    ),
                    pages_pb2.Section(definition_id=hero.id),  # the definition's default
                    pages_pb2.Section(
                        definition_id=hero.id, content=struct({"title": "Questions?"})
                    ),
                ],
            ),
        )
    )
    return Tenant(team, key, client, site, env, hero, page)


@pytest.fixture(scope="module")
def acme(admin: Clients) -> Tenant:
    return onboard(admin, "acme")


@pytest.fixture(scope="module")
def globex(admin: Clients) -> Tenant:
    return onboard(admin, "globex")


def test_stack_is_up(stack: StackInfo) -> None:
    assert stack.content, stack.description


def test_onboarding_to_a_page_read_by_slug(acme: Tenant) -> None:
    got = acme.client.pages.GetPageBySlug(
        pages_pb2.GetPageBySlugRequest(environment_id=acme.env.id, slug="pricing")
    )
    assert got.id == acme.page.id
    assert got.title == "Pricing"
    assert got.status == common_pb2.CONTENT_STATUS_PUBLISHED
    assert [s.position for s in got.sections] == [0, 1, 2]
    assert [s.content["title"] for s in got.sections] == [
        "Plans for every team",
        "Welcome",  # filled in from the definition's default_content
        "Questions?",
    ]
    assert {s.definition_name for s in got.sections} == {"hero"}
    assert got.metadata["seo"]["description"] == "Plans and prices"
    assert got.etag
    assert got.create_time.seconds > 0
    assert acme.client.pages.GetPage(pages_pb2.GetPageRequest(id=got.id)) == got
    listed = acme.client.pages.ListPages(pages_pb2.ListPagesRequest(environment_id=acme.env.id))
    assert [p.id for p in listed.pages] == [got.id]


def test_a_retried_create_returns_the_first_page(acme: Tenant) -> None:
    request = pages_pb2.CreatePageRequest(
        environment_id=acme.env.id,
        request_id=uuid.uuid4().hex,
        page=pages_pb2.Page(slug="about", title="About"),
    )
    first = acme.client.pages.CreatePage(request)
    assert acme.client.pages.CreatePage(request).id == first.id
    acme.client.pages.DeletePage(pages_pb2.DeletePageRequest(id=first.id))


def test_an_edit_with_a_stale_etag_is_aborted(acme: Tenant) -> None:
    page = acme.client.pages.CreatePage(
        pages_pb2.CreatePageRequest(
            environment_id=acme.env.id, page=pages_pb2.Page(slug="team", title="Team")
        )
    )
    mask = field_mask_pb2.FieldMask(paths=["title"])
    acme.client.pages.UpdatePage(
        pages_pb2.UpdatePageRequest(
            page=pages_pb2.Page(id=page.id, title="Our team", etag=page.etag), update_mask=mask
        )
    )
    with pytest.raises(grpc.RpcError) as info:
        acme.client.pages.UpdatePage(
            pages_pb2.UpdatePageRequest(
                page=pages_pb2.Page(id=page.id, title="Lost update", etag=page.etag),
                update_mask=mask,
            )
        )
    assert info.value.code() == grpc.StatusCode.ABORTED
    acme.client.pages.DeletePage(pages_pb2.DeletePageRequest(id=page.id))


def test_bad_content_names_the_field(acme: Tenant) -> None:
    with pytest.raises(grpc.RpcError) as info:
        acme.client.pages.CreatePage(
            pages_pb2.CreatePageRequest(
                environment_id=acme.env.id,
                page=pages_pb2.Page(
                    slug="bad",
                    title="Bad",
                    sections=[
                        pages_pb2.Section(definition_id=acme.hero.id, content=struct({"title": 4}))
                    ],
                ),
            )
        )
    errors = errors_of(info.value)
    assert errors["code"] == grpc.StatusCode.INVALID_ARGUMENT
    assert "page.sections[0].content.title" in errors["fields"]


def test_a_call_without_a_key_is_unauthenticated(admin: Clients) -> None:
    anonymous = admin.as_key(None)
    with pytest.raises(grpc.RpcError) as info:
        anonymous.tenancy.ListTeams(tenancy_pb2.ListTeamsRequest())
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


# --- isolation --------------------------------------------------------------------------

HIDDEN = (grpc.StatusCode.NOT_FOUND,)
# Calls that name another team itself (not one of its resources) may say so.
REFUSED = (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED)


def refused(call: Callable[[], Any], codes: tuple[grpc.StatusCode, ...] = HIDDEN) -> None:
    with pytest.raises(grpc.RpcError) as info:
        call()
    assert info.value.code() in codes, (info.value.code(), info.value.details())


def test_another_team_sees_nothing_of_the_first(acme: Tenant, globex: Tenant) -> None:
    t, p = globex.client.tenancy, globex.client.pages
    # Lists show only the caller's own things.
    assert [x.id for x in t.ListTeams(tenancy_pb2.ListTeamsRequest()).teams] == [globex.team.id]
    assert [x.id for x in t.ListSites(tenancy_pb2.ListSitesRequest()).sites] == [globex.site.id]
    # Every read of the first team's resources, by id, is NOT_FOUND.
    reads: list[Callable[[], Any]] = [
        lambda: t.GetTeam(tenancy_pb2.GetTeamRequest(id=acme.team.id)),
        lambda: t.ListApiKeys(tenancy_pb2.ListApiKeysRequest(team_id=acme.team.id)),
        lambda: t.GetSite(tenancy_pb2.GetSiteRequest(id=acme.site.id)),
        lambda: t.ListEnvironments(tenancy_pb2.ListEnvironmentsRequest(site_id=acme.site.id)),
        lambda: t.GetEnvironment(tenancy_pb2.GetEnvironmentRequest(id=acme.env.id)),
        lambda: p.GetSectionDefinition(pages_pb2.GetSectionDefinitionRequest(id=acme.hero.id)),
        lambda: p.ListSectionDefinitions(
            pages_pb2.ListSectionDefinitionsRequest(environment_id=acme.env.id)
        ),
        lambda: p.GetPage(pages_pb2.GetPageRequest(id=acme.page.id)),
        lambda: p.GetPageBySlug(
            pages_pb2.GetPageBySlugRequest(environment_id=acme.env.id, slug="pricing")
        ),
        lambda: p.ListPages(pages_pb2.ListPagesRequest(environment_id=acme.env.id)),
    ]
    for read in reads:
        refused(read)
    # And so is every write that would touch them.
    section_id = acme.page.sections[0].id
    writes: list[Callable[[], Any]] = [
        lambda: t.RevokeApiKey(tenancy_pb2.RevokeApiKeyRequest(id=acme.key.api_key.id)),
        lambda: t.UpdateSite(
            tenancy_pb2.UpdateSiteRequest(site=tenancy_pb2.Site(id=acme.site.id, name="mine"))
        ),
        lambda: t.DeleteSite(tenancy_pb2.DeleteSiteRequest(id=acme.site.id)),
        lambda: t.CreateEnvironment(
            tenancy_pb2.CreateEnvironmentRequest(
                site_id=acme.site.id, environment=tenancy_pb2.Environment(name="evil")
            )
        ),
        lambda: t.DeleteEnvironment(tenancy_pb2.DeleteEnvironmentRequest(id=acme.env.id)),
        lambda: p.CreateSectionDefinition(
            pages_pb2.CreateSectionDefinitionRequest(
                environment_id=acme.env.id,
                section_definition=pages_pb2.SectionDefinition(
                    name="evil", schema=struct({"type": "object"})
                ),
            )
        ),
        lambda: p.DeleteSectionDefinition(
            pages_pb2.DeleteSectionDefinitionRequest(id=acme.hero.id)
        ),
        lambda: p.CreatePage(
            pages_pb2.CreatePageRequest(
                environment_id=acme.env.id, page=pages_pb2.Page(slug="evil", title="Evil")
            )
        ),
        lambda: p.UpdatePage(
            pages_pb2.UpdatePageRequest(page=pages_pb2.Page(id=acme.page.id, title="Mine"))
        ),
        lambda: p.AddSection(
            pages_pb2.AddSectionRequest(
                page_id=acme.page.id, section=pages_pb2.Section(definition_id=globex.hero.id)
            )
        ),
        lambda: p.UpdateSection(
            pages_pb2.UpdateSectionRequest(
                page_id=acme.page.id, section_id=section_id, content=struct({"title": "x"})
            )
        ),
        lambda: p.MoveSection(
            pages_pb2.MoveSectionRequest(page_id=acme.page.id, section_id=section_id, position=2)
        ),
        lambda: p.RemoveSection(
            pages_pb2.RemoveSectionRequest(page_id=acme.page.id, section_id=section_id)
        ),
        lambda: p.DeletePage(pages_pb2.DeletePageRequest(id=acme.page.id)),
    ]
    for write in writes:
        refused(write)
    # Naming the other team itself is refused too.
    refused(lambda: t.CreateApiKey(tenancy_pb2.CreateApiKeyRequest(team_id=acme.team.id)), REFUSED)
    refused(lambda: t.ListSites(tenancy_pb2.ListSitesRequest(team_id=acme.team.id)), REFUSED)
    refused(
        lambda: t.CreateSite(
            tenancy_pb2.CreateSiteRequest(team_id=acme.team.id, site=tenancy_pb2.Site(name="x"))
        ),
        REFUSED,
    )
    # A page of globex cannot borrow acme's section definition either.
    with pytest.raises(grpc.RpcError) as info:
        p.CreatePage(
            pages_pb2.CreatePageRequest(
                environment_id=globex.env.id,
                page=pages_pb2.Page(
                    slug="borrowed",
                    title="Borrowed",
                    sections=[pages_pb2.Section(definition_id=acme.hero.id)],
                ),
            )
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # Nothing of acme changed.
    after = acme.client.pages.GetPage(pages_pb2.GetPageRequest(id=acme.page.id))
    assert after == acme.page
    keys = acme.client.tenancy.ListApiKeys(tenancy_pb2.ListApiKeysRequest(team_id=acme.team.id))
    assert [k.revoke_time.seconds for k in keys.api_keys] == [0]


def test_another_teams_page_looks_exactly_like_a_missing_one(acme: Tenant, globex: Tenant) -> None:
    def error(page_id: str) -> dict[str, Any]:
        with pytest.raises(grpc.RpcError) as info:
            globex.client.pages.GetPage(pages_pb2.GetPageRequest(id=page_id))
        out = errors_of(info.value)
        out["message"] = out["message"].replace(page_id, "<id>")
        return out

    missing = acme.page.id[:-4] + ("aaaa" if not acme.page.id.endswith("aaaa") else "bbbb")
    assert error(acme.page.id) == error(missing)


# --- every read of every content service, swept -------------------------------------------

READ_PREFIXES = ("Get", "List", "Search", "Download")
# Which of acme's ids a request field takes; a field not named here gets each of them in turn.
ID_FIELDS = {
    "team_id": "team",
    "site_id": "site",
    "environment_id": "env",
    "page_id": "page",
    "definition_id": "definition",
    "section_id": "section",
    "image_id": "image",
}
TEXT_FIELDS = {"slug": "pricing", "query": "pricing", "query_text": "pricing"}


def content_services() -> list[Any]:
    """Every service described in loom.content.v1 (as generated), served or not yet."""
    import importlib
    import pkgutil

    import loom.content.v1 as package

    services = []
    for module in pkgutil.iter_modules(package.__path__):
        if module.name.endswith("_pb2"):
            descriptor = importlib.import_module(f"loom.content.v1.{module.name}").DESCRIPTOR
            services += list(descriptor.services_by_name.values())
    return services


def acme_ids(acme: Tenant) -> dict[str, str]:
    ids = {
        "team": acme.team.id,
        "site": acme.site.id,
        "env": acme.env.id,
        "definition": acme.hero.id,
        "page": acme.page.id,
        "section": acme.page.sections[0].id,
        "key": acme.key.api_key.id,
    }
    image = upload_image(acme, alt_text="Team photo", width=64, height=48, allow_missing=True)
    if image is not None:
        ids["image"] = image.id
    return ids


def test_no_read_of_any_content_service_reveals_another_team(
    acme: Tenant, globex: Tenant, content_channel: grpc.Channel
) -> None:
    """Every Get/List/Search/Download method of every content service, called by globex with
    acme's ids in its id fields, fails or answers without any of acme's data."""
    from google.protobuf import message_factory

    ids = acme_ids(acme)
    secrets = set(ids.values()) | {PRICING_TEXT}
    metadata = (("authorization", f"Bearer {globex.key.secret}"),)
    leaks: list[str] = []
    methods: set[str] = set()
    for service in content_services():
        for method in service.methods:
            if not method.name.startswith(READ_PREFIXES) or method.client_streaming:
                continue
            request_class = message_factory.GetMessageClass(method.input_type)
            response_class = message_factory.GetMessageClass(method.output_type)
            path = f"/{service.full_name}/{method.name}"
            fields = [f for f in method.input_type.fields if f.type == f.TYPE_STRING]
            free = [f.name for f in fields if f.name == "id" or f.name.endswith("_id")]
            free = [name for name in free if name not in ID_FIELDS]
            for candidate in list(ids.values()) if free else [None]:
                request = request_class()
                for f in fields:
                    if f.name in ID_FIELDS and ID_FIELDS[f.name] in ids:
                        setattr(request, f.name, ids[ID_FIELDS[f.name]])
                    elif f.name in free and candidate is not None:
                        setattr(request, f.name, candidate)
                    elif f.name in TEXT_FIELDS:
                        setattr(request, f.name, TEXT_FIELDS[f.name])
                if not request.ByteSize():
                    continue  # names nothing of acme (ListTeams and the like are checked above)
                kind = (
                    content_channel.unary_stream
                    if method.server_streaming
                    else content_channel.unary_unary
                )
                call = kind(
                    path,
                    request_serializer=request_class.SerializeToString,
                    response_deserializer=response_class.FromString,
                )
                try:
                    answer: Any = call(request, metadata=metadata, timeout=10)
                    answers: list[Any] = list(answer) if method.server_streaming else [answer]
                except grpc.RpcError as exc:
                    if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                        break  # not served by this stack (yet)
                    methods.add(path)
                    if exc.code() not in (*REFUSED, grpc.StatusCode.INVALID_ARGUMENT):
                        leaks.append(f"{path} {request} -> {exc.code()}: {exc.details()}")
                    continue
                methods.add(path)
                blob = b"".join(a.SerializeToString() for a in answers)
                found = [s for s in secrets if s.encode() in blob]
                if found:
                    leaks.append(f"{path} {request} -> OK, reveals {found}")
    assert len(methods) >= 10, f"only {sorted(methods)} were called: does the sweep still work?"
    assert leaks == []


# --- images, semantic search: vector_service and image_worker ----------------------------


def test_images_of_another_team_are_not_found(acme: Tenant, globex: Tenant) -> None:
    from loom.content.v1 import images_pb2, images_pb2_grpc

    image = upload_image(acme, alt_text="Office plan", width=40, height=30)
    assert image.state in (
        images_pb2.Image.STATE_PENDING,
        images_pb2.Image.STATE_PROCESSING,
        images_pb2.Image.STATE_COMPLETED,
    )
    theirs = globex.client.stub(images_pb2_grpc.ImageServiceStub)
    refused(lambda: theirs.GetImage(images_pb2.GetImageRequest(id=image.id)))
    refused(lambda: theirs.ListImages(images_pb2.ListImagesRequest(environment_id=acme.env.id)))
    refused(lambda: list(theirs.DownloadImage(images_pb2.DownloadImageRequest(id=image.id))))
    refused(lambda: theirs.DeleteImage(images_pb2.DeleteImageRequest(id=image.id)))
    mine = acme.client.stub(images_pb2_grpc.ImageServiceStub)
    assert mine.GetImage(images_pb2.GetImageRequest(id=image.id)).id == image.id


def upload_image(
    t: Tenant, *, alt_text: str, width: int, height: int, allow_missing: bool = False
) -> Any:
    """Uploads a generated PNG in chunks (UploadImage is client-streaming)."""
    import io

    from loom.content.v1 import images_pb2_grpc
    from PIL import Image

    picture = Image.new("RGB", (width, height))
    picture.putdata(
        [(x * 255 // width, y * 255 // height, 90) for y in range(height) for x in range(width)]
    )
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    data = buffer.getvalue()

    messages = upload_requests(
        t.env.id,
        data,
        filename=f"photo-{uuid.uuid4().hex[:6]}.png",
        mime_type="image/png",
        alt_text=alt_text,
        chunk=16 * 1024,
    )
    stub = t.client.stub(images_pb2_grpc.ImageServiceStub)
    try:
        return stub.UploadImage(messages)
    except grpc.RpcError as exc:
        if allow_missing and exc.code() == grpc.StatusCode.UNIMPLEMENTED:
            return None
        raise


def vector_search(
    channel: grpc.Channel, key: str, text: str, collections: list[Any], **scope: str
) -> list[Any]:
    from loom.vector.v1 import vector_pb2, vector_pb2_grpc

    answer = vector_pb2_grpc.VectorServiceStub(channel).Search(
        vector_pb2.SearchRequest(
            collections=collections, scope=vector_pb2.Scope(**scope), query_text=text, limit=10
        ),
        metadata=(("authorization", f"Bearer {key}"),),
        timeout=30,
    )
    return list(answer.results)


def hit_ids(results: list[Any]) -> set[str]:
    return {r.document.id for r in results} | {r.document.source_id for r in results}


@pytest.mark.needs_vector
@pytest.mark.needs_indexing
def test_semantic_search_finds_the_page_in_its_own_scope_only(
    acme: Tenant, globex: Tenant, vector_channel: grpc.Channel
) -> None:
    from loom.vector.v1 import vector_pb2

    collections = [vector_pb2.COLLECTION_PAGES, vector_pb2.COLLECTION_SECTIONS]
    question = "how much does the starter plan cost each month"
    wait_until(
        lambda: (
            acme.page.id
            in hit_ids(
                vector_search(
                    vector_channel,
                    acme.key.secret,
                    question,
                    collections,
                    environment_id=acme.env.id,
                    site_id=acme.site.id,
                )
            )
        ),
        60,
        "semantic search to find the page (content_service's index outbox delivers it to "
        "vector_service)",
        interval=0.5,
    )
    theirs = vector_search(vector_channel, globex.key.secret, question, collections)
    assert acme.page.id not in hit_ids(theirs)
    with pytest.raises(grpc.RpcError) as info:
        vector_search(
            vector_channel, globex.key.secret, question, collections, team_id=acme.team.id
        )
    assert info.value.code() in REFUSED


@pytest.mark.needs_vector
def test_vector_service_authenticates_tenant_keys_through_content(
    acme: Tenant, vector_channel: grpc.Channel
) -> None:
    from loom.vector.v1 import vector_pb2

    # A tenant key resolves through content_service's ResolveApiKey: search works...
    vector_search(vector_channel, acme.key.secret, "pricing", [vector_pb2.COLLECTION_PAGES])
    # ...an unknown key does not, and a tenant key cannot write.
    with pytest.raises(grpc.RpcError) as info:
        vector_search(vector_channel, "loom_not-a-key", "pricing", [vector_pb2.COLLECTION_PAGES])
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    from loom.vector.v1 import vector_pb2_grpc

    with pytest.raises(grpc.RpcError) as info:
        vector_pb2_grpc.VectorServiceStub(vector_channel).UpsertDocuments(
            vector_pb2.UpsertDocumentsRequest(
                collection=vector_pb2.COLLECTION_PAGES,
                documents=[
                    vector_pb2.Document(
                        id="forged",
                        text="forged",
                        scope=vector_pb2.Scope(
                            team_id=acme.team.id, site_id=acme.site.id, environment_id=acme.env.id
                        ),
                    )
                ],
            ),
            metadata=(("authorization", f"Bearer {acme.key.secret}"),),
            timeout=30,
        )
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.needs_vector
@pytest.mark.needs_worker
def test_an_uploaded_image_is_processed_and_found_by_search(
    acme: Tenant, globex: Tenant, vector_channel: grpc.Channel
) -> None:
    from loom.content.v1 import images_pb2, images_pb2_grpc
    from loom.vector.v1 import vector_pb2

    image = upload_image(
        acme, alt_text="A red bicycle leaning against a blue wooden door", width=800, height=600
    )
    images = acme.client.stub(images_pb2_grpc.ImageServiceStub)
    done_states = (images_pb2.Image.STATE_COMPLETED, images_pb2.Image.STATE_FAILED)

    def finished() -> Any:
        got = images.GetImage(images_pb2.GetImageRequest(id=image.id))
        return got if got.state in done_states else None

    done = wait_until(finished, 60, "image_worker to finish the image", interval=0.5)
    assert done.state == images_pb2.Image.STATE_COMPLETED, done.error
    assert (done.width, done.height) == (800, 600)
    assert done.variants, "a completed image has variants"
    assert all(v.width <= 800 and v.size_bytes > 0 for v in done.variants)
    variant = done.variants[0]
    chunks = list(
        images.DownloadImage(
            images_pb2.DownloadImageRequest(
                id=image.id,
                variant=images_pb2.ImageVariantKey(width=variant.width, format=variant.format),
            )
        )
    )
    assert sum(len(c.chunk) for c in chunks) == variant.size_bytes

    wait_until(
        lambda: (
            image.id
            in hit_ids(
                vector_search(
                    vector_channel,
                    acme.key.secret,
                    "bicycle by a door",
                    [vector_pb2.COLLECTION_IMAGES],
                )
            )
        ),
        30,
        "semantic search to find the processed image",
        interval=0.5,
    )
    theirs = vector_search(
        vector_channel, globex.key.secret, "bicycle by a door", [vector_pb2.COLLECTION_IMAGES]
    )
    assert image.id not in hit_ids(theirs)
