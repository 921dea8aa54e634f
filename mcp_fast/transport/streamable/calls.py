"""A request of Streamable HTTP as the pipeline sees it: a ``Call`` that knows its HTTP exchange,
opens the POST's answer channel when the handler first talks back, and delivers the answer."""

from __future__ import annotations

from mcp_fast.call import SILENT, Call, Outbound
from mcp_fast.transport.streamable.answer import PostChannel, Resumable
from mcp_fast.transport.streamable.headers import JSON_HEADERS, Accepted
from mcp_fast.transport.streamable.streams import SessionStreams
from mcp_fast.wire.responder import Responder


class HttpCall(Call):
    """One JSON-RPC request of a POST. ``responder``, ``accepted`` and ``streams`` are set by the
    endpoint right after construction (a Call is made for every request: no second __init__)."""

    __slots__ = ("accepted", "responder", "streams")

    responder: Responder
    accepted: Accepted
    # The session's streams (None: no session, nothing to resume or detach to).
    streams: SessionStreams | None

    def open_outbound(self) -> Outbound:
        """The POST's answer channel: JSON until the handler sends something first, then SSE
        (resumable in a session)."""
        outbound = self.outbound
        if outbound is None:
            accepted = self.accepted
            channel = PostChannel(self.responder, accepted.json_ok, accepted.sse_ok)
            channel.error_status = self.policy.error_status or None
            streams = self.streams
            session = self.session
            if streams is not None and session is not None:
                channel.resumable = Resumable(
                    streams.store, session.session_id, self.policy.sse_priming, streams.retry_ms, streams.live
                )
                channel.detach_to = streams.outbound(session.session_id)
            else:
                channel.detach_to = SILENT
            outbound = self.outbound = channel
        return outbound

    def deliver(self, response: bytes) -> None:
        """The answer: on the channel when one was opened, else (the common case) as JSON when the
        client takes it, or as a one-event SSE stream. A refusal with HTTP semantics (``HttpError``:
        401, 403, 429) is answered with its status and headers and the JSON-RPC error as the body,
        whatever the client accepts (RFC 9110 section 15.5: an error status carries its own body)."""
        channel = self.outbound
        refusal = self.refusal
        if refusal is not None and (
            channel is None or (isinstance(channel, PostChannel) and not channel.streaming)
        ):
            self.responder.respond(refusal.status, (*JSON_HEADERS, *refusal.headers), response)
            return
        if channel is None:
            if self.accepted.json_ok:
                status = 200
                error_code = self.error_code
                if error_code is not None:
                    status = self.policy.error_status.get(error_code, 200)
                self.responder.respond(status, JSON_HEADERS, response)
                return
            channel = self.open_outbound()
        assert isinstance(channel, PostChannel)
        channel.finish(response, self.error_code)

    def abandon(self) -> None:
        """The request was cancelled: end the exchange without a JSON-RPC response."""
        channel = self.open_outbound()
        assert isinstance(channel, PostChannel)
        channel.abandon()
