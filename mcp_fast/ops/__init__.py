"""What production needs around the MCP endpoint: authorization, rate limits, idempotency keys,
CORS, forwarded addresses, probes, metrics, tracing, access and audit logs, each a built-in
route, pipeline check or observer, or HTTP front on the same mechanisms users have (wired by
``mcp_fast.app``)."""
