"""Section definition schemas are self-contained: checked once, when a definition is written,
so that validating content against them never opens a connection or a file and never fails.

- Every `$ref` and `$dynamicRef` must resolve inside the schema itself (a JSON pointer such as
  `#/$defs/x`, an `$anchor`, or the `$id` of one of its own subschemas). Remote references
  are refused, never fetched: the `referencing` registry the validators use retrieves nothing
  (`NO_RETRIEVAL`), and jsonschema-rs is given a retriever that refuses (`refuse_retrieval`).
- A schema that applies itself to the same value without descending into it (`{"$ref": "#"}`,
  two `$defs` whose `allOf` name each other) would recurse forever on any content; JSON Schema
  leaves its meaning undefined (2020-12 core, section 9.4.1) and it is refused.
- Regular expressions (`pattern`, `patternProperties`) run on jsonschema-rs's engine (Rust
  `regex`, linear in the text, with fancy-regex's backtrack limit for backreferences and
  lookaround), never on Python's `re`, whose backtracking a pattern like `^(a+)+$` turns into
  minutes holding the GIL (and, in a write, the SQLite write lock). A pattern that engine
  cannot compile is refused, and so is `unevaluatedProperties` in a schema that has
  `patternProperties` (python-jsonschema would evaluate those patterns with `re`).
- Work per value is bounded: a schema that is not recursive must not expand to more than
  MAX_EXPANSION subschema applications (each `$ref` counted where it is used: `allOf` of two
  `$defs` each an `allOf` of two more... doubles per level). A recursive one (a tree) can still
  cost 2^depth with two recursive branches per level: python-jsonschema checks content within
  a budget of evaluations (validation.MAX_EVALUATIONS); jsonschema-rs, which answers only
  "valid" first, was measured to stay linear on such schemas.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import jsonschema_rs
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource, Unresolvable, Unretrievable
from referencing.jsonschema import DRAFT202012

from servicekit.errors import InvalidArgument, invalid, shown

Resolver = Any  # referencing._core.Resolver[Any]: not exported under a public name


def _no_retrieval(uri: str) -> Resource[Any]:
    raise NoSuchResource(ref=uri)  # type: ignore[call-arg]


# The registry every python-jsonschema validator of ours uses (jsonschema adds the
# meta-schemas it ships): nothing outside the schema is ever retrieved.
NO_RETRIEVAL: Registry[Any] = Registry(retrieve=_no_retrieval)  # type: ignore[call-arg]


def refuse_retrieval(uri: str) -> Any:
    """jsonschema-rs's retriever: refuses every URI."""
    raise ValueError(f"remote references are not retrieved ({uri})")


# Keywords that apply a subschema to the same value (in place), as opposed to its items or
# properties: a cycle through these alone never ends.
_IN_PLACE_ONE = ("not", "if", "then", "else")
_IN_PLACE_LISTS = ("allOf", "anyOf", "oneOf")
_IN_PLACE_MAPS = ("dependentSchemas",)
_REFERENCES = ("$ref", "$dynamicRef")


def check(schema: dict[str, Any], field: str) -> None:
    """Raises InvalidArgument (naming `field`) unless every reference resolves inside the schema,
    no subschema applies itself to the same value, and every pattern compiles on the engine
    content is checked with. The schema has passed the meta-schema check."""
    root = DRAFT202012.create_resource(schema)
    state: dict[int, int] = {}  # id(subschema) -> 1 on the current path, 2 done
    has_pattern_properties = has_unevaluated = False
    for contents, here in _subschemas(root, NO_RETRIEVAL.resolver_with_root(root)):
        _walk_in_place(contents, here, field, state)
        if isinstance(contents, dict):
            patterns = contents.get("patternProperties")
            if isinstance(patterns, dict):
                has_pattern_properties = True
                for pattern in patterns:
                    _compiles(pattern, field)
            if isinstance(contents.get("pattern"), str):
                _compiles(contents["pattern"], field)
            has_unevaluated = has_unevaluated or "unevaluatedProperties" in contents
    if has_pattern_properties and has_unevaluated:
        raise invalid(
            field, "unevaluatedProperties is not supported in a schema with patternProperties"
        )
    edges, start = _graph(schema)
    expansion = _expansion(edges, start)
    if expansion is not None and expansion > MAX_EXPANSION:
        raise invalid(
            field,
            f"the schema expands to more than {MAX_EXPANSION} subschema applications per value "
            "(references reused inside references); define each part once",
        )


# Subschema applications a non-recursive schema may expand to (see the module docstring).
MAX_EXPANSION = 20_000


def _graph(schema: dict[str, Any]) -> tuple[dict[int, list[int]], int]:
    """Every subschema (by id) and the subschemas it applies: its own (properties, items,
    allOf...) and the targets of its references."""
    root = DRAFT202012.create_resource(schema)
    stack = [(root, NO_RETRIEVAL.resolver_with_root(root))]
    edges: dict[int, list[int]] = {}
    alive: list[Any] = []  # ids stay unique while the objects live
    while stack:
        resource, here = stack.pop()
        contents = resource.contents
        if not isinstance(contents, dict) or id(contents) in edges:
            continue
        alive.append(contents)
        out = edges[id(contents)] = []
        for sub in resource.subresources():
            if isinstance(sub.contents, dict):
                out.append(id(sub.contents))
                stack.append((sub, here.in_subresource(sub)))
        for keyword in _REFERENCES:
            ref = contents.get(keyword)
            if isinstance(ref, str):
                resolved = here.lookup(ref)
                if isinstance(resolved.contents, dict):
                    out.append(id(resolved.contents))
                    target = DRAFT202012.create_resource(resolved.contents)
                    stack.append((target, resolved.resolver))
    return edges, id(schema)


