"""JSON answers (`response_format`): the gateway's checks of a schema, and the real engine
(`arc-serve`, tiny checkpoint, greedy) behind `arc-gateway` on loopback: answers that parse
and validate against the schema they were given (whole, streamed, through the official
`openai` client); hostile schemas refused with a 400 naming the problem while the engine
keeps answering."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
import pytest
from helpers import uploaded, video_question
from media_factory import make_clip
from pydantic import BaseModel, Field, ValidationError
from servers import running_gateway

from server.chat.answers import JSON_ANSWER, parse_answer
from server.config import Settings, load_settings
from server.errors import APIError, invalid_request
from server.response_format import (
    MAX_PATTERN_REPEAT,
    SchemaLimits,
    check_schema,
    repetition_cost,
)
from server.schemas import ChatCompletionRequest

# A schema the tiny random model must finish: every string, number and array is bounded,
# so the grammar leaves it no endless path (an unbounded string never closes: its random
# weights rarely pick the quote).
TAGS = {
    "type": "object",
    "properties": {
        "label": {"type": "string", "enum": ["cat", "dog", "other"]},
        "score": {"type": "integer", "minimum": 0, "maximum": 9},
        "title": {"type": "string", "maxLength": 8},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 5}, "maxItems": 3},
        "outdoor": {"type": "boolean"},
    },
    "required": ["label", "score", "title", "tags", "outdoor"],
    "additionalProperties": False,
}
JSON_SCHEMA = {
    "type": "json_schema",
    "json_schema": {"name": "tags", "schema": TAGS, "strict": True},
}
SCHEMA_PARAM = "response_format.json_schema.schema"
LIMITS = SchemaLimits.from_settings(Settings())


def _request(**extra: object) -> ChatCompletionRequest:
    body = {"messages": [{"role": "user", "content": "Tag it."}], **extra}
    return ChatCompletionRequest.model_validate(body)


def _refusal(schema: dict, limits: SchemaLimits = LIMITS) -> APIError:
    with pytest.raises(APIError) as refused:
        check_schema(schema, limits)
    error = refused.value
    assert (error.status_code, error.code) == (400, "invalid_response_format"), error.message
    return error


def _nested(levels: int) -> dict:
    schema: dict = {"type": "string", "maxLength": 3}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema


# -- the request's shape -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "response_format",
    [
        {"type": "text"},
        {"type": "json_object"},
        JSON_SCHEMA,
        {"type": "json_schema", "json_schema": {"name": "t-1_x", "schema": {}, "description": "d"}},
    ],
)
def test_response_formats_openai_defines_are_accepted(response_format: dict) -> None:
    request = _request(response_format=response_format)
    request.check(Settings())
    sent = request.engine_options().get("response_format")
    if response_format["type"] == "text":
        assert sent is None  # no constraint: nothing goes to vLLM
    else:
        assert sent == response_format  # as OpenAI spells it ("schema", not the field name)


@pytest.mark.parametrize(
    ("response_format", "code", "param"),
    [
        ({"type": "json_schema"}, "invalid_request", "response_format"),
        ({"type": "json_object", "json_schema": {"name": "x", "schema": {}}}, "invalid_request",
         "response_format"),
        ({"type": "regex"}, "invalid_request", "response_format.type"),
        ({"type": "structural_tag", "format": {}}, "invalid_request", "response_format.type"),
        ({"type": "json_schema", "json_schema": {"name": "x"}}, "invalid_request",
         "response_format.json_schema.schema"),
        ({"type": "json_schema", "json_schema": {"name": "a b", "schema": {}}}, "invalid_request",
         "response_format.json_schema.name"),
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": [1]}}, "invalid_request",
         "response_format.json_schema.schema"),
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": {}, "x": 1}},
         "unknown_parameter", "response_format.json_schema.x"),
    ],
)  # fmt: skip
def test_malformed_response_formats_are_refused_by_name(
    response_format: dict, code: str, param: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        _request(response_format=response_format)
    error = invalid_request(refused.value.errors())
    assert (error.status_code, error.code, error.param) == (400, code, param), error.message


def test_a_json_answer_gets_the_bare_question_unless_a_task_is_named() -> None:
    """The qa instruction asks for <think>/<answer> tags, which the JSON grammar leaves no
    room for: a JSON answer's prompt is the question alone (task none), unless the request
    names a task. A text answer keeps the template's default (qa)."""
    assert _request().template_task() is None and _request().task() == "qa"
    assert _request(response_format={"type": "text"}).template_task() is None
    assert _request(response_format={"type": "json_object"}).template_task() == "none"
    named = _request(response_format=JSON_SCHEMA, video={"task": "summary"})
    assert named.template_task() == "summary"
    # task none needs no question: the video alone, answered in JSON
    bare = ChatCompletionRequest.model_validate(
        {
            "messages": [{"role": "user", "content": [
                {"type": "video_url", "video_url": {"url": "file-x"}}]}],
            "response_format": {"type": "json_object"},
        }
    )  # fmt: skip
    bare.check(Settings())


