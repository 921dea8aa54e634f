"""Tests for the sans-I/O HTTP/1.1 core (mcp_fast.wire.h1).

Most scenarios go through ``check``: the same bytes are fed all at once,
byte by byte, and with trailing data (a pipelined request, or garbage) after
them, and each feed must give the same events.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import h11
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mcp_fast.wire import h1
from mcp_fast.wire.events import (
    CONNECTION_CLOSED,
    NEED_DATA,
    ContinueRequested,
    ProtocolError,
    Request,
)
from mcp_fast.wire.h1 import (
    CHUNKED_END,
    CONTINUE_RESPONSE,
    H1Connection,
    H1Limits,
    encode_chunk,
    encode_response,
    error_response,
    response_head,
)

# ---------------------------------------------------------------------------
# Harness


@pytest.fixture(autouse=True)
def _no_date_line() -> None:
    """The core as it is without a clock: no Date line. A server started in this process
    earlier (tests/test_http_server.py's in-process servers) leaves its date set, which put a
    Date line into the heads these tests spell out when the files ran in that order."""
    h1.set_date("")

# A normalised event: ("req", method, target, path, headers, body, keep_alive,
# version), ("continue",), ("closed",) or ("error", status).
Ev = tuple[object, ...]

DEFAULT = H1Limits()
SMALL = H1Limits(max_header_bytes=512, max_header_count=8, max_target_bytes=64, max_body_bytes=1000)

NEXT = b"GET /next HTTP/1.1\r\nHost: next.example\r\n\r\n"
NEXT_EV: Ev = ("req", b"GET", b"/next", b"/next", {b"host": b"next.example"}, b"", True, b"1.1")
GARBAGE = b"\x16\x03\x01\x00\xa5garbage\r\n\r\n"


def req_ev(
    method: bytes = b"GET",
    target: bytes = b"/",
    headers: dict[bytes, bytes] | None = None,
    body: bytes = b"",
    *,
    path: bytes | None = None,
    keep_alive: bool = True,
    version: bytes = b"1.1",
) -> Ev:
    if path is None:
        path = target.partition(b"?")[0].partition(b"#")[0]  # no query, no fragment
    if headers is None:
        headers = {b"host": b"a"}
    return ("req", method, target, path, headers, body, keep_alive, version)


def norm(req: Request) -> Ev:
    return (
        "req",
        req.method,
        req.target,
        req.path,
        req.headers,
        bytes(req.body),
        req.keep_alive,
        req.http_version,
    )


def drain(conn: H1Connection, out: list[Ev], keep_continue: bool, chunk: bytes | None = None) -> bool:
    """Pull events until NEED_DATA; False once the connection is finished.

    With ``chunk``, the first event comes from ``feed(chunk)`` (what the server does)."""
    while True:
        try:
            ev = conn.feed(chunk) if chunk is not None else conn.next_event()
            chunk = None
        except ProtocolError as exc:
            out.append(("error", exc.status))
            return False
        if ev is NEED_DATA:
            return True
        if ev is CONNECTION_CLOSED:
            out.append(("closed",))
            return False
        if isinstance(ev, ContinueRequested):
            assert ev.stream_id == 1
            if keep_continue:
                out.append(("continue",))
            continue
        assert isinstance(ev, Request)
        assert ev.stream_id == 1
        out.append(norm(ev))


def run(
    chunks: Iterable[bytes],
    limits: H1Limits = DEFAULT,
    *,
    eof: bool = True,
    keep_continue: bool = False,
) -> list[Ev]:
    conn = H1Connection(limits)
    out: list[Ev] = []
    for chunk in chunks:
        if not drain(conn, out, keep_continue, chunk):
            return out
    if eof:
        conn.receive_data(b"")
        drain(conn, out, keep_continue)
    return out


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def _then(expected: list[Ev], extra: list[Ev]) -> list[Ev]:
    """Events for ``expected`` followed by more input on the same connection."""
    if expected[-1] != ("closed",):
        return expected  # an error ends the connection first
    before = expected[:-1]
    if before and before[-1][0] == "req" and before[-1][6] is False:
        return expected  # "close": whatever follows is ignored
    return before + extra


def check(data: bytes, expected: list[Ev], limits: H1Limits = DEFAULT, *, trailing: bool = True) -> None:
    """The same events for all at once, byte by byte, and with data after it."""
    assert run([data], limits) == expected, "all at once"
    assert run(bytewise(data), limits) == expected, "byte by byte"
    if trailing:
        assert run([data + NEXT], limits) == _then(expected, [NEXT_EV, ("closed",)]), "pipelined"
        assert run([data, NEXT], limits) == _then(expected, [NEXT_EV, ("closed",)]), "two chunks"
        assert run([data + GARBAGE], limits) == _then(expected, [("error", 400)]), "garbage"


def check_error(data: bytes, status: int, limits: H1Limits = DEFAULT, *, trailing: bool = True) -> None:
    check(data, [("error", status)], limits, trailing=trailing)


def head(*lines: bytes) -> bytes:
    return b"".join(line + b"\r\n" for line in lines) + b"\r\n"


# ---------------------------------------------------------------------------
# Valid requests


def test_simple_get() -> None:
    check(head(b"GET / HTTP/1.1", b"Host: a"), [req_ev(), ("closed",)])


def test_query_is_not_in_path() -> None:
    check(
        head(b"GET /mcp?x=1&y=%20 HTTP/1.1", b"Host: a"),
        [req_ev(target=b"/mcp?x=1&y=%20", path=b"/mcp"), ("closed",)],
    )


def test_fragment_is_not_in_path_in_either_target_form() -> None:
    # A client must not send "#..." (RFC 9110 section 7.1); one that does is routed without it,
    # the same in origin-form and absolute-form (and in HTTP/2, test_h2).
    check(
        head(b"GET /mcp#top HTTP/1.1", b"Host: a"),
        [req_ev(target=b"/mcp#top", path=b"/mcp"), ("closed",)],
    )
    check(
        head(b"GET /mcp?q=1#top HTTP/1.1", b"Host: a"),
        [req_ev(target=b"/mcp?q=1#top", path=b"/mcp"), ("closed",)],
    )
    check(
        head(b"GET http://a/mcp#top HTTP/1.1", b"Host: a"),
        [req_ev(target=b"http://a/mcp#top", path=b"/mcp"), ("closed",)],
    )


def test_post_with_content_length() -> None:
    body = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
    data = head(b"POST /mcp HTTP/1.1", b"Host: a", b"Content-Length: %d" % len(body)) + body
    check(
        data,
        [req_ev(b"POST", b"/mcp", {b"host": b"a", b"content-length": b"%d" % len(body)}, body), ("closed",)],
    )


def test_content_length_zero() -> None:
    check(
        head(b"POST / HTTP/1.1", b"Host: a", b"Content-Length: 0"),
        [req_ev(b"POST", headers={b"host": b"a", b"content-length": b"0"}), ("closed",)],
    )


def test_content_length_leading_zeros() -> None:
    data = head(b"POST / HTTP/1.1", b"Host: a", b"Content-Length: 003") + b"abc"
    check(
        data, [req_ev(b"POST", headers={b"host": b"a", b"content-length": b"003"}, body=b"abc"), ("closed",)]
    )


def test_content_length_many_leading_zeros_do_not_hit_int_digit_limit() -> None:
    cl = b"0" * 5000 + b"2"
    data = head(b"POST / HTTP/1.1", b"Host: a", b"Content-Length: " + cl) + b"hi"
    assert run([data]) == [
        req_ev(b"POST", headers={b"host": b"a", b"content-length": cl}, body=b"hi"),
        ("closed",),
    ]


def test_identical_repeated_content_length_is_one() -> None:
    data = head(b"POST / HTTP/1.1", b"Host: a", b"Content-Length: 2", b"Content-Length: 2") + b"hi"
    check(
        data, [req_ev(b"POST", headers={b"host": b"a", b"content-length": b"2, 2"}, body=b"hi"), ("closed",)]
    )


def test_content_length_list_of_identical_values() -> None:
    data = head(b"POST / HTTP/1.1", b"Host: a", b"Content-Length: 2 , 2") + b"hi"
    check(
        data, [req_ev(b"POST", headers={b"host": b"a", b"content-length": b"2 , 2"}, body=b"hi"), ("closed",)]
    )


def test_header_names_lowercased_values_trimmed_and_joined() -> None:
    data = head(
        b"GET / HTTP/1.1",
        b"HOST: a",
        b"X-Thing:   one  ",
        b"x-thing:\ttwo\t",
        b"X-Empty:",
        b"X-Blank:    ",
        b"X-Inner: a \t b",
        b"X-Obs: caf\xc3\xa9",
    )
    headers = {
        b"host": b"a",
        b"x-thing": b"one, two",
        b"x-empty": b"",
        b"x-blank": b"",
        b"x-inner": b"a \t b",
        b"x-obs": b"caf\xc3\xa9",
    }
    check(data, [req_ev(headers=headers), ("closed",)])


def test_token_characters_in_names_and_methods() -> None:
    data = head(b"M-SEARCH! /x HTTP/1.1", b"Host: a", b"!#$%&'*+-.^_`|~09az: v")
    check(data, [req_ev(b"M-SEARCH!", b"/x", {b"host": b"a", b"!#$%&'*+-.^_`|~09az": b"v"}), ("closed",)])


def test_http10_defaults_to_close_and_needs_no_host() -> None:
    check(head(b"GET / HTTP/1.0"), [req_ev(headers={}, keep_alive=False, version=b"1.0"), ("closed",)])


def test_http10_keep_alive() -> None:
    data = head(b"GET / HTTP/1.0", b"Connection: Keep-Alive")
    check(
        data,
        [req_ev(headers={b"connection": b"Keep-Alive"}, version=b"1.0"), ("closed",)],
    )


def test_http10_keep_alive_in_token_list() -> None:
    data = head(b"GET / HTTP/1.0", b"Connection: foo, keep-alive")
    assert run([data])[0][6] is True


def test_http11_connection_close() -> None:
    data = head(b"GET / HTTP/1.1", b"Host: a", b"Connection: close")
    check(data, [req_ev(headers={b"host": b"a", b"connection": b"close"}, keep_alive=False), ("closed",)])


@pytest.mark.parametrize(
    ("value", "keep_alive"),
    [
        (b"keep-alive", True),
        (b"Upgrade", True),
        (b"CLOSE", False),
        (b"foo, Close", False),
        (b"foo ,close ,bar", False),
        (b"closed", True),
        (b"close-ish", True),
    ],
)
def test_http11_connection_token_list(value: bytes, keep_alive: bool) -> None:
    data = head(b"GET / HTTP/1.1", b"Host: a", b"Connection: " + value)
    events = run([data])
    assert events[0][6] is keep_alive


def test_close_ignores_following_bytes() -> None:
    data = head(b"GET /1 HTTP/1.1", b"Host: a", b"Connection: close") + head(b"GET /2 HTTP/1.1", b"Host: a")
    conn = H1Connection()
    conn.receive_data(data)
    ev = conn.next_event()
    assert isinstance(ev, Request) and ev.path == b"/1" and not ev.keep_alive
    assert conn.next_event() is CONNECTION_CLOSED
    assert conn.buffered_bytes == 0
    conn.receive_data(b"more")
    assert conn.buffered_bytes == 0
    assert conn.next_event() is CONNECTION_CLOSED


def test_empty_lines_before_request_line_are_ignored() -> None:
    data = b"\r\n\r\n" + head(b"GET / HTTP/1.1", b"Host: a")
    check(data, [req_ev(), ("closed",)])


def test_crlf_after_body_between_requests_is_ignored() -> None:
    data = (
        head(b"POST / HTTP/1.1", b"Host: a", b"Content-Length: 1")
        + b"x\r\n"
        + head(b"GET /2 HTTP/1.1", b"Host: a")
    )
    check(
        data,
        [
            req_ev(b"POST", headers={b"host": b"a", b"content-length": b"1"}, body=b"x"),
            req_ev(target=b"/2"),
            ("closed",),
        ],
    )


def test_too_many_empty_lines() -> None:
    check_error(b"\r\n" * 9 + head(b"GET / HTTP/1.1", b"Host: a"), 400)


def test_only_empty_lines_then_eof_is_a_clean_close() -> None:
    check(b"\r\n\r\n", [("closed",)])


def test_absolute_form_target() -> None:
    data = head(b"GET http://Example.com:8080/mcp?q=1 HTTP/1.1", b"Host: other")
    expected = req_ev(
        target=b"http://Example.com:8080/mcp?q=1",
        path=b"/mcp",
        headers={b"host": b"Example.com:8080"},
    )
    check(data, [expected, ("closed",)])


def test_absolute_form_https_without_path() -> None:
    data = head(b"OPTIONS HTTPS://h?x HTTP/1.1", b"Host: h")
    check(data, [req_ev(b"OPTIONS", b"HTTPS://h?x", {b"host": b"h"}, path=b"/"), ("closed",)])


def test_absolute_form_http10_without_host() -> None:
    data = head(b"GET http://h/p HTTP/1.0")
    check(
        data,
        [
            req_ev(b"GET", b"http://h/p", {b"host": b"h"}, path=b"/p", keep_alive=False, version=b"1.0"),
            ("closed",),
        ],
    )


def test_asterisk_form_with_options() -> None:
    check(head(b"OPTIONS * HTTP/1.1", b"Host: a"), [req_ev(b"OPTIONS", b"*", path=b"*"), ("closed",)])


@pytest.mark.parametrize(
    "host", [b"", b"example.com", b"127.0.0.1:8000", b"[::1]:8000", b"xn--bcher-kva.example"]
)
def test_valid_host_values(host: bytes) -> None:
    check(head(b"GET / HTTP/1.1", b"Host: " + host), [req_ev(headers={b"host": host}), ("closed",)])


def test_lowercase_method_is_a_valid_token() -> None:
    # Methods are case-sensitive tokens (RFC 9110 section 9.1): the app decides.
    check(head(b"get / HTTP/1.1", b"Host: a"), [req_ev(b"get"), ("closed",)])


def test_exactly_max_header_count_is_accepted() -> None:
    lines = [b"GET / HTTP/1.1", b"Host: a"] + [b"X-%d: v" % i for i in range(SMALL.max_header_count - 1)]
    expected_headers = {b"host": b"a"} | {b"x-%d" % i: b"v" for i in range(SMALL.max_header_count - 1)}
    check(head(*lines), [req_ev(headers=expected_headers), ("closed",)], SMALL)


def test_head_exactly_at_the_size_limit_is_accepted() -> None:
    base = head(b"GET / HTTP/1.1", b"Host: a", b"X: ")
    pad = SMALL.max_header_bytes - len(base)
    data = head(b"GET / HTTP/1.1", b"Host: a", b"X: " + b"v" * pad)
    assert len(data) == SMALL.max_header_bytes
    check(data, [req_ev(headers={b"host": b"a", b"x": b"v" * pad}), ("closed",)], SMALL)
    data = head(b"GET / HTTP/1.1", b"Host: a", b"X: " + b"v" * (pad + 1))
    check_error(data, 431, SMALL)


def test_target_exactly_at_the_limit_is_accepted() -> None:
    target = b"/" + b"a" * (SMALL.max_target_bytes - 1)
    check(head(b"GET " + target + b" HTTP/1.1", b"Host: a"), [req_ev(target=target), ("closed",)], SMALL)


def test_body_exactly_at_the_limit_is_accepted() -> None:
    body = b"b" * SMALL.max_body_bytes
    data = head(b"POST / HTTP/1.1", b"Host: a", b"Content-Length: 1000") + body
    check(
        data,
        [req_ev(b"POST", headers={b"host": b"a", b"content-length": b"1000"}, body=body), ("closed",)],
        SMALL,
    )


# ---------------------------------------------------------------------------
# Request-line errors


@pytest.mark.parametrize(
    "line",
    [
        b"GET / HTTP/1.1x",
        b"GET / http/1.1",
        b"GET / HTTP/1",
        b"GET / HTTP/1.",
        b"GET / HTTP/11",
        b"GET / HTTP/10.0",
        b"GET /",
        b"GET",
        b"GET  / HTTP/1.1",
        b"GET /  HTTP/1.1",
        b"GET / HTTP/1.1 ",
        b"GET\t/ HTTP/1.1",
        b"GET /a b HTTP/1.1",
        b"GET /a\x00b HTTP/1.1",
        b"GET /a\x7fb HTTP/1.1",
        b"GET /caf\xc3\xa9 HTTP/1.1",
        b"GET foo HTTP/1.1",
        b"GET * HTTP/1.1",
        b"CONNECT example.com:443 HTTP/1.1",
        b"GET ftp://h/ HTTP/1.1",
        b"GET http:///p HTTP/1.1",
        b"GET http://user@h/p HTTP/1.1",
        b"G(T / HTTP/1.1",
        b"GET / HTTP/1.1\x00",
    ],
)
def test_malformed_request_line(line: bytes) -> None:
    check_error(head(line, b"Host: a"), 400)


@pytest.mark.parametrize(
    "start", [b" GET / HTTP/1.1", b"\tGET / HTTP/1.1", b"\nGET / HTTP/1.1", b"\x16\x03\x01"]
)
def test_garbage_first_byte_is_refused_at_once(start: bytes) -> None:
    # No need to wait for a whole head: a request-line starts with a token.
    conn = H1Connection()
    conn.receive_data(start)
    with pytest.raises(ProtocolError) as exc:
        conn.next_event()
    assert exc.value.status == 400
    check_error(head(start, b"Host: a"), 400)


def test_bare_cr_before_request_line() -> None:
    check_error(b"\rGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400)


@pytest.mark.parametrize("version", [b"HTTP/2.0", b"HTTP/1.2", b"HTTP/0.9", b"HTTP/3.0", b"HTTP/1.9"])
def test_unsupported_version(version: bytes) -> None:
    check_error(head(b"GET / " + version, b"Host: a"), 505)


def test_target_too_long() -> None:
    target = b"/" + b"a" * SMALL.max_target_bytes
    check_error(head(b"GET " + target + b" HTTP/1.1", b"Host: a"), 414, SMALL)


def test_request_line_too_long_before_it_is_complete() -> None:
    # No CRLF yet, but already longer than any acceptable request-line.
    data = b"GET /" + b"a" * 200
    assert run([data], SMALL, eof=False) == [("error", 414)]
    assert run(bytewise(data), SMALL, eof=False) == [("error", 414)]
    check_error(data, 414, SMALL)


def test_request_line_with_long_method_is_too_long() -> None:
    data = head(b"M" * 200 + b" / HTTP/1.1", b"Host: a")
    check_error(data, 414, SMALL)


def test_limits_apply_per_connection_despite_the_line_cache() -> None:
    target = b"/" + b"c" * 100
    data = head(b"GET " + target + b" HTTP/1.1", b"Host: a")
    assert run([data]) == [req_ev(target=target), ("closed",)]
    assert run([data], SMALL) == [("error", 414)]


# ---------------------------------------------------------------------------
# Header errors


def test_missing_host() -> None:
    check_error(head(b"GET / HTTP/1.1", b"X: y"), 400)


def test_absolute_form_still_needs_host_in_http11() -> None:
    check_error(head(b"GET http://h/ HTTP/1.1"), 400)


def test_two_host_fields() -> None:
    check_error(head(b"GET / HTTP/1.1", b"Host: a", b"Host: a"), 400)


def test_two_host_fields_in_http10() -> None:
    check_error(head(b"GET / HTTP/1.0", b"Host: a", b"Host: b"), 400)


@pytest.mark.parametrize("host", [b"a b", b"user@h", b"h/p", b"h:80x", b"[::1", b"h?x"])
def test_invalid_host(host: bytes) -> None:
    check_error(head(b"GET / HTTP/1.1", b"Host: " + host), 400)


@pytest.mark.parametrize(
    "line",
    [
        b"Name : v",  # whitespace before colon (RFC 9112 section 5.1)
        b"Name\t: v",
        b" Name: v",
        b"Na me: v",
        b"Name",
        b": v",
        b"N@me: v",
        b"N\xc3\xa9: v",
        b"Name: a\x00b",
        b"Name: a\x01b",
        b"Name: a\x7fb",
        b"Name: a\x1bb",
        b"Name: a\rb",
        b"Name: a\nb",
        b"Name: a\r",
    ],
)
def test_invalid_field_line(line: bytes) -> None:
    check_error(head(b"GET / HTTP/1.1", b"Host: a", line), 400)


def test_obs_fold_is_refused() -> None:
    check_error(head(b"GET / HTTP/1.1", b"Host: a", b"X: one", b"  two"), 400)
    check_error(head(b"GET / HTTP/1.1", b"Host: a", b"X: one", b"\ttwo"), 400)


def refused_at_once(data: bytes, status: int = 400, limits: H1Limits = DEFAULT) -> None:
    """``data`` is refused with ``status`` without waiting for more bytes or for EOF: fed all at
    once, byte by byte, in every two pieces, and with a pipelined request or garbage after it."""
    expected = [("error", status)]
    assert run([data], limits, eof=False) == expected, "all at once"
    assert run(bytewise(data), limits, eof=False) == expected, "byte by byte"
    for cut in range(1, len(data)):
        assert run([data[:cut], data[cut:]], limits, eof=False) == expected, f"cut at {cut}"
    assert run([data + NEXT], limits, eof=False) == expected, "pipelined"
    assert run([data, NEXT], limits, eof=False) == expected, "two chunks"
    assert run([data + GARBAGE], limits, eof=False) == expected, "garbage"
    check_error(data, status, limits)  # and with EOF after it


# RFC 9112 section 2.2: we do not take a bare LF as a line end (a MAY) and refuse a bare CR
# (MUST refuse or replace): 400 as soon as the byte that shows it arrives. Before, a head
# whose lines ended in LF alone waited for a CRLFCRLF that never came: the header timeout.
BARE_HEADS = [
    b"GET / HTTP/1.1\nHost: a\n\n",  # LF only
    b"GET / HTTP/1.1\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\n\n",
    b"GET / HTTP/1.1\r\nHost: a\r\n\n",  # the empty line is a bare LF
    b"GET / HTTP/1.1\nHost: a\n\n\r\n\r\n",
    b"GET / HTTP/1.1\rHost: a\r\r",  # CR only
    b"GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\r\n",
    b"\r\nGET / HTTP/1.1\nHost: a\n\n",  # after an ignored empty line
    b"GET /\n",  # no request-line yet
    b"G\r\r",
]


@pytest.mark.parametrize("data", BARE_HEADS)
def test_bare_cr_or_lf_in_a_head_is_refused_at_once(data: bytes) -> None:
    refused_at_once(data)
    refused_at_once(data, limits=SMALL)


def test_bare_lf_after_a_served_request_is_refused_at_once() -> None:
    data = head(b"GET / HTTP/1.1", b"Host: a") + b"GET /2 HTTP/1.1\nHost: a\n\n"
    expected = [req_ev(), ("error", 400)]
    assert run([data], eof=False) == expected
    assert run(bytewise(data), eof=False) == expected


def test_a_cr_at_the_end_of_the_data_waits_for_the_next_byte() -> None:
    # It may be the start of a CRLF: not judged until the byte after it arrives.
    assert run([b"GET / HTTP/1.1\r"], eof=False) == []
    assert run([b"GET / HTTP/1.1\r\nHost: a\r"], eof=False) == []


def test_bare_lf_or_too_long_request_line_whichever_shows_first() -> None:
    # SMALL: a request-line without CRLF in its first 64 + 64 + 2 bytes is 414. A bare LF
    # before that point is 400, one after it 414, however the bytes are split.
    refused_at_once(b"GET /a\nHost: a\n" + b"x" * 300, 400, SMALL)
    refused_at_once(b"GET /" + b"a" * 200 + b"\nHost: a\n\n", 414, SMALL)
    refused_at_once(b"GET /" + b"a" * 200 + b"\nHost: a\r\n\r\n", 414, SMALL)


def test_bare_lf_or_head_too_large_whichever_shows_first() -> None:
    line = head(b"GET / HTTP/1.1", b"Host: a")[:-2]
    refused_at_once(line + b"X: " + b"v" * 600 + b"\n", 431, SMALL)
    refused_at_once(line + b"X: v\n" + b"v" * 600, 400, SMALL)


def test_bare_lf_with_too_many_fields_is_400_however_split() -> None:
    # Complete, the count would be refused first (431); in pieces the LF shows first.
    data = head(b"GET / HTTP/1.1", b"Host: a\nX: 1", *[b"X: 1"] * 10)
    refused_at_once(data, 400, SMALL)


@pytest.mark.parametrize(
    "chunks",
    [
        b"5\nhello\n0\n\n",  # chunk-size lines ending in LF
        b"5;a=b\n",
        b"5\rhello",  # bare CR in a chunk-size line
        b"5\r\nhello\n",  # chunk-data followed by LF
        b"5\r\nhello\r\n0\n\n",
        b"5\r\nhello\r\n0\r\n\n",  # the end of the trailer section
        b"5\r\nhello\r\n0\r\nX: y\n\n",  # a trailer field line
        b"5\r\nhello\r\n0\r\nX: y\r\n\n",
        b"5\r\nhello\r\n0\r\nX: y\rZ: 1\r\n\r\n",
        b"5\r\nhello\r\n0\r\nX: y\r\n\r\r\n",
    ],
)
def test_bare_cr_or_lf_in_chunked_framing_is_refused_at_once(chunks: bytes) -> None:
    refused_at_once(CHUNKED_HEAD + chunks)


def test_bare_lf_in_trailers_beats_too_many_trailers() -> None:
    data = CHUNKED_HEAD + b"0\r\nT: v\n" + b"".join(b"T%d: v\r\n" % i for i in range(9)) + b"\r\n"
    refused_at_once(data, 400, SMALL)


def test_too_many_header_fields() -> None:
    lines = [b"GET / HTTP/1.1", b"Host: a"] + [b"X-%d: v" % i for i in range(SMALL.max_header_count)]
    check_error(head(*lines), 431, SMALL)


def test_head_too_large_complete() -> None:
    data = head(b"GET / HTTP/1.1", b"Host: a", b"X: " + b"v" * 600)
    check_error(data, 431, SMALL)


def test_head_too_large_is_refused_before_it_ends() -> None:
    data = head(b"GET / HTTP/1.1", b"Host: a")[:-2] + b"X: " + b"v" * 600
    conn = H1Connection(SMALL)
    conn.receive_data(data)
    with pytest.raises(ProtocolError) as exc:
        conn.next_event()
    assert exc.value.status == 431
    check_error(data, 431, SMALL)


# ---------------------------------------------------------------------------
# Body framing errors (RFC 9112 section 6)


def test_transfer_encoding_and_content_length() -> None:
    data = (
        head(b"POST / HTTP/1.1", b"Host: a", b"Content-Length: 3", b"Transfer-Encoding: chunked")
        + b"0\r\n\r\n"
    )
    check_error(data, 400)


def test_content_length_and_transfer_encoding_any_order() -> None:
    data = (
        head(b"POST / HTTP/1.1", b"Host: a", b"Transfer-Encoding: chunked", b"Content-Length: 5")
        + b"0\r\n\r\n"
    )
    check_error(data, 400)


@pytest.mark.parametrize(
    "fields",
    [
        [b"Content-Length: 1", b"Content-Length: 2"],
        [b"Content-Length: 1, 2"],
        [b"Content-Length: 1,"],
        [b"Content-Length: ,1"],
        [b"Content-Length: 01, 1"],
    ],
)
def test_conflicting_content_lengths(fields: list[bytes]) -> None:
    check_error(head(b"POST / HTTP/1.1", b"Host: a", *fields) + b"xx", 400)


@pytest.mark.parametrize(
    "value", [b"+5", b"-1", b"0x10", b"5 5", b"", b"5.0", b"1e3", b"\xd9\xa3", b"five", b"5;q=1"]
)
def test_invalid_content_length(value: bytes) -> None:
    check_error(head(b"POST / HTTP/1.1", b"Host: a", b"Content-Length: " + value) + b"xxxxx", 400)


def test_content_length_too_large_is_refused_before_the_body() -> None:
    data = head(b"POST / HTTP/1.1", b"Host: a", b"Content-Length: 1001")
    conn = H1Connection(SMALL)
    conn.receive_data(data)
    with pytest.raises(ProtocolError) as exc:
        conn.next_event()  # no body bytes sent, no EOF: refused from the head alone
    assert exc.value.status == 413
    check_error(data, 413, SMALL)


def test_huge_content_length() -> None:
    check_error(head(b"POST / HTTP/1.1", b"Host: a", b"Content-Length: " + b"9" * 40), 413)
    check_error(head(b"POST / HTTP/1.1", b"Host: a", b"Content-Length: " + b"9" * 6000), 413)


@pytest.mark.parametrize(
    "value",
    [
        b"gzip",
        b"identity",
        b"gzip, chunked",
        b"deflate,chunked",
        b"xchunked",
        b"chunkedx",
        b"chunked ;",
        b"chunked;q=1",
        b'"chunked"',
        b"",
    ],
)
def test_unsupported_transfer_coding(value: bytes) -> None:
    data = head(b"POST / HTTP/1.1", b"Host: a", b"Transfer-Encoding: " + value) + b"0\r\n\r\n"
    check_error(data, 501)


@pytest.mark.parametrize("value", [b"chunked, gzip", b"chunked, chunked", b"chunked,identity"])
def test_chunked_not_last_is_bad_request(value: bytes) -> None:
    data = head(b"POST / HTTP/1.1", b"Host: a", b"Transfer-Encoding: " + value) + b"0\r\n\r\n"
    check_error(data, 400)


def test_repeated_transfer_encoding_fields() -> None:
    data = head(b"POST / HTTP/1.1", b"Host: a", b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked")
    check_error(data + b"0\r\n\r\n", 400)


def test_transfer_encoding_in_http10() -> None:
    check_error(head(b"POST / HTTP/1.0", b"Transfer-Encoding: chunked") + b"0\r\n\r\n", 400)


# ---------------------------------------------------------------------------
# Chunked bodies (RFC 9112 section 7.1)

CHUNKED_HEAD = head(b"POST /c HTTP/1.1", b"Host: a", b"Transfer-Encoding: chunked")
CHUNKED_HEADERS = {b"host": b"a", b"transfer-encoding": b"chunked"}


def chunked_ev(body: bytes, keep_alive: bool = True) -> Ev:
    return req_ev(b"POST", b"/c", CHUNKED_HEADERS, body, keep_alive=keep_alive)


def test_chunked_body() -> None:
    data = CHUNKED_HEAD + b"5\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\n\r\n"
    check(data, [chunked_ev(b"hello 0123456789"), ("closed",)])


def test_chunked_case_and_whitespace() -> None:
    data = head(b"POST /c HTTP/1.1", b"Host: a", b"Transfer-Encoding:  ChUnKeD ") + b"0\r\n\r\n"
    check(data, [req_ev(b"POST", b"/c", {b"host": b"a", b"transfer-encoding": b"ChUnKeD"}), ("closed",)])


def test_chunked_empty_body() -> None:
    check(CHUNKED_HEAD + b"0\r\n\r\n", [chunked_ev(b""), ("closed",)])


def test_chunked_hex_sizes_and_leading_zeros() -> None:
    body = b"x" * 0x1F
    check(CHUNKED_HEAD + b"001f\r\n" + body + b"\r\n000\r\n\r\n", [chunked_ev(body), ("closed",)])
    check(CHUNKED_HEAD + b"1F\r\n" + body + b"\r\n0\r\n\r\n", [chunked_ev(body), ("closed",)])


def test_chunk_extensions_are_ignored() -> None:
    data = (
        CHUNKED_HEAD
        + b"3;name=value\r\nabc\r\n"
        + b'2 ; a = "q\\"uo;ted" ;b\r\nde\r\n'
        + b"1;x;y=z\r\nf\r\n"
        + b"0;last=1\r\n\r\n"
    )
    check(data, [chunked_ev(b"abcdef"), ("closed",)])


def test_trailers_are_parsed_and_discarded() -> None:
    data = CHUNKED_HEAD + b"3\r\nabc\r\n0\r\nX-Checksum: 123\r\nX-Other:\tv \r\n\r\n"
    check(data, [chunked_ev(b"abc"), ("closed",)])


@pytest.mark.parametrize(
    "trailer",
    [b"Bad Name: v\r\n\r\n", b" folded\r\n\r\n", b"X: a\x00b\r\n\r\n", b"X: a\nY: b\r\n\r\n", b"\rX\r\n\r\n"],
)
def test_invalid_trailers(trailer: bytes) -> None:
    check_error(CHUNKED_HEAD + b"3\r\nabc\r\n0\r\n" + trailer, 400)


def test_trailers_too_large() -> None:
    data = CHUNKED_HEAD + b"0\r\nX: " + b"v" * 600 + b"\r\n\r\n"
    check_error(data, 431, SMALL)
    data = CHUNKED_HEAD + b"0\r\nX: " + b"v" * 600
    check_error(data, 431, SMALL)


def test_too_many_trailers() -> None:
    data = CHUNKED_HEAD + b"0\r\n" + b"".join(b"T%d: v\r\n" % i for i in range(9)) + b"\r\n"
    check_error(data, 431, SMALL)


@pytest.mark.parametrize(
    "chunks",
    [
        b"zz\r\n",
        b"-1\r\n",
        b"0x5\r\nhello\r\n0\r\n\r\n",
        b" 5\r\nhello\r\n0\r\n\r\n",
        b"5 \r\nhello\r\n0\r\n\r\n",
        b"\r\n",
        b"5;\r\nhello\r\n0\r\n\r\n",
        b"5;a=\r\nhello\r\n0\r\n\r\n",
        b'5;a="x\r\nhello\r\n0\r\n\r\n',
        b"5;a b\r\nhello\r\n0\r\n\r\n",
        b"5\nhello\r\n0\r\n\r\n",
        b"5\r\nhelloX\r\n0\r\n\r\n",
        b"5\r\nhello\n0\r\n\r\n",
        b"5\r\nhello\r\r\n0\r\n\r\n",
        b"5\r\nhello0\r\n\r\n",
    ],
)
def test_invalid_chunk_framing(chunks: bytes) -> None:
    check_error(CHUNKED_HEAD + chunks, 400)


def test_chunk_size_line_too_long() -> None:
    data = CHUNKED_HEAD + b"1;" + b"a" * 5000 + b"\r\nx\r\n0\r\n\r\n"
    check_error(data, 400)
    # Without its CRLF: refused once it cannot be a valid line any more.
    check_error(CHUNKED_HEAD + b"1;" + b"a" * 5000, 400)


def test_chunked_body_too_large() -> None:
    data = CHUNKED_HEAD + b"3e8\r\n" + b"x" * 1000 + b"\r\n1\r\n"
    check_error(data, 413, SMALL)
    check_error(CHUNKED_HEAD + b"ffffffffffffffffffffffff\r\n", 413)


def test_chunked_body_at_the_limit() -> None:
    data = CHUNKED_HEAD + b"1f4\r\n" + b"x" * 500 + b"\r\n1f4\r\n" + b"y" * 500 + b"\r\n0\r\n\r\n"
    check(data, [chunked_ev(b"x" * 500 + b"y" * 500), ("closed",)], SMALL)


# ---------------------------------------------------------------------------
# EOF


def test_eof_with_nothing_buffered() -> None:
    conn = H1Connection()
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"")
    assert conn.next_event() is CONNECTION_CLOSED
    assert conn.next_event() is CONNECTION_CLOSED


@pytest.mark.parametrize(
    "data",
    [
        b"G",
        b"GET / HTTP/1.1\r\nHost: a\r\n",
        b"\r",
        head(b"POST / HTTP/1.1", b"Host: a", b"Content-Length: 5") + b"abc",
        CHUNKED_HEAD,
        CHUNKED_HEAD + b"5\r\nab",
        CHUNKED_HEAD + b"5\r\nhello",
        CHUNKED_HEAD + b"5\r\nhello\r\n",
        CHUNKED_HEAD + b"0\r\n",
        CHUNKED_HEAD + b"0\r\nX: y\r\n",
    ],
)
def test_eof_mid_request(data: bytes) -> None:
    check_error(data, 400, trailing=False)
    assert run([data], eof=False) == []


def test_eof_after_complete_request() -> None:
    conn = H1Connection()
    conn.receive_data(head(b"GET / HTTP/1.1", b"Host: a"))
    conn.receive_data(b"")
    assert isinstance(conn.next_event(), Request)
    assert conn.next_event() is CONNECTION_CLOSED


def test_data_after_eof_is_ignored() -> None:
    conn = H1Connection()
    conn.receive_data(b"")
    conn.receive_data(head(b"GET / HTTP/1.1", b"Host: a"))
    assert conn.next_event() is CONNECTION_CLOSED


# ---------------------------------------------------------------------------
# Expect: 100-continue (RFC 9110 section 10.1.1)


def continue_head(*extra: bytes, version: bytes = b"HTTP/1.1", length: bytes = b"5") -> bytes:
    return head(b"POST / " + version, b"Host: a", b"Content-Length: " + length, *extra)


def test_expect_continue_flow() -> None:
    conn = H1Connection()
    conn.receive_data(continue_head(b"Expect: 100-continue"))
    ev = conn.next_event()
    assert isinstance(ev, ContinueRequested)
    assert ev.stream_id == 1
    assert conn.in_body
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"hel")
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"lo")
    ev2 = conn.next_event()
    assert isinstance(ev2, Request)
    assert ev2.body == b"hello"
    assert ev2.headers[b"expect"] == b"100-continue"
    assert not conn.in_body
    assert conn.next_event() is NEED_DATA


def test_expect_continue_case_insensitive_and_in_a_list() -> None:
    for value in (b"100-Continue", b"foo, 100-continue"):
        events = run([continue_head(b"Expect: " + value)], eof=False, keep_continue=True)
        assert events == [("continue",)]


def test_expect_continue_skipped_when_body_already_here() -> None:
    data = continue_head(b"Expect: 100-continue") + b"hello"
    events = run([data], keep_continue=True)
    assert [e[0] for e in events] == ["req", "closed"]
    # Fed in pieces the client obviously waits: the continue comes first.
    events = run([data[:-5], data[-5:]], keep_continue=True)
    assert [e[0] for e in events] == ["continue", "req", "closed"]


def test_expect_continue_with_chunked_body() -> None:
    data = head(b"POST / HTTP/1.1", b"Host: a", b"Transfer-Encoding: chunked", b"Expect: 100-continue")
    events = run([data, b"3\r\nabc\r\n0\r\n\r\n"], keep_continue=True)
    assert [e[0] for e in events] == ["continue", "req", "closed"]
    assert events[1][5] == b"abc"
    events = run([data + b"3\r\nabc\r\n0\r\n\r\n"], keep_continue=True)
    assert [e[0] for e in events] == ["req", "closed"]


def test_expect_continue_ignored_without_body_or_in_http10() -> None:
    for data in (
        continue_head(b"Expect: 100-continue", length=b"0"),
        head(b"GET / HTTP/1.1", b"Host: a", b"Expect: 100-continue"),
    ):
        assert [e[0] for e in run([data], keep_continue=True)] == ["req", "closed"]
    data = continue_head(b"Expect: 100-continue", version=b"HTTP/1.0")
    assert run([data], eof=False, keep_continue=True) == []


def test_unknown_expectation_is_ignored() -> None:
    data = continue_head(b"Expect: something-else")
    assert run([data], eof=False, keep_continue=True) == []
    assert [e[0] for e in run([data, b"hello"], keep_continue=True)] == ["req", "closed"]


def test_expect_continue_with_too_large_body_is_413_not_continue() -> None:
    data = continue_head(b"Expect: 100-continue", length=b"1001")
    assert run([data], SMALL, eof=False, keep_continue=True) == [("error", 413)]


# ---------------------------------------------------------------------------
# Pipelining


def test_three_pipelined_requests_in_one_chunk() -> None:
    body = b"{}"
    data = (
        head(b"GET /1 HTTP/1.1", b"Host: a")
        + head(b"POST /2 HTTP/1.1", b"Host: a", b"Content-Length: 2")
        + body
        + head(b"POST /3 HTTP/1.1", b"Host: a", b"Transfer-Encoding: chunked")
        + b"2\r\n{}\r\n0\r\n\r\n"
    )
    conn = H1Connection()
    conn.receive_data(data)
    first = conn.next_event()
    assert isinstance(first, Request) and first.path == b"/1"
    # Pull-based: the rest waits in the buffer until asked for.
    assert conn.buffered_bytes == len(data) - len(head(b"GET /1 HTTP/1.1", b"Host: a"))
    assert conn.has_partial_head
    second = conn.next_event()
    assert isinstance(second, Request) and second.path == b"/2" and second.body == body
    third = conn.next_event()
    assert isinstance(third, Request) and third.path == b"/3" and third.body == body
    assert conn.next_event() is NEED_DATA
    assert conn.buffered_bytes == 0
    assert not conn.has_partial_head
    check(
        data,
        [
            req_ev(target=b"/1"),
            req_ev(b"POST", b"/2", {b"host": b"a", b"content-length": b"2"}, body),
            req_ev(b"POST", b"/3", {b"host": b"a", b"transfer-encoding": b"chunked"}, body),
            ("closed",),
        ],
    )


def test_partial_next_request_stays_buffered() -> None:
    one = head(b"GET /1 HTTP/1.1", b"Host: a")
    two = head(b"GET /2 HTTP/1.1", b"Host: a")
    conn = H1Connection()
    conn.receive_data(one + two[:7])
    assert isinstance(conn.next_event(), Request)
    assert conn.next_event() is NEED_DATA
    assert conn.has_partial_head
    assert conn.buffered_bytes == 7
    conn.receive_data(two[7:])
    ev = conn.next_event()
    assert isinstance(ev, Request) and ev.path == b"/2"


def test_pipelined_http10_keep_alive_then_close() -> None:
    data = (
        head(b"GET /1 HTTP/1.0", b"Connection: keep-alive")
        + head(b"GET /2 HTTP/1.0")
        + head(b"GET /3 HTTP/1.0")
    )
    check(
        data,
        [
            req_ev(target=b"/1", headers={b"connection": b"keep-alive"}, version=b"1.0"),
            req_ev(target=b"/2", headers={}, keep_alive=False, version=b"1.0"),
            ("closed",),
        ],
    )


def test_pipelined_request_after_close_is_ignored() -> None:
    data = head(b"GET /1 HTTP/1.1", b"Host: a", b"Connection: close") + head(b"GET /2 HTTP/1.1", b"Host: a")
    check(
        data,
        [
            req_ev(target=b"/1", headers={b"host": b"a", b"connection": b"close"}, keep_alive=False),
            ("closed",),
        ],
    )


def test_error_after_a_good_request() -> None:
    data = head(b"GET /1 HTTP/1.1", b"Host: a") + head(b"GET /2 HTTP/1.1")
    check(data, [req_ev(target=b"/1"), ("error", 400)])


# ---------------------------------------------------------------------------
# State properties, errors, buffers


def test_in_body_and_has_partial_head() -> None:
    conn = H1Connection()
    assert not conn.in_body and not conn.has_partial_head and conn.buffered_bytes == 0
    conn.receive_data(b"POST / HTTP/1.1\r\nHost: a\r\n")
    assert conn.next_event() is NEED_DATA
    assert conn.has_partial_head and not conn.in_body
    conn.receive_data(b"Content-Length: 4\r\n\r\nab")
    assert conn.next_event() is NEED_DATA
    assert conn.in_body and not conn.has_partial_head
    assert conn.buffered_bytes == 2
    conn.receive_data(b"cd")
    ev = conn.next_event()
    assert isinstance(ev, Request) and ev.body == b"abcd"
    assert not conn.in_body and not conn.has_partial_head and conn.buffered_bytes == 0


def test_at_rest_only_when_next_event_would_wait_for_bytes() -> None:
    """The server skips next_event() when the core is at rest; it must be exactly then."""
    get = head(b"GET / HTTP/1.1", b"Host: a")
    conn = H1Connection()
    assert conn.at_rest
    ev = conn.feed(get)
    assert isinstance(ev, Request) and conn.at_rest
    assert conn.next_event() is NEED_DATA
    ev = conn.feed(get + get[:5])  # a second request under way
    assert isinstance(ev, Request) and not conn.at_rest
    assert conn.next_event() is NEED_DATA and not conn.at_rest
    conn.receive_data(get[5:])
    assert isinstance(conn.next_event(), Request) and conn.at_rest
    conn.receive_data(b"")  # EOF: next_event has CONNECTION_CLOSED to report
    assert not conn.at_rest and conn.next_event() is CONNECTION_CLOSED
    body = H1Connection()
    assert body.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\na") is NEED_DATA
    assert not body.at_rest
    closing = H1Connection()
    assert isinstance(closing.feed(head(b"GET / HTTP/1.1", b"Host: a", b"Connection: close")), Request)
    assert not closing.at_rest and closing.next_event() is CONNECTION_CLOSED


def test_in_body_for_chunked() -> None:
    conn = H1Connection()
    conn.receive_data(CHUNKED_HEAD + b"3\r\nab")
    assert conn.next_event() is NEED_DATA
    assert conn.in_body
    conn.receive_data(b"c\r\n0\r\n\r\n")
    ev = conn.next_event()
    assert isinstance(ev, Request) and ev.body == b"abc"
    assert not conn.in_body


def test_protocol_error_is_sticky() -> None:
    conn = H1Connection()
    conn.receive_data(head(b"GET / HTTP/2.0", b"Host: a"))
    for _ in range(3):
        with pytest.raises(ProtocolError) as exc:
            conn.next_event()
        assert exc.value.status == 505
        assert exc.value.reason
    conn.receive_data(head(b"GET / HTTP/1.1", b"Host: a"))
    assert conn.buffered_bytes == 0
    with pytest.raises(ProtocolError):
        conn.next_event()


def test_protocol_error_carries_a_reason() -> None:
    conn = H1Connection()
    conn.receive_data(head(b"POST / HTTP/1.1", b"Host: a", b"Transfer-Encoding: gzip"))
    with pytest.raises(ProtocolError) as exc:
        conn.next_event()
    assert exc.value.status == 501
    assert exc.value.reason == "unsupported transfer coding"
    assert str(exc.value) == "unsupported transfer coding"


def test_small_body_from_one_chunk_is_bytes() -> None:
    conn = H1Connection()
    conn.receive_data(head(b"POST / HTTP/1.1", b"Host: a", b"Content-Length: 3") + b"abc")
    ev = conn.next_event()
    assert isinstance(ev, Request)
    assert type(ev.body) is bytes


def test_large_body_from_one_chunk_is_a_zero_copy_view() -> None:
    body = bytes(range(256)) * 64
    data = head(b"POST / HTTP/1.1", b"Host: a", b"Content-Length: %d" % len(body)) + body
    conn = H1Connection()
    conn.receive_data(data)
    ev = conn.next_event()
    assert isinstance(ev, Request)
    assert isinstance(ev.body, memoryview)
    assert ev.body.obj is data  # a view of the received chunk itself
    assert bytes(ev.body) == body


def test_large_body_from_pieces_is_correct_and_buffer_stays_usable() -> None:
    body = bytes(range(256)) * 64
    data = head(b"POST / HTTP/1.1", b"Host: a", b"Content-Length: %d" % len(body)) + body + NEXT
    conn = H1Connection()
    for i in range(0, len(data), 1000):
        conn.receive_data(data[i : i + 1000])
    ev = conn.next_event()
    assert isinstance(ev, Request)
    assert bytes(ev.body) == body
    conn.receive_data(b"more")  # the buffer can still grow while the body view lives
    ev2 = conn.next_event()
    assert isinstance(ev2, Request) and ev2.path == b"/next"
    assert bytes(ev.body) == body


def test_large_chunked_body() -> None:
    body = b"z" * 20000
    data = (
        CHUNKED_HEAD
        + b"".join(b"%x\r\n" % len(p) + p + b"\r\n" for p in (body[:7000], body[7000:]))
        + CHUNKED_END
    )
    for chunks in ([data], [data[i : i + 999] for i in range(0, len(data), 999)]):
        assert run(chunks) == [chunked_ev(body), ("closed",)]


def test_mutable_input_is_copied() -> None:
    data = bytearray(head(b"POST / HTTP/1.1", b"Host: a", b"Content-Length: 3") + b"abc")
    conn = H1Connection()
    conn.receive_data(data)  # type: ignore[arg-type]
    data[:] = b"x" * len(data)
    ev = conn.next_event()
    assert isinstance(ev, Request) and ev.body == b"abc" and ev.path == b"/"


def test_line_caches_are_bounded() -> None:
    conn = H1Connection()
    for i in range(3000):
        conn.receive_data(head(b"GET /%d HTTP/1.1" % i, b"Host: a", b"X-Unique: %d" % i))
        assert isinstance(conn.next_event(), Request)
    assert len(h1._FIELD_CACHE) <= h1._CACHE_MAX_ENTRIES
    assert len(h1._RL_CACHE) <= h1._CACHE_MAX_ENTRIES


def test_slow_field_value_regex_has_no_backtracking_blowup() -> None:
    # A long run of whitespace before an invalid byte must fail fast.
    data = head(b"GET / HTTP/1.1", b"Host: a", b"X: a" + b" \t" * 7000 + b"\x01")
    assert run([data]) == [("error", 400)]


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError):
        H1Limits(max_header_bytes=0)
    with pytest.raises(ValueError):
        H1Limits(max_body_bytes=-1)


# ---------------------------------------------------------------------------
# Writers


def test_status_lines_are_precomputed() -> None:
    used = "200 202 204 400 403 404 405 406 408 409 413 414 415 422 429 431 500 501 503 505"
    for status in map(int, used.split()):
        assert status in h1._STATUS_LINES
    assert h1._STATUS_LINES[200] == b"HTTP/1.1 200 OK\r\n"
    assert h1._STATUS_LINES[431] == b"HTTP/1.1 431 Request Header Fields Too Large\r\n"


def test_response_head_keep_alive() -> None:
    got = response_head(200, [(b"Content-Type", b"application/json")], content_length=2, keep_alive=True)
    assert got == b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n"


def test_response_head_close() -> None:
    got = response_head(404, [], content_length=0, keep_alive=False)
    assert got == b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def test_response_head_http10_keep_alive() -> None:
    got = response_head(200, iter([(b"X", b"y")]), content_length=1, keep_alive=True, http10=True)
    assert got == b"HTTP/1.1 200 OK\r\nX: y\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\n"
    got = response_head(200, [], content_length=1, keep_alive=False, http10=True)
    assert got == b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\n"


def test_response_head_chunked() -> None:
    got = response_head(
        200, [(b"Content-Type", b"text/event-stream")], content_length=None, keep_alive=True, chunked=True
    )
    assert got == b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def test_response_head_unlisted_statuses() -> None:
    assert response_head(302, [], content_length=0, keep_alive=True).startswith(b"HTTP/1.1 302 Found\r\n")
    assert response_head(299, [], content_length=0, keep_alive=True).startswith(b"HTTP/1.1 299 \r\n")
    for bad in (99, 1000, -1):
        with pytest.raises(ValueError):
            response_head(bad, [], content_length=0, keep_alive=True)


@pytest.mark.parametrize(
    "headers",
    [
        [(b"X", b"a\r\nSet-Cookie: evil")],
        [(b"X", b"a\nb")],
        [(b"X", b"a\rb")],
        [(b"X\r\nY", b"v")],
    ],
)
def test_response_head_refuses_cr_lf_in_fields(headers: list[tuple[bytes, bytes]]) -> None:
    with pytest.raises(ValueError):
        response_head(200, headers, content_length=0, keep_alive=True)


def test_response_head_refuses_impossible_framing() -> None:
    with pytest.raises(ValueError):
        response_head(200, [], content_length=None, keep_alive=True, http10=True, chunked=True)
    with pytest.raises(ValueError):
        response_head(200, [], content_length=3, keep_alive=True, chunked=True)


def test_encode_response() -> None:
    got = encode_response(200, [(b"Content-Type", b"application/json")], b"{}", keep_alive=True)
    assert got == [b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n", b"{}"]
    got = encode_response(202, [], b"", keep_alive=False)
    assert got == [b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", b""]
    got = encode_response(200, [], b"x", keep_alive=True, http10=True)
    assert got == [b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\n", b"x"]


def test_encode_response_204_has_no_content_length() -> None:
    assert encode_response(204, [], b"", keep_alive=True) == [b"HTTP/1.1 204 No Content\r\n\r\n", b""]
    with pytest.raises(ValueError):
        encode_response(204, [], b"x", keep_alive=True)


def test_encode_chunk() -> None:
    assert encode_chunk(b"hello") == [b"5\r\n", b"hello", b"\r\n"]
    assert encode_chunk(b"x" * 255) == [b"ff\r\n", b"x" * 255, b"\r\n"]
    assert encode_chunk(b"") == []  # never the terminating zero-size chunk


def test_constants() -> None:
    assert CHUNKED_END == b"0\r\n\r\n"
    assert CONTINUE_RESPONSE == b"HTTP/1.1 100 Continue\r\n\r\n"


def test_error_response() -> None:
    got = error_response(400, "bad request line")
    assert got == [
        b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: 17\r\nConnection: close\r\n\r\n",
        b"bad request line\n",
    ]
    got = error_response(405, "no", extra_headers=[(b"Allow", b"GET, POST")], keep_alive=True)
    assert got == [
        b"HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Allow: GET, POST\r\nContent-Length: 3\r\n\r\n",
        b"no\n",
    ]


def test_writer_output_is_accepted_by_h11() -> None:
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="POST", target="/", headers=[("Host", "a"), ("Content-Length", "0")]))
    client.send(h11.EndOfMessage())
    head_bytes = response_head(
        200, [(b"Content-Type", b"text/event-stream")], content_length=None, keep_alive=True, chunked=True
    )
    stream = head_bytes + b"".join(encode_chunk(b"data: 1\n\n")) + b"".join(encode_chunk(b"")) + CHUNKED_END
    client.receive_data(stream)
    response = client.next_event()
    assert isinstance(response, h11.Response) and response.status_code == 200
    data = client.next_event()
    assert isinstance(data, h11.Data) and data.data == b"data: 1\n\n"
    assert isinstance(client.next_event(), h11.EndOfMessage)

    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[("Host", "a")]))
    client.send(h11.EndOfMessage())
    client.receive_data(b"".join(error_response(404, "not found")))
    response = client.next_event()
    assert isinstance(response, h11.Response) and response.status_code == 404
    assert (b"connection", b"close") in response.headers
    data = client.next_event()
    assert isinstance(data, h11.Data) and data.data == b"not found\n"


# ---------------------------------------------------------------------------
# Property-based tests

_TCHARS = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_VCHARS = bytes(range(0x21, 0x7F)) + bytes(range(0x80, 0x100))

tokens = st.binary(min_size=1, max_size=12).map(lambda b: bytes(_TCHARS[c % len(_TCHARS)] for c in b))
values = st.binary(max_size=30).map(
    lambda b: bytes(_VCHARS[c % len(_VCHARS)] if i % 7 else 0x20 for i, c in enumerate(b)).strip(b" ")
)
paths = st.binary(max_size=20).map(lambda b: b"/" + bytes(_VCHARS[c % 94] for c in b))


@st.composite
def valid_request(draw: st.DrawFn) -> tuple[bytes, Ev]:
    """One valid request and the event it must give."""
    method = draw(st.sampled_from([b"GET", b"POST", b"DELETE", b"PATCH"]) | tokens)
    target = draw(paths)
    http10 = draw(st.booleans())
    fields: list[tuple[bytes, bytes]] = []
    if not http10:
        fields.append((b"Host", draw(st.sampled_from([b"a", b"example.com:80", b"[::1]", b""]))))
    extra = draw(st.lists(st.tuples(tokens, values), max_size=5))
    reserved = {b"host", b"content-length", b"transfer-encoding", b"connection", b"expect"}
    fields += [(n, v) for n, v in extra if n.lower() not in reserved]
    conn_value = draw(st.sampled_from([None, b"close", b"keep-alive", b"Keep-Alive, foo"]))
    if conn_value is not None:
        fields.append((b"Connection", conn_value))
    keep_alive = (
        (conn_value is not None and b"keep-alive" in conn_value.lower()) if http10 else conn_value != b"close"
    )
    body = draw(st.binary(max_size=60))
    framing = draw(st.sampled_from(["length", "chunked", "none"] if not http10 else ["length", "none"]))
    if framing == "none":
        body = b""
        tail = b""
    elif framing == "length":
        fields.append((b"Content-Length", b"%d" % len(body)))
        tail = body
    else:
        fields.append((b"Transfer-Encoding", b"chunked"))
        cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=4)))
        pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True) if b > a]
        ext = draw(st.sampled_from([b"", b";a=b", b' ; x="y"']))
        tail = b"".join(b"%x%s\r\n%s\r\n" % (len(p), ext, p) for p in pieces) + b"0\r\n"
        tail += b"".join(b"%s: %s\r\n" % kv for kv in draw(st.lists(st.tuples(tokens, values), max_size=2)))
        tail += b"\r\n"
    if not http10 and draw(st.booleans()) and framing != "none":
        fields.append((b"Expect", b"100-continue"))
    version = b"HTTP/1.0" if http10 else b"HTTP/1.1"
    data = head(method + b" " + target + b" " + version, *(n + b": " + v for n, v in fields)) + tail
    headers: dict[bytes, bytes] = {}
    for n, v in fields:
        key = n.lower()
        headers[key] = headers[key] + b", " + v if key in headers else v
    event = req_ev(method, target, headers, body, keep_alive=keep_alive, version=b"1.0" if http10 else b"1.1")
    return data, event


@st.composite
def request_stream(draw: st.DrawFn) -> tuple[bytes, list[Ev]]:
    """One to three pipelined requests and the events they must give."""
    reqs = draw(st.lists(valid_request(), min_size=1, max_size=3))
    data = b""
    events: list[Ev] = []
    for raw, ev in reqs:
        data += raw
        events.append(ev)
        if ev[6] is False:
            break
    return data, [*events, ("closed",)]


def split_at(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    # No empty pieces: receive_data(b"") means EOF.
    points = sorted({c % (len(data) + 1) for c in cuts} - {0, len(data)})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True) if b > a]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request_stream(), st.lists(st.integers(min_value=0), max_size=12))
def test_property_valid_stream_any_split(stream: tuple[bytes, list[Ev]], cuts: list[int]) -> None:
    data, expected = stream
    assert run([data]) == expected
    assert run(split_at(data, cuts)) == expected


@settings(max_examples=100, deadline=None)
@given(valid_request())
def test_property_agrees_with_h11(request: tuple[bytes, Ev]) -> None:
    data, expected = request
    assume(b' ; x="y"' not in data)  # h11 does not allow BWS before ";" (RFC 9112 section 7.1.1 does)
    server = h11.Connection(h11.SERVER)
    server.receive_data(data)
    ev = server.next_event()
    assert isinstance(ev, h11.Request)
    body = b""
    while True:
        part = server.next_event()
        if isinstance(part, h11.Data):
            body += part.data
        else:
            assert isinstance(part, h11.EndOfMessage)
            break
    h11_headers: dict[bytes, bytes] = {}
    for name, value in ev.headers:
        h11_headers[name] = h11_headers[name] + b", " + value if name in h11_headers else value
    got = run([data])[0]
    assert got[1] == ev.method and got[2] == ev.target and got[4] == h11_headers and got[5] == body
    assert got == expected


def _events_or_error(chunks: list[bytes], limits: H1Limits) -> list[Ev]:
    # Anything but ProtocolError escaping here fails the test.
    return run(chunks, limits)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(min_value=0), max_size=8))
def test_property_random_bytes_only_raise_protocol_error(data: bytes, cuts: list[int]) -> None:
    for limits in (H1Limits(), SMALL):
        whole = _events_or_error([data], limits)
        assert _events_or_error(split_at(data, cuts), limits) == whole


@st.composite
def mutated_stream(draw: st.DrawFn) -> bytes:
    data, _ = draw(request_stream())
    for _ in range(draw(st.integers(1, 3))):
        pos = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["replace", "insert", "delete"]))
        byte = draw(
            st.sampled_from([b"\r", b"\n", b" ", b"\t", b"\x00", b":", b",", b"0", b"\x7f", b"\xff", b"a"])
        )
        if op == "replace":
            data = data[:pos] + byte + data[pos + 1 :]
        elif op == "insert":
            data = data[:pos] + byte + data[pos:]
        else:
            data = data[:pos] + data[pos + 1 :]
    return data


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_stream(), st.lists(st.integers(min_value=0), max_size=8))
def test_property_mutated_requests_only_raise_protocol_error(data: bytes, cuts: list[int]) -> None:
    # Same answer however the bytes are split; Continue is feed-dependent
    # and is dropped by ``run``.
    whole = _events_or_error([data], H1Limits())
    assert _events_or_error(split_at(data, cuts), H1Limits()) == whole
    assert _events_or_error(bytewise(data), H1Limits()) == whole


def test_date_line_from_set_date_in_every_head() -> None:
    """RFC 9110 section 6.6.1: the network layer sets the date once a second; cached heads follow it."""
    from mcp_fast.wire.h1 import encode_response, response_head, set_date

    headers = ((b"content-type", b"application/json"),)
    try:
        set_date("Tue, 24 Nov 2026 01:02:03 GMT")
        head = encode_response(200, headers, b"{}", keep_alive=True)[0]
        assert head.startswith(b"HTTP/1.1 200 OK\r\nDate: Tue, 24 Nov 2026 01:02:03 GMT\r\n")
        assert b"Date: " in response_head(200, [], content_length=None, keep_alive=True, chunked=True)
        set_date("Tue, 24 Nov 2026 01:02:04 GMT")
        assert b"01:02:04 GMT" in encode_response(200, headers, b"{}", keep_alive=True)[0]
        set_date("")
        assert b"Date" not in encode_response(200, headers, b"{}", keep_alive=True)[0]
    finally:
        set_date("")


# ---------------------------------------------------------------------------
# A repeated head (a keep-alive client sends the same head with each request)


def _post(body: bytes, *extra: bytes) -> bytes:
    return head(b"POST /mcp HTTP/1.1", b"Host: a", *extra, b"Content-Length: %d" % len(body)) + body


def _post_ev(body: bytes, **extra: bytes) -> Ev:
    headers = {b"host": b"a", **{name.encode(): value for name, value in extra.items()}}
    headers[b"content-length"] = b"%d" % len(body)
    return req_ev(b"POST", b"/mcp", headers, body)


def test_repeated_head_is_parsed_as_the_first() -> None:
    """The same head again (bodies differ): the same request, whatever the split."""
    one, two, three = b'{"id":1}', b'{"id":2}', b'{"id":3}'
    data = _post(one) + _post(two) + _post(three)
    check(data, [_post_ev(one), _post_ev(two), _post_ev(three), ("closed",)])


def test_head_of_the_same_size_with_other_bytes_is_parsed_anew() -> None:
    """A head of the same length that differs in one byte (another Content-Length, another
    session id) must not be taken for the last one."""
    short, longer = b"x" * 10, b"y" * 20  # "Content-Length: 10" and ": 20": same size
    first = _post(short, b"Mcp-Session-Id: aaaa")
    second = _post(longer, b"Mcp-Session-Id: aaab")
    assert len(first) - len(short) == len(second) - len(longer)
    check(
        first + second,
        [
            _post_ev(short, **{"mcp-session-id": b"aaaa"}),
            _post_ev(longer, **{"mcp-session-id": b"aaab"}),
            ("closed",),
        ],
    )


def test_repeated_head_gives_each_request_its_own_headers() -> None:
    conn = H1Connection()
    body = b"{}"
    first = conn.feed(_post(body))
    second = conn.feed(_post(body))
    assert isinstance(first, Request) and isinstance(second, Request)
    assert first.headers == second.headers and first.headers is not second.headers
    second.headers[b"host"] = b"changed"
    third = conn.feed(_post(body))
    assert isinstance(third, Request) and third.headers[b"host"] == b"a"


def test_repeated_head_with_its_body_split_and_chunked() -> None:
    body = b'{"jsonrpc":"2.0"}'
    data = _post(body)
    cut = len(data) - 5
    chunked = head(b"POST /mcp HTTP/1.1", b"Host: a", b"Transfer-Encoding: chunked") + b"2\r\n{}\r\n0\r\n\r\n"
    chunked_ev = req_ev(b"POST", b"/mcp", {b"host": b"a", b"transfer-encoding": b"chunked"}, b"{}")
    assert run([data, data[:cut], data[cut:], chunked, chunked]) == [
        _post_ev(body),
        _post_ev(body),
        chunked_ev,
        chunked_ev,
        ("closed",),
    ]


def test_get_heads_are_not_kept() -> None:
    """A connection that goes on to hold a GET stream keeps no copy of a head."""
    conn = H1Connection()
    assert isinstance(conn.feed(_post(b"{}")), Request)
    assert conn._repeat is not None
    assert isinstance(conn.feed(head(b"GET /mcp HTTP/1.1", b"Host: a")), Request)
    assert conn._repeat is None


def test_a_client_whose_heads_always_differ_is_not_compared_for_long() -> None:
    conn = H1Connection()
    for number in range(h1._REPEAT_GIVE_UP + 3):
        request = conn.feed(_post(b"{}", b"Traceparent: %d" % number))
        assert isinstance(request, Request) and request.headers[b"traceparent"] == b"%d" % number
    assert conn._repeat_misses == h1._REPEAT_GIVE_UP
    assert conn._repeat is None  # given up: nothing kept, nothing compared


@given(st.lists(st.sampled_from([b"{}", b'{"a":1}', b"[1,2,3]"]), min_size=1, max_size=6), st.data())
@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
def test_repeated_heads_any_split(bodies: list[bytes], data: st.DataObject) -> None:
    """Requests whose heads repeat or change, cut anywhere: each parsed as on its own."""
    stream = b"".join(_post(body) for body in bodies)
    cuts = sorted(data.draw(st.sets(st.integers(1, len(stream) - 1), max_size=8)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    assert run(chunks) == [*(_post_ev(body) for body in bodies), ("closed",)]
