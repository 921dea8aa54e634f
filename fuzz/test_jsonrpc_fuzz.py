"""Fuzzing the JSON-RPC layer through StreamableHTTP, in-process (stateless mode).

Generated envelopes (ids, methods, params of every type, batches) and raw bodies
(invalid UTF-8, NaN, huge numbers, deep nesting, duplicate keys, truncation) are
POSTed to the demo app. Every answer must be:
- exactly one complete HTTP answer;
- 202 with no body for notifications and responses (and batches of only those);
- otherwise a well-formed JSON-RPC response (or an array of them for a batch) whose
  error code is of the family the input calls for (model below), whose id echoes the
  request's, and which never carries traceback text;
- and nothing is logged at ERROR: no input may reach an unexpected exception path.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from hypothesis import event, given, note, settings
from hypothesis import strategies as st

from examples.conformance import server as demo_server
from fuzz._inprocess import (
    Harness,
    Recorder,
    always_fails,
    fast_demo_sleeps,
    list_tools,
    strict_json,
    task_required,
    waits_for_client,
)
from fuzz._support import examples
from mcp_fast.protocol.versions import SUPPORTED_VERSIONS

PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, INTERNAL_ERROR = (
    -32700,
    -32600,
    -32601,
    -32602,
    -32603,
)
RESOURCE_NOT_FOUND = -32002
SUPPORTED = list(SUPPORTED_VERSIONS)  # the server's own table (it grows with new versions)
UNSUPPORTED_PROTOCOL_VERSION = -32022  # 2026-07-28's code; 2025 servers used -32600
# MCP methods a server with tools, resources, prompts, logging and completions implements
# (schema.ts of 2025-11-25, client requests).
KNOWN_METHODS = [
    "initialize", "ping", "tools/list", "tools/call", "resources/list", "resources/templates/list",
    "resources/read", "resources/subscribe", "resources/unsubscribe", "prompts/list", "prompts/get",
    "logging/setLevel", "completion/complete",
]  # fmt: skip
NOTIFICATIONS = [
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/roots/list_changed",
]
LOG_LEVELS = ["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"]
# Tools that ask the client something (sampling, elicitation) wait minutes for an answer
# this in-process client never gives: left out (see _inprocess.waits_for_client).
# Tools that exist to show an error (always_fails) may answer -32603 by design: left out too.
TOOLS = sorted(
    name
    for name in demo_server.registry.tools
    if not waits_for_client(demo_server, name) and not always_fails(demo_server, name)
)
# 2025-11-25 tasks: a plain tools/call of a tool whose taskSupport is "required" is -32601.
TASK_REQUIRED = {name for name, tool in list_tools(demo_server).items() if task_required(tool)}
PROMPTS = sorted(demo_server.registry.prompts)
URIS = [
    "test://static-text",
    "test://static-binary",
    "test://template/7/data",
    "test://watched-resource",
    "test://missing",
]


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    h = Harness(demo_server)
    with fast_demo_sleeps():
        yield h
    h.close()


# ---------------------------------------------------------------------------
# Strategies

text = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)  # orjson cannot send lone surrogates
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)
ids: st.SearchStrategy[Any] = (
    st.integers(-(2**63), 2**64 - 1)
    | text
    | st.none()
    | st.booleans()
    | st.floats(allow_nan=False)
    | st.just([])
    | st.just({})
)
methods = (
    st.sampled_from(KNOWN_METHODS + NOTIFICATIONS)
    | st.builds(lambda t: "fuzz/" + t, text)
    | text
    | json_values
)


def shaped_params(method: str) -> st.SearchStrategy[Any]:
    """Params shaped for ``method`` (right and wrong types mixed), to reach the handlers."""
    anything = json_values
    meta = st.fixed_dictionaries({}, optional={"progressToken": st.integers(0, 9) | text | anything})
    if method == "tools/call":
        fields: dict[str, Any] = {
            "name": st.sampled_from(TOOLS) | anything,
            "arguments": st.dictionaries(text, anything, max_size=3) | anything,
        }
    elif method in ("resources/read", "resources/subscribe", "resources/unsubscribe"):
        fields = {"uri": st.sampled_from(URIS) | anything}
    elif method == "prompts/get":
        fields = {
            "name": st.sampled_from(PROMPTS) | anything,
            "arguments": st.dictionaries(
                st.sampled_from(["arg1", "arg2", "resourceUri"]) | text, text | anything, max_size=3
            )
            | anything,
        }
    elif method == "logging/setLevel":
        fields = {"level": st.sampled_from(LOG_LEVELS) | anything}
    elif method == "initialize":
        fields = {
            "protocolVersion": st.sampled_from(SUPPORTED) | anything,
            "capabilities": st.just({}) | anything,
            "clientInfo": st.just({"name": "f", "version": "1"}) | anything,
        }
    elif method.endswith("/list"):
        fields = {"cursor": st.sampled_from(["bWNwX2Zhc3Q6MQ==", "bWNwX2Zhc3Q6MTAw", "", "x"]) | anything}
    elif method == "completion/complete":
        fields = {
            "ref": st.fixed_dictionaries(
                {
                    "type": st.sampled_from(["ref/prompt", "ref/resource"]) | anything,
                    "name": st.sampled_from(PROMPTS) | anything,
                    "uri": st.sampled_from(URIS) | anything,
                }
            )
            | anything,
            "argument": st.fixed_dictionaries(
                {"name": st.sampled_from(["arg1", "arg2"]) | anything, "value": text | anything}
            )
            | anything,
        }
    elif method == "notifications/cancelled":
        fields = {"requestId": ids, "reason": text}
    else:
        fields = {}
    return st.fixed_dictionaries({}, optional={**fields, "_meta": meta | anything})


@st.composite
def envelopes(draw: st.DrawFn) -> Any:
    """A JSON-RPC message: mostly well-formed with shaped params (to reach the methods),
    else wrong in any part, sometimes not an object at all."""
    roll = draw(st.integers(0, 19))
    if roll == 0:
        return draw(json_values)
    if roll < 12:
        method = draw(
            st.sampled_from(KNOWN_METHODS)
            | st.sampled_from(NOTIFICATIONS)
            | st.builds(lambda t: "fuzz/" + t, text)
        )
        obj: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if not method.startswith("notifications/") or draw(st.integers(0, 5)) == 0:
            obj["id"] = draw(st.integers(-(2**63), 2**63 - 1) | text)
        if draw(st.integers(0, 4)):
            obj["params"] = draw(shaped_params(method))
        return obj
    obj = {}
    if draw(st.integers(0, 9)):
        obj["jsonrpc"] = draw(st.just("2.0") | st.sampled_from(["1.0", "2", 2.0, 2, None, "", "2.0 "]))
    kind = draw(st.sampled_from(["request", "request", "notification", "response", "response", "junk"]))
    if kind in ("request", "response", "junk") and draw(st.integers(0, 7)):
        obj["id"] = draw(st.integers(-3, 2**31) | text) if draw(st.booleans()) else draw(ids)
    if kind in ("request", "notification"):
        method = draw(methods)
        obj["method"] = method
        if draw(st.integers(0, 3)):
            if isinstance(method, str) and draw(st.integers(0, 3)) > 0:
                obj["params"] = draw(shaped_params(method))
            else:
                obj["params"] = draw(json_values)
    elif kind == "response":
        which = draw(st.sampled_from(["result", "result", "error", "error", "both", "neither"]))
        if which in ("result", "both"):
            obj["result"] = draw(json_values)
        if which in ("error", "both"):
            obj["error"] = draw(
                st.fixed_dictionaries({"code": st.integers(-32768, 0), "message": text}) | json_values
            )
    else:
        obj.update(draw(st.dictionaries(text, json_values, max_size=3)))
    if draw(st.integers(0, 5)) == 0:
        obj[draw(text)] = draw(json_values)  # an unknown member
    return obj


versions = st.sampled_from([b"2025-11-25", b"2025-06-18", b"2025-03-26", None, b"2024-11-05"])
accepts = st.sampled_from(
    [b"application/json, text/event-stream", b"application/json", b"text/event-stream", None, b"*/*"]
)

# ---------------------------------------------------------------------------
# The model: what each input must get (JSON-RPC 2.0 sections 4-6, MCP "Base Protocol")


@dataclass(frozen=True)
class Invalid:  # -32600, with the id when it could be read
    id: Any


@dataclass(frozen=True)
class NoAnswer:  # a notification or a response
    pass


@dataclass(frozen=True)
class Call:
    id: Any
    method: Any
    params: Any


def valid_id(value: Any) -> bool:
    # MCP: "Requests MUST include a string or integer ID" (not null, bool or float).
    return type(value) in (str, int)


def classify(obj: Any) -> Invalid | NoAnswer | Call:
    if type(obj) is not dict:
        return Invalid(None)
    echo = obj["id"] if valid_id(obj.get("id")) else None
    if obj.get("jsonrpc") != "2.0":
        return Invalid(echo)
    method = obj.get("method")
    if method is None:  # no method: a response, which needs exactly one of result and error
        if ("result" in obj) == ("error" in obj) or echo is None:
            return Invalid(echo)
        if "error" in obj and type(obj["error"]) is not dict:
            return Invalid(echo)
        return NoAnswer()
    if type(method) is not str:
        return Invalid(echo)
    params = obj.get("params")
    if params is not None and type(params) is not dict:
        return Invalid(echo)  # every MCP method takes an object
    if "id" not in obj:
        return NoAnswer()
    if echo is None:
        return Invalid(None)
    return Call(echo, method, params)


def allowed_codes(call: Call) -> set[int | str]:
    """What a request may get: "result" or an error code."""
    method, params = call.method, call.params or {}
    if method not in KNOWN_METHODS:
        return {METHOD_NOT_FOUND}
    if method == "ping":
        return {"result"}
    if method == "initialize":
        return {"result"}
    if method == "tools/call":
        if type(params.get("name")) is not str or (
            params.get("arguments") is not None and type(params["arguments"]) is not dict
        ):
            return {INVALID_PARAMS}
        if params["name"] in TASK_REQUIRED:
            return {"result", METHOD_NOT_FOUND, INVALID_PARAMS}
        return {"result", INVALID_PARAMS}
    if method == "logging/setLevel":
        return {"result"} if params.get("level") in LOG_LEVELS else {INVALID_PARAMS}
    if method in ("resources/read", "resources/subscribe", "resources/unsubscribe"):
        if type(params.get("uri")) is not str:
            return {INVALID_PARAMS}
        return {"result", RESOURCE_NOT_FOUND, INVALID_PARAMS}
    return {"result", INVALID_PARAMS}


def check_response(message: Any, *, expect_id: Any, allowed: set[int | str]) -> None:
    """A JSON-RPC 2.0 Response object (section 5) of the allowed family."""
    assert type(message) is dict, message
    event("result" if "result" in message else f"error {message.get('error', {}).get('code')}")
    assert message.get("jsonrpc") == "2.0"
    assert set(message) <= {"jsonrpc", "id", "result", "error"}, message
    assert "id" in message
    assert message["id"] == expect_id and type(message["id"]) is type(expect_id), (message["id"], expect_id)
    assert ("result" in message) != ("error" in message)
    if "result" in message:
        assert "result" in allowed, (message, allowed)
        assert type(message["result"]) is dict
        return
    error = message["error"]
    assert type(error) is dict and set(error) <= {"code", "message", "data"}
    assert type(error["code"]) is int and error["code"] != INTERNAL_ERROR, error
    assert type(error["message"]) is str and error["message"], error
    assert error["code"] in allowed, (error, allowed)
    blob = orjson.dumps(error).decode()
    assert "Traceback" not in blob and 'File "' not in blob, blob


def batches_allowed(version: bytes | None) -> bool:
    # JSON-RPC batches exist only in 2025-03-26 (also assumed when the header is absent).
    return version in (None, b"2025-03-26")


def check_exchange(h: Harness, body: bytes, version: bytes | None, accept: bytes | None) -> Recorder:
    rec = h.post(body, version=version, accept=accept)
    note(f"body={body[:300]!r} version={version!r} accept={accept!r}")
    note(f"answer: {rec.calls} {rec.status} {rec.body[:300]!r} {b''.join(rec.chunks)[:300]!r}")
    assert rec.exactly_one_answer(), rec.calls
    assert not h.errors.records, [r.getMessage() for r in h.errors.records]
    json_ok = accept is None or b"json" in accept or b"*/*" in accept
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError:
        # JSON-RPC 2.0 section 5.1: -32700, id null; Streamable HTTP: 400 for an unusable POST.
        assert rec.status == 400 and rec.content_type == b"application/json"
        (message,) = rec.messages()
        check_response(message, expect_id=None, allowed={PARSE_ERROR})
        return rec
    if type(decoded) is list:
        check_batch(rec, decoded, version, json_ok)
        return rec
    expected = classify(decoded)
    if isinstance(expected, NoAnswer):
        event("202")
        assert (rec.status, rec.body, rec.calls) == (202, b"", ["respond"])
        return rec
    if isinstance(expected, Invalid):
        assert rec.status == 400 and rec.content_type == b"application/json"
        (message,) = rec.messages()
        check_response(message, expect_id=expected.id, allowed={INVALID_REQUEST})
        return rec
    assert rec.status == 200
    messages = rec.messages()
    if rec.content_type == b"application/json":
        assert json_ok and rec.calls[0] == "respond"
        assert len(messages) == 1
    else:
        # SSE: streamed, or (known at once) one response with a length.
        assert rec.content_type == b"text/event-stream"
        event(f"sse with {len(messages) - 1} notifications")
        # Notifications first (no id), then the one response.
        for notification in messages[:-1]:
            assert "method" in notification and "id" not in notification, notification
    check_response(messages[-1], expect_id=expected.id, allowed=allowed_codes(expected))
    return rec


def check_batch(rec: Recorder, batch: list[Any], version: bytes | None, json_ok: bool) -> None:
    if not batches_allowed(version) or not batch:
        assert rec.status == 400
        (message,) = rec.messages()
        check_response(message, expect_id=None, allowed={INVALID_REQUEST})
        return
    expected = [classify(item) for item in batch]
    answered = [e for e in expected if not isinstance(e, NoAnswer)]
    if not answered:
        assert (rec.status, rec.body) == (202, b"")
        return
    assert rec.status == 200
    if rec.content_type == b"application/json":
        assert json_ok, "a batch answered with JSON to a client that accepts only text/event-stream"
        responses = strict_json(rec.body)
        assert type(responses) is list
    else:
        responses = [m for m in rec.messages() if "method" not in m]
    assert len(responses) == len(answered), (responses, answered)
    for response, e in zip(responses, answered, strict=True):
        if isinstance(e, Invalid):
            check_response(response, expect_id=e.id, allowed={INVALID_REQUEST})
        else:
            assert isinstance(e, Call)
            allowed = allowed_codes(e)
            if e.method == "initialize":
                allowed = {INVALID_REQUEST}  # initialize must not be part of a batch
            check_response(response, expect_id=e.id, allowed=allowed)


# ---------------------------------------------------------------------------
# Properties


@settings(max_examples=examples(300))
@given(envelopes(), versions, accepts)
def test_envelopes_get_one_well_formed_answer(
    harness: Harness, message: Any, version: bytes | None, accept: bytes | None
) -> None:
    check_exchange(harness, orjson.dumps(message), version, accept)


@settings(max_examples=examples(80))
@given(st.lists(envelopes(), max_size=5), st.sampled_from([None, b"2025-03-26", b"2025-11-25"]), accepts)
def test_batches(harness: Harness, batch: list[Any], version: bytes | None, accept: bytes | None) -> None:
    check_exchange(harness, orjson.dumps(batch), version, accept)


REQUEST = b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":%s}}'


@st.composite
def hostile_bodies(draw: st.DrawFn) -> tuple[bytes, bool | None]:
    """A raw body and whether it is valid JSON (None: whatever orjson says)."""
    kind = draw(
        st.sampled_from(
            [
                "nan",
                "utf8",
                "deep",
                "bignum",
                "dupkeys",
                "truncated",
                "garbage",
                "bom",
                "surrogate",
                "random",
                "nul",
                "shallow",
            ]
        )
    )
    if kind == "nan":
        return REQUEST % draw(
            st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"nan", b"1e999", b"-1e400"])
        ), False
    if kind == "utf8":
        bad = draw(
            st.sampled_from(
                [
                    b"\xff",
                    b"\xc3\x28",
                    b"\xed\xa0\x80",
                    b"\xc0\xaf",
                    b"\xf4\x90\x80\x80",
                    b"\xe2\x82",
                    b"\x80",
                ]
            )
        )
        where = draw(st.sampled_from(["value", "method", "key"]))
        if where == "value":
            return REQUEST % (b'"a' + bad + b'b"'), False
        if where == "method":
            return b'{"jsonrpc":"2.0","id":1,"method":"pi' + bad + b'ng"}', False
        return b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"k' + bad + b'":1}}', False
    if kind == "deep":
        depth = draw(st.sampled_from([1100, 5000, 100_000]))
        opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
        if draw(st.booleans()):
            return opener * depth + b"1" + closer * depth, False
        return REQUEST % (opener * depth + b"1" + closer * depth), False
    if kind == "shallow":
        depth = draw(st.integers(1, 500))
        opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
        return REQUEST % (opener * depth + b"1" + closer * depth), True
    if kind == "bignum":
        number = draw(
            st.sampled_from(
                [
                    b"123456789012345678901234567890",
                    b"18446744073709551616",
                    b"-9223372036854775809",
                    b"1e308",
                    b"1.5",
                    b"1E2",
                    b"-0",
                    b"0.0",
                ]
            )
        )
        if draw(st.booleans()):
            return b'{"jsonrpc":"2.0","id":' + number + b',"method":"ping"}', True
        return REQUEST % number, True
    if kind == "dupkeys":
        body = draw(st.sampled_from([
            b'{"jsonrpc":"2.0","id":1,"id":"two","method":"ping"}',
            b'{"jsonrpc":"2.0","id":1,"method":"nope","method":"ping"}',
            b'{"jsonrpc":"1.0","jsonrpc":"2.0","id":1,"method":"ping"}',
            b'{"jsonrpc":"2.0","id":1,"method":"ping","params":1,"params":{}}',
            b'{"jsonrpc":"2.0","id":1,"method":"ping","id":null}',
            b'{"jsonrpc":"2.0","id":3,"result":{},"result":{}}',
        ]))  # fmt: skip
        return body, True  # RFC 8259 4: names SHOULD be unique; orjson (like json) keeps the last
    if kind == "truncated":
        full = orjson.dumps(draw(envelopes()))
        return full[: draw(st.integers(0, max(len(full) - 1, 0)))], None
    if kind == "garbage":
        full = orjson.dumps(draw(envelopes()))
        return full + draw(st.sampled_from([b"x", b",", b"}", b"{}", b"\x00", b" 1"])), False
    if kind == "bom":
        return b"\xef\xbb\xbf" + orjson.dumps(draw(envelopes())), False
    if kind == "surrogate":
        return REQUEST % draw(st.sampled_from([b'"\\ud800"', b'"\\udfff"', b'"\\ud800\\u0041"'])), False
    if kind == "nul":
        return REQUEST % b'"\\u0000a\\u001f"', True
    return draw(st.binary(max_size=200)), None


@settings(max_examples=examples(200))
@given(hostile_bodies(), versions, accepts)
def test_hostile_bodies(
    harness: Harness, case: tuple[bytes, bool | None], version: bytes | None, accept: bytes | None
) -> None:
    body, valid = case
    if valid is not None:
        try:
            orjson.loads(body)
            parsed = True
        except orjson.JSONDecodeError:
            parsed = False
        assert parsed == valid, "the JSON decoder's verdict on this body changed"
    check_exchange(harness, body, version, accept)


@settings(max_examples=examples(100))
@given(envelopes(), st.sampled_from([b"1999-01-01", b"", b"2025-11-25x", b"latest", b"\xff"]))
def test_unsupported_protocol_version_header(harness: Harness, message: Any, version: bytes) -> None:
    """2025-06-18 "Protocol Version Header": an unsupported version is 400, before the body
    is read (-32600; since 2026-07-28 the dedicated -32022)."""
    rec = harness.post(orjson.dumps(message), version=version)
    assert rec.exactly_one_answer()
    assert rec.status == 400 and rec.content_type == b"application/json"
    (answer,) = rec.messages()
    check_response(answer, expect_id=None, allowed={INVALID_REQUEST, UNSUPPORTED_PROTOCOL_VERSION})


# ---------------------------------------------------------------------------
# initialize on a server that issues sessions (the default mode of `python -m mcp_fast`)


@pytest.fixture(scope="module")
def session_harness() -> Iterator[Harness]:
    from mcp_fast.transport.sessions import JwtSessions, JwtSettings
    from mcp_fast.transport.streamable import StreamableSettings

    h = Harness(
        demo_server,
        StreamableSettings(
            sessions=JwtSessions(JwtSettings(secrets=("fuzz-secret-of-at-least-32-bytes-for-hs256",)))
        ),
    )
    yield h
    h.close()


def dumps_deep(value: Any) -> bytes:
    """JSON of ``value``; nesting deeper than orjson writes (254 levels) goes through json."""
    try:
        return orjson.dumps(value)
    except TypeError:
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(limit, 20_000))
        try:
            return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
        finally:
            sys.setrecursionlimit(limit)


def nested(depth: int, leaf: Any) -> Any:
    for _ in range(depth):
        leaf = [leaf]
    return leaf


initialize_params = st.fixed_dictionaries(
    {},
    optional={
        "protocolVersion": st.sampled_from(SUPPORTED) | json_values,
        "clientInfo": st.fixed_dictionaries({"name": text, "version": text}) | json_values,
        "capabilities": st.dictionaries(
            st.sampled_from(["sampling", "elicitation", "roots", "experimental"]) | text,
            json_values | st.builds(nested, st.sampled_from([10, 253, 254, 255, 300, 1000]), json_scalars),
            max_size=4,
        )
        | json_values,
        "_meta": json_values,
    },
)


@settings(max_examples=examples(100))
@given(initialize_params, st.integers(-(2**63), 2**63 - 1) | text)
def test_initialize_with_sessions(session_harness: Harness, params: dict[str, Any], request_id: Any) -> None:
    """initialize takes any params (lifecycle: unknown versions are negotiated, capabilities
    are whatever the client declares) and answers a result with an Mcp-Session-Id."""
    body = dumps_deep({"jsonrpc": "2.0", "id": request_id, "method": "initialize", "params": params})
    rec = check_exchange(session_harness, body, b"2025-11-25", b"application/json, text/event-stream")
    (message,) = rec.messages()
    assert message["result"]["protocolVersion"] in SUPPORTED
    assert b"mcp-session-id" in dict(rec.headers)
