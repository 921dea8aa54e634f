"""Authorization: the server as an OAuth 2.1 resource server (MCP 2025-06-18 and later).

Spec: basic/authorization.mdx (2025-06-18, 2025-11-25), RFC 6750 (bearer tokens and their
``WWW-Authenticate`` challenges), RFC 9728 (protected resource metadata), RFC 8707 (a token is
bound to one resource: its audience), RFC 9068 (JWT access tokens: ``sub``, ``scope``).

- ``BearerGate`` (the transports' ``Gate``): every MCP request over HTTP carries
  ``Authorization: Bearer <token>``. A JWT is verified with pyjwt against the keys of
  ``--auth-jwks`` (signature, ``iss``, ``aud``, ``exp``/``nbf`` with a small leeway); any other
  token goes to ``MCPServer(token_verifier=...)``. What a token proved is cached per token
  (bounded), so a client's later requests cost one dictionary lookup.
- ``ScopeCheck`` (a pipeline ``RequestCheck``): a tool declared with ``scopes=[...]`` answers
  403 ``insufficient_scope`` to a caller whose token lacks one of them.
- ``ResourceMetadata``: the RFC 9728 document at ``/.well-known/oauth-protected-resource`` and
  at the path-suffixed variant.

Tokens are read from the ``Authorization`` header only (never the query string, RFC 6750
section 2.3 is not offered: the metadata says ``bearer_methods_supported: ["header"]``), and are
never logged: log lines name the reason a token failed, never the token.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from mcp_fast.bounded import BoundedMap
from mcp_fast.call import Call, Principal, TokenVerifier
from mcp_fast.protocol.jsonrpc import HttpError
from mcp_fast.registry import Registry
from mcp_fast.routes import HttpRequest, Response

logger = logging.getLogger("mcp_fast.auth")

# Not spec'd for the body of a 401/403 (the HTTP status and WWW-Authenticate carry the meaning);
# these codes sit in JSON-RPC's implementation-defined server error range.
UNAUTHORIZED: Final = -32001
FORBIDDEN: Final = -32003
# How long a JWKS URL is not fetched again after a fetch (issue: at most once a minute).
JWKS_REFRESH_INTERVAL: Final = 60.0
_JWKS_MAX_BYTES: Final = 1 << 20
_JWKS_TIMEOUT: Final = 5.0
# Seconds of clock skew tolerated on exp/nbf/iat (RFC 7519 section 4.1.4: "a small leeway").
LEEWAY: Final = 30.0
# What a token_verifier said is remembered this long (or until the principal's "exp" claim).
VERIFIER_CACHE_SECONDS: Final = 30.0
# A token that failed is remembered this long, so a client that repeats a bad token costs a
# lookup, not a signature check.
FAILURE_CACHE_SECONDS: Final = 5.0
_MAX_TOKEN_BYTES: Final = 8192
WELL_KNOWN: Final = "/.well-known/oauth-protected-resource"

# A JWKS document fetched from a URL (bytes) -- replaceable in tests.
Fetch = Callable[[str], bytes]


def canonical_resource(public_url: str, endpoint_path: str) -> str:
    """The server's canonical URI (basic/authorization.mdx "Canonical Server URI", RFC 8707
    section 2): lower-case scheme and host, no fragment, no trailing slash; a URL without a
    path names the MCP endpoint's path. ValueError for what is not an absolute http(s) URL."""
    parts = urlsplit(public_url.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise ValueError(f"--public-url {public_url!r}: expected an absolute http(s) URL")
    if parts.fragment:
        raise ValueError(f"--public-url {public_url!r}: a resource URI has no fragment (RFC 8707)")
    path = parts.path.rstrip("/") or endpoint_path
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), path, parts.query, ""))


def metadata_url(resource: str) -> str:
    """RFC 9728 section 3.1: the well-known path goes between the host and the resource's path."""
    parts = urlsplit(resource)
    return urlunsplit((parts.scheme, parts.netloc, WELL_KNOWN + parts.path.rstrip("/"), "", ""))


