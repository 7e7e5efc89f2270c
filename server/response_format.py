"""JSON answers: OpenAI's `response_format`, checked and bounded before it reaches vLLM.

`{"type": "text"}` (the default), `{"type": "json_object"}` and `{"type": "json_schema",
"json_schema": {"name", "schema", "strict", "description"}}` go to vLLM's structured
outputs, which constrain every generated token to the schema (with `strict` or without).

vLLM 0.32 turns a schema into a grammar in its API server's event loop and compiles it on
one thread per two CPUs, and some schemas make either take long or fail: a pattern
`a{1,10000}` holds the API server for 13 s (health checks included) and ends in a 500,
2000 optional properties hold the compile thread for 18 s (every other JSON request waits),
a `$ref` that reaches itself through no object or array fails the request with a 500. The
gateway refuses these first, with a 400 `invalid_response_format` whose `param` says where:
- the schema's size (bytes as compact JSON), nesting (objects and arrays inside each other)
  and number of properties, each bounded by a setting (`SchemaLimits`);
- references: inside the schema only (`#`, `#/...`), pointing at something, and no cycle
  of references and combinators (allOf, anyOf, oneOf, not, if/then/else) alone;
- patterns: the counted repetitions (`{n,m}`) of all the schema's patterns together expand
  to at most `MAX_PATTERN_REPEAT` characters (the conversion's cost grows with their square).
What vLLM still refuses (a keyword its grammar backend lacks, a pattern it cannot parse)
comes back as the same 400 with vLLM's reason (server/upstream.py).
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .errors import APIError

if TYPE_CHECKING:
    from .config import Settings

SCHEMA_PARAM = "response_format.json_schema.schema"
# Characters all the counted repetitions of a schema's patterns may expand to: 1000 is
# 0.1-0.3 s of vLLM's conversion on one core, 10000 is 6-13 s.
MAX_PATTERN_REPEAT = 1000


class JSONSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, populate_by_name=True)
    name: str = Field(
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="the schema's name: letters, digits, _ and -, at most 64",
    )
    description: str | None = Field(default=None, max_length=4096)
    schema_: dict[str, Any] = Field(alias="schema", description="a JSON Schema object")
    strict: bool | None = Field(
        default=None, description="accepted; the answer follows the schema either way"
    )


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_with_its_type(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("type json_schema needs json_schema: {name, schema}")
        if self.type != "json_schema" and self.json_schema is not None:
            raise ValueError(f"type {self.type} takes no json_schema (use type json_schema)")
        return self

    @property
    def is_json(self) -> bool:
        return self.type != "text"

    def upstream(self) -> dict[str, Any] | None:
        """What vLLM gets: None for text (no constraint), else the format as OpenAI spells it."""
        if not self.is_json:
            return None
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


@dataclass(frozen=True)
class SchemaLimits:
    max_bytes: int
    max_depth: int
    max_properties: int

    @classmethod
    def from_settings(cls, settings: Settings) -> SchemaLimits:
        return cls(
            settings.max_schema_bytes, settings.max_schema_depth, settings.max_schema_properties
        )


# Where a schema holds subschemas (JSON Schema 2020-12 and draft 7).
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_ONE_SCHEMA = (
    "items", "additionalItems", "unevaluatedItems", "contains", "additionalProperties",
    "unevaluatedProperties", "propertyNames", "contentSchema", "not", "if", "then", "else",
)  # fmt: skip
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems", "items")
# Keywords whose subschemas describe the same JSON value as the schema holding them: a
# cycle through these alone (and $ref) never reaches an object or array to stop at.
_SAME_VALUE = ("allOf", "anyOf", "oneOf", "not", "if", "then", "else")

Path = tuple[str | int, ...]


def _where(path: Path) -> str:
    """("properties", "a", "items", 0) ->
    "response_format.json_schema.schema.properties.a.items[0]"."""
    where = SCHEMA_PARAM
    for part in path:
        where += f"[{part}]" if isinstance(part, int) else f".{part}"
    return where if len(where) <= 300 else where[:297] + "..."


def _refuse(message: str, path: Path = ()) -> APIError:
    return APIError(400, message, "invalid_response_format", param=_where(path))


def _depth(document: dict[str, Any] | list[Any], limit: int) -> int:
    """How deep objects and arrays nest in `document` (itself 1), counting no further than
    `limit + 1`; iterative, so any nesting is safe to measure."""
    level: list[Any] = [document]
    depth = 0
    while level and depth <= limit:
        depth += 1
        level = [
            child
            for node in level
            for child in (node.values() if isinstance(node, dict) else node)
            if isinstance(child, (dict, list))
        ]
    return depth


def _subschemas(node: dict[str, Any], path: Path) -> Iterator[tuple[Any, Path]]:
    for key in _SCHEMA_MAPS:
        value = node.get(key)
        if isinstance(value, dict):
            for name, child in value.items():
                yield child, (*path, key, name)
    value = node.get("dependencies")
    if isinstance(value, dict):
        for name, child in value.items():
            if isinstance(child, dict):
                yield child, (*path, "dependencies", name)
    for key in _ONE_SCHEMA:
        if isinstance(node.get(key), dict):
            yield node[key], (*path, key)
    for key in _SCHEMA_LISTS:
        value = node.get(key)
        if isinstance(value, list):
            for i, child in enumerate(value):
                yield child, (*path, key, i)


def _schemas(root: dict[str, Any]) -> Iterator[tuple[dict[str, Any], Path]]:
    """Every schema object in `root` with its path, root first."""
    stack: list[tuple[Any, Path]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            yield node, path
            stack.extend(_subschemas(node, path))


def _pointer(root: dict[str, Any], ref: str, path: Path) -> Path:
    """The path `ref` (`#` or `#/a/b`, JSON-pointer escaped) names in `root`."""
    if ref != "#" and not ref.startswith("#/"):
        raise _refuse(
            f"$ref {ref[:100]!r}: only references inside the schema are supported "
            "(#, #/$defs/NAME, ...)",
            path,
        )
    target: Path = ()
    node: Any = root
    for raw in ref[2:].split("/") if ref != "#" else []:
        part = urllib.parse.unquote(raw).replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node, target = node[part], (*target, part)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node, target = node[int(part)], (*target, int(part))
        else:
            raise _refuse(f"$ref {ref[:100]!r} points at nothing in the schema", path)
    return target


def _same_value_cycle(edges: dict[Path, list[Path]]) -> Path | None:
    """A schema on a cycle of same-value edges, if there is one (iterative depth-first)."""
    state: dict[Path, int] = {}  # 1: on the current walk, 2: done
    for start in edges:
        if state.get(start):
            continue
        state[start] = 1
        stack = [(start, iter(edges.get(start, ())))]
        while stack:
            node, following = stack[-1]
            step = next(following, None)
            if step is None:
                state[node] = 2
                stack.pop()
            elif state.get(step) == 1:
                return step
            elif not state.get(step):
                state[step] = 1
                stack.append((step, iter(edges.get(step, ()))))
    return None


_QUANTIFIER = re.compile(r"\{(\d*),?(\d*)\}")


def repetition_cost(pattern: str, cap: int = MAX_PATTERN_REPEAT) -> int:
    """The characters the counted repetitions (`{n}`, `{n,}`, `{n,m}`) of a regex expand
    to: each one's bound (m, else n) times the size of what it repeats (a group's own
    repetitions, at least 1), alternatives added. Stops counting past `cap`."""
    # One frame per open group: [cost so far, cost of the last atom, what that atom added].
    frames = [[0, 0, 0]]
    i, n = 0, len(pattern)
    while i < n and frames[0][0] <= cap:
        c = pattern[i]
        frame = frames[-1]
        if c == "\\":
            # \p{...} and \P{...} name a class; their braces are no quantifier
            end = pattern.find("}", i) + 1 if pattern[i + 1 : i + 3] in ("p{", "P{") else 0
            i = end if end > 0 else i + 2
            frame[1:] = [0, 0]
            continue
        if c == "[":
            i += 1
            if i < n and pattern[i] == "^":
                i += 1
            if i < n and pattern[i] == "]":
                i += 1
            while i < n and pattern[i] != "]":
                i += 2 if pattern[i] == "\\" else 1
            i += 1
            frame[1:] = [0, 0]
            continue
        if c == "(":
            frames.append([0, 0, 0])
        elif c == ")" and len(frames) > 1:
            inner = frames.pop()[0]
            frames[-1][0] += inner
            frames[-1][1:] = [inner, inner]
        elif c == "{" and (found := _QUANTIFIER.match(pattern, i)) and (found[1] or found[2]):
            digits = found[2] or found[1]
            bound = cap + 1 if len(digits) > 9 else min(int(digits), cap + 1)
            added = min(bound * max(1, frame[1]), cap + 1)
            frame[0] += added - frame[2]
            frame[1:] = [added, added]
            i = found.end()
            continue
        elif c not in "*+?":  # loops and options expand nothing; alternatives add up
            frame[1:] = [0, 0]
        i += 1
    while len(frames) > 1:  # an unclosed group: the engine refuses the pattern anyway
        frames[-2][0] += frames.pop()[0]
    return frames[0][0]


def check_schema(schema: dict[str, Any], limits: SchemaLimits) -> None:
    """A 400 `invalid_response_format` naming the first problem; None when the schema is
    within the limits and has no reference or pattern the engine would choke on."""
    depth = _depth(schema, limits.max_depth)
    if depth > limits.max_depth:
        raise _refuse(
            f"the schema nests objects and arrays more than {limits.max_depth} deep "
            "(a property's schema inside `properties` counts 2): flatten it "
            "(limit: --max-schema-depth)"
        )
    size = len(json.dumps(schema, separators=(",", ":"), ensure_ascii=False).encode())
    if size > limits.max_bytes:
        raise _refuse(
            f"the schema is {size} bytes as compact JSON, over the gateway's limit of "
            f"{limits.max_bytes} (--max-schema-bytes)"
        )
    properties, repeat = 0, 0
    edges: dict[Path, list[Path]] = {}
    for node, path in _schemas(schema):
        for key in ("properties", "patternProperties"):
            if isinstance(node.get(key), dict):
                properties += len(node[key])
        if properties > limits.max_properties:
            raise _refuse(
                f"the schema has more than {limits.max_properties} properties in all "
                "(--max-schema-properties)",
                path,
            )
        patterns = [(node.get("pattern"), (*path, "pattern"))]
        if isinstance(node.get("patternProperties"), dict):
            patterns += [(key, (*path, "patternProperties")) for key in node["patternProperties"]]
        for pattern, where in patterns:
            if isinstance(pattern, str):
                repeat += repetition_cost(pattern)
                if repeat > MAX_PATTERN_REPEAT:
                    raise _refuse(
                        "the counted repetitions ({n,m}) of the schema's patterns expand to "
                        f"more than {MAX_PATTERN_REPEAT} characters, which the engine cannot "
                        "convert quickly: bound a string's length with minLength/maxLength "
                        "instead",
                        where,
                    )
        same = [
            (*path, key) for key in ("not", "if", "then", "else") if isinstance(node.get(key), dict)
        ]
        for key in ("allOf", "anyOf", "oneOf"):
            if isinstance(node.get(key), list):
                same += [(*path, key, i) for i in range(len(node[key]))]
        ref = node.get("$ref")
        if ref is not None:
            if not isinstance(ref, str):
                raise _refuse("$ref must be a string", (*path, "$ref"))
            same.append(_pointer(schema, ref, (*path, "$ref")))
        if same:
            edges[path] = same
    cycle = _same_value_cycle(edges)
    if cycle is not None:
        raise _refuse(
            "this schema reaches itself through $ref and allOf/anyOf/oneOf alone, with no "
            "object or array in between: no JSON value can match it",
            cycle,
        )
