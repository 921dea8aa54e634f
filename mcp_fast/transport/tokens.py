"""Session tokens as JSON Web Tokens: HS256 with the standard library, RS256/ES256 with pyjwt.

Why not pyjwt for HS256 too: importing pyjwt imports ``cryptography`` (its crypto extra is
installed for RS256/ES256), which costs a server about 14 MB of memory whether it verifies a
single RSA signature or not; a compact JWS signed with HMAC-SHA256 is a few lines of the
standard library. pyjwt is imported only when ``--session-algorithm`` is RS256 or ES256.
``tests/test_tokens.py`` checks both ways against pyjwt: what one signs, the other verifies,
and what one refuses, the other refuses.

Spec: RFC 7515 (JWS compact serialization), RFC 7518 section 3.2 (HS256), RFC 7519 (claims).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence
from typing import Any, Final, Protocol

import orjson

# {"alg":"HS256","typ":"JWT"}, base64url: every token we sign starts with it.
_HS256_HEADER: Final = b"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"


class InvalidToken(Exception):
    """Not a token signed by one of our keys (malformed, another algorithm, a bad signature)."""


class TokenCodec(Protocol):
    def encode(self, claims: dict[str, Any]) -> str: ...

    def decode(self, token: str) -> dict[str, Any]:
        """The claims of a token one of our keys signed; InvalidToken otherwise. Claims are not
        checked here (expiry and the required ones are the session's business)."""


def _b64encode(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _b64decode(text: str) -> bytes:
    """Strict base64url without padding (RFC 7515 section 2): one spelling per value."""
    try:
        raw = base64.b64decode(text.translate(_TO_STANDARD) + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidToken("not base64url") from None
    if _b64encode(raw).decode("ascii") != text:
        raise InvalidToken("not canonical base64url")
    return raw


_TO_STANDARD: Final = str.maketrans("-_", "+/")


class Hs256Tokens:
    """HS256 tokens: the first secret signs, every secret verifies (key rotation)."""

    def __init__(self, secrets: Sequence[str]) -> None:
        if not secrets:
            raise ValueError("HS256 needs at least one secret")
        self._keys = [secret.encode() for secret in secrets]

    def encode(self, claims: dict[str, Any]) -> str:
        signing_input = _HS256_HEADER + b"." + _b64encode(orjson.dumps(claims))
        signature = hmac.new(self._keys[0], signing_input, hashlib.sha256).digest()
        return (signing_input + b"." + _b64encode(signature)).decode("ascii")

    def decode(self, token: str) -> dict[str, Any]:
        if not token.isascii() or token.count(".") != 2:
            raise InvalidToken("not a compact JWS")
        header_text, payload_text, signature_text = token.split(".")
        header = _json_object(_b64decode(header_text))
        # Pinned: "alg": "none", HS/RS confusion and unknown critical extensions are refused.
        if header.get("alg") != "HS256" or "crit" in header:
            raise InvalidToken("not an HS256 token")
        signature = _b64decode(signature_text)
        signing_input = f"{header_text}.{payload_text}".encode("ascii")
        if not any(
            hmac.compare_digest(hmac.new(key, signing_input, hashlib.sha256).digest(), signature)
            for key in self._keys
        ):
            raise InvalidToken("the signature does not verify")
        return _json_object(_b64decode(payload_text))


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidToken("not JSON") from None
    if type(value) is not dict:
        raise InvalidToken("not a JSON object")
    return value


class PyJwtTokens:
    """RS256 or ES256 tokens through pyjwt (imported here, only when configured): the private key
    signs, any of the public keys verifies."""

    def __init__(self, algorithm: str, private_pem: str, public_pems: Sequence[str]) -> None:
        import jwt

        self._jwt = jwt
        self.algorithm = algorithm
        self._private = private_pem
        self._public = list(public_pems)

    def encode(self, claims: dict[str, Any]) -> str:
        token: str = self._jwt.encode(claims, self._private, algorithm=self.algorithm)
        return token

    def decode(self, token: str) -> dict[str, Any]:
        jwt = self._jwt
        for key in self._public:
            try:
                # algorithms= pins the algorithm: "alg: none" and HS/RS confusion fail here.
                claims: dict[str, Any] = jwt.decode(
                    token,
                    key,
                    algorithms=[self.algorithm],
                    options={"verify_exp": False, "verify_iat": False},
                )
            except jwt.InvalidSignatureError:
                continue  # maybe signed with another (rotated) key
            except jwt.PyJWTError as exc:
                raise InvalidToken(str(exc)) from None
            return claims
        raise InvalidToken("no public key verifies the signature")
