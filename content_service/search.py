"""Full-text search over an environment's pages and posts, on either backend.

The query is data, never a query language. It is split on whitespace into words; each word
becomes one quoted FTS5 string on SQLite, or one `phraseto_tsquery` on PostgreSQL (a bound
parameter), so quotes, AND/OR/NOT, `*`, `NEAR(`, `^`, `:` and parentheses are only characters.
Every word must match (AND); a word the tokenizer splits ("e-mail", "foo_bar") must match as
that phrase. Words without a letter or digit are dropped.

Ranking: SQLite bm25 and PostgreSQL ts_rank_cd (with length normalization), a title match
weighing 5 times a body match on both. Snippets come from the body (or the title when the body
is empty) with matches marked; the caller gets them HTML-escaped with <mark> and as parts."""

from __future__ import annotations

import html
import unicodedata
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BindParameter, bindparam, text
from sqlalchemy.orm import Session

from content_service import scope
from content_service.db.models import MARK_END, MARK_START, SEARCH_PAGE, SEARCH_POST
from servicekit.auth import Principal
from servicekit.errors import invalid
from servicekit.pagination import PageRequest

MAX_QUERY_CHARS = 500
MAX_WORDS = 32
# A cursor is an offset into the results; page tokens are signed, so this only bounds ours.
MAX_OFFSET = 10**9
KINDS = (SEARCH_PAGE, SEARCH_POST)
TITLE_WEIGHT = 5.0
SNIPPET_TOKENS = 24
# ts_rank_cd weights are {D, C, B, A}: titles are A, bodies B (migration 0005).
POSTGRES_WEIGHTS = "{0.1, 0.2, 0.2, 1.0}"
POSTGRES_HEADLINE = (
    f"StartSel={MARK_START}, StopSel={MARK_END}, MaxWords={SNIPPET_TOKENS}, MinWords=8, "
    'MaxFragments=2, FragmentDelimiter=" … "'
)
# Fragment mode cuts even a short text down to the words around the match; a text this
# short is shown whole instead (as FTS5's snippet does).
POSTGRES_WHOLE = f"StartSel={MARK_START}, StopSel={MARK_END}, HighlightAll=true"
SHORT_TEXT = 160


@dataclass(frozen=True)
class Hit:
    kind: str
    id: str
    slug: str
    title: str
    status: str
    score: float
    # The snippet with MARK_START/MARK_END around matches.
    marked_snippet: str

    def snippet_parts(self) -> list[tuple[str, bool]]:
        """The snippet as (text, is_match) parts."""
        parts: list[tuple[str, bool]] = []
        for i, chunk in enumerate(self.marked_snippet.split(MARK_START)):
            if i == 0:
                if chunk:
                    parts.append((chunk.replace(MARK_END, ""), False))
                continue
            match, _, rest = chunk.partition(MARK_END)
            if match:
                parts.append((match, True))
            if rest:
                parts.append((rest.replace(MARK_END, ""), False))
        return parts

    def snippet_html(self) -> str:
        return "".join(
            f"<mark>{html.escape(t)}</mark>" if m else html.escape(t)
            for t, m in self.snippet_parts()
        )


def words(query: str) -> list[str]:
    """The words to search for; INVALID_ARGUMENT (field `query`) when there are none."""
    if not query.strip():
        raise invalid("query", "is required")
    if len(query) > MAX_QUERY_CHARS:
        raise invalid("query", f"must be at most {MAX_QUERY_CHARS} characters")
    # Control and private-use characters (our highlight markers) separate words.
    cleaned = "".join(" " if unicodedata.category(ch) in ("Cc", "Co", "Cs") else ch for ch in query)
    found = [w for w in cleaned.split() if any(ch.isalnum() for ch in w)]
    if not found:
        raise invalid("query", "has no letters or digits to search for")
    if len(found) > MAX_WORDS:
        raise invalid("query", f"must have at most {MAX_WORDS} words")
    return found


def offset_of(page: PageRequest) -> int:
    if page.after is None:
        return 0
    try:
        offset = int(page.after)
    except ValueError:
        raise invalid("page_token", "not a token this service issued") from None
    if not 0 <= offset <= MAX_OFFSET:
        raise invalid("page_token", "not a token this service issued")
    return offset


