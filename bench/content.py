"""Benchmarks 1 and 2: content_service as its clients see it.

1. get_page: GetPage (a page with 5 sections) calls/s over gRPC, against an Echo RPC that
   answers the same number of bytes from the same server (content's own create_server, so the
   same build_server, EdgeInterceptor, authentication with the same team key and thread pool).
   The ratio is the share of a call's cost that is not GetPage's own work.
   get_page_vs_health: the same GetPage calls against grpc.health Check, the emptiest call the
   server answers (no key, no database), measured in the same alternating rounds: what a
   whole authenticated read costs against an empty call.
2. bulk_import: pages with sections imported through the API (BatchCreatePages calls of
   IMPORT_BATCH pages from a few client threads) against raw sqlite3 (pysqlite3, the same
   SQLite) inserting the very rows the API wrote, read back from the database, in one
   transaction into a copy of the database as it was before the import. Whatever rows the API
   writes (pages, sections, links, search documents, index outbox...) the baseline writes too,
   so the comparison stays fair as the service grows.

The content server runs in its own process on a SQLite database under a temporary DATA_DIR."""

from __future__ import annotations

import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from loom.bench.v1 import echo_pb2, echo_pb2_grpc
from loom.content.v1 import pages_pb2, pages_pb2_grpc, tenancy_pb2, tenancy_pb2_grpc

from bench.echo import (
    EchoServicer,
    Run,
    ServerProcess,
    drive,
    median_cpu,
    median_rate,
    paired_ratios,
    server_process,
)

ADMIN_KEY = "bench-admin-key"
SERVICE_TOKEN = "bench-service-token"
SECTIONS_PER_PAGE = 5
CLIENT_THREADS = 8
IMPORT_THREADS = 2
IMPORT_BATCH = 100  # pages per BatchCreatePages call (the API takes up to 500)
SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "minLength": 1},
        "body": {"type": "string"},
        "cta": {"type": "object", "properties": {"label": {"type": "string"}}},
    },
    "required": ["title"],
}


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(value)
    return out


def serve_content(data_dir: str, ready: Any, stop: Any, metrics: str = "env") -> None:
    """The content server exactly as `python -m content_service serve` builds it, plus the
    Echo service (registered here only, never in the real server). `metrics`: "env" as
    CONTENT_METRICS_PORT says (off by default), "on" (a free port) or "off"."""
    try:
        from content_service.db.migrate import upgrade
        from content_service.server import create_server, open_database
        from content_service.settings import ContentSettings

        chosen: dict[str, Any] = {"on": {"metrics_port": 0}, "off": {"metrics_port": None}}.get(
            metrics, {}
        )
        settings = ContentSettings(
            **chosen,
            data_dir=Path(data_dir),
            host="127.0.0.1",
            port=0,
            media_http_port=0,
            admin_key=ADMIN_KEY,
            service_token=SERVICE_TOKEN,
            database_url_override="",  # SQLite under data_dir, whatever the environment says
            # Outbox rows are written (that is part of the cost) but not delivered here.
            vector_address="",
            log_level="WARNING",
        )
        db = open_database(settings)
        upgrade(db)
        running = create_server(settings, database=db)
        echo_pb2_grpc.add_EchoServiceServicer_to_server(EchoServicer(), running.server)
        running.server.start()
    except Exception as exc:
        ready.put({"error": repr(exc)})
        return
    ready.put(
        {
            "port": running.port,
            "metrics_port": running.metrics_port,
            "workers": settings.workers,
            "database": str(Path(data_dir) / "content.db"),
        }
    )
    stop.wait()
    running.stop(1)
    db.dispose()


@contextmanager
def content_server(
    serve: Callable[[str, Any, Any], None] = serve_content,
) -> Iterator[tuple[ServerProcess, grpc.Channel, Path]]:
    """The content server in its own process (`serve`: serve_content, or a module-level
    function calling it), on SQLite in a temporary DATA_DIR."""
    with (
        tempfile.TemporaryDirectory(prefix="loom-bench-") as tmp,
        server_process(serve, tmp) as server,
        grpc.insecure_channel(server.address) as channel,
    ):
        yield server, channel, Path(tmp)


class Client:
    def __init__(self, channel: grpc.Channel, key: str) -> None:
        self.metadata = (("authorization", f"Bearer {key}"),)
        self.tenancy = tenancy_pb2_grpc.TenancyServiceStub(channel)
        self.pages = pages_pb2_grpc.PageServiceStub(channel)
        self.echo = echo_pb2_grpc.EchoServiceStub(channel)


