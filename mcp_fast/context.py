"""The per-request Context handed to handlers that ask for it, and the Outbound interface.

A handler declares a parameter annotated ``Context`` to get one. Through it the
handler reports progress and sends log messages; both travel on the request's
own response stream (a POST answered as SSE), which the transport opens only
when the first notification is sent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

from mcp_fast.jsonrpc import RequestId, RpcError
from mcp_fast.versions import VersionPolicy

if TYPE_CHECKING:
    from mcp_fast.server import MCPServer

LogLevel = Literal["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"]

# RFC 5424 severities, as MCP's logging utility orders them (server/utilities/logging).
LOG_LEVELS: Final[dict[str, int]] = {
    "debug": 0,
    "info": 1,
    "notice": 2,
    "warning": 3,
    "error": 4,
    "critical": 5,
    "alert": 6,
    "emergency": 7,
}

# The server-to-client request methods a handler may need (sampling, elicitation, roots).
CAPABILITY_OF_METHOD: Final[dict[str, str]] = {
    "sampling/createMessage": "sampling",
    "elicitation/create": "elicitation",
    "roots/list": "roots",
}


class Outbound(Protocol):
    """Where a request's notifications go (the transport implements it)."""

    async def notify(self, method: str, params: dict[str, Any] | None) -> None: ...


class Context:
    """What a handler knows about the request it serves, and how it talks back."""

    __slots__ = (
        "_min_log_level",
        "_outbound",
        "client_capabilities",
        "client_info",
        "meta",
        "policy",
        "request_id",
        "server",
    )

    def __init__(
        self,
        server: MCPServer,
        request_id: RequestId | None,
        meta: dict[str, Any] | None,
        policy: VersionPolicy,
        outbound: Outbound,
        *,
        client_capabilities: dict[str, Any] | None = None,
        client_info: dict[str, Any] | None = None,
        min_log_level: int = 0,
    ) -> None:
        self.server = server
        self.request_id = request_id
        self.meta = meta
        self.policy = policy
        self.client_capabilities = client_capabilities
        self.client_info = client_info
        self._outbound = outbound
        self._min_log_level = min_log_level

    @property
    def protocol_version(self) -> str:
        return self.policy.version

    @property
    def progress_token(self) -> str | int | None:
        """The client's ``_meta.progressToken`` (progress is sent only when it gave one)."""
        if self.meta is None:
            return None
        token = self.meta.get("progressToken")
        return token if type(token) in (str, int) else None

    async def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        """Send any notification on this request's stream."""
        await self._outbound.notify(method, params)

    async def report_progress(
        self, progress: float, total: float | None = None, message: str | None = None
    ) -> None:
        """``notifications/progress`` for this request; a no-op without a progress token."""
        token = self.progress_token
        if token is None:
            return
        params: dict[str, Any] = {"progressToken": token, "progress": progress}
        if total is not None:
            params["total"] = total
        if message is not None:
            params["message"] = message
        await self._outbound.notify("notifications/progress", params)

    async def log(self, level: LogLevel, data: Any, logger: str | None = None) -> None:
        """``notifications/message``, dropped when below the client's logging level."""
        rank = LOG_LEVELS.get(level)
        if rank is None:
            raise ValueError(f"unknown log level {level!r}")
        if rank < self._min_log_level:
            return
        params: dict[str, Any] = {"level": level, "data": data}
        if logger is not None:
            params["logger"] = logger
        await self._outbound.notify("notifications/message", params)

    async def debug(self, data: Any, logger: str | None = None) -> None:
        await self.log("debug", data, logger)

    async def info(self, data: Any, logger: str | None = None) -> None:
        await self.log("info", data, logger)

    async def warning(self, data: Any, logger: str | None = None) -> None:
        await self.log("warning", data, logger)

    async def error(self, data: Any, logger: str | None = None) -> None:
        await self.log("error", data, logger)

    def require_client_capability(self, method: str) -> None:
        """Raise a clear error when the client did not declare what ``method`` needs."""
        capability = CAPABILITY_OF_METHOD.get(method)
        if capability is None:
            return
        if not self.client_capabilities or capability not in self.client_capabilities:
            raise RpcError(
                -32600,
                f"The client did not declare the '{capability}' capability needed for {method}",
            )
