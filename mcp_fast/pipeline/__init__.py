"""One request, any transport: the request pipeline (middleware, result cache, Context and
dispatch, the in-flight table, cancellation, the answer)."""

from mcp_fast.pipeline.pipeline import Handshake, Pipeline, PipelineSettings

__all__ = ["Handshake", "Pipeline", "PipelineSettings"]
