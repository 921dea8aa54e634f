"""Session tokens (transport/tokens.py): our HS256 JWS against pyjwt, both ways, and hostile input."""

from __future__ import annotations

import base64
import contextlib
import time

import jwt
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcp_fast.transport.sessions import JwtSessions, JwtSettings, SessionNotFound
from mcp_fast.transport.tokens import Hs256Tokens, InvalidToken

SECRET = "a-secret-of-at-least-thirty-two-bytes-0123"
CLAIMS = {"sid": "abc", "v": "2025-11-25", "cap": {"sampling": {}}, "ci": {"name": "t"}, "iat": 1, "exp": 2}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_what_we_sign_pyjwt_verifies_and_the_other_way_round() -> None:
    ours = Hs256Tokens([SECRET])
    token = ours.encode(CLAIMS)
    assert jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_exp": False}) == CLAIMS
    theirs = jwt.encode(CLAIMS, SECRET, algorithm="HS256")
    assert ours.decode(theirs) == CLAIMS
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}


def test_rotation_the_first_secret_signs_every_secret_verifies() -> None:
    old = Hs256Tokens(["an-old-secret-of-thirty-two-bytes-012345"])
    rotated = Hs256Tokens(["a-new-secret-of-thirty-two-bytes-0123456", "an-old-secret-of-thirty-two-bytes-012345"])
    assert rotated.decode(old.encode(CLAIMS)) == CLAIMS
    with pytest.raises(InvalidToken):
        old.decode(rotated.encode(CLAIMS))


def test_refused_like_pyjwt_refuses() -> None:
    ours = Hs256Tokens([SECRET])
    token = ours.encode(CLAIMS)
    header, payload, signature = token.split(".")
    forged_payload = b64(orjson.dumps({**CLAIMS, "sid": "someone-else"}))
    none_header = b64(b'{"alg":"none","typ":"JWT"}')
    rs_header = b64(b'{"alg":"RS256","typ":"JWT"}')
    crit_header = b64(b'{"alg":"HS256","crit":["exp"]}')
    bad = [
        f"{header}.{forged_payload}.{signature}",  # tampered claims
        f"{header}.{payload}.{b64(b'x' * 32)}",  # a made-up signature
        f"{none_header}.{payload}.",  # alg none
        f"{rs_header}.{payload}.{signature}",  # another algorithm
        f"{crit_header}.{payload}.{signature}",  # an extension we do not know
        jwt.encode(CLAIMS, "another-secret-of-thirty-two-bytes-0000", algorithm="HS256"),
        token + "x",  # trailing garbage in the signature
        token.replace(".", "..", 1),
        "",
        "a.b",
        "ä.b.c",
    ]
    for candidate in bad:
        with pytest.raises(InvalidToken):
            ours.decode(candidate)
        with pytest.raises(jwt.PyJWTError):
            jwt.decode(candidate, SECRET, algorithms=["HS256"], options={"verify_exp": False})


def test_a_signature_spelled_another_way_is_refused() -> None:
    """base64url has one spelling per value here: padding or stray characters are refused."""
    ours = Hs256Tokens([SECRET])
    token = ours.encode(CLAIMS)
    for variant in (token + "=", token[:-1] + "+", token.replace(".", ".=", 1)):
        with pytest.raises(InvalidToken):
            ours.decode(variant)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), st.lists(st.text(max_size=60), min_size=3, max_size=3).map(".".join)))
def test_hostile_tokens_are_only_ever_invalid(text: str) -> None:
    with contextlib.suppress(InvalidToken):
        Hs256Tokens([SECRET]).decode(text)


def test_sessions_need_their_claims() -> None:
    sessions = JwtSessions(JwtSettings(secrets=(SECRET,)))
    tokens = Hs256Tokens([SECRET])
    now = int(time.time())
    good = {"sid": "s1", "v": "2025-11-25", "iat": now, "exp": now + 60}
    assert sessions.resolve(tokens.encode(good)).id == "s1"
    for missing in ("sid", "v", "iat", "exp"):
        claims = {key: value for key, value in good.items() if key != missing}
        with pytest.raises(SessionNotFound):
            sessions.resolve(tokens.encode(claims))
    with pytest.raises(SessionNotFound, match="expired"):
        sessions.resolve(tokens.encode({**good, "exp": now - 1}))
    with pytest.raises(SessionNotFound):
        sessions.resolve(tokens.encode({**good, "exp": "tomorrow"}))
