"""Regression tests for the bugs the fuzz suites found, one per bug, named after it.

Each asserts the correct behaviour with the minimal input the fuzzer shrank to, so it
fails until the bug is fixed and guards the fix afterwards. The property that found it
is named in the docstring.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import orjson
import pytest

from examples.conformance import server as demo_server
from fuzz._inprocess import Harness, fast_demo_sleeps
from mcp_fast.server import MCPServer
from mcp_fast.wire.events import ProtocolError
from mcp_fast.wire.h1 import H1Connection


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    h = Harness(demo_server)
    yield h
    h.close()


def first_error(chunks: list[bytes]) -> tuple[int, str]:
    conn = H1Connection()
    for chunk in chunks:
        conn.receive_data(chunk)
        try:
            conn.next_event()
        except ProtocolError as exc:
            return exc.status, exc.reason
    raise AssertionError("no error")


def test_bug_h1_bare_lf_error_status_depends_on_split() -> None:
    """test_h1_fuzz::test_split_invariance. A head with a bare LF and more than
    max_header_count fields: sent at once it gets 431 (the count is checked before the
    field lines), sent in two pieces 400 (the bare LF is seen while the head is
    incomplete). Same bytes, different answer. Fixed in 2978955 by refusing a bare LF only
    once the head is complete (so a head with no CRLF at all waited for the header timeout);
    now a bare CR/LF is refused as soon as it arrives and, complete or not, it decides
    whenever it shows before any other refusal would (h1 ``_head_error``): 400 both ways."""
    data = b"GET / HTTP/1.1\r\nHost: a\nX: 1\r\n" + b"X: 1\r\n" * 100 + b"\r\n"
    cut = data.index(b"\n", 20) + 1
    assert first_error([data])[0] == first_error([data[:cut], data[cut:]])[0] == 400


def test_bug_batch_answered_as_json_to_sse_only_client(harness: Harness) -> None:
    """test_jsonrpc_fuzz::test_batches. With ``Accept: text/event-stream`` only, a single
    request is answered as SSE, but a batch (2025-03-26) gets an application/json array
    the client said it does not accept. Fixed in 984f516."""
    batch = orjson.dumps([{"jsonrpc": "2.0", "id": 1, "method": "ping"}])
    rec = harness.post(batch, version=b"2025-03-26", accept=b"text/event-stream")
    assert rec.status == 200
    assert rec.content_type == b"text/event-stream", rec.content_type
    assert rec.messages() == [{"jsonrpc": "2.0", "id": 1, "result": {}}]


@pytest.mark.parametrize("ref", [{"type": "ref/prompt", "name": []}, {"type": "ref/resource", "uri": {}}])
def test_bug_completion_ref_that_is_not_a_string_is_internal_error(
    harness: Harness, ref: dict[str, Any]
) -> None:
    """test_jsonrpc_fuzz::test_envelopes_get_one_well_formed_answer (long profile).
    An unhashable ref.name / ref.uri makes ``x not in registry.prompts`` raise TypeError:
    -32603 "Internal error" and a logged traceback instead of -32602 Invalid params.
    Fixed in 984f516."""
    body = orjson.dumps(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "completion/complete",
            "params": {"ref": ref, "argument": {"name": "arg1", "value": ""}},
        }
    )
    rec = harness.post(body)
    assert rec.messages()[-1]["error"]["code"] == -32602
    assert not harness.errors.records, [r.getMessage() for r in harness.errors.records]


def test_bug_tool_int_result_beyond_64_bits_is_internal_error(harness: Harness) -> None:
    """test_tool_args_fuzz::test_valid_arguments_are_accepted[add]. Valid int64 arguments
    whose sum leaves orjson's range (-2**63 .. 2**64-1): orjson.dumps in tool_result raises
    "Integer exceeds 64-bit range", answered -32603 "Internal error" with a logged
    traceback. JSON numbers have no such limit; the result is an ordinary one.
    Fixed in 984f516."""
    arguments = {"a": -(2**63), "b": -(2**63)}
    body = orjson.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "add", "arguments": arguments}}
    )
    rec = harness.post(body)
    answer = rec.messages()[-1]
    assert "result" in answer, answer
    assert answer["result"]["structuredContent"]["sum"] == -(2**64)


def test_bug_non_finite_structured_output_violates_output_schema(harness: Harness) -> None:
    """test_tool_args_fuzz::test_valid_arguments_are_accepted[convert_temperature].
    value=1.7976931348623157e308 is a valid number; the result overflows to inf, which
    is serialized as null: structuredContent {"result": null} breaks the advertised
    outputSchema {"result": {"type": "number"}} (server/tools: structured results MUST
    conform). Either the tool's input schema bounds the value, or the server reports the
    unrepresentable output as an error; never a result that breaks its own schema.
    Fixed in 984f516 (non-finite structured output is a tool error) and fd11d8c (the demo
    bounds its input); test_bug_non_finite_result_of_any_tool guards the first."""
    tools = orjson.loads(harness.post(orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})).body)
    definition = next(t for t in tools["result"]["tools"] if t["name"] == "convert_temperature")
    body = orjson.dumps(
        {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "convert_temperature", "arguments": {"value": 1.7976931348623157e308}},
        }
    )
    answer = harness.post(body).messages()[-1]
    result = answer.get("result")
    if result is None or result.get("isError"):
        return  # refused: fine
    jsonschema.validate(result["structuredContent"], definition["outputSchema"])


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_bug_non_finite_result_of_any_tool(value: float) -> None:
    """The framework side of the bug above, for a tool whose input does not bound it."""
    server = MCPServer("non-finite")

    @server.tool(inline=True)
    def overflow() -> float:
        """Returns a number JSON cannot hold."""
        return value

    h = Harness(server)
    try:
        tools = h.post(orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})).messages()[-1]
        (definition,) = tools["result"]["tools"]
        answer = h.post(
            orjson.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "overflow"}})
        ).messages()[-1]
    finally:
        h.close()
    result = answer["result"]
    if not result.get("isError"):
        jsonschema.validate(result["structuredContent"], definition["outputSchema"])


def test_bug_initialize_with_deep_capabilities_crashes_session_creation() -> None:
    """test_jsonrpc_fuzz::test_initialize_with_sessions and test_hostile_clients::
    test_deep_but_allowed_json_is_served. capabilities nested 254+ levels (the decoder
    allows 1024): compact_claims calls orjson.dumps, which stops at 255 levels and raises
    TypeError out of the transport; the real server answers 500 and logs a traceback.
    initialize must succeed (or be refused with a JSON-RPC error), in every session mode.
    Fixed in 984f516."""
    from mcp_fast.transport.sessions import JwtSessions, JwtSettings, MemorySessions
    from mcp_fast.transport.streamable import StreamableSettings

    deep = b"[" * 254 + b"true" + b"]" * 254
    body = (
        b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25",'
        b'"clientInfo":{"name":"c","version":"1"},"capabilities":{"sampling":%s}}}' % deep
    )
    for sessions in (
        JwtSessions(JwtSettings(secrets=("a-regression-secret-of-32-bytes-or-more",))),
        MemorySessions(),
    ):
        h = Harness(demo_server, StreamableSettings(sessions=sessions))
        try:
            rec = h.post(body)
            assert rec.status == 200
            assert "result" in rec.messages()[-1] or rec.messages()[-1]["error"]["code"] == -32602
        finally:
            h.close()


@pytest.mark.parametrize(
    ("tool", "arguments", "expected"),
    [
        ("add", b'{"a":1.0,"b":2}', {"a": 1, "b": 2, "sum": 3}),  # a: int
        # Annotated[int, Field(...)]: the first fix (984f516) covered bare int only.
        ("add", b'{"a":1,"b":2.0}', {"a": 1, "b": 2, "sum": 3}),
        ("countdown", b'{"steps":2.0}', None),  # Annotated[int, Field(ge=1, le=50)]
    ],
    ids=["int", "annotated-int", "annotated-int-with-bounds"],
)
def test_bug_integral_json_number_refused_for_integer_schema(
    harness: Harness, tool: str, arguments: bytes, expected: dict[str, Any] | None
) -> None:
    """test_tool_args_fuzz::test_integral_json_numbers_are_valid_integers. The tools
    advertise {"type": "integer"}; JSON Schema 2020-12 (validation 6.1.1) counts any
    number with a zero fractional part as an integer, so 2.0 is valid per the advertised
    schema, but strict validation answered isError "Input should be a valid integer".
    (Python clients send 2.0 for a float-typed 2.)"""
    body = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"%s","arguments":%s}}' % (
        tool.encode(),
        arguments,
    )
    with fast_demo_sleeps():
        answer = harness.post(body).messages()[-1]
    assert answer["result"]["isError"] is False, answer
    if expected is not None:
        assert answer["result"]["structuredContent"] == expected


def h2_outcome(chunks: list[bytes]) -> str:
    from mcp_fast.wire.events import CONNECTION_CLOSED, NEED_DATA
    from mcp_fast.wire.h2 import PREFACE, H2Connection

    conn = H2Connection()
    # (The client preface is the magic and a SETTINGS frame: RFC 9113 section 3.4.)
    for chunk in [PREFACE + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00", *chunks]:
        conn.receive_data(chunk)
        try:
            while (event := conn.next_event()) is not NEED_DATA:
                if event is CONNECTION_CLOSED:
                    return "closed"
        except ProtocolError:
            return f"error {conn.error_code}"
    return "open"


def test_bug_h2_frames_after_a_goaway_depend_on_split() -> None:
    """test_h2_frames::test_split_invariance. The client's GOAWAY and a HEADERS frame in one
    read: h2 refuses any frame after a GOAWAY (its state machine is closed), so the connection
    failed with PROTOCOL_ERROR, while the same bytes split after the GOAWAY ended cleanly.
    Fixed in 1608c4c: the input ends with the GOAWAY."""
    goaway = b"\x00\x00\x08\x07\x00\x00\x00\x00\x00" + bytes(8)
    headers = b"\x00\x00\x03\x01\x05\x00\x00\x00\x01\x82\x86\x84"  # GET / (static-table HPACK)
    assert h2_outcome([goaway + headers]) == h2_outcome([goaway, headers]) == "closed"


def test_bug_h2_request_answered_by_the_core_before_a_goaway_in_the_same_read() -> None:
    """test_h2_frames::test_contract_generated_frames (long profile). A request the core
    answers itself (here 400 for a :path without "/") and the client's GOAWAY in one read:
    h2 had already closed its state machine when the core sent the 400, and its
    ProtocolError escaped receive_data. Fixed: after a received GOAWAY nothing is sent."""
    import hpack

    block = hpack.Encoder().encode(
        [(b":method", b"GET"), (b":path", b"mcp"), (b":scheme", b"http"), (b":authority", b"a")]
    )
    headers = len(block).to_bytes(3, "big") + b"\x01\x05\x00\x00\x00\x01" + block
    goaway = b"\x00\x00\x08\x07\x00\x00\x00\x00\x00" + bytes(8)
    assert h2_outcome([headers + goaway]) == h2_outcome([headers, goaway]) == "closed"
