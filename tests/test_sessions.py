"""Sessions over raw HTTP against real `python -m mcp_fast` processes.

What is checked (spec: modelcontextprotocol/modelcontextprotocol
`docs/specification/2025-11-25/basic/transports.mdx`, "Session Management" and "Listening for
Messages from the Server"; `basic/utilities/cancellation.mdx`; `server/utilities/logging.mdx`):

- `initialize` answers with an `Mcp-Session-Id` (visible ASCII); later requests carry it; a request
  without it (other than initialize) is 400; an unknown, ended, expired or forged one is 404.
- JWT sessions (`--session-mode jwt`, the default) are stateless: any process with the same
  `--session-secret` serves a session another process issued (no sticky routing), the negotiated
  version and client capabilities travel in the token, and `--session-secret new,old` verifies tokens
  signed with either secret (rotation).
- `--session-mode memory` sessions live in one process; `--stateless` issues none.
- The GET stream: one per session (409 for a second), keep-alive comments, closed by DELETE.
- Within a session the negotiated version rules whatever `MCP-Protocol-Version` says.
- `notifications/cancelled` stops an in-flight request, which then gets no JSON-RPC response.
- `logging/setLevel` applies to its own session only.

Servers are module-scoped where a test does not depend on fresh process state.
"""

from __future__ import annotations

import base64
import contextlib
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
from conftest import RunningServer, module_server, start_server, stop_server
from httpclient import OpenStream, RawClient, Response, client_request_bytes, rpc_bytes

LATEST = "2025-11-25"
INVALID_REQUEST = -32600
INVALID_PARAMS = -32602

# >= 32 bytes each, so pyjwt does not warn about short HMAC keys (RFC 7518 section 3.2).
FLEET_SECRET = "fleet-secret-0123456789abcdef0123456789abcdef-0123456789abcdef-fleet"
OLD_SECRET = "old-secret-0123456789abcdef0123456789abcdef-old"
NEW_SECRET = "new-secret-0123456789abcdef0123456789abcdef-new"
OTHER_SECRET = "some-other-secret-0123456789abcdef0123456789"

CLIENT_INFO = {"name": "test-sessions", "version": "1.0.0"}
SSE_ACCEPT = "text/event-stream"


# -- servers ------------------------------------------------------------------------------------


# Two processes of one "fleet": same secret, so each serves the other's sessions.
fleet_a = module_server("--session-secret", FLEET_SECRET, "--sse-keepalive", "0.5")
fleet_b = module_server("--session-secret", FLEET_SECRET)
old_only = module_server("--session-secret", OLD_SECRET)
rotated = module_server("--session-secret", f"{NEW_SECRET},{OLD_SECRET}")
new_only = module_server("--session-secret", NEW_SECRET)
memory_a = module_server("--session-mode", "memory")
memory_b = module_server("--session-mode", "memory")
stateless = module_server("--stateless")


# -- HTTP helpers --------------------------------------------------------------------------------


def session_headers(session: str | None, version: str | None) -> dict[str, str]:
    headers = {}
    if session is not None:
        headers["Mcp-Session-Id"] = session
    if version is not None:
        headers["MCP-Protocol-Version"] = version
    return headers


def rpc(
    server: RunningServer,
    method: str,
    params: dict[str, Any] | None = None,
    request_id: Any = 1,
    *,
    session: str | None = None,
    version: str | None = LATEST,
    **headers: str,
) -> Response:
    """One JSON-RPC message POSTed on a fresh connection; `request_id=None` makes a notification."""
    with RawClient(server.port) as client:
        client.send(rpc_bytes(method, params, request_id, **session_headers(session, version), **headers))
        return client.read_response()


def post_raw(
    server: RunningServer, body: Any, *, session: str | None, version: str | None = LATEST
) -> Response:
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        **session_headers(session, version),
    }
    with RawClient(server.port) as client:
        client.send(client_request_bytes("POST", "/mcp", orjson.dumps(body), headers))
        return client.read_response()


def http(server: RunningServer, method: str, headers: dict[str, str]) -> Response:
    """A body-less request; a streamed answer (an SSE stream that may never end) comes back with
    its head only, so a wrongly opened stream fails the test at once instead of hanging it."""
    with RawClient(server.port) as client:
        client.send(client_request_bytes(method, "/mcp", b"", headers))
        opened = OpenStream(client)
        return Response(opened.status, opened.headers, bytes(opened.raw))


def delete(server: RunningServer, session: str) -> Response:
    return http(server, "DELETE", {"Mcp-Session-Id": session})


def messages_of(response: Response) -> list[Any]:
    """Every JSON-RPC message of a POST's answer, whether JSON or SSE."""
    content_type = response.headers.get("content-type", "")
    if content_type.startswith("text/event-stream"):
        return response.sse_messages()
    if content_type.startswith("application/json"):
        body = response.json()
        return body if isinstance(body, list) else [body]
    raise AssertionError(f"unexpected answer {response.status} {response.headers} {response.body!r}")


def answer_of(response: Response, request_id: Any) -> dict[str, Any]:
    """The JSON-RPC response to `request_id` in a POST's answer (exactly one)."""
    answers = [m for m in messages_of(response) if "method" not in m and m.get("id") == request_id]
    assert len(answers) == 1, (response.status, response.headers, response.body)
    answer: dict[str, Any] = answers[0]
    return answer