def test_structured_of_a_json_answer_is_the_text_unparsed() -> None:
    """No tag or time-range parsing of a JSON answer: its strings are the caller's."""
    text = ' {"answer": "<answer>00:01-00:03</answer>", "t": "<think>x</think>"}\n'
    structured = parse_answer(text, JSON_ANSWER).model_dump(mode="json", exclude_none=True)
    assert structured == {"thinking": None, "answer": text.strip(), "segments": None}
    assert parse_answer("", JSON_ANSWER).model_dump(exclude_none=True) == {
        "thinking": None,
        "answer": None,
        "segments": None,
    }


# -- the schema's bounds -----------------------------------------------------------------------


def test_schema_limits_are_settings_and_each_names_itself() -> None:
    settings = load_settings(
        ["--max-schema-depth", "8"],
        {"ARC_GATEWAY_MAX_SCHEMA_BYTES": "2000", "ARC_GATEWAY_MAX_SCHEMA_PROPERTIES": "10"},
    )
    limits = SchemaLimits.from_settings(settings)
    assert limits == SchemaLimits(max_bytes=2000, max_depth=8, max_properties=10)
    defaults = SchemaLimits.from_settings(Settings())
    assert defaults == SchemaLimits(max_bytes=32768, max_depth=32, max_properties=256)
    with pytest.raises(ValueError, match="max_schema_depth"):
        Settings(max_schema_depth=0)

    check_schema(_nested(3), limits)  # 7 levels deep: the limit is 8
    error = _refusal(_nested(4), limits)
    assert "more than 8 deep" in error.message and "--max-schema-depth" in error.message
    assert error.param == SCHEMA_PARAM

    wide = {"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(10)}}
    check_schema(wide, limits)
    wide["properties"]["one_more"] = {"type": "integer"}
    error = _refusal(wide, limits)
    assert "more than 10 properties" in error.message and "--max-schema-properties" in error.message
    # properties count across the whole schema, nested ones and $defs included
    spread = {"$defs": {"d": {"type": "object", "properties": {f"q{i}": {} for i in range(6)}}},
              "type": "object", "properties": {f"p{i}": {} for i in range(5)}}  # fmt: skip
    assert "more than 10 properties" in _refusal(spread, limits).message

    big = {"enum": ["x" * 100] * 20}
    error = _refusal(big, limits)
    assert "bytes as compact JSON" in error.message and "--max-schema-bytes" in error.message
    # bytes of UTF-8, not characters
    assert "bytes" in _refusal({"const": "é" * 1000}, limits).message


def test_nesting_of_any_depth_is_measured_without_recursion() -> None:
    schema: Any = {}
    for _ in range(100_000):
        schema = {"x": schema}
    assert "more than 32 deep" in _refusal(schema).message


@pytest.mark.parametrize(
    ("schema", "said", "where"),
    [
        ({"$ref": "https://169.254.169.254/latest/meta-data"}, "only references inside",
         ".$ref"),
        ({"$ref": "#anchor"}, "only references inside", ".$ref"),
        ({"$ref": "#/$defs/missing"}, "points at nothing", ".$ref"),
        ({"properties": {"a": {"$ref": 3}}}, "must be a string", ".properties.a.$ref"),
        ({"$ref": "#"}, "reaches itself", ""),
        ({"$defs": {"x": {"$ref": "#/$defs/y"}, "y": {"$ref": "#/$defs/x"}},
          "$ref": "#/$defs/x"}, "reaches itself", ".$defs.x"),
        ({"$defs": {"a": {"allOf": [{"$ref": "#/$defs/b"}]},
                    "b": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/a"}]}},
          "$ref": "#/$defs/a"}, "reaches itself", ".$defs.a"),
        ({"not": {"$ref": "#"}}, "reaches itself", ""),
    ],
)  # fmt: skip
def test_references_outside_missing_or_in_a_bare_cycle_are_refused(
    schema: dict, said: str, where: str
) -> None:
    error = _refusal(schema)
    assert said in error.message and error.param == SCHEMA_PARAM + where


@pytest.mark.parametrize(
    "schema",
    [
        # recursion through an object or an array: a tree, finite answers exist
        {"$defs": {"node": {"type": "object", "properties": {
            "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}}}},
         "$ref": "#/$defs/node"},
        {"type": "object", "properties": {"next": {"$ref": "#"}}},
        # JSON-pointer escapes (~1 is /, ~0 is ~) and percent-encoding
        {"$defs": {"a/b": {"type": "integer"}, "c~d": {"type": "string"}, "e f": {}},
         "anyOf": [{"$ref": "#/$defs/a~1b"}, {"$ref": "#/$defs/c~0d"}, {"$ref": "#/$defs/e%20f"}]},
        # 2^40 paths through anyOf, but no cycle
        {"$defs": {**{f"d{i}": {"anyOf": [{"$ref": f"#/$defs/d{i + 1}"}] * 2} for i in range(40)},
                   "d40": {"type": "integer"}}, "$ref": "#/$defs/d0"},
        # a property named like a keyword is a property, not a keyword
        {"type": "object", "properties": {"pattern": {"type": "string"},
                                          "$ref": {"type": "string"}}},
    ],
)  # fmt: skip
def test_schemas_that_only_look_dangerous_pass(schema: dict) -> None:
    check_schema(schema, LIMITS)


@pytest.mark.parametrize(
    ("pattern", "cost"),
    [
        (r"^[A-Z]{2,3}$", 3),
        (r"^\d{4}-\d{2}-\d{2}$", 8),
        (r"\w{1,100}@\w{1,100}", 200),
        (r"(ab){1,50}", 50),
        (r"((a{1,10}){1,10}){1,10}", 1000),
        (r"(?:x|y){300}|z{5}", 305),
        (r"\p{L}{3}", 3),
        (r"[{]{5}", 5),
        (r"a\{5000\}", 0),
        (r"a{,}", 0),
        (r".+[a-z]*\d?", 0),
        (r"a{1,10000}", MAX_PATTERN_REPEAT + 1),
        ("x{" + "9" * 5000 + "}", MAX_PATTERN_REPEAT + 1),
    ],
)
def test_repetition_cost_of_a_pattern(pattern: str, cost: int) -> None:
    assert repetition_cost(pattern) == cost


def test_pattern_repetitions_are_bounded_across_the_schema() -> None:
    ok = {"type": "string", "pattern": "^.{0,280}$"}
    check_schema(ok, LIMITS)
    error = _refusal({"type": "string", "pattern": r"\w{1,10000}@\w{1,10000}"})
    assert error.param == SCHEMA_PARAM + ".pattern" and "maxLength" in error.message
    # many small ones add up, wherever patterns hide
    many = {"type": "object", "properties": {
        f"p{i}": {"type": "string", "pattern": "^x{1,300}$"} for i in range(4)}}  # fmt: skip
    assert _refusal(many).param.startswith(SCHEMA_PARAM + ".properties.p")
    names = {"type": "object", "propertyNames": {"pattern": "[a-z]{2000}"}}
    assert _refusal(names).param == SCHEMA_PARAM + ".propertyNames.pattern"
    keys = {"type": "object", "patternProperties": {"^a{1,5000}$": {}}}
    assert _refusal(keys).param == SCHEMA_PARAM + ".patternProperties"


# -- vLLM's refusals in the gateway's words ----------------------------------------------------


def _vllm(status: int, message: str, param: str | None = None) -> httpx.Response:
    error = {"message": message, "type": "BadRequestError", "param": param, "code": status}
    return httpx.Response(status, json={"error": error})


@pytest.mark.parametrize(
    ("message", "said"),
    [
        # vLLM 0.32 with xgrammar, and with guidance (arc-serve's default), as real engines say
        (("Failed to transform json schema into a grammar: [07:52:21] <path>:83: Regex parsing "
          "error at position 4: Backreference is not supported yet."),
         "Regex parsing error at position 4: Backreference is not supported yet."),
        ("The provided JSON schema contains features not supported by xgrammar.",
         "features not supported by xgrammar"),
        (("Grammar error: regex parse error:\n    (a)\\1\n       ^^\nerror: backreferences are "
          "not supported"), "Grammar error: regex parse error: error: backreferences are not"),
        ("Grammar error: Unsatisfiable schema: minLength (5) is greater than maxLength (2)",
         "minLength (5) is greater than maxLength (2)"),
        ("The JSON schema is nested too deeply: objects and arrays may nest at most 64 levels",
         "nested too deeply"),
        ("1 validation error for ResponseFormat\n  json_schema input_value={'secret': 1}",
         "its grammar backend cannot follow it"),
    ],
)  # fmt: skip
def test_engine_refusals_of_a_schema_are_invalid_response_format(message: str, said: str) -> None:
    from server.upstream import raise_for_upstream

    fields: dict = {}
    with pytest.raises(APIError) as refused:
        raise_for_upstream(_vllm(400, message), fields, "json_schema")
    error = refused.value
    assert (error.status_code, error.code, error.param) == (
        400,
        "invalid_response_format",
        SCHEMA_PARAM,
    )
    assert said in error.message and "input_value" not in error.message, error.message
    assert fields["upstream_error"] == message[:500]  # vLLM's own words: the log line


def test_engine_failures_under_a_schema_are_the_schemas_other_failures_stay_502() -> None:
    import json as json_module

    from server.chat.stream import annotate_chunk
    from server.upstream import raise_for_upstream

    failure = _vllm(500, "Internal server error")
    with pytest.raises(APIError) as refused:
        raise_for_upstream(failure, {}, "json_schema")
    assert (refused.value.status_code, refused.value.code) == (400, "invalid_response_format")
    for response_format in (None, "json_object"):
        with pytest.raises(APIError) as failed:
            raise_for_upstream(failure, {}, response_format)
        assert (failed.value.status_code, failed.value.code) == (502, "upstream_error")
    # the same in a stream: vLLM's error chunk becomes the gateway's
    error = json_module.dumps({"error": {"message": "Internal server error", "code": 500}})
    streamed = json_module.loads(annotate_chunk(error, {}, JSON_ANSWER, "arc", None, "json_schema"))
    assert streamed["error"]["code"] == "invalid_response_format"
    other = json_module.loads(annotate_chunk(error, {}, "qa", "arc", None))
    assert other["error"]["code"] == "upstream_error"
    # a json_object the engine refuses names the format itself
    with pytest.raises(APIError) as refused:
        raise_for_upstream(_vllm(400, "x", "response_format"), {}, "json_object")
    assert refused.value.param == "response_format"


# -- the real engine ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gateway(engine: tuple[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("structured")
    with running_gateway(engine[0], folder, ["--decode-workers", "1"]) as base:
        yield base


@pytest.fixture(scope="module")
def video_id(gateway: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    clip = make_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", seconds=3, size="160x90")
    return uploaded(gateway, clip)


def _messages(video_id: str, text: str = "Tag this video as JSON.") -> list[dict]:
    return video_question(video_id, text)


def _chat(gateway: str, video_id: str, **extra: object) -> httpx.Response:
    body = {"messages": _messages(video_id), "max_tokens": 200, **extra}
    return httpx.post(gateway + "/v1/chat/completions", json=body, timeout=300)


def _streamed(gateway: str, video_id: str, **extra: object) -> list[dict]:
    body = {"messages": _messages(video_id), "max_tokens": 200, "stream": True, **extra}
    with httpx.stream("POST", gateway + "/v1/chat/completions", json=body, timeout=300) as reply:
        assert reply.status_code == 200, reply.read()
        lines = [line[5:].strip() for line in reply.iter_lines() if line.startswith("data:")]
    return [json.loads(line) for line in lines if line.startswith("{")]


def _follows(text: str, schema: dict) -> Any:
    import jsonschema

    value = json.loads(text)  # strict: no raw control characters in strings
    jsonschema.validate(value, schema)
    return value


@pytest.mark.engine
def test_json_schema_answers_parse_and_validate(gateway: str, video_id: str) -> None:
    whole = _chat(gateway, video_id, response_format=JSON_SCHEMA)
    assert whole.status_code == 200, whole.text
    choice = whole.json()["choices"][0]
    assert choice["finish_reason"] == "stop"
    value = _follows(choice["message"]["content"], TAGS)
    assert set(value) == set(TAGS["properties"])
    assert choice["structured"] == {
        "thinking": None,
        "answer": choice["message"]["content"].strip(),
        "segments": None,
    }
    # the question alone went to the model (task none): fewer prompt tokens than with the
    # qa instruction the same question gets as a text answer
    text = _chat(gateway, video_id, max_tokens=1).json()
    assert whole.json()["usage"]["prompt_tokens"] < text["usage"]["prompt_tokens"]

    chunks = _streamed(gateway, video_id, response_format=JSON_SCHEMA)
    streamed = "".join(
        c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices")
    )
    assert streamed == choice["message"]["content"]  # greedy: the same answer
    _follows(streamed, TAGS)
    last = next(c for c in chunks if c.get("choices") and c["choices"][0].get("finish_reason"))
    assert last["choices"][0]["structured"]["answer"] == streamed.strip()


@pytest.mark.engine
def test_json_object_answers_parse(gateway: str, video_id: str) -> None:
    whole = _chat(gateway, video_id, response_format={"type": "json_object"})
    assert whole.status_code == 200, whole.text
    content = whole.json()["choices"][0]["message"]["content"]
    assert isinstance(json.loads(content), dict)
    chunks = _streamed(gateway, video_id, response_format={"type": "json_object"})
    streamed = "".join(
        c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices")
    )
    assert isinstance(json.loads(streamed), dict)


class Tags(BaseModel):
    label: Literal["cat", "dog", "other"]
    score: int = Field(ge=0, le=9)
    title: str = Field(max_length=8)
    tags: list[Annotated[str, Field(max_length=5)]] = Field(max_length=3)
    outdoor: bool


@pytest.mark.engine
def test_openai_client_create_and_parse(gateway: str, video_id: str) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=gateway + "/v1", api_key="none", max_retries=0, timeout=300)
    reply = client.chat.completions.create(
        model="arc", messages=_messages(video_id), max_tokens=200, response_format=JSON_SCHEMA
    )
    _follows(reply.choices[0].message.content, TAGS)
    assert reply.choices[0].model_extra["structured"]["answer"] is not None
    # parse: the client turns a pydantic model into a strict schema and the answer into it
    for parse in (client.chat.completions.parse, client.beta.chat.completions.parse):
        parsed = parse(
            model="arc", messages=_messages(video_id), max_tokens=200, response_format=Tags
        )
        assert isinstance(parsed.choices[0].message.parsed, Tags)
    reply = client.chat.completions.create(
        model="arc",
        messages=_messages(video_id, "Answer in JSON."),
        max_tokens=50,
        response_format={"type": "json_object"},
    )
    assert isinstance(json.loads(reply.choices[0].message.content), dict)


# Each refused by the gateway before it reaches vLLM, or by vLLM in a second: (schema, what
# the message says).
HOSTILE = {
    "huge": ({"enum": [f"value-{i}" for i in range(5000)]}, "bytes as compact JSON"),
    "deep": (_nested(40), "deep"),
    "wide": ({"type": "object", "properties": {f"p{i}": {} for i in range(2000)}}, "properties"),
    "self reference": ({"$ref": "#"}, "reaches itself"),
    "reference cycle": (
        {
            "$defs": {"a": {"anyOf": [{"$ref": "#/$defs/b"}]}, "b": {"$ref": "#/$defs/a"}},
            "$ref": "#/$defs/a",
        },
        "reaches itself",
    ),
    "remote reference": ({"$ref": "http://127.0.0.1:9/schema.json"}, "only references inside"),
    "pattern bomb": ({"type": "string", "pattern": "a{1,10000}"}, "counted repetitions"),
    "nested pattern bomb": (
        {"type": "string", "pattern": "((a{1,100}){1,100}){1,100}"},
        "counted repetitions",
    ),
    "backreference": ({"type": "string", "pattern": "(a)\\1"}, "backreferences"),
    "unsupported keyword": ({"type": "array", "uniqueItems": True}, "uniqueItems"),
    "unknown type": ({"type": "frobnicate"}, "frobnicate"),
    "unsatisfiable": ({"type": "string", "minLength": 5, "maxLength": 2}, "minLength"),
    "required recursion": (
        {"type": "object", "properties": {"a": {"$ref": "#"}}, "required": ["a"]},
        "too complex",
    ),
}


@pytest.mark.engine
def test_hostile_schemas_are_400s_and_the_engine_keeps_answering(
    gateway: str, video_id: str, engine: tuple[str, Path]
) -> None:
    for name, (schema, said) in HOSTILE.items():
        response_format = {"type": "json_schema", "json_schema": {"name": "h", "schema": schema}}
        started = time.monotonic()
        reply = _chat(gateway, video_id, response_format=response_format, max_tokens=24)
        assert reply.status_code == 400, (name, reply.text[:500])
        error = reply.json()["error"]
        assert error["code"] == "invalid_response_format", (name, error)
        assert error["param"].startswith(SCHEMA_PARAM), (name, error)
        assert said in error["message"], (name, error["message"])
        # a hostile schema costs the engine nothing visible (timed for the report only)
        print(f"{name}: {time.monotonic() - started:.2f} s")
        assert httpx.get(engine[0] + "/health", timeout=10).status_code == 200
    # the one vLLM fails on while generating fails the same way streamed
    schema = HOSTILE["required recursion"][0]
    chunks = _streamed(
        gateway,
        video_id,
        max_tokens=24,
        response_format={"type": "json_schema", "json_schema": {"name": "h", "schema": schema}},
    )
    assert chunks[-1]["error"]["code"] == "invalid_response_format", chunks[-1]
    # and the engine still answers in JSON
    after = _chat(gateway, video_id, response_format=JSON_SCHEMA)
    assert after.status_code == 200
    _follows(after.json()["choices"][0]["message"]["content"], TAGS)