def tenant(channel: grpc.Channel) -> tuple[Client, str, str, str]:
    """A team, its key, a site, an environment and a section definition:
    (client, site id, environment id, definition id)."""
    admin = Client(channel, ADMIN_KEY)
    team = admin.tenancy.CreateTeam(
        tenancy_pb2.CreateTeamRequest(team=tenancy_pb2.Team(name="bench")),
        metadata=admin.metadata,
    )
    key = admin.tenancy.CreateApiKey(
        tenancy_pb2.CreateApiKeyRequest(team_id=team.id, name="bench"), metadata=admin.metadata
    )
    client = Client(channel, key.secret)
    site = client.tenancy.CreateSite(
        tenancy_pb2.CreateSiteRequest(site=tenancy_pb2.Site(name="bench")),
        metadata=client.metadata,
    )
    env_id, definition_id = new_environment(client, site.id, "prod")
    return client, site.id, env_id, definition_id


def new_environment(client: Client, site_id: str, name: str) -> tuple[str, str]:
    env = client.tenancy.CreateEnvironment(
        tenancy_pb2.CreateEnvironmentRequest(
            site_id=site_id, environment=tenancy_pb2.Environment(name=name)
        ),
        metadata=client.metadata,
    )
    definition = client.pages.CreateSectionDefinition(
        pages_pb2.CreateSectionDefinitionRequest(
            environment_id=env.id,
            section_definition=pages_pb2.SectionDefinition(
                name="block", schema=struct(SCHEMA), default_content=struct({"title": "Hello"})
            ),
        ),
        metadata=client.metadata,
    )
    return env.id, definition.id


def page_request(env_id: str, definition_id: str, n: int) -> pages_pb2.CreatePageRequest:
    return pages_pb2.CreatePageRequest(
        environment_id=env_id,
        page=pages_pb2.Page(
            slug=f"page-{n}",
            title=f"Page {n}: everything about topic {n}",
            metadata=struct({"seo": {"description": f"About topic {n}", "index": True}}),
            sections=[
                pages_pb2.Section(
                    definition_id=definition_id,
                    content=struct(
                        {
                            "title": f"Section {i} of page {n}",
                            "body": f"Paragraph {i} of page {n}. " * 12,
                            "cta": {"label": "Start now"},
                        }
                    ),
                )
                for i in range(SECTIONS_PER_PAGE)
            ],
        ),
    )


# --- 1. GetPage vs Echo -------------------------------------------------------------------


def run_get_page(quick: bool) -> list[dict[str, Any]]:
    calls, rounds, warmup = (600, 2, 100) if quick else (3000, 5, 300)
    with content_server() as (server, channel, _tmp):
        client, _site_id, env_id, definition_id = tenant(channel)
        page = client.pages.CreatePage(
            page_request(env_id, definition_id, 1), metadata=client.metadata
        )
        get = pages_pb2.GetPageRequest(id=page.id)
        size = client.pages.GetPage(get, metadata=client.metadata).ByteSize()
        echo = echo_pb2.EchoRequest(response_bytes=size)
        assert len(page.sections) == SECTIONS_PER_PAGE

        def get_page() -> None:
            client.pages.GetPage(get, metadata=client.metadata, timeout=10)

        def echo_call() -> None:
            client.echo.Echo(echo, metadata=client.metadata, timeout=10)

        health = health_pb2_grpc.HealthStub(channel)
        check = health_pb2.HealthCheckRequest()

        def health_call() -> None:
            health.Check(check, timeout=10)

        drive(get_page, warmup, CLIENT_THREADS)
        drive(echo_call, warmup, CLIENT_THREADS)
        drive(health_call, warmup, CLIENT_THREADS)
        ours: list[Run] = []
        base: list[Run] = []
        empty: list[Run] = []
        for _ in range(rounds):  # alternate, so a noisy neighbour hurts all alike
            base.append(drive(echo_call, calls, CLIENT_THREADS, server.pid))
            ours.append(drive(get_page, calls, CLIENT_THREADS, server.pid))
            empty.append(drive(health_call, calls, CLIENT_THREADS, server.pid))
        workers = server.info["workers"]
    ours_rate, base_rate = median_rate(ours), median_rate(base)
    ours_cpu, base_cpu = median_cpu(ours), median_cpu(base)
    ratios = paired_ratios([r.rate for r in ours], [r.rate for r in base])
    empty_rate, empty_cpu = median_rate(empty), median_cpu(empty)
    empty_ratios = paired_ratios([r.rate for r in ours], [r.rate for r in empty])
    vs_echo = {
        "name": "get_page",
        "title": f"GetPage (page + {SECTIONS_PER_PAGE} sections) vs Echo, same server",
        "ours": round(ours_rate, 1),
        "baseline": round(base_rate, 1),
        "unit": "calls/s",
        "ratio": round(statistics.median(ratios), 3),
        "target": 0.6,
        "notes": (
            f"content's create_server (EdgeInterceptor, team-key auth, {workers} threads, "
            f"SQLite) + Echo answering the same {size} B; {CLIENT_THREADS} client threads, "
            f"{calls} calls x {rounds} alternating rounds, ratio = median of the rounds' "
            "ratios; server CPU per call: "
            f"GetPage {ours_cpu or 0:.0f} us, Echo {base_cpu or 0:.0f} us"
        ),
        "details": {
            "response_bytes": size,
            "get_page_calls_per_s": [round(r.rate, 1) for r in ours],
            "echo_calls_per_s": [round(r.rate, 1) for r in base],
            "ratios": [round(x, 3) for x in ratios],
            "get_page_cpu_us_per_call": round(ours_cpu, 1) if ours_cpu else None,
            "echo_cpu_us_per_call": round(base_cpu, 1) if base_cpu else None,
        },
    }
    vs_health = {
        "name": "get_page_vs_health",
        "title": f"GetPage (page + {SECTIONS_PER_PAGE} sections) vs grpc.health Check, same server",
        "ours": round(ours_rate, 1),
        "baseline": round(empty_rate, 1),
        "unit": "calls/s",
        "ratio": round(statistics.median(empty_ratios), 3),
        "target": 0.7,
        "notes": (
            "the GetPage rounds above against health Check (no key, no database) in the same "
            f"alternating rounds, {CLIENT_THREADS} client threads; server CPU per call: GetPage "
            f"{ours_cpu or 0:.0f} us, Check {empty_cpu or 0:.0f} us"
        ),
        "details": {
            "health_calls_per_s": [round(r.rate, 1) for r in empty],
            "ratios": [round(x, 3) for x in empty_ratios],
            "health_cpu_us_per_call": round(empty_cpu, 1) if empty_cpu else None,
        },
    }
    return [vs_echo, vs_health]