def result_of(response: Response, request_id: Any = 1) -> dict[str, Any]:
    assert response.status == 200, (response.status, response.body)
    answer = answer_of(response, request_id)
    assert "result" in answer, answer
    result: dict[str, Any] = answer["result"]
    return result


def error_of(response: Response, request_id: Any = 1) -> dict[str, Any]:
    answer = answer_of(response, request_id)
    assert "error" in answer, answer
    error: dict[str, Any] = answer["error"]
    return error


def tool_text(result: dict[str, Any]) -> str:
    [block] = result["content"]
    assert block["type"] == "text", result
    text: str = block["text"]
    return text


def initialize(
    server: RunningServer,
    version: str = LATEST,
    capabilities: dict[str, Any] | None = None,
) -> str:
    """initialize + notifications/initialized; returns the Mcp-Session-Id."""
    params = {
        "protocolVersion": version,
        "capabilities": capabilities or {},
        "clientInfo": CLIENT_INFO,
    }
    response = rpc(server, "initialize", params, 0, version=None)
    assert response.status == 200, (response.status, response.body)
    assert result_of(response, 0)["protocolVersion"] == version
    session = response.headers.get("mcp-session-id")
    assert session is not None, response.headers
    initialized = rpc(server, "notifications/initialized", None, None, session=session, version=version)
    assert initialized.status == 202, (initialized.status, initialized.body)
    return session


def call_tool(
    server: RunningServer,
    session: str | None,
    name: str,
    arguments: dict[str, Any] | None = None,
    request_id: Any = 1,
    version: str | None = LATEST,
) -> Response:
    params = {"name": name, "arguments": arguments or {}}
    return rpc(server, "tools/call", params, request_id, session=session, version=version)


def ping_status(server: RunningServer, session: str) -> int:
    return rpc(server, "ping", None, 7, session=session).status


def assert_not_found(response: Response, request_id: Any = None) -> None:
    """Transports "Session Management": an unknown/ended session is HTTP 404."""
    assert response.status == 404, (response.status, response.headers, response.body)


def assert_session_required(response: Response, request_id: Any) -> None:
    """A request without Mcp-Session-Id (other than initialize) is 400, with a JSON-RPC error body."""
    assert response.status == 400, (response.status, response.body)
    assert response.headers.get("content-type", "").startswith("application/json"), response.headers
    body = response.json()
    assert body["jsonrpc"] == "2.0"
    assert body["id"] in (request_id, None)
    assert isinstance(body["error"]["code"], int)
    assert "Mcp-Session-Id" in body["error"]["message"]


# -- an incrementally read response (SSE streams) ---------------------------------------------


def open_post(
    client: RawClient,
    method: str,
    params: dict[str, Any] | None,
    request_id: Any,
    session: str,
    version: str = LATEST,
) -> OpenStream:
    client.send(rpc_bytes(method, params, request_id, **session_headers(session, version)))
    return OpenStream(client)


def open_get(client: RawClient, session: str | None, accept: str = SSE_ACCEPT) -> OpenStream:
    headers = {"Accept": accept, "MCP-Protocol-Version": LATEST}
    if session is not None:
        headers["Mcp-Session-Id"] = session
    client.send(client_request_bytes("GET", "/mcp", b"", headers))
    return OpenStream(client)