def _expansion(edges: dict[int, list[int]], start: int) -> int | None:
    """How many subschema applications one value meets from `start` (capped just past
    MAX_EXPANSION), or None when the graph has a cycle (a recursive schema)."""
    count: dict[int, int] = {}
    on_path: set[int] = set()
    path = [(start, iter(edges.get(start, ())))]
    on_path.add(start)
    while path:
        node, children = path[-1]
        child = next(children, None)
        if child is None:
            path.pop()
            on_path.discard(node)
            count[node] = min(MAX_EXPANSION + 1, 1 + sum(count[c] for c in edges.get(node, ())))
            continue
        if child in on_path:
            return None
        if child not in count:
            on_path.add(child)
            path.append((child, iter(edges.get(child, ()))))
    return count[start]


@lru_cache(maxsize=4096)
def _pattern(pattern: str) -> jsonschema_rs.Validator:
    return jsonschema_rs.validator_for({"pattern": pattern})


def pattern_matches(pattern: str, text: str) -> bool:
    """JSON Schema's `pattern` (a search, not a full match) on jsonschema-rs's engine."""
    return bool(_pattern(pattern).is_valid(text))


def _compiles(pattern: str, field: str) -> None:
    try:
        _pattern(pattern)
    except (ValueError, jsonschema_rs.ValidationError):
        raise invalid(
            field,
            f"pattern {shown(pattern)} is not a regular expression this service can run "
            "(ECMA 262 syntax, as JSON Schema asks)",
        ) from None


def _subschemas(resource: Resource[Any], resolver: Resolver) -> Iterator[tuple[Any, Resolver]]:
    """Every subschema with the resolver in force where it stands ($id changes the base)."""
    stack = [(resource, resolver)]
    while stack:
        current, here = stack.pop()
        yield current.contents, here
        for sub in current.subresources():
            stack.append((sub, here.in_subresource(sub)))


def _walk_in_place(start: Any, resolver: Resolver, field: str, state: dict[int, int]) -> None:
    """Depth-first over the in-place edges from `start`; reaching a subschema that is on the
    current path again is a cycle."""
    if not isinstance(start, dict) or id(start) in state:
        return
    state[id(start)] = 1
    path = [(start, _in_place(start, resolver, field))]
    while path:
        node, edges = path[-1]
        step = next(edges, None)
        if step is None:
            state[id(node)] = 2
            path.pop()
            continue
        how, target, where = step
        if not isinstance(target, dict):
            continue  # true / false: nothing further
        seen = state.get(id(target))
        if seen == 1:
            raise _cycle(how, field)
        if seen is None:
            state[id(target)] = 1
            path.append((target, _in_place(target, where, field)))


def _in_place(
    contents: dict[str, Any], here: Resolver, field: str
) -> Iterator[tuple[str, Any, Resolver]]:
    """(how, subschema, its resolver) for each subschema that `contents` applies to the same
    value; references are resolved here, so an unresolvable one is refused."""
    for keyword in _REFERENCES:
        ref = contents.get(keyword)
        if isinstance(ref, str):
            resolved = _resolve(here, ref, keyword, field)
            yield f"{keyword} {shown(ref)}", resolved.contents, resolved.resolver
    children: list[tuple[str, Any]] = [(k, contents[k]) for k in _IN_PLACE_ONE if k in contents]
    for keyword in _IN_PLACE_LISTS:
        value = contents.get(keyword)
        if isinstance(value, list):
            children.extend((f"{keyword}[{i}]", sub) for i, sub in enumerate(value))
    for keyword in _IN_PLACE_MAPS:
        value = contents.get(keyword)
        if isinstance(value, dict):
            children.extend((f"{keyword}.{shown(name)}", sub) for name, sub in value.items())
    for how, sub in children:
        if isinstance(sub, dict):
            yield how, sub, here.in_subresource(DRAFT202012.create_resource(sub))


def _resolve(here: Resolver, ref: str, keyword: str, field: str) -> Any:
    try:
        return here.lookup(ref)
    except (NoSuchResource, Unretrievable):
        raise invalid(
            field,
            f"{keyword} {shown(ref)} points outside the schema: schemas must be self-contained "
            "(remote references are not fetched); put the referenced schema under $defs and "
            'refer to it as "#/$defs/<name>"',
        ) from None
    except (Unresolvable, ValueError, LookupError, TypeError) as exc:
        raise invalid(
            field, f"{keyword} {shown(ref)} does not resolve inside the schema ({shown(exc)})"
        ) from None


def _cycle(how: str, field: str) -> InvalidArgument:
    return invalid(
        field,
        f"the schema applies itself to the same value without descending into it (at {how}), "
        "so checking any content would never end; a recursive schema must recurse through "
        "properties or items",
    )
