"""Constants the MCP specification fixes, shared by every floor (imports nothing of ours)."""

from __future__ import annotations

from typing import Final, Literal

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

# The server-to-client request methods a handler may need (sampling, elicitation, roots),
# and the client capability each needs.
CAPABILITY_OF_METHOD: Final[dict[str, str]] = {
    "sampling/createMessage": "sampling",
    "elicitation/create": "elicitation",
    "roots/list": "roots",
}
