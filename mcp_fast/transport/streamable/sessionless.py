"""A 2026-07-28 POST: no session, everything the request needs travels with it.

Spec: 2026-07-28 basic/transports/streamable-http.mdx and basic/index.mdx. The request is
checked in the spec's order before it reaches the pipeline (first failure wins): missing
``_meta`` fields (400, -32602), headers that disagree with the body (400, -32020), an
unsupported version (400, -32022), ``Mcp-Param-*`` headers that disagree with the arguments
(400, -32020). A JSON error answer carries an HTTP status by its code (an unknown method: 404).
Closing the request's stream cancels the request ("Cancellation").
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from mcp_fast.call import Principal
from mcp_fast.pipeline import Pipeline
from mcp_fast.protocol import jsonrpc
from mcp_fast.protocol.envelope import check_header_params, check_headers, check_version, read_envelope
from mcp_fast.protocol.jsonrpc import INVALID_REQUEST, Kind, McpError
from mcp_fast.protocol.versions import SESSIONLESS_ERROR_STATUS
from mcp_fast.transport.streamable.calls import HttpCall
from mcp_fast.transport.streamable.headers import JSON_HEADERS, NO_HEADERS, Accepted
from mcp_fast.wire.events import Request
from mcp_fast.wire.responder import Responder


def _refuse(responder: Responder, status: int, error: McpError, request_id: Any = None) -> None:
    """2026-07-28 has no null id: an error about a request whose id is unknown leaves it out."""
    responder.respond(status, JSON_HEADERS, jsonrpc.encode_error(request_id, error, omit_null_id=True))


class SessionlessPost:
    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.registry = pipeline.server.registry

    def post(
        self,
        body: Any,
        request: Request,
        responder: Responder,
        accepted: Accepted,
        principal: Principal | None = None,
    ) -> Coroutine[Any, Any, None] | None:
        if type(body) is not dict:
            _refuse(
                responder, 400, McpError(INVALID_REQUEST, "Invalid request: one JSON-RPC message per POST")
            )
            return None
        parts = jsonrpc.request_parts(body)  # most POSTs are requests: no Message for them
        if parts is None:
            self._not_a_request(body, responder)
            return None
        request_id, method, params = parts
        try:
            version, capabilities, client_info, log_level = read_envelope(params)
            check_headers(method, params, version, request.headers)
            policy = check_version(version)
            if method == "tools/call" and params is not None:
                tool = self.registry.tools.get(params.get("name"))  # type: ignore[arg-type]
                if tool is not None and tool.header_params:
                    check_header_params(tool.header_params, params.get("arguments"), request.headers)
        except McpError as exc:
            status = SESSIONLESS_ERROR_STATUS.get(exc.code, 400)
            responder.respond(status, JSON_HEADERS, jsonrpc.encode_error(request_id, exc))
            return None
        if method == "subscriptions/listen" and not accepted.sse_ok:
            error = McpError(INVALID_REQUEST, "subscriptions/listen answers with text/event-stream")
            responder.respond(406, JSON_HEADERS, jsonrpc.encode_error(request_id, error))
            return None
        call = HttpCall(
            "streamable-http",
            request_id,
            method,
            params,
            policy,
            None,
            request.headers,
            request.client,
            capabilities,
            client_info,
            log_level,
        )
        call.responder = responder
        call.accepted = accepted
        call.streams = None
        call.principal = principal
        answer = self.pipeline.request(call)
        if type(answer) is bytes:
            if call.outbound is None and accepted.json_ok and call.error_code is None:
                responder.respond(200, JSON_HEADERS, answer)  # deliver()'s common case, inlined
            else:
                call.deliver(answer)
            return None
        # 2026-07-28 "Cancellation": closing the request's stream cancels the request.
        responder.on_disconnect(call.cancel)
        return deliver_later(call, answer)  # type: ignore[arg-type]

    @staticmethod
    def _not_a_request(body: Any, responder: Responder) -> None:
        """A notification (202, nothing to act on over HTTP), a response (clients send none in
        2026-07-28) or not a JSON-RPC message (400)."""
        try:
            message = jsonrpc.parse_message(body)
        except jsonrpc.InvalidMessage as exc:
            _refuse(responder, 400, exc, exc.request_id)
            return
        if message.kind is Kind.RESPONSE:
            error = McpError(INVALID_REQUEST, "Invalid request: clients do not send responses in 2026-07-28")
            _refuse(responder, 400, error)
        else:
            responder.respond(202, NO_HEADERS, b"")


async def deliver_later(call: HttpCall, answer: Coroutine[Any, Any, bytes | None]) -> None:
    """Wait for the pipeline's answer and send it (nothing, past the exchange, when cancelled)."""
    response = await answer
    if response is None:
        call.abandon()
    else:
        call.deliver(response)
