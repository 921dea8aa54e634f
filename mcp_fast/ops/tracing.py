"""OpenTelemetry tracing (optional: ``pip install 'mcp-fast[otel]'``; ``--tracing``, on by default).

A server span per MCP request, following the OpenTelemetry MCP semantic conventions: name
``"{mcp.method.name} {target}"`` (target: the tool, prompt or resource), kind SERVER, attributes
``mcp.method.name``, ``jsonrpc.request.id``, ``mcp.protocol.version``, ``mcp.session.id``,
``network.transport``, ``client.address``, ``gen_ai.tool.name`` / ``gen_ai.operation.name``
(``execute_tool``) for ``tools/call``, ``gen_ai.prompt.name``, ``mcp.resource.uri``, and on
failure ``error.type`` (the JSON-RPC code, or ``tool_error``) with the span status ERROR. The
span continues the caller's trace: W3C ``traceparent``/``tracestate`` from ``params._meta``
(how MCP clients propagate context, also over stdio) or else from the HTTP headers.

Spans are made only when ``opentelemetry-api`` is importable and a tracer provider has been
installed (by the app, or ``opentelemetry-instrument``) when serving starts: otherwise the API's
no-op tracer would cost every request a few microseconds for nothing, so the observer is not
installed at all. Nor is ``opentelemetry`` imported unless something (the app, or
``opentelemetry-instrument``) imported it first: without that, no provider can have been installed,
and the import alone would cost an idle server memory.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from mcp_fast.call import Call

logger = logging.getLogger("mcp_fast.tracing")


def tracing_available() -> bool:
    """opentelemetry-api is in use (imported by the app or its instrumentation) and a real
    tracer provider is configured."""
    if "opentelemetry.trace" not in sys.modules:
        return False
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    name = type(provider).__name__
    return name not in ("ProxyTracerProvider", "NoOpTracerProvider")


def _target(call: Call) -> str | None:
    params = call.params or {}
    for key in ("name", "uri"):
        value = params.get(key)
        if type(value) is str:
            return value
    return None


class Tracing:
    """A ``RequestObserver``: starts the span when the pipeline takes the request, ends it with
    the answer."""

    needs_begin = True

    def __init__(self) -> None:
        from opentelemetry import propagate, trace
        from opentelemetry.trace import SpanKind, Status, StatusCode

        self.tracer = trace.get_tracer("mcp_fast")
        self._extract = propagate.extract
        self._server_kind = SpanKind.SERVER
        self._error = Status(StatusCode.ERROR)

    def begin(self, call: Call) -> None:
        carrier: dict[str, str] = {}
        meta = call.meta
        if meta is not None and type(meta.get("traceparent")) is str:
            carrier["traceparent"] = meta["traceparent"]
            if type(meta.get("tracestate")) is str:
                carrier["tracestate"] = meta["tracestate"]
        else:
            parent = call.raw_header(b"traceparent")
            if parent is not None:
                carrier["traceparent"] = parent.decode("latin-1")
                state = call.raw_header(b"tracestate")
                if state is not None:
                    carrier["tracestate"] = state.decode("latin-1")
        context = self._extract(carrier) if carrier else None
        method = call.method
        target = _target(call)
        attributes: dict[str, Any] = {
            "mcp.method.name": method,
            "jsonrpc.request.id": str(call.id),
            "mcp.protocol.version": call.protocol_version,
            "network.transport": "pipe" if call.transport in ("stdio", "memory") else "tcp",
        }
        session = call.session_id
        if session:
            attributes["mcp.session.id"] = session
        if call.client is not None:
            attributes["client.address"] = call.client[0]
        if method == "tools/call" and target is not None:
            attributes["gen_ai.tool.name"] = target
            attributes["gen_ai.operation.name"] = "execute_tool"
        elif method == "prompts/get" and target is not None:
            attributes["gen_ai.prompt.name"] = target
        elif method.startswith("resources/") and target is not None:
            attributes["mcp.resource.uri"] = target
        name = f"{method} {target}" if target is not None else method
        call.trace = self.tracer.start_span(
            name, context=context, kind=self._server_kind, attributes=attributes
        )

    def end(self, call: Call, answered: bool) -> None:
        span = call.trace
        if not answered:
            span.set_attribute("error.type", "cancelled")
        elif call.error_code is not None:
            span.set_attribute("error.type", str(call.error_code))
            span.set_attribute("rpc.response.status_code", str(call.error_code))
            span.set_status(self._error)
        elif call.tool_error:
            span.set_attribute("error.type", "tool_error")
            span.set_status(self._error)
        span.end()
