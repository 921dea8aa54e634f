"""Input-required results (MCP 2026-07-28, "Multi Round-Trip Requests").

2026-07-28 has no server-to-client requests. A handler that needs the user or
the client's model (``ctx.elicit``, ``ctx.sample``, ``ctx.list_roots``) stops
with ``InputRequired``; the request is answered with ``resultType:
"input_required"``, the questions, and a signed ``requestState``; the client
retries the same request with ``inputResponses`` (and the state echoed), and
the handler runs again from the top, finding its answers this time. The server
keeps nothing between rounds, so any instance serves any round.
Spec: docs/specification/2026-07-28/basic/patterns/mrtr.mdx.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from mcp_fast.protocol.jsonrpc import INVALID_PARAMS, McpError

# Only these may answer input_required (mrtr.mdx "Supported Requests").
INPUT_METHODS: Final = frozenset({"tools/call", "prompts/get", "resources/read"})
_TARGET_FIELD: Final = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}
_ARGUMENTS_FIELD: Final = {"tools/call": "arguments", "prompts/get": "arguments"}
_VERSION: Final = b"v1"
STATE_TTL_SECONDS: Final = 600.0


class InputRequired(BaseException):
    """A handler needs answers from the client. A BaseException on purpose: user code's
    ``except Exception`` must not swallow it (it passes through Tasks and threads)."""


class DetachRequested(BaseException):
    """``await ctx.detach()`` in a tool that asks first and then runs as a task."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _digest(value: Any) -> str:
    return _b64(hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).digest()[:12])


class StateCodec:
    """Signs request states (HMAC-SHA256; the first secret signs, all verify: rotation)."""

    def __init__(
        self,
        secrets_: Sequence[str] = (),
        ttl_seconds: float = STATE_TTL_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        keys = [s.encode() for s in secrets_] or [secrets.token_bytes(32)]
        self._keys = keys
        self.ttl_seconds = ttl_seconds
        # Wall-clock seconds (another instance of the fleet may open the state); replaceable so
        # a test can let a state expire without waiting for it.
        self.clock = clock

    def _sign(self, key: bytes, payload: bytes) -> bytes:
        return hmac.new(key, _VERSION + b"." + payload, hashlib.sha256).digest()

    def seal(self, request_id: str, answers: dict[str, Any]) -> str:
        now = int(self.clock())
        payload = orjson.dumps(
            {"iat": now, "exp": now + int(self.ttl_seconds), "r": request_id, "ans": answers}
        )
        return f"v1.{_b64(payload)}.{_b64(self._sign(self._keys[0], payload))}"

    def open(self, token: object, request_id: str) -> dict[str, Any]:
        """The answers a valid state carries; -32602 for anything else (tampered, expired, moved)."""
        invalid = McpError(INVALID_PARAMS, "Invalid or expired requestState")
        if not isinstance(token, str) or token.count(".") != 2:
            raise invalid
        version, payload_text, signature_text = token.split(".")
        try:
            payload = _unb64(payload_text)
            signature = _unb64(signature_text)
        except ValueError:
            raise invalid from None
        if version != "v1" or not any(
            hmac.compare_digest(signature, self._sign(key, payload)) for key in self._keys
        ):
            raise invalid
        try:
            state = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise invalid from None
        if (
            not isinstance(state, dict)
            or state.get("r") != request_id
            or not isinstance(state.get("ans"), dict)
        ):
            raise invalid  # minted for another request (method, target or arguments differ)
        if not isinstance(state.get("exp"), int) or state["exp"] < self.clock():
            raise invalid
        answers: dict[str, Any] = state["ans"]
        return answers


def request_identity(method: str, params: dict[str, Any]) -> str:
    """What a state is bound to: the method, its target and a digest of its arguments."""
    target = params.get(_TARGET_FIELD[method])
    arguments = params.get(_ARGUMENTS_FIELD.get(method, ""))
    return f"{method}|{target}|{_digest(arguments if arguments is not None else {})}"


@dataclass
class InputRound:
    """The answers one execution of a handler may use, and the questions it still has."""

    identity: str
    answers: dict[str, Any]
    fresh: dict[str, Any]  # this round's inputResponses (not yet in a state)
    pending: dict[str, dict[str, Any]] = field(default_factory=dict)
    _counters: dict[str, int] = field(default_factory=dict)

    def auto_key(self, kind: str) -> str:
        """Keys by call order: a handler re-run from the top asks the same questions in order."""
        count = self._counters.get(kind, 0) + 1
        self._counters[kind] = count
        return f"{kind}-{count}"

    def answer(self, key: str) -> Any:
        if key in self.answers:
            return self.answers[key]
        return self.fresh.get(key)

    def carried(self) -> dict[str, Any]:
        """Every answer accepted so far, for the next state."""
        merged = dict(self.answers)
        for key, value in self.fresh.items():
            if key not in self.pending:
                merged[key] = value
        return merged


def open_round(method: str, params: dict[str, Any], codec: StateCodec) -> InputRound:
    """Read a request's inputResponses and requestState (-32602 when malformed or tampered)."""
    identity = request_identity(method, params)
    answers: dict[str, Any] = {}
    if params.get("requestState") is not None:
        answers = codec.open(params["requestState"], identity)
    fresh: dict[str, Any] = {}
    if "inputResponses" in params:
        responses = params["inputResponses"]
        if not isinstance(responses, dict):
            raise McpError(INVALID_PARAMS, 'Invalid params: "inputResponses" must be an object')
        fresh = responses
    return InputRound(identity, answers, fresh)


def check_answer(method: str, key: str, answer: Any) -> None:
    """An answer must have the shape of its kind's result (ElicitResult, CreateMessageResult, ...)."""
    problem = None
    if not isinstance(answer, dict):
        problem = "must be an object"
    elif method == "elicitation/create":
        if answer.get("action") not in ("accept", "decline", "cancel"):
            problem = 'needs "action": accept, decline or cancel'
        elif "content" in answer and not isinstance(answer["content"], dict):
            problem = '"content" must be an object'
    elif method == "sampling/createMessage":
        if "role" not in answer or "content" not in answer:
            problem = 'needs "role" and "content"'
    elif method == "roots/list" and not isinstance(answer.get("roots"), list):
        problem = 'needs a "roots" list'
    if problem is not None:
        raise McpError(INVALID_PARAMS, f"Invalid params: inputResponses[{key!r}] {problem}")


def input_required_result(round_: InputRound, codec: StateCodec) -> dict[str, Any]:
    return {
        "resultType": "input_required",
        "inputRequests": round_.pending,
        "requestState": codec.seal(round_.identity, round_.carried()),
    }
