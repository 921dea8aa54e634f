"""JSON-RPC 2.0 on orjson: decoding, envelope validation, encoding, error objects.

Decoding reads straight from the request body (bytes or a memoryview of the
received bytes: orjson takes both without a copy). Envelope checks are plain
``type(x) is`` tests on the hot path. Error messages are ours and short: no
parser or validator text and no traceback ever reaches a client.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Any, Final

import orjson

# JSON-RPC 2.0 section 5.1, and the MCP additions.
PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
INTERNAL_ERROR: Final = -32603
# MCP: resources/read of an unknown URI (server/resources, "Error Handling").
RESOURCE_NOT_FOUND: Final = -32002
# MCP 2025-11-25: the client lacks a capability the request needs (e.g. sampling).
URL_ELICITATION_REQUIRED: Final = -32042

RequestId = str | int
JsonObject = dict[str, Any]


class McpError(Exception):
    """An error answered as a JSON-RPC error object: ``McpError(code, message, data=None)``.

    Raised by a handler or a middleware, the client receives it as that error on every
    transport. ``message`` is shown to the client: keep it a short sentence a person
    understands, never an exception's repr or a traceback.
    """

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_error_object(self) -> JsonObject:
        error: JsonObject = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


# The name the code base grew up with; the same class.
RpcError = McpError


class HttpError(McpError):
    """A JSON-RPC error that also carries HTTP semantics: a status and response headers.

    Streamable HTTP answers it with that status and those headers (401 with
    ``WWW-Authenticate``, 403 for a missing scope, 429 with ``Retry-After``), the JSON-RPC
    error object as the body. Transports without HTTP status per request (stdio, the old
    HTTP+SSE transport, a JSON-RPC batch) answer it as the plain JSON-RPC error.
    ``headers`` are (lower-case name, value) pairs of bytes.
    """

    def __init__(
        self,
        status: int,
        code: int,
        message: str,
        data: Any = None,
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        super().__init__(code, message, data)
        self.status = status
        self.headers = headers


class Kind(enum.Enum):
    REQUEST = "request"
    NOTIFICATION = "notification"
    RESPONSE = "response"


@dataclass(slots=True)
class Message:
    """One validated JSON-RPC message."""

    kind: Kind
    id: RequestId | None
    method: str
    params: JsonObject | None
    # For responses: the whole message (result or error is read by the waiter).
    raw: JsonObject


class InvalidMessage(McpError):
    """The envelope is not valid JSON-RPC; ``request_id`` is echoed when it could be read."""

    def __init__(self, message: str, request_id: RequestId | None = None) -> None:
        super().__init__(INVALID_REQUEST, message)
        self.request_id = request_id


def decode(body: bytes | memoryview | str) -> Any:
    """Parse a JSON body; anything orjson refuses (bad UTF-8, NaN, >64-bit ints,
    nesting deeper than 1024) is a parse error."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise parse_error() from None


def parse_error() -> McpError:
    """What a body that is not JSON gets (-32700; JSON-RPC 2.0 section 5.1: with id null)."""
    return McpError(PARSE_ERROR, "Parse error: the body is not valid JSON")


def request_parts(obj: Any) -> tuple[RequestId, str, JsonObject | None] | None:
    """(id, method, params) of a well-formed request; None for anything else, which
    ``parse_message`` then tells apart (a notification, a response, or what is wrong).

    The transports ask this first: most messages are requests, and a request needs no
    ``Message``. The rules are parse_message's, which itself starts here.
    """
    if type(obj) is not dict or obj.get("jsonrpc") != "2.0":
        return None
    request_id = obj.get("id")
    method = obj.get("method")
    params = obj.get("params")
    if (
        type(method) is not str
        or (type(request_id) is not str and type(request_id) is not int)
        or (params is not None and type(params) is not dict)
    ):
        return None
    return request_id, method, params


def parse_message(obj: Any) -> Message:
    """Validate one JSON-RPC envelope (JSON-RPC 2.0 sections 4 and 5)."""
    parts = request_parts(obj)
    if parts is not None:
        return Message(Kind.REQUEST, parts[0], parts[1], parts[2], obj)
    if type(obj) is not dict:
        raise InvalidMessage("Invalid request: a JSON-RPC message must be a JSON object")
    raw_id = obj.get("id")
    # MCP: "Requests MUST include a string or integer ID" (not null, not bool, not float).
    echo_id = raw_id if type(raw_id) is str or type(raw_id) is int else None
    if obj.get("jsonrpc") != "2.0":
        raise InvalidMessage('Invalid request: "jsonrpc" must be "2.0"', echo_id)
    method = obj.get("method")
    if method is None:
        return _parse_response(obj, echo_id)
    if type(method) is not str:
        raise InvalidMessage('Invalid request: "method" must be a string', echo_id)
    params = obj.get("params")
    if params is not None and type(params) is not dict:
        # JSON-RPC allows by-position arrays; every MCP method takes an object.
        raise InvalidMessage('Invalid request: "params" must be an object', echo_id)
    if "id" not in obj:
        return Message(Kind.NOTIFICATION, None, method, params, obj)
    if echo_id is None:
        raise InvalidMessage('Invalid request: "id" must be a string or an integer')
    return Message(Kind.REQUEST, echo_id, method, params, obj)


def _parse_response(obj: JsonObject, echo_id: RequestId | None) -> Message:
    has_result = "result" in obj
    has_error = "error" in obj
    if has_result == has_error:
        raise InvalidMessage(
            'Invalid request: a message needs "method", or exactly one of "result" and "error"',
            echo_id,
        )
    if echo_id is None:
        raise InvalidMessage('Invalid response: "id" must be a string or an integer')
    if has_error and type(obj["error"]) is not dict:
        raise InvalidMessage('Invalid response: "error" must be an object', echo_id)
    return Message(Kind.RESPONSE, echo_id, "", None, obj)


def _default(value: Any) -> Any:
    """orjson fallback for types it does not know: pydantic models and sets."""
    dump = getattr(value, "model_dump", None)
    if dump is not None:
        return dump(mode="json", by_alias=True, exclude_none=True)
    if isinstance(value, (set, frozenset)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(value: Any) -> bytes:
    """orjson, or the standard library for what orjson refuses but JSON allows
    (integers beyond 64 bits; nesting deeper than 255). Non-finite floats stay refused."""
    try:
        return orjson.dumps(value, default=_default)
    except TypeError:
        try:
            return json.dumps(value, default=_default, allow_nan=False, separators=(",", ":")).encode()
        except (ValueError, RecursionError) as exc:
            raise TypeError(str(exc)) from None


def encode_result(request_id: RequestId | None, result: Any) -> bytes:
    response = {"jsonrpc": "2.0", "id": request_id, "result": result}
    try:
        return orjson.dumps(response, default=_default)  # dumps() in one frame: every answer passes
    except TypeError:
        return dumps(response)


def encode_error(request_id: RequestId | None, error: McpError, *, omit_null_id: bool = False) -> bytes:
    """An error response; ``omit_null_id``: leave ``id`` out when unknown (2026-07-28 has no null id)."""
    message: JsonObject = {"jsonrpc": "2.0", "id": request_id, "error": error.to_error_object()}
    if request_id is None and omit_null_id:
        del message["id"]
    return orjson.dumps(message, default=_default)


def encode_notification(method: str, params: JsonObject | None) -> bytes:
    message: JsonObject = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        message["params"] = params
    return orjson.dumps(message, default=_default)


def encode_request(request_id: RequestId, method: str, params: JsonObject | None) -> bytes:
    message: JsonObject = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        message["params"] = params
    return orjson.dumps(message, default=_default)
