"""What production needs around the MCP endpoint: probes (and later authorization, rate
limits, metrics, logs), each a built-in route or middleware on the same mechanisms users have."""