@dataclass(frozen=True)
class AuthSettings:
    resource: str  # the canonical resource URL (--public-url)
    audience: str  # the ``aud`` a token must name (--auth-audience, default: resource)
    jwks: str = ""  # a JWKS file or URL (--auth-jwks); "" : no JWTs, only the token_verifier
    issuer: str = ""  # the ``iss`` a token must name (--auth-issuer); "": not checked
    algorithms: tuple[str, ...] = ("RS256", "ES256")
    authorization_servers: tuple[str, ...] = ()
    cache_size: int = 10_000

    @property
    def metadata_url(self) -> str:
        return metadata_url(self.resource)


def _quoted(value: str) -> str:
    """An auth-param value as a quoted-string (RFC 9110 section 5.6.4)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def challenge(
    metadata: str, error: str | None = None, description: str | None = None, scope: str = ""
) -> bytes:
    """A ``WWW-Authenticate: Bearer ...`` value (RFC 6750 section 3, RFC 9728 section 5.1)."""
    params = []
    if error is not None:
        params.append(f"error={_quoted(error)}")
    if scope:
        params.append(f"scope={_quoted(scope)}")
    if metadata:  # none without authorization configured (a tool's scopes alone)
        params.append(f"resource_metadata={_quoted(metadata)}")
    if description is not None:
        params.append(f"error_description={_quoted(description)}")
    return ("Bearer " + ", ".join(params)).encode("latin-1", "replace")


def principal_from_claims(claims: Mapping[str, Any]) -> Principal:
    """RFC 9068 section 2.2: ``sub`` names who; ``scope`` is a space-separated string (RFC 8693
    section 4.2); some servers send ``scp`` as a list instead."""
    raw_scope = claims.get("scope", claims.get("scp", ""))
    if isinstance(raw_scope, str):
        scopes = frozenset(raw_scope.split())
    elif isinstance(raw_scope, list):
        scopes = frozenset(item for item in raw_scope if isinstance(item, str))
    else:
        scopes = frozenset()
    return Principal(str(claims["sub"]), scopes, dict(claims))


def _fetch_url(url: str) -> bytes:
    import urllib.request  # http.client and ssl: only for a JWKS fetched from a URL

    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=_JWKS_TIMEOUT) as response:  # the operator's URL
        body: bytes = response.read(_JWKS_MAX_BYTES + 1)
    if len(body) > _JWKS_MAX_BYTES:
        raise ValueError("the JWKS document is larger than 1 MiB")
    return body


class JwksKeys:
    """The verification keys of a JWKS (RFC 7517 section 5), by ``kid``.

    A file is read once at start-up. A URL is fetched at start-up and again when a token names
    a ``kid`` we do not know (the issuer rotated its keys), at most once per
    ``JWKS_REFRESH_INTERVAL``: a client sending made-up kids cannot make us hammer the issuer.
    """

    def __init__(
        self, source: str, fetch: Fetch = _fetch_url, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.source = source
        self.is_url = source.startswith(("http://", "https://"))
        self._fetch = fetch
        self._clock = clock
        self.keys: dict[str | None, Any] = {}
        self.last_fetch = -JWKS_REFRESH_INTERVAL
        self.last_error: str | None = None
        self._refreshing: asyncio.Future[bool] | None = None

    def load(self) -> None:
        """Read the file or fetch the URL now. ValueError (naming --auth-jwks) for a file that
        cannot be used; a URL that cannot be fetched is logged and retried on demand."""
        if not self.is_url:
            try:
                self._install(Path(self.source).read_bytes())
            except (OSError, ValueError) as exc:
                raise ValueError(f"--auth-jwks {self.source}: {exc}") from exc
            return
        self.refresh_now()

    def refresh_now(self) -> bool:
        """Fetch the URL (blocking); True when keys were installed."""
        self.last_fetch = self._clock()
        try:
            self._install(self._fetch(self.source))
        except (OSError, ValueError) as exc:
            self.last_error = str(exc) or type(exc).__name__
            logger.warning("cannot load the JWKS from --auth-jwks %s: %s", self.source, self.last_error)
            return False
        self.last_error = None
        return True

    def _install(self, document: bytes) -> None:
        import jwt  # pyjwt (and with it cryptography: ~10 MB) only for a server that checks tokens

        try:
            key_set = jwt.PyJWKSet.from_dict(json.loads(document))
        except (ValueError, TypeError, jwt.PyJWTError) as exc:
            raise ValueError(f"not a usable JWKS document ({exc})") from None
        keys: dict[str | None, Any] = {key.key_id: key for key in key_set.keys}
        if len(key_set.keys) == 1:
            keys.setdefault(None, key_set.keys[0])  # a token without kid may use the only key
        self.keys = keys
        logger.info("loaded %d key(s) from --auth-jwks %s", len(key_set.keys), self.source)

    def may_refresh(self) -> bool:
        return self.is_url and self._clock() - self.last_fetch >= JWKS_REFRESH_INTERVAL

    async def refresh(self) -> None:
        """Fetch again in the thread pool (one fetch at a time; others wait for it)."""
        if self._refreshing is not None:
            await asyncio.shield(self._refreshing)
            return
        if not self.may_refresh():
            return
        loop = asyncio.get_running_loop()
        self._refreshing = loop.create_future()
        try:
            done = await loop.run_in_executor(None, self.refresh_now)
            self._refreshing.set_result(done)
        finally:
            self._refreshing = None

    @property
    def ready(self) -> bool:
        return bool(self.keys)


@dataclass
class _Verdict:
    principal: Principal | None  # None: refused
    until: float  # time.time() after which the verdict is stale
    description: str = ""


@dataclass
class AuthCounters:
    """Refusals by reason, for metrics: missing, invalid, expired, audience, issuer, unknown_kid."""

    failures: dict[str, int] = field(default_factory=dict)

    def count(self, reason: str) -> None:
        self.failures[reason] = self.failures.get(reason, 0) + 1


class BearerGate:
    """The ``Gate`` of an authorizing server: a bearer token in, a Principal out, or 401."""

    def __init__(
        self,
        settings: AuthSettings,
        keys: JwksKeys | None,
        verifier: TokenVerifier | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if keys is None and verifier is None:
            raise ValueError("authorization needs --auth-jwks or an MCPServer(token_verifier=...)")
        self.settings = settings
        self.keys = keys
        self.verifier = verifier
        self._clock = clock
        self._verdicts: BoundedMap[bytes, _Verdict] = BoundedMap(settings.cache_size)
        self.counters = AuthCounters()
        metadata = settings.metadata_url
        self._missing = HttpError(
            401,
            UNAUTHORIZED,
            "Unauthorized: this server needs an access token (Authorization: Bearer ...)",
            headers=((b"www-authenticate", challenge(metadata)),),
        )
        self._metadata = metadata
        self._decode_options: Any = {"require": ["exp", "sub", "aud", *(["iss"] if settings.issuer else [])]}

    # -- the Gate ------------------------------------------------------------------------

    def admit(self, authorization: bytes | None) -> Principal | Awaitable[Principal]:
        """The principal of ``Authorization: Bearer <token>``; raises HttpError 401 without one."""
        if authorization is None:
            self.counters.count("missing")
            raise self._missing
        verdict = self._verdicts.get(authorization)
        if verdict is not None and verdict.until > self._clock():
            if verdict.principal is None:
                raise self._invalid(verdict.description)
            return verdict.principal
        scheme, _, token = authorization.partition(b" ")
        token = token.strip()
        # RFC 6750 section 2.1: the scheme is case-insensitive; the token is b64token.
        if scheme.lower() != b"bearer" or not token:
            self.counters.count("missing")
            raise self._missing
        if len(token) > _MAX_TOKEN_BYTES:
            self.counters.count("invalid")
            raise self._invalid("The access token is too long")
        return self._verify(authorization, token.decode("latin-1"))

    def _verify(self, authorization: bytes, token: str) -> Principal | Awaitable[Principal]:
        if self.keys is not None and token.count(".") == 2:
            try:
                return self._remember(authorization, self._verify_jwt(token))
            except _UnknownKey:
                if self.keys.may_refresh():
                    return self._verify_after_refresh(authorization, token)
                return self._refuse(authorization, "unknown_kid", "The token's signing key is not known")
            except _Refused as refused:
                return self._refuse(authorization, refused.reason, refused.description)
        if self.verifier is not None:
            return self._ask_verifier(authorization, token)
        return self._refuse(authorization, "invalid", "The access token is not a valid JWT")

    def _verify_jwt(self, token: str) -> Principal:
        """RFC 9068 section 4 / OAuth 2.1 section 5.2: signature with an allowed algorithm,
        ``iss``, ``aud`` (RFC 8707: issued for this server), ``exp``/``nbf``."""
        import jwt  # loaded with the keys already (_install): a dictionary lookup here

        assert self.keys is not None
        settings = self.settings
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _Refused("invalid", "The access token is not a valid JWT") from None
        algorithm = header.get("alg")
        if algorithm not in settings.algorithms:
            # Pinning algorithms stops "alg: none" and HS256-with-a-public-key confusion.
            raise _Refused("invalid", "The token's signing algorithm is not accepted")
        kid = header.get("kid")
        key = self.keys.keys.get(kid if isinstance(kid, str) else None)
        if key is None:
            raise _UnknownKey
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=list(settings.algorithms),
                audience=settings.audience,
                issuer=settings.issuer or None,
                leeway=LEEWAY,
                options=self._decode_options,
            )
        except jwt.ExpiredSignatureError:
            raise _Refused("expired", "The access token expired") from None
        except jwt.ImmatureSignatureError:
            raise _Refused("invalid", "The access token is not valid yet") from None
        except (jwt.InvalidAudienceError, jwt.MissingRequiredClaimError) as exc:
            if isinstance(exc, jwt.MissingRequiredClaimError) and exc.claim != "aud":
                raise _Refused("invalid", f"The access token has no {exc.claim!r} claim") from None
            raise _Refused("audience", "The access token was not issued for this server") from None
        except jwt.InvalidIssuerError:
            raise _Refused("issuer", "The access token comes from another issuer") from None
        except (jwt.PyJWTError, ValueError, TypeError):
            raise _Refused("invalid", "The access token's signature is not valid") from None
        return principal_from_claims(claims)

    async def _verify_after_refresh(self, authorization: bytes, token: str) -> Principal:
        assert self.keys is not None
        await self.keys.refresh()
        try:
            return self._remember(authorization, self._verify_jwt(token))
        except _UnknownKey:
            return self._refuse(authorization, "unknown_kid", "The token's signing key is not known")
        except _Refused as refused:
            return self._refuse(authorization, refused.reason, refused.description)

    async def _ask_verifier(self, authorization: bytes, token: str) -> Principal:
        assert self.verifier is not None
        try:
            principal = await self.verifier(token)
        except Exception:  # the user's verifier: a bug there is a refusal, logged (never the token)
            logger.exception("the token_verifier raised")
            principal = None
        if not isinstance(principal, Principal):
            return self._refuse(authorization, "invalid", "The access token is not valid")
        until = self._clock() + VERIFIER_CACHE_SECONDS
        expires = principal.claims.get("exp")
        if isinstance(expires, int | float):
            until = min(until, float(expires))
        self._verdicts.put(authorization, _Verdict(principal, until))
        return principal

    def _remember(self, authorization: bytes, principal: Principal) -> Principal:
        expires = principal.claims.get("exp")
        until = float(expires) + LEEWAY if isinstance(expires, int | float) else self._clock()
        self._verdicts.put(authorization, _Verdict(principal, until))
        return principal

    def _refuse(self, authorization: bytes, reason: str, description: str) -> Principal:
        self.counters.count(reason)
        self._verdicts.put(authorization, _Verdict(None, self._clock() + FAILURE_CACHE_SECONDS, description))
        logger.debug("refused a bearer token: %s", description)
        raise self._invalid(description)

    def _invalid(self, description: str) -> HttpError:
        return HttpError(
            401,
            UNAUTHORIZED,
            f"Unauthorized: {description}",
            headers=((b"www-authenticate", challenge(self._metadata, "invalid_token", description)),),
        )

    @property
    def metadata(self) -> str:
        return self._metadata


class _UnknownKey(Exception):
    """The token names a kid the JWKS does not have (maybe a rotation: fetch again)."""


class _Refused(Exception):
    def __init__(self, reason: str, description: str) -> None:
        super().__init__(description)
        self.reason = reason
        self.description = description


# -- scopes ---------------------------------------------------------------------------------


class ScopeCheck:
    """A pipeline ``RequestCheck``: ``tools/call`` of a tool declared with ``scopes=[...]`` needs
    every one of them (basic/authorization.mdx "Runtime Insufficient Scope Errors": 403 with
    ``error="insufficient_scope"`` and the scopes needed; RFC 6750 section 3.1)."""

    def __init__(self, registry: Registry, metadata: str) -> None:
        self.registry = registry
        self.metadata = metadata
        self.refusals = 0
        self._version = -1  # the registry version _scoped was computed for
        self._scoped = False  # does any tool declare scopes? (tools may come and go at run time)

    def __call__(self, call: Call) -> None:
        if call.method != "tools/call":
            return
        registry = self.registry
        if registry.version != self._version:
            self._version = registry.version
            self._scoped = any(tool.scopes for tool in registry.tools.values())
        if not self._scoped:
            return
        tool = registry.tools.get(call.tool_name or "")
        if tool is None or not tool.scopes or tool.allows(call.principal, call.transport):
            return
        self.refusals += 1
        granted = call.principal.scopes if call.principal is not None else frozenset()
        # "Recommended approach": the scopes needed plus those already granted that matter here,
        # so a client that asks again does not lose what it had.
        known = scopes_supported(self.registry)
        scope = " ".join(sorted(tool.scopes | (granted & known)))
        missing = sorted(tool.scopes - granted)
        description = f"The tool {tool.name!r} needs the scope(s) {' '.join(missing)}"
        raise HttpError(
            403,
            FORBIDDEN,
            f"Forbidden: {description}",
            {"requiredScopes": sorted(tool.scopes)},
            ((b"www-authenticate", challenge(self.metadata, "insufficient_scope", description, scope)),),
        )


def scopes_supported(registry: Registry) -> frozenset[str]:
    """Every scope some tool asks for."""
    found: set[str] = set()
    for tool in registry.tools.values():
        found |= tool.scopes
    return frozenset(found)


# -- RFC 9728 metadata ----------------------------------------------------------------------


class ResourceMetadata:
    """The protected resource metadata document (RFC 9728 section 2), served at the root
    well-known URI and the path-suffixed one (section 3.1)."""

    def __init__(self, settings: AuthSettings, registry: Registry, extra_scopes: Iterable[str] = ()) -> None:
        self.settings = settings
        self.registry = registry
        self.extra_scopes = frozenset(extra_scopes)

    def document(self) -> dict[str, Any]:
        settings = self.settings
        document: dict[str, Any] = {
            "resource": settings.resource,
            "authorization_servers": list(settings.authorization_servers),
            "scopes_supported": sorted(scopes_supported(self.registry) | self.extra_scopes),
            "bearer_methods_supported": ["header"],  # never the query string or the body
        }
        if settings.jwks.startswith(("http://", "https://")):
            document["resource_signing_alg_values_supported"] = list(settings.algorithms)
        return document

    def paths(self) -> list[str]:
        """The local paths the document is served at: the root one, and the resource's path."""
        suffixed = WELL_KNOWN + urlsplit(self.settings.resource).path.rstrip("/")
        return [WELL_KNOWN] if suffixed == WELL_KNOWN else [WELL_KNOWN, suffixed]

    async def handle(self, request: HttpRequest) -> Response:
        body = json.dumps(self.document()).encode()
        # RFC 9728 section 3.2: application/json; clients may cache it for a while.
        return Response(200, body, "application/json", {"Cache-Control": "max-age=300"})
