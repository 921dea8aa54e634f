"""The JSON-RPC codec: decoding, envelope validation, encoding."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcp_fast.protocol import jsonrpc
from mcp_fast.protocol.jsonrpc import InvalidMessage, Kind, RpcError


def test_request_notification_response_are_classified() -> None:
    request = jsonrpc.parse_message({"jsonrpc": "2.0", "id": 1, "method": "ping"})
    assert (request.kind, request.id, request.method, request.params) == (Kind.REQUEST, 1, "ping", None)
    notification = jsonrpc.parse_message({"jsonrpc": "2.0", "method": "notifications/initialized"})
    assert notification.kind is Kind.NOTIFICATION and notification.id is None
    response = jsonrpc.parse_message({"jsonrpc": "2.0", "id": "a", "result": {}})
    assert response.kind is Kind.RESPONSE and response.id == "a"
    error = jsonrpc.parse_message({"jsonrpc": "2.0", "id": 2, "error": {"code": 1, "message": "x"}})
    assert error.kind is Kind.RESPONSE


@pytest.mark.parametrize(
    ("message", "echo_id"),
    [
        ([], None),
        ("x", None),
        ({"id": 1, "method": "ping"}, 1),
        ({"jsonrpc": "2.0", "id": 1, "method": None}, 1),  # neither method nor result/error
        ({"jsonrpc": "2.0", "id": 1, "method": 3}, 1),
        ({"jsonrpc": "2.0", "id": 1, "method": "m", "params": [1, 2]}, 1),
        ({"jsonrpc": "2.0", "id": 1, "method": "m", "params": "p"}, 1),
        ({"jsonrpc": "2.0", "id": None, "method": "m"}, None),
        ({"jsonrpc": "2.0", "id": 1.5, "method": "m"}, None),
        ({"jsonrpc": "2.0", "id": False, "method": "m"}, None),
        ({"jsonrpc": "2.0", "id": [1], "method": "m"}, None),
        ({"jsonrpc": "2.0", "id": 1, "result": {}, "error": {}}, 1),
        ({"jsonrpc": "2.0", "id": 1}, 1),
        ({"jsonrpc": "2.0", "result": {}}, None),
        ({"jsonrpc": "2.0", "id": 1, "error": "bad"}, 1),
    ],
)
def test_invalid_envelopes_are_32600_and_echo_a_valid_id(message: object, echo_id: object) -> None:
    with pytest.raises(InvalidMessage) as caught:
        jsonrpc.parse_message(message)
    assert caught.value.code == jsonrpc.INVALID_REQUEST
    assert caught.value.request_id == echo_id


@pytest.mark.parametrize(
    "body",
    [b"", b"{", b"nul", b'{"a":NaN}', b'{"a":Infinity}', b"\xff", b'"\xed\xa0\x80"', b"[" * 2000],
)
def test_undecodable_bodies_are_parse_errors(body: bytes) -> None:
    with pytest.raises(RpcError) as caught:
        jsonrpc.decode(body)
    assert caught.value.code == jsonrpc.PARSE_ERROR
    assert "orjson" not in caught.value.message


def test_decode_reads_memoryview_without_copy() -> None:
    data = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
    assert jsonrpc.decode(memoryview(data)) == orjson.loads(data)


def test_encoders_produce_jsonrpc_objects() -> None:
    assert orjson.loads(jsonrpc.encode_result(3, {"a": 1})) == {"jsonrpc": "2.0", "id": 3, "result": {"a": 1}}
    error = RpcError(-32602, "bad", {"field": "x"})
    assert orjson.loads(jsonrpc.encode_error("i", error)) == {
        "jsonrpc": "2.0",
        "id": "i",
        "error": {"code": -32602, "message": "bad", "data": {"field": "x"}},
    }
    assert orjson.loads(jsonrpc.encode_notification("n", None)) == {"jsonrpc": "2.0", "method": "n"}
    assert orjson.loads(jsonrpc.encode_request(5, "m", {"p": 1})) == {
        "jsonrpc": "2.0",
        "id": 5,
        "method": "m",
        "params": {"p": 1},
    }


def test_encoder_handles_models_and_sets() -> None:
    from pydantic import BaseModel

    class Point(BaseModel):
        x: int
        label: str | None = None

    assert orjson.loads(jsonrpc.encode_result(1, {"p": Point(x=1), "s": {2}})) == {
        "jsonrpc": "2.0",
        "id": 1,
        "result": {"p": {"x": 1}, "s": [2]},
    }
    with pytest.raises(TypeError):
        jsonrpc.encode_result(1, object())


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_any_json_value_is_a_message_or_a_32600(value: object) -> None:
    """Every decodable value is classified or rejected with InvalidMessage, nothing else."""
    try:
        message = jsonrpc.parse_message(value)
    except InvalidMessage as exc:
        assert exc.code == jsonrpc.INVALID_REQUEST
    else:
        assert message.kind in (Kind.REQUEST, Kind.NOTIFICATION, Kind.RESPONSE)


@given(st.binary(max_size=200))
def test_any_bytes_decode_or_parse_error(data: bytes) -> None:
    try:
        jsonrpc.decode(data)
    except RpcError as exc:
        assert exc.code == jsonrpc.PARSE_ERROR


def test_huge_integer_id_is_not_a_valid_id() -> None:
    value = jsonrpc.decode(b'{"jsonrpc":"2.0","id":' + b"1" * 30 + b',"method":"ping"}')
    with pytest.raises(InvalidMessage):
        jsonrpc.parse_message(value)