# --- 2. bulk import: API vs raw sqlite3 ---------------------------------------------------


def sqlite_connect(path: Path) -> Any:
    import pysqlite3.dbapi2 as sqlite3  # the SQLite the service links

    conn = sqlite3.connect(str(path), isolation_level=None, timeout=30)
    # The service's connection settings (content_service/db/engine.py).
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA busy_timeout=10000")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def snapshot(database: Path, target: Path) -> None:
    """A consistent copy of a live WAL database (the backup API, not a file copy)."""
    src = sqlite_connect(database)
    dst = sqlite_connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


def plain_tables(conn: Any) -> list[str]:
    """Ordinary tables, parents before children: no virtual tables (FTS) nor their shadow
    tables (triggers keep those in step), no bookkeeping."""
    rows = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'").fetchall()
    virtual = [name for name, sql in rows if sql and sql.upper().startswith("CREATE VIRTUAL")]
    names = [
        name
        for name, _ in rows
        if not name.startswith("sqlite_")
        and name != "alembic_version"
        and name not in virtual
        and not any(name.startswith(f"{v}_") for v in virtual)
    ]
    from content_service.db.models import Base

    order = [t.name for t in Base.metadata.sorted_tables]
    return sorted(names, key=lambda n: (order.index(n) if n in order else len(order), n))


def written_rows(live: Path, before: Path) -> dict[str, tuple[list[str], list[tuple[Any, ...]]]]:
    """The rows the import added, table by table: {table: (columns, rows)}."""
    conn = sqlite_connect(live)
    try:
        conn.execute("ATTACH DATABASE ? AS before", (str(before),))
        out = {}
        for table in plain_tables(conn):
            changed = conn.execute(
                f'SELECT rowid FROM (SELECT rowid, * FROM main."{table}" '
                f'EXCEPT SELECT rowid, * FROM before."{table}") '
                f'WHERE rowid IN (SELECT rowid FROM before."{table}")'
            ).fetchall()
            if changed:
                raise RuntimeError(
                    f"the import updated {len(changed)} existing row(s) of {table}; the raw "
                    "baseline only replays inserts"
                )
            cursor = conn.execute(
                f'SELECT * FROM main."{table}" '
                f'WHERE rowid NOT IN (SELECT rowid FROM before."{table}") ORDER BY rowid'
            )
            rows = cursor.fetchall()
            if rows:
                out[table] = ([d[0] for d in cursor.description], rows)
        return out
    finally:
        conn.close()


