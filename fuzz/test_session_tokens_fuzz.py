"""Session tokens: every tampered, truncated, expired, wrong-key or alg-none token is rejected."""

from __future__ import annotations

import base64
import time

import jwt
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fuzz._support import examples
from mcp_fast.transport.sessions import JwtSessions, JwtSettings, SessionNotFound

SECRET = "a-fuzzing-secret-that-is-long-enough-for-hs256"
STORE = JwtSessions(JwtSettings(secrets=(SECRET,)))
TOKEN = STORE.create("2025-11-25", {"sampling": {}}, {"name": "fuzz", "version": "1"}).token


def fresh_store() -> JwtSessions:
    """A store that has not seen TOKEN (so nothing is answered from its verified cache)."""
    return JwtSessions(JwtSettings(secrets=(SECRET,)))


@settings(max_examples=examples(200))
@given(position=st.integers(min_value=0, max_value=len(TOKEN) - 1), replacement=st.characters(codec="ascii"))
def test_any_changed_character_is_rejected(position: int, replacement: str) -> None:
    tampered = TOKEN[:position] + replacement + TOKEN[position + 1 :]
    if tampered == TOKEN:
        return
    store = fresh_store()
    try:
        session = store.resolve(tampered)
    except SessionNotFound:
        return
    # base64url lets a few final-character changes decode to the same bytes: then it IS the token.
    assert session.id == STORE.resolve(TOKEN).id


@settings(max_examples=examples(100))
@given(length=st.integers(min_value=0, max_value=len(TOKEN) - 1))
def test_any_truncation_is_rejected(length: int) -> None:
    with pytest.raises(SessionNotFound):
        fresh_store().resolve(TOKEN[:length])


# The forger's keys are short on purpose; pyjwt's warning about that is noise here.
@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
@settings(max_examples=examples(50))
@given(key=st.text(min_size=1, max_size=64).filter(lambda key: key != SECRET))
def test_tokens_signed_with_another_key_are_rejected(key: str) -> None:
    forged = jwt.encode(
        {"sid": "x", "v": "2025-11-25", "iat": int(time.time()), "exp": int(time.time()) + 60},
        key,
        algorithm="HS256",
    )
    with pytest.raises(SessionNotFound):
        fresh_store().resolve(forged)


@settings(max_examples=examples(50))
@given(
    claims=st.fixed_dictionaries(
        {"sid": st.text(max_size=8), "v": st.sampled_from(["2025-11-25", "2025-06-18"])}
    )
)
def test_alg_none_and_expired_tokens_are_rejected(claims: dict[str, str]) -> None:
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    payload = {**claims, "iat": int(time.time()), "exp": int(time.time()) + 600}
    body = base64.urlsafe_b64encode(orjson.dumps(payload)).rstrip(b"=").decode()
    with pytest.raises(SessionNotFound):
        fresh_store().resolve(f"{header}.{body}.")
    expired = jwt.encode({**claims, "iat": 1, "exp": 2}, SECRET, algorithm="HS256")
    with pytest.raises(SessionNotFound):
        fresh_store().resolve(expired)
