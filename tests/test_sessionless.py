"""MCP 2026-07-28 (sessionless) on the same endpoint, over real sockets."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from conftest import RunningServer, start_server, stop_server
from httpclient import MCP_HEADERS, RawClient, Response, client_request_bytes

from examples.conformance import server as demo_server
from mcp_fast.protocol.input_required import STATE_TTL_SECONDS
from mcp_fast.protocol.jsonrpc import McpError
from mcp_fast.testing import connect

SESSIONLESS = "2026-07-28"
ALL_CAPS = {"sampling": {}, "elicitation": {}, "roots": {}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("modern"), "--session-secret", "modern-secret")
    try:
        yield running
    finally:
        stop_server(running)
    assert "Traceback" not in running.log(), running.log()


def meta(capabilities: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "io.modelcontextprotocol/protocolVersion": SESSIONLESS,
        "io.modelcontextprotocol/clientCapabilities": ALL_CAPS if capabilities is None else capabilities,
        "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"},
        **extra,
    }


def send(
    server: RunningServer,
    method: str,
    params: dict[str, Any] | None = None,
    *,
    request_id: Any = 1,
    headers: dict[str, str] | None = None,
    name: str | None = None,
    omit: str | None = None,
) -> Response:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        body["params"] = params
    all_headers = {**MCP_HEADERS, "MCP-Protocol-Version": SESSIONLESS, "Mcp-Method": method}
    if name is not None:
        all_headers["Mcp-Name"] = name
    all_headers.update(headers or {})
    if omit is not None:
        del all_headers[omit]
    with RawClient(server.port) as client:
        client.send(client_request_bytes("POST", "/mcp", orjson.dumps(body), all_headers))
        return client.read_response()


def last_message(response: Response) -> Any:
    if response.headers.get("content-type") == "text/event-stream":
        return response.sse_messages()[-1]
    return response.json()


def call_tool(server: RunningServer, name: str, **params: Any) -> Any:
    params = {
        "name": name,
        "arguments": params.pop("arguments", {}),
        "_meta": params.pop("meta", meta()),
        **params,
    }
    return last_message(send(server, "tools/call", params, name=name))


def test_discover_and_result_fields(server: RunningServer) -> None:
    response = send(server, "server/discover", {"_meta": meta()})
    assert response.status == 200 and "mcp-session-id" not in response.headers
    result = response.json()["result"]
    assert result["resultType"] == "complete"
    assert result["supportedVersions"][0] == SESSIONLESS and "2025-11-25" in result["supportedVersions"]
    assert {"tools", "resources", "prompts"} <= set(result["capabilities"])
    assert "tasks" not in result["capabilities"]
    assert result["ttlMs"] == 0 and result["cacheScope"] == "public"
    assert result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "mcp-fast-conformance"
    listed = send(server, "tools/list", {"_meta": meta()}).json()["result"]
    assert listed["resultType"] == "complete" and listed["cacheScope"] == "public"
    assert all("execution" not in tool for tool in listed["tools"])
    read = last_message(
        send(
            server,
            "resources/read",
            {"uri": "test://static-text", "_meta": meta()},
            name="test://static-text",
        )
    )
    assert read["result"]["cacheScope"] == "private" and read["result"]["contents"][0]["text"]


def test_the_validation_ladder(server: RunningServer) -> None:
    # 1. missing _meta fields -> -32602 (before any header check)
    response = send(server, "tools/list", {"_meta": {"io.modelcontextprotocol/protocolVersion": SESSIONLESS}})
    assert response.status == 400 and response.json()["error"]["code"] == -32602
    # 2. headers that disagree with the body -> -32020
    response = send(server, "tools/list", {"_meta": meta()}, headers={"Mcp-Method": "prompts/list"})
    assert response.status == 400 and response.json()["error"]["code"] == -32020
    response = send(
        server, "tools/call", {"name": "echo", "arguments": {"message": "x"}, "_meta": meta()}, name="other"
    )
    assert response.status == 400 and response.json()["error"]["code"] == -32020
    # 3. an unsupported version (header and body agreeing) -> -32022 with the supported list
    odd = meta(**{"io.modelcontextprotocol/protocolVersion": "v999"})
    response = send(server, "tools/list", {"_meta": odd}, headers={"MCP-Protocol-Version": "v999"})
    error = response.json()["error"]
    assert response.status == 400 and error["code"] == -32022
    assert error["data"]["requested"] == "v999" and SESSIONLESS in error["data"]["supported"]
    assert response.json()["id"] == 1
    # 5. methods of the handshake era -> 404 -32601
    for method in ("initialize", "ping", "logging/setLevel", "resources/subscribe"):
        response = send(server, method, {"_meta": meta()})
        assert response.status == 404 and response.json()["error"]["code"] == -32601


@pytest.mark.parametrize(
    ("header", "wrong"),
    [("MCP-Protocol-Version", "2025-11-25"), ("Mcp-Method", "tools/list"), ("Mcp-Name", "add")],
)
def test_a_missing_required_header_is_refused_like_a_disagreeing_one(
    server: RunningServer, header: str, wrong: str
) -> None:
    """2026-07-28 streamable-http: MCP-Protocol-Version, Mcp-Method and (for a named target)
    Mcp-Name must repeat the body. A missing one does not repeat it either: 400 -32020, the same
    answer as for a value that disagrees (and not a request served as if it had agreed)."""
    body = {"name": "echo", "arguments": {"message": "x"}, "_meta": meta()}
    disagreeing = send(server, "tools/call", body, request_id=7, name="echo", headers={header: wrong})
    missing = send(server, "tools/call", body, request_id=7, name="echo", omit=header)
    for response in (disagreeing, missing):
        assert response.status == 400, response.body
        answer = response.json()
        assert answer["id"] == 7 and answer["error"]["code"] == -32020, answer
        assert "result" not in answer
    assert header.lower() in missing.json()["error"]["message"].lower()


def test_base64_sentinel_in_mcp_name(server: RunningServer) -> None:
    import base64

    encoded = "=?base64?" + base64.b64encode(b"echo").decode() + "?="
    body = {"name": "echo", "arguments": {"message": "via sentinel"}, "_meta": meta()}
    response = send(server, "tools/call", body, name=encoded)
    assert last_message(response)["result"]["content"][0]["text"] == "via sentinel"
    response = send(server, "tools/call", body, name="=?base64?not base64!?=")
    assert response.status == 400 and response.json()["error"]["code"] == -32020


def test_no_sessions_and_no_get_or_delete(server: RunningServer) -> None:
    response = send(server, "tools/list", {"_meta": meta()}, headers={"Mcp-Session-Id": "ignored-garbage"})
    assert response.status == 200  # a session id is ignored, not checked
    for method in ("GET", "DELETE"):
        with RawClient(server.port) as client:
            client.send(
                client_request_bytes(
                    method, "/mcp", b"", {"Accept": "text/event-stream", "MCP-Protocol-Version": SESSIONLESS}
                )
            )
            got = client.read_response()
        assert got.status == 405 and got.headers["allow"] == "POST"


def test_input_required_round_trips(server: RunningServer) -> None:
    first = call_tool(server, "test_input_required_result_multi_round")["result"]
    assert first["resultType"] == "input_required"
    assert first["inputRequests"]["step1"]["method"] == "elicitation/create"
    assert "ttlMs" not in first
    second = call_tool(
        server,
        "test_input_required_result_multi_round",
        inputResponses={"step1": {"action": "accept", "content": {"name": "Ada"}}},
        requestState=first["requestState"],
    )["result"]
    assert second["resultType"] == "input_required" and "step2" in second["inputRequests"]
    assert second["requestState"] != first["requestState"]
    third = call_tool(
        server,
        "test_input_required_result_multi_round",
        inputResponses={"step2": {"action": "accept", "content": {"color": "green"}}},
        requestState=second["requestState"],
    )["result"]
    assert third["resultType"] == "complete"
    assert third["content"][0]["text"] == "Ada likes green"


def test_request_state_is_bound_and_signed(server: RunningServer) -> None:
    first = call_tool(server, "test_input_required_result_request_state")["result"]
    answer = {"confirm": {"action": "accept", "content": {"ok": True}}}
    tampered = call_tool(
        server,
        "test_input_required_result_request_state",
        inputResponses=answer,
        requestState=first["requestState"] + "x",
    )
    assert tampered["error"]["code"] == -32602
    moved = call_tool(
        server,
        "test_input_required_result_tampered_state",
        inputResponses=answer,
        requestState=first["requestState"],
    )
    assert moved["error"]["code"] == -32602  # a state minted for another tool
    good = call_tool(
        server,
        "test_input_required_result_request_state",
        inputResponses=answer,
        requestState=first["requestState"],
    )
    assert good["result"]["content"][0]["text"] == "state-ok: confirmed=True"


def test_answers_are_validated_and_capabilities_checked(server: RunningServer) -> None:
    bad = call_tool(server, "test_input_required_result_elicitation", inputResponses={"user_name": 12345})
    assert bad["error"]["code"] == -32602
    no_sampling = call_tool(server, "test_missing_capability", meta=meta({}))
    assert no_sampling["error"]["code"] == -32021
    assert no_sampling["error"]["data"] == {"requiredCapabilities": {"sampling": {}}}
    both = call_tool(server, "test_input_required_result_multiple_inputs")["result"]
    assert {request["method"] for request in both["inputRequests"].values()} == {
        "elicitation/create",
        "sampling/createMessage",
        "roots/list",
    }


def test_log_notifications_only_when_asked(server: RunningServer) -> None:
    quiet = send(
        server,
        "tools/call",
        {"name": "test_logging_tool", "arguments": {}, "_meta": meta()},
        name="test_logging_tool",
    )
    assert quiet.headers["content-type"] == "application/json"  # no notification: plain JSON
    loud = send(
        server,
        "tools/call",
        {
            "name": "test_logging_tool",
            "arguments": {},
            "_meta": meta(**{"io.modelcontextprotocol/logLevel": "info"}),
        },
        name="test_logging_tool",
    )
    logs = [m for m in loud.sse_messages() if m.get("method") == "notifications/message"]
    assert len(logs) == 3
    assert loud.sse_messages()[-1]["result"]["resultType"] == "complete"


def test_resource_not_found_is_32602_with_uri(server: RunningServer) -> None:
    uri = "test://nonexistent"
    response = send(server, "resources/read", {"uri": uri, "_meta": meta()}, name=uri)
    error = response.json()["error"]
    assert response.status == 400 and error["code"] == -32602 and error["data"] == {"uri": uri}


def test_both_eras_on_one_endpoint_at_once(server: RunningServer) -> None:
    init = {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "old", "version": "1"},
    }
    with RawClient(server.port) as client:
        client.send(
            client_request_bytes(
                "POST",
                "/mcp",
                orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": init}),
                MCP_HEADERS,
            )
        )
        legacy = client.read_response()
    assert legacy.json()["result"]["protocolVersion"] == "2025-11-25"
    assert "mcp-session-id" in legacy.headers
    modern = call_tool(server, "echo", arguments={"message": "new"})
    assert modern["result"]["content"][0]["text"] == "new"


def test_x_mcp_header_parameters_must_match(server: RunningServer) -> None:
    body = {"name": "test_x_mcp_header", "arguments": {"region": "eu-west"}, "_meta": meta()}
    good = send(server, "tools/call", body, name="test_x_mcp_header", headers={"Mcp-Param-Region": "eu-west"})
    assert last_message(good)["result"]["content"][0]["text"] == "region=eu-west"
    for headers in ({"Mcp-Param-Region": "us-east"}, {}, {"Mcp-Param-Region": "=?base64?ZXUtd2VzdA?="}):
        bad = send(server, "tools/call", body, name="test_x_mcp_header", headers=headers)
        assert bad.status == 400 and bad.json()["error"]["code"] == -32020


def post_raw(server: RunningServer, body: Any) -> Response:
    headers = {**MCP_HEADERS, "MCP-Protocol-Version": SESSIONLESS, "Mcp-Method": "x"}
    with RawClient(server.port) as client:
        client.send(client_request_bytes("POST", "/mcp", orjson.dumps(body), headers))
        return client.read_response()


def test_what_is_not_a_request(server: RunningServer) -> None:
    """A 2026-07-28 POST that is not one request: a notification is accepted with nothing to
    say (202), a response, a batch or a malformed message is refused (400) without a null id."""
    notification = post_raw(server, {"jsonrpc": "2.0", "method": "notifications/initialized", "params": {"_meta": meta()}})
    assert (notification.status, notification.body) == (202, b"")
    response = post_raw(server, {"jsonrpc": "2.0", "id": 7, "result": {}})
    assert response.status == 400
    assert response.json()["error"]["code"] == -32600
    assert "clients do not send responses" in response.json()["error"]["message"]
    assert "id" not in response.json()
    batch = post_raw(server, [{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"_meta": meta()}}])
    assert batch.status == 400
    assert "one JSON-RPC message per POST" in batch.json()["error"]["message"]
    bad = post_raw(server, {"jsonrpc": "1.0", "id": 3, "method": "ping", "params": {"_meta": meta()}})
    assert bad.status == 400
    assert bad.json()["error"]["code"] == -32600
    assert bad.json()["id"] == 3
@pytest.mark.parametrize(("waited", "expired"), [(STATE_TTL_SECONDS - 1, False), (STATE_TTL_SECONDS + 1, True)])
def test_an_expired_request_state_is_refused(waited: float, expired: bool) -> None:
    """mrtr: the requestState of an input-required result is signed with an expiry (600 s). A
    client that answers after it has passed is refused (-32602) instead of being served with
    the answers it carries. The codec's clock moves while the client "answers", no sleeping."""
    now = [1_000_000.0]

    def answer_late(params: dict[str, Any]) -> dict[str, Any]:
        now[0] += waited
        return {"action": "accept", "content": {"ok": True}}

    async def main() -> None:
        async with connect(demo_server, protocol_version=SESSIONLESS, elicitation=answer_late) as client:
            client.pipeline.dispatcher.state_codec.clock = lambda: now[0]
            call = client.call_tool("test_input_required_result_request_state", {})
            if not expired:
                assert (await call)["content"][0]["text"] == "state-ok: confirmed=True"
                return
            with pytest.raises(McpError) as refused:
                await call
            assert refused.value.code == -32602 and "expired" in refused.value.message

    asyncio.run(main())