def raw_insert(database: Path, rows: dict[str, tuple[list[str], list[tuple[Any, ...]]]]) -> float:
    """Inserts the rows in one transaction; returns the seconds it took, commit included."""
    conn = sqlite_connect(database)
    try:
        started = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        for table, (columns, values) in rows.items():
            names = ", ".join(f'"{c}"' for c in columns)
            marks = ", ".join("?" for _ in columns)
            conn.executemany(f'INSERT INTO "{table}" ({names}) VALUES ({marks})', values)
        conn.execute("COMMIT")
        return time.perf_counter() - started
    finally:
        conn.close()


def import_pages(client: Client, env_id: str, requests: list[pages_pb2.CreatePageRequest]) -> float:
    """BatchCreatePages for every IMPORT_BATCH requests from IMPORT_THREADS threads; returns
    the seconds."""
    batches = [
        pages_pb2.BatchCreatePagesRequest(
            environment_id=env_id, requests=requests[i : i + IMPORT_BATCH]
        )
        for i in range(0, len(requests), IMPORT_BATCH)
    ]
    index = [0]
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker() -> None:
        while True:
            with lock:
                if index[0] >= len(batches) or errors:
                    return
                batch = batches[index[0]]
                index[0] += 1
            try:
                client.pages.BatchCreatePages(batch, metadata=client.metadata, timeout=60)
            except BaseException as exc:
                errors.append(exc)
                return

    threads = [threading.Thread(target=worker) for _ in range(IMPORT_THREADS)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"BatchCreatePages failed: {errors[0]!r}") from errors[0]
    return elapsed


def run_bulk_import(quick: bool) -> dict[str, Any]:
    pages, rounds = (1000, 1) if quick else (2000, 5)
    api_rates: list[float] = []
    raw_rates: list[float] = []
    row_counts: dict[str, int] = {}
    with content_server() as (server, channel, tmp):
        live = Path(server.info["database"])
        client, site_id, _env_id, _definition_id = tenant(channel)
        # Warm-up, not measured: every write connection of the pool prepares its statements
        # and the validators are built, as in a server that has been running a while.
        env_id, definition_id = new_environment(client, site_id, "warm-up")
        import_pages(
            client,
            env_id,
            [page_request(env_id, definition_id, n) for n in range(4 * IMPORT_BATCH)],
        )
        for r in range(rounds):
            env_id, definition_id = new_environment(client, site_id, f"import-{r}")
            requests = [page_request(env_id, definition_id, n) for n in range(pages)]
            before = tmp / f"before-{r}.db"
            snapshot(live, before)
            api_seconds = import_pages(client, env_id, requests)
            rows = written_rows(live, before)
            if len(rows.get("pages", ([], []))[1]) != pages:
                raise RuntimeError(f"expected {pages} new pages, found {rows.keys()}")
            replay = tmp / f"raw-{r}.db"
            shutil.copyfile(before, replay)
            raw_seconds = raw_insert(replay, rows)
            check = written_rows(replay, before)
            if {t: len(v[1]) for t, v in check.items()} != {t: len(v[1]) for t, v in rows.items()}:
                raise RuntimeError("the raw baseline did not write the same rows")
            api_rates.append(pages / api_seconds)
            raw_rates.append(pages / raw_seconds)
            row_counts = {t: len(v[1]) for t, v in rows.items()}
            for path in (before, replay):
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{path}{suffix}").unlink(missing_ok=True)
    ours, base = statistics.median(api_rates), statistics.median(raw_rates)
    ratios = paired_ratios(api_rates, raw_rates)
    rows_per_page = sum(row_counts.values()) / pages
    return {
        "name": "bulk_import",
        "title": f"Bulk import of pages with {SECTIONS_PER_PAGE} sections: API vs raw sqlite3",
        "ours": round(ours, 1),
        "baseline": round(base, 1),
        "unit": "pages/s",
        "ratio": round(statistics.median(ratios), 4),
        "target": 0.4,
        "notes": (
            f"ours = BatchCreatePages over gRPC, {IMPORT_BATCH} pages a call (one transaction "
            f"each) from {IMPORT_THREADS} threads; baseline = the same {rows_per_page:.0f} rows "
            "per page ("
            + ", ".join(f"{t} {n}" for t, n in row_counts.items())
            + f") by pysqlite3 executemany in ONE transaction, its commit checkpointing the "
            "WAL as SQLite does by default (the service checkpoints in a background thread); "
            f"{pages} pages x {rounds} round(s); ratio = median of the rounds' ratios"
        ),
        "details": {
            "api_pages_per_s": [round(x, 1) for x in api_rates],
            "raw_pages_per_s": [round(x, 1) for x in raw_rates],
            "ratios": [round(x, 3) for x in ratios],
            "rows_per_import": row_counts,
        },
    }


def run(quick: bool) -> list[dict[str, Any]]:
    return [*run_get_page(quick), run_bulk_import(quick)]