def wait_until(condition: Callable[[], bool], timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


# -- token crafting ------------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims_of(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def flip_char(segment: str, index: int) -> str:
    """Change one base64url character (never the last one, whose low bits may be padding)."""
    assert 0 <= index < len(segment) - 1
    replacement = "A" if segment[index] != "A" else "B"
    return segment[:index] + replacement + segment[index + 1 :]


def alg_none_token(claims: dict[str, Any]) -> str:
    header = b64url(orjson.dumps({"alg": "none", "typ": "JWT"}))
    return f"{header}.{b64url(orjson.dumps(claims))}."


# -- the session header ----------------------------------------------------------------------------


def test_initialize_issues_jwt_session_id_that_later_requests_use(fleet_a: RunningServer) -> None:
    session = initialize(fleet_a)
    # transports "Session ID": only visible ASCII (0x21-0x7E).
    assert session, session
    assert all(0x21 <= ord(char) <= 0x7E for char in session), session
    header, payload, signature = session.split(".")
    assert header and payload and signature
    assert jwt.get_unverified_header(session)["alg"] == "HS256"
    claims = claims_of(session)
    assert claims["v"] == LATEST
    assert claims["exp"] > time.time()
    # The token verifies with the configured secret (it is signed, not just encoded).
    jwt.decode(session, FLEET_SECRET, algorithms=["HS256"])

    echoed = call_tool(fleet_a, session, "echo", {"message": "in session"})
    assert tool_text(result_of(echoed)) == "in session"
    assert ping_status(fleet_a, session) == 200


def test_each_initialize_gets_its_own_session(fleet_a: RunningServer) -> None:
    first, second = initialize(fleet_a), initialize(fleet_a)
    assert first != second
    assert claims_of(first)["sid"] != claims_of(second)["sid"]


@pytest.mark.parametrize("method", ["ping", "tools/list", "tools/call"])
def test_request_without_session_is_400_with_jsonrpc_error(fleet_a: RunningServer, method: str) -> None:
    initialize(fleet_a)
    params = {"name": "echo", "arguments": {"message": "x"}} if method == "tools/call" else None
    assert_session_required(rpc(fleet_a, method, params, 41), 41)


def test_notification_and_delete_without_session_are_400(fleet_a: RunningServer) -> None:
    assert_session_required(rpc(fleet_a, "notifications/initialized", None, None), None)
    response = http(fleet_a, "DELETE", {})
    assert response.status == 400, (response.status, response.body)
    # A JSON-RPC response (to a server request) needs the session as well.
    answer = post_raw(fleet_a, {"jsonrpc": "2.0", "id": "srv-1", "result": {}}, session=None)
    assert answer.status == 400, (answer.status, answer.body)


@pytest.mark.parametrize(
    "token",
    [
        "not-a-session",
        "a.b.c",
        "eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl",  # {"alg":"HS256"}.{}.signature
        "X" * 300,
    ],
    ids=["word", "three-parts", "jwt-shaped", "long"],
)
def test_garbage_session_is_404(fleet_a: RunningServer, token: str) -> None:
    assert_not_found(rpc(fleet_a, "ping", None, 3, session=token))


def test_tampered_or_truncated_token_is_404(fleet_a: RunningServer) -> None:
    session = initialize(fleet_a)
    header, payload, signature = session.split(".")
    forged = {
        "payload flipped": f"{header}.{flip_char(payload, len(payload) // 2)}.{signature}",
        "signature flipped": f"{header}.{payload}.{flip_char(signature, 5)}",
        "header flipped": f"{flip_char(header, 3)}.{payload}.{signature}",
        "signature truncated": f"{header}.{payload}.{signature[:-6]}",
        "signature dropped": f"{header}.{payload}.",
        "token truncated": session[: len(session) // 2],
        "two parts": f"{header}.{payload}",
    }
    for name, token in forged.items():
        assert token != session
        response = rpc(fleet_a, "ping", None, 3, session=token)
        assert response.status == 404, (name, response.status, response.body)
    # The genuine token still works after all that.
    assert ping_status(fleet_a, session) == 200


def test_token_with_modified_claims_is_404(fleet_a: RunningServer) -> None:
    """Re-encode the payload with a changed claim but keep the original signature."""
    session = initialize(fleet_a)
    header, _, signature = session.split(".")
    claims = claims_of(session)
    for change in ({"v": "2025-03-26"}, {"exp": claims["exp"] + 3600}, {"sid": "someone-else"}):
        payload = b64url(orjson.dumps({**claims, **change}))
        response = rpc(fleet_a, "ping", None, 3, session=f"{header}.{payload}.{signature}")
        assert response.status == 404, (change, response.status, response.body)


def test_token_signed_with_another_secret_is_404(fleet_a: RunningServer, new_only: RunningServer) -> None:
    claims = claims_of(initialize(fleet_a))
    forged = jwt.encode(claims, OTHER_SECRET, algorithm="HS256")
    assert_not_found(rpc(fleet_a, "ping", None, 3, session=forged))
    # A real token from a server with a different secret: same verdict.
    foreign = initialize(new_only)
    assert_not_found(rpc(fleet_a, "ping", None, 3, session=foreign))


def test_alg_none_token_is_404(fleet_a: RunningServer) -> None:
    session = initialize(fleet_a)
    claims = claims_of(session)
    unsigned = alg_none_token(claims)
    assert_not_found(rpc(fleet_a, "ping", None, 3, session=unsigned))
    # "none" header with the genuine signature left on: still not accepted.
    assert_not_found(rpc(fleet_a, "ping", None, 3, session=unsigned + session.split(".")[2]))


def test_other_algorithm_with_the_right_secret_is_404(fleet_a: RunningServer) -> None:
    """The verifier pins HS256: an HS512 token made with the right secret is not a session."""
    claims = claims_of(initialize(fleet_a))
    other_alg = jwt.encode(claims, FLEET_SECRET, algorithm="HS512")
    assert_not_found(rpc(fleet_a, "ping", None, 3, session=other_alg))


def test_signed_token_missing_required_claims_is_404(fleet_a: RunningServer) -> None:
    claims = claims_of(initialize(fleet_a))
    for missing in ("sid", "v", "exp"):
        partial = {key: value for key, value in claims.items() if key != missing}
        token = jwt.encode(partial, FLEET_SECRET, algorithm="HS256")
        response = rpc(fleet_a, "ping", None, 3, session=token)
        assert response.status == 404, (missing, response.status, response.body)


def test_signed_token_that_already_expired_is_404(fleet_a: RunningServer) -> None:
    claims = claims_of(initialize(fleet_a))
    now = int(time.time())
    expired = jwt.encode({**claims, "iat": now - 120, "exp": now - 60}, FLEET_SECRET, algorithm="HS256")
    assert_not_found(rpc(fleet_a, "ping", None, 3, session=expired))


def test_signed_token_with_unknown_protocol_version_is_404(tmp_path: Path) -> None:
    """A validly signed session whose version this process does not speak (issued by a newer
    process during a rolling upgrade) is not a session here: 404, so the client negotiates again.
    (Was a KeyError -> 500 with a traceback; fixed in streamable.py `_session`.)"""
    server = start_server(tmp_path, "--session-secret", FLEET_SECRET)
    try:
        claims = claims_of(initialize(server))
        token = jwt.encode({**claims, "v": "2099-01-01"}, FLEET_SECRET, algorithm="HS256")
        response = rpc(server, "ping", None, 3, session=token)
        assert response.status == 404, (response.status, response.body)
        assert ping_status(server, initialize(server)) == 200
    finally:
        stop_server(server)
    assert "Traceback" not in server.log(), server.log()


def test_expired_session_is_404(tmp_path: Path, fleet_a: RunningServer) -> None:
    """`--session-ttl`: exp = int(now + ttl); 1.5 s leaves at least 0.5 s to use it first."""
    server = start_server(tmp_path, "--session-secret", FLEET_SECRET, "--session-ttl", "1.5")
    try:
        session = initialize(server)
        claims = claims_of(session)
        assert claims["exp"] - claims["iat"] <= 2
        assert ping_status(server, session) == 200
        time.sleep(max(0.0, claims["exp"] - time.time()) + 0.3)
        # The issuing process (which remembered the token as verified) and another process of the
        # fleet (which verifies it from scratch) both refuse it now.
        assert_not_found(rpc(server, "ping", None, 3, session=session))
        assert_not_found(call_tool(server, session, "echo", {"message": "late"}))
        assert_not_found(rpc(fleet_a, "ping", None, 3, session=session))
    finally:
        stop_server(server)
    assert "Traceback" not in server.log(), server.log()


def test_session_id_stays_usable_with_a_large_client_info(fleet_a: RunningServer) -> None:
    """The client MUST send the id it was given on every request, so the server must accept it.

    2025-11-25 `Implementation.icons` may be data: URIs and `capabilities.experimental` is free-form;
    a token embedding them whole was ~27 KB, which this server (16 KiB head limit) and nginx (8 KiB)
    refused with 431/400 (found by this test; fixed by `compact_claims` in sessions.py).
    """
    icon = "data:image/png;base64," + base64.b64encode(bytes(range(256)) * 60).decode()
    params = {
        "protocolVersion": LATEST,
        "capabilities": {"sampling": {}, "experimental": {"blob": "x" * 20_000}},
        "clientInfo": {**CLIENT_INFO, "icons": [{"src": icon, "mimeType": "image/png"}]},
    }
    init = rpc(fleet_a, "initialize", params, 0, version=None)
    session = init.headers["mcp-session-id"]
    assert len(session) < 8 * 1024, len(session)
    response = rpc(fleet_a, "ping", None, 3, session=session)
    assert response.status == 200, (len(session), response.status, response.body)
    # What the server needs of the declared capabilities survived: it may ask for sampling.
    with RawClient(fleet_a.port) as client:
        stream = open_post(
            client, "tools/call", {"name": "test_sampling", "arguments": {"prompt": "p"}}, 4, session
        )
        assert stream.next_message()["method"] == "sampling/createMessage"
        assert cancel(fleet_a, session, 4).status == 202
        assert [m for m in stream.rest() if "method" not in m] == []


# -- two processes, one secret -------------------------------------------------------------------


def test_session_from_one_process_is_served_by_another(
    fleet_a: RunningServer, fleet_b: RunningServer
) -> None:
    session = initialize(fleet_a)
    echoed = call_tool(fleet_b, session, "echo", {"message": "served by B"})
    assert tool_text(result_of(echoed)) == "served by B"
    listed = rpc(fleet_b, "tools/list", {}, 2, session=session)
    assert "echo" in {tool["name"] for tool in result_of(listed, 2)["tools"]}
    # Streaming (log notifications on an SSE answer) works on B too.
    logged = call_tool(fleet_b, session, "test_tool_with_logging", request_id=3)
    assert logged.headers["content-type"].startswith("text/event-stream")
    logs = [m for m in logged.sse_messages() if m.get("method") == "notifications/message"]
    assert len(logs) == 3
    assert tool_text(result_of(logged, 3)) == "Logging test completed"


def test_negotiated_version_is_honoured_by_another_process(
    fleet_a: RunningServer, fleet_b: RunningServer
) -> None:
    """The version negotiated on A rules on B, whatever header the request carries.

    2025-03-26: batches allowed; invalid tool arguments are a JSON-RPC -32602; no `title` nor
    `outputSchema` in tools/list. 2025-11-25: no batches; invalid arguments are an isError result.
    """
    old = initialize(fleet_a, "2025-03-26")
    batch = [
        {"jsonrpc": "2.0", "id": 10, "method": "ping"},
        {
            "jsonrpc": "2.0",
            "id": 11,
            "method": "tools/call",
            "params": {"name": "echo", "arguments": {"message": "b"}},
        },
    ]
    answered = post_raw(fleet_b, batch, session=old, version="2025-03-26")
    assert answered.status == 200, (answered.status, answered.body)
    by_id = {message["id"]: message for message in answered.json()}
    assert by_id[10]["result"] == {}
    assert tool_text(by_id[11]["result"]) == "b"
    invalid = call_tool(fleet_b, old, "echo", {"message": 5}, version="2025-03-26")
    assert error_of(invalid)["code"] == INVALID_PARAMS
    tools = {
        tool["name"]: tool
        for tool in result_of(rpc(fleet_b, "tools/list", {}, 1, session=old, version=None))["tools"]
    }
    assert "title" not in tools["add"]
    assert "outputSchema" not in tools["add"]

    new = initialize(fleet_a, LATEST)
    refused = post_raw(fleet_b, batch, session=new, version=LATEST)
    assert refused.status == 400, (refused.status, refused.body)
    invalid = call_tool(fleet_b, new, "echo", {"message": 5})
    assert result_of(invalid)["isError"] is True
    tools = {
        tool["name"]: tool for tool in result_of(rpc(fleet_b, "tools/list", {}, 1, session=new))["tools"]
    }
    assert tools["add"]["title"] == "Add two integers"
    assert "outputSchema" in tools["add"]


def test_client_capabilities_travel_with_the_session(fleet_a: RunningServer, fleet_b: RunningServer) -> None:
    """Capabilities declared at initialize on A decide what B may ask the client for."""
    without = initialize(fleet_a, capabilities={})
    refused = call_tool(fleet_b, without, "test_sampling", {"prompt": "hi"})
    error = error_of(refused)
    assert error["code"] == INVALID_REQUEST
    assert "sampling" in error["message"]

    with_sampling = initialize(fleet_a, capabilities={"sampling": {}})
    with RawClient(fleet_b.port) as client:
        stream = open_post(
            client, "tools/call", {"name": "test_sampling", "arguments": {"prompt": "hi"}}, 5, with_sampling
        )
        assert stream.status == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        request = stream.next_message()
        assert request["method"] == "sampling/createMessage", request
        assert request["params"]["messages"][0]["content"]["text"] == "hi"
        reply = {
            "jsonrpc": "2.0",
            "id": request["id"],
            "result": {
                "role": "assistant",
                "content": {"type": "text", "text": "from the model"},
                "model": "m",
            },
        }
        accepted = post_raw(fleet_b, reply, session=with_sampling)
        assert accepted.status == 202, (accepted.status, accepted.body)
        [final] = stream.rest()
        assert final["id"] == 5
        assert tool_text(final["result"]) == "LLM response: from the model"


def test_only_the_session_that_was_asked_can_answer(fleet_a: RunningServer) -> None:
    """A server-to-client request waits for its own session's answer: another session's client,
    even one that knows the request id (ids are per process, easy to guess), cannot answer it."""
    asked = initialize(fleet_a, capabilities={"sampling": {}})
    intruder = initialize(fleet_a, capabilities={"sampling": {}})
    with RawClient(fleet_a.port) as client:
        stream = open_post(client, "tools/call", {"name": "test_sampling", "arguments": {"prompt": "hi"}}, 5, asked)
        request = stream.next_message()
        assert request["method"] == "sampling/createMessage", request

        def reply(text: str) -> dict[str, Any]:
            content = {"type": "text", "text": text}
            return {"jsonrpc": "2.0", "id": request["id"], "result": {"role": "assistant", "content": content, "model": "m"}}

        # Accepted as any response is (202), but it answers nothing: ...
        assert post_raw(fleet_a, reply("forged"), session=intruder).status == 202
        assert post_raw(fleet_a, reply("forged"), session=None).status in (202, 400)
        # ... the tool still waits, and takes its own session's answer.
        assert post_raw(fleet_a, reply("genuine"), session=asked).status == 202
        [final] = stream.rest()
        assert tool_text(final["result"]) == "LLM response: genuine"


def test_delete_on_one_process_ends_the_session_there(fleet_a: RunningServer, fleet_b: RunningServer) -> None:
    """DELETE on A -> 200, then A answers 404 for the session.

    Without --fleet-dir (these two share none) the denylist of ended sessions is per
    process, so B, which never saw the DELETE, still accepts the token until it expires; the
    README says so. Shared: test_delete_reaches_every_process_sharing_a_denylist_dir.
    """
    session = initialize(fleet_a)
    assert ping_status(fleet_b, session) == 200
    ended = delete(fleet_a, session)
    assert ended.status == 200, (ended.status, ended.body)
    assert_not_found(rpc(fleet_a, "ping", None, 3, session=session))
    assert_not_found(call_tool(fleet_a, session, "echo", {"message": "gone"}))
    assert_not_found(delete(fleet_a, session))
    # Per-process denylist: B still serves the session.
    assert ping_status(fleet_b, session) == 200
    # Once B is told as well, it refuses it too.
    assert delete(fleet_b, session).status == 200
    assert_not_found(rpc(fleet_b, "ping", None, 3, session=session))


def test_processes_sharing_a_fleet_dir_share_cancellations_and_endings(tmp_path: Path) -> None:
    """Within the poll interval (--fleet-poll, 0.1 s): notifications/cancelled sent to B stops the
    request A runs (basic/utilities/cancellation), and after a DELETE the session is 404 on
    every process that shares --fleet-dir (transports "Session Management")."""
    shared = ("--session-secret", FLEET_SECRET, "--fleet-dir", str(tmp_path / "fleet"))
    a = start_server(tmp_path, *shared)
    b = start_server(tmp_path, *shared)
    try:
        session, other = initialize(a, capabilities={"sampling": {}}), initialize(a)
        with RawClient(a.port) as client:
            # A tool that waits for a sampling answer (300 s): only a cancellation ends it soon.
            params = {"name": "test_sampling", "arguments": {"prompt": "never answered"}}
            stream = open_post(client, "tools/call", params, "waits", session)
            assert stream.next_message()["method"] == "sampling/createMessage"
            assert cancel(b, session, "waits").status == 202
            assert stream.rest(timeout=10.0) == []  # ended, and no response for the request
        assert ping_status(b, session) == 200
        assert delete(a, session).status == 200
        assert_not_found(rpc(a, "ping", None, 3, session=session))
        deadline = time.monotonic() + 5
        while ping_status(b, session) == 200 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert_not_found(rpc(b, "ping", None, 3, session=session))
        assert ping_status(b, other) == 200  # only that session
        # A process started later learns of the ending from the directory.
        c = start_server(tmp_path, *shared)
        try:
            assert_not_found(rpc(c, "ping", None, 3, session=session))
            assert ping_status(c, other) == 200
        finally:
            stop_server(c)
    finally:
        stop_server(a)
        stop_server(b)
    for server in (a, b):
        assert "Traceback" not in server.log(), server.log()


# -- secret rotation ------------------------------------------------------------------------------


def test_rotated_secrets_accept_old_tokens(
    old_only: RunningServer, rotated: RunningServer, new_only: RunningServer
) -> None:
    """`--session-secret new,old`: the first secret signs, all verify."""
    old_token = initialize(old_only)
    jwt.decode(old_token, OLD_SECRET, algorithms=["HS256"])
    assert tool_text(result_of(call_tool(rotated, old_token, "echo", {"message": "old ok"}))) == "old ok"
    assert_not_found(rpc(new_only, "ping", None, 3, session=old_token))

    new_token = initialize(rotated)
    jwt.decode(new_token, NEW_SECRET, algorithms=["HS256"])  # signed with the first secret
    assert ping_status(new_only, new_token) == 200
    assert ping_status(rotated, new_token) == 200
    assert_not_found(rpc(old_only, "ping", None, 3, session=new_token))


# -- memory sessions -----------------------------------------------------------------------------


def test_memory_sessions(memory_a: RunningServer, memory_b: RunningServer) -> None:
    session = initialize(memory_a)
    assert all(0x21 <= ord(char) <= 0x7E for char in session), session
    assert tool_text(result_of(call_tool(memory_a, session, "echo", {"message": "mem"}))) == "mem"
    # Another process has its own table: it does not know the session.
    assert_not_found(rpc(memory_b, "ping", None, 3, session=session))
    assert_session_required(rpc(memory_a, "ping", None, 4), 4)
    assert_not_found(rpc(memory_a, "ping", None, 3, session="no-such-session"))
    ended = delete(memory_a, session)
    assert ended.status == 200, (ended.status, ended.body)
    assert_not_found(rpc(memory_a, "ping", None, 3, session=session))
    assert_not_found(delete(memory_a, session))
    # A new session works after the old one ended.
    assert ping_status(memory_a, initialize(memory_a)) == 200


# -- stateless -----------------------------------------------------------------------------------


def test_stateless_issues_no_session(stateless: RunningServer) -> None:
    params = {"protocolVersion": LATEST, "capabilities": {}, "clientInfo": CLIENT_INFO}
    init = rpc(stateless, "initialize", params, 0, version=None)
    assert result_of(init, 0)["protocolVersion"] == LATEST
    assert "mcp-session-id" not in init.headers
    assert rpc(stateless, "notifications/initialized", None, None).status == 202
    assert tool_text(result_of(call_tool(stateless, None, "echo", {"message": "no session"}))) == "no session"
    assert result_of(rpc(stateless, "ping", None, 2), 2) == {}
    logged = call_tool(stateless, None, "test_tool_with_logging")
    assert tool_text(result_of(logged)) == "Logging test completed"


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_stateless_get_and_delete_are_405(stateless: RunningServer, method: str) -> None:
    response = http(stateless, method, {"Accept": SSE_ACCEPT, "Mcp-Session-Id": "anything"})
    assert response.status == 405, (response.status, response.body)
    assert response.headers.get("allow") == "POST"


# -- the GET stream ------------------------------------------------------------------------------


def test_get_stream_stays_open_with_keepalives_and_is_one_per_session(fleet_a: RunningServer) -> None:
    session = initialize(fleet_a)
    first = RawClient(fleet_a.port)
    try:
        stream = open_get(first, session)
        assert stream.status == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert stream.headers.get("cache-control") == "no-cache"
        # `--sse-keepalive 0.5`: comments arrive, and the stream stays open meanwhile.
        deadline = time.monotonic() + 3.0
        while stream.raw.count(b": keep-alive") < 2 and time.monotonic() < deadline:
            stream.read_chunk(deadline - time.monotonic())
        assert stream.raw.count(b": keep-alive\n\n") >= 2, bytes(stream.raw)
        assert not stream.ended

        # Transports "Listening for Messages": at most one GET stream per session here.
        conflict = http(fleet_a, "GET", {"Accept": SSE_ACCEPT, "Mcp-Session-Id": session})
        assert conflict.status == 409, (conflict.status, conflict.body)
        # Other sessions are unaffected.
        other = initialize(fleet_a)
        with RawClient(fleet_a.port) as second:
            assert open_get(second, other).status == 200
    finally:
        first.close()
    # After the client goes away, the session may open its stream again.
    reopened: list[RawClient] = []

    def reopen() -> bool:
        candidate = RawClient(fleet_a.port)
        reopened.append(candidate)
        return open_get(candidate, session).status == 200

    try:
        assert wait_until(reopen), "the GET stream could not be reopened after its client left"
    finally:
        for candidate in reopened:
            candidate.close()


def test_get_without_session_is_400_and_unknown_session_404(fleet_a: RunningServer) -> None:
    missing = http(fleet_a, "GET", {"Accept": SSE_ACCEPT})
    assert missing.status == 400, (missing.status, missing.body)
    unknown = http(fleet_a, "GET", {"Accept": SSE_ACCEPT, "Mcp-Session-Id": "nope"})
    assert_not_found(unknown)


def test_get_accepting_only_json_is_406(fleet_a: RunningServer) -> None:
    session = initialize(fleet_a)
    response = http(fleet_a, "GET", {"Accept": "application/json", "Mcp-Session-Id": session})
    assert response.status == 406, (response.status, response.body)


def test_delete_closes_the_open_get_stream(fleet_a: RunningServer) -> None:
    session = initialize(fleet_a)
    with RawClient(fleet_a.port) as client:
        stream = open_get(client, session)
        assert stream.status == 200
        assert delete(fleet_a, session).status == 200
        deadline = time.monotonic() + 3.0
        with contextlib.suppress(TimeoutError):
            while not stream.ended and time.monotonic() < deadline:
                stream.read_chunk(deadline - time.monotonic())
        assert stream.ended, "the GET stream stayed open after DELETE"
    assert_not_found(http(fleet_a, "GET", {"Accept": SSE_ACCEPT, "Mcp-Session-Id": session}))


# -- the version header within a session ----------------------------------------------------------


def test_any_supported_version_header_is_accepted_within_a_session(fleet_a: RunningServer) -> None:
    """The conformance suite's server-sse-multiple-streams sends 2025-03-26 on a 2025-11-25 session
    and expects 2xx; the session's negotiated version keeps ruling (2025-11-25: invalid tool
    arguments are an isError result, not -32602; no batches)."""
    session = initialize(fleet_a, LATEST)
    for header in ("2025-03-26", "2025-06-18", None):
        echoed = call_tool(fleet_a, session, "echo", {"message": "v"}, version=header)
        assert echoed.status == 200, (header, echoed.status, echoed.body)
        invalid = call_tool(fleet_a, session, "echo", {"message": 5}, version=header)
        assert result_of(invalid)["isError"] is True, header
    batch = [{"jsonrpc": "2.0", "id": 1, "method": "ping"}]
    assert post_raw(fleet_a, batch, session=session, version="2025-03-26").status == 400
    with RawClient(fleet_a.port) as client:
        stream = open_get(client, session)
        assert stream.status == 200
    # And the other way round: a 2025-06-18 session keeps -32602 under a 2025-11-25 header.
    older = initialize(fleet_a, "2025-06-18")
    assert (
        error_of(call_tool(fleet_a, older, "echo", {"message": 5}, version=LATEST))["code"] == INVALID_PARAMS
    )


def test_unsupported_version_header_within_a_session_is_400(fleet_a: RunningServer) -> None:
    session = initialize(fleet_a)
    response = call_tool(fleet_a, session, "echo", {"message": "x"}, version="1999-01-01")
    assert response.status == 400, (response.status, response.body)


# -- cancellation ---------------------------------------------------------------------------------


def cancel(server: RunningServer, session: str, request_id: Any) -> Response:
    params = {"requestId": request_id, "reason": "test"}
    return rpc(server, "notifications/cancelled", params, None, session=session)


def test_cancel_a_streaming_request(fleet_a: RunningServer) -> None:
    """The POST's SSE stream has started (log notifications); cancelled, it ends with no response."""
    session = initialize(fleet_a)
    with RawClient(fleet_a.port) as client:
        started = time.monotonic()
        stream = open_post(
            client, "tools/call", {"name": "countdown", "arguments": {"steps": 50}}, "slow-1", session
        )
        assert stream.status == 200
        first = stream.next_message()
        assert first["method"] == "notifications/message", first
        cancelled = cancel(fleet_a, session, "slow-1")
        assert cancelled.status == 202, (cancelled.status, cancelled.body)
        assert cancelled.body == b""
        rest = stream.rest()
        assert stream.ended
        assert not [m for m in rest if "method" not in m], rest  # no result nor error for slow-1
        # It really stopped early: 50 steps take well over 0.5 s.
        assert len([m for m in rest if m.get("method") == "notifications/message"]) < 45
        assert time.monotonic() - started < 5.0
        # The same connection (and the server) keep serving.
        if not stream.eof:
            client.send(rpc_bytes("ping", None, 9, **session_headers(session, LATEST)))
            assert result_of(client.read_response(), 9) == {}
    assert tool_text(result_of(call_tool(fleet_a, session, "echo", {"message": "alive"}))) == "alive"


def test_cancel_a_request_before_its_stream_starts(fleet_a: RunningServer) -> None:
    """No notification was sent yet (level error, no progress token): the POST ends 202, no body."""
    session = initialize(fleet_a)
    assert result_of(rpc(fleet_a, "logging/setLevel", {"level": "error"}, 2, session=session), 2) == {}
    with RawClient(fleet_a.port) as client:
        client.send(
            rpc_bytes(
                "tools/call",
                {"name": "countdown", "arguments": {"steps": 50}},
                77,
                **session_headers(session, LATEST),
            )
        )
        time.sleep(0.15)
        assert cancel(fleet_a, session, 77).status == 202
        client.sock.settimeout(5.0)
        response = client.read_response()
        assert response.status == 202, (response.status, response.headers, response.body)
        assert response.body == b""
        client.send(rpc_bytes("ping", None, 9, **session_headers(session, LATEST)))
        assert result_of(client.read_response(), 9) == {}


def test_cancel_a_request_waiting_for_the_client(fleet_a: RunningServer) -> None:
    """A tool blocked on sampling/createMessage (which this client never answers) is cancelled."""
    session = initialize(fleet_a, capabilities={"sampling": {}})
    with RawClient(fleet_a.port) as client:
        stream = open_post(
            client, "tools/call", {"name": "test_sampling", "arguments": {"prompt": "p"}}, 8, session
        )
        assert stream.next_message()["method"] == "sampling/createMessage"
        assert cancel(fleet_a, session, 8).status == 202
        assert [m for m in stream.rest() if "method" not in m] == []
        assert stream.ended


def test_cancellation_is_scoped_to_its_session(fleet_a: RunningServer) -> None:
    """notifications/cancelled from another session with the same request id cancels nothing."""
    owner, stranger = initialize(fleet_a), initialize(fleet_a)
    assert result_of(rpc(fleet_a, "logging/setLevel", {"level": "error"}, 2, session=owner), 2) == {}
    with RawClient(fleet_a.port) as client:
        client.send(
            rpc_bytes(
                "tools/call",
                {"name": "countdown", "arguments": {"steps": 30}},
                55,
                **session_headers(owner, LATEST),
            )
        )
        time.sleep(0.05)
        assert cancel(fleet_a, stranger, 55).status == 202
        client.sock.settimeout(5.0)
        assert tool_text(result_of(client.read_response(), 55)) == "liftoff"


def test_delete_cancels_the_sessions_requests_in_flight(fleet_a: RunningServer) -> None:
    session = initialize(fleet_a)
    assert result_of(rpc(fleet_a, "logging/setLevel", {"level": "error"}, 2, session=session), 2) == {}
    with RawClient(fleet_a.port) as client:
        client.send(
            rpc_bytes(
                "tools/call",
                {"name": "countdown", "arguments": {"steps": 50}},
                66,
                **session_headers(session, LATEST),
            )
        )
        time.sleep(0.1)
        assert delete(fleet_a, session).status == 200
        client.sock.settimeout(5.0)
        response = client.read_response()
        # 202 and no body: the call was abandoned (a finished countdown would be 200 "liftoff").
        assert response.status == 202, (response.status, response.body)
        assert response.body == b""


def test_cancel_unknown_request_is_202(fleet_a: RunningServer) -> None:
    session = initialize(fleet_a)
    assert cancel(fleet_a, session, "never-sent").status == 202
    assert ping_status(fleet_a, session) == 200


# -- logging level per session ---------------------------------------------------------------------


def test_set_level_applies_to_its_own_session_only(fleet_a: RunningServer) -> None:
    quiet, chatty = initialize(fleet_a), initialize(fleet_a)
    assert result_of(rpc(fleet_a, "logging/setLevel", {"level": "error"}, 2, session=quiet), 2) == {}

    def logs(session: str) -> list[dict[str, Any]]:
        response = call_tool(fleet_a, session, "test_tool_with_logging", request_id=4)
        assert tool_text(result_of(response, 4)) == "Logging test completed"
        return [m["params"] for m in messages_of(response) if m.get("method") == "notifications/message"]

    assert logs(quiet) == []
    chatty_logs = logs(chatty)
    assert [entry["level"] for entry in chatty_logs] == ["info", "info", "info"]
    assert [entry["data"] for entry in chatty_logs] == [
        "Tool execution started",
        "Tool processing data",
        "Tool execution completed",
    ]
    # Raising the level back to debug restores them for the quiet session.
    assert result_of(rpc(fleet_a, "logging/setLevel", {"level": "debug"}, 3, session=quiet), 3) == {}
    assert len(logs(quiet)) == 3


def test_set_level_rejects_unknown_level(fleet_a: RunningServer) -> None:
    session = initialize(fleet_a)
    assert (
        error_of(rpc(fleet_a, "logging/setLevel", {"level": "loud"}, 2, session=session), 2)["code"]
        == INVALID_PARAMS
    )


def test_servers_are_still_healthy(fleet_a: RunningServer, fleet_b: RunningServer) -> None:
    """Runs last (file order): every process still answers, nothing above crashed them."""
    for server in (fleet_a, fleet_b):
        assert server.process.poll() is None
        with socket.create_connection((server.host, server.port), timeout=2):
            pass
        assert ping_status(server, initialize(server)) == 200