def search(
    session: Session,
    principal: Principal,
    environment_id: str,
    query_words: list[str],
    kinds: list[str],
    page: PageRequest,
) -> list[Hit]:
    """Up to page.size + 1 hits from the page's offset, best first."""
    env = scope.environment(session, principal, environment_id)
    params: dict[str, Any] = {
        "env": env.environment_id,
        "kinds": sorted(set(kinds) or set(KINDS)),
        "limit": page.size + 1,
        "offset": offset_of(page),
    }
    if session.get_bind().dialect.name == "sqlite":
        rows = _sqlite(session, query_words, params)
    else:
        rows = _postgres(session, query_words, params)
    return [
        Hit(
            kind=row.kind,
            id=row.source_id,
            slug=row.slug,
            title=row.title,
            status=row.status,
            score=float(row.score),
            marked_snippet=row.body_snippet if row.has_body else row.title_snippet,
        )
        for row in rows
    ]


def fts5_query(environment_id: str, query_words: list[str]) -> str:
    """An FTS5 MATCH expression in which every user word is one quoted string (an embedded
    double quote is doubled, FTS5's only escape): the environment's documents containing
    every word in the title or body."""
    quoted = " ".join('"' + w.replace('"', '""') + '"' for w in query_words)
    env = environment_id.replace('"', '""')
    return f'environment_id:"{env}" AND {{title body}}:({quoted})'


_KINDS_PARAM: BindParameter[Any] = bindparam("kinds", expanding=True)

_SQLITE_SQL = text(f"""
SELECT d.kind,
       coalesce(d.page_id, d.post_id) AS source_id,
       coalesce(p.slug, q.slug) AS slug,
       coalesce(p.title, q.title) AS title,
       coalesce(p.status, q.status) AS status,
       -bm25(search_fts, 0.0, {TITLE_WEIGHT}, 1.0) AS score,
       d.body != '' AS has_body,
       snippet(search_fts, 1, :mark_start, :mark_end, '…', {SNIPPET_TOKENS}) AS title_snippet,
       snippet(search_fts, 2, :mark_start, :mark_end, '…', {SNIPPET_TOKENS}) AS body_snippet
FROM search_fts
JOIN search_documents d ON d.id = search_fts.rowid
LEFT JOIN pages p ON p.id = d.page_id
LEFT JOIN posts q ON q.id = d.post_id
WHERE search_fts MATCH :match AND d.kind IN :kinds
ORDER BY bm25(search_fts, 0.0, {TITLE_WEIGHT}, 1.0), d.id
LIMIT :limit OFFSET :offset
""").bindparams(_KINDS_PARAM)


def _sqlite(session: Session, query_words: list[str], params: dict[str, Any]) -> list[Any]:
    params = {
        **params,
        "match": fts5_query(params["env"], query_words),
        "mark_start": MARK_START,
        "mark_end": MARK_END,
    }
    return list(session.execute(_SQLITE_SQL, params))


def _postgres(session: Session, query_words: list[str], params: dict[str, Any]) -> list[Any]:
    # One phraseto_tsquery per word, each a bound parameter: nothing the user typed is ever
    # parsed as tsquery syntax.
    tsquery = " && ".join(
        f"phraseto_tsquery('simple'::regconfig, :w{i})" for i in range(len(query_words))
    )
    sql = text(f"""
WITH query AS (SELECT {tsquery} AS q),
hits AS (
    SELECT d.id, d.kind, d.page_id, d.post_id, d.title AS doc_title, d.body AS doc_body,
           ts_rank_cd('{POSTGRES_WEIGHTS}'::float4[], d.tsv, query.q, 1) AS score
    FROM search_documents d CROSS JOIN query
    WHERE d.environment_id = :env AND d.kind IN :kinds AND d.tsv @@ query.q
    ORDER BY score DESC, d.id
    LIMIT :limit OFFSET :offset
)
SELECT h.kind,
       coalesce(h.page_id, h.post_id) AS source_id,
       coalesce(p.slug, o.slug) AS slug,
       coalesce(p.title, o.title) AS title,
       coalesce(p.status, o.status) AS status,
       h.score,
       h.doc_body != '' AS has_body,
       ts_headline('simple'::regconfig, h.doc_title, query.q, :whole) AS title_snippet,
       CASE WHEN h.doc_body = '' THEN ''
            WHEN length(h.doc_body) <= {SHORT_TEXT}
            THEN ts_headline('simple'::regconfig, h.doc_body, query.q, :whole)
            ELSE ts_headline('simple'::regconfig, h.doc_body, query.q, :headline)
       END AS body_snippet
FROM hits h CROSS JOIN query
LEFT JOIN pages p ON p.id = h.page_id
LEFT JOIN posts o ON o.id = h.post_id
ORDER BY h.score DESC, h.id
""").bindparams(_KINDS_PARAM)
    params = {
        **params,
        "headline": POSTGRES_HEADLINE,
        "whole": POSTGRES_WHOLE,
        **{f"w{i}": w for i, w in enumerate(query_words)},
    }
    return list(session.execute(sql, params))
