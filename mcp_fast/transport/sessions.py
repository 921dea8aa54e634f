"""Sessions for the 2025 protocol versions: stateless signed tokens, or an in-process table.

The core idea: ``initialize`` answers with an ``Mcp-Session-Id`` that is a
signed JWT carrying everything a later request needs (negotiated version,
client capabilities, client info, issue and expiry time). Any process holding
the secret serves the session; nothing about it is stored server-side, so a
fleet needs no sticky sessions. What little state a session has beyond that
(ended sessions, the chosen log level) is kept per process, bounded; ended
sessions are also shared, through the fleet (``--redis``: its messages feed
``ended_elsewhere``) or a directory (``--fleet-dir``, ``shared_log.py``). Either
way the check on each request is a lookup in this process's denylist.

Spec: basic/transports.mdx "Session Management": a request without the id
(other than initialize) -> 400; an unknown or ended session -> 404, after
which the client starts a new one with initialize.
"""

from __future__ import annotations

import secrets
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

import orjson

from mcp_fast.bounded import BoundedMap
from mcp_fast.fleet.shared_log import SharedLog
from mcp_fast.transport.tokens import Hs256Tokens, InvalidToken, PyJwtTokens, TokenCodec

_SESSION_ID_BYTES: Final = 16
# The token travels in a header on every request; nginx's default header buffer is 8 KiB.
_MAX_CAPABILITIES_JSON: Final = 2048
_CLIENT_INFO_KEYS: Final = ("name", "version", "title")
_MAX_INFO_STRING: Final = 256
# An ended session's key in the denylist: its id's hash, cut to 60 bits (see EndedSessions).
_KEY_MASK: Final = (1 << 60) - 1


def denylist_key(session_id: str) -> int:
    """A session id's key in the denylist (``EndedSessions``)."""
    return hash(session_id) & _KEY_MASK


def compact_claims(
    capabilities: dict[str, Any], client_info: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Keep a session token small whatever the client declared.

    clientInfo keeps its name, version and title (not icons, which may be data:
    URIs). Capabilities stay whole unless their JSON passes 2 KiB; then only the
    declared capability names remain ("sampling": {}), which is what checks need.
    """
    info = {
        key: client_info[key][:_MAX_INFO_STRING]
        for key in _CLIENT_INFO_KEYS
        if isinstance(client_info.get(key), str)
    }
    try:
        too_big = len(orjson.dumps(capabilities)) > _MAX_CAPABILITIES_JSON
    except TypeError:  # nested deeper than orjson writes: certainly too much for a header
        too_big = True
    if too_big:
        capabilities = {key: {} for key in capabilities if key != "experimental"}
    return capabilities, info


@dataclass(frozen=True, slots=True)
class Session:
    id: str  # a random id: keys per-session state, event ids and the denylist
    token: str  # what the client sends as Mcp-Session-Id
    protocol_version: str
    client_capabilities: dict[str, Any]
    client_info: dict[str, Any]
    expires_at: float
    # The subject of the principal that created the session (authorization), or None.
    owner: str | None = None
    # The id's key in the denylist (EndedSessions), worked out once rather than on each request.
    ended_key: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ended_key", denylist_key(self.id))


class SessionNotFound(Exception):
    """The Mcp-Session-Id is unknown, expired, tampered with or ended: HTTP 404."""


class SessionStore(Protocol):
    def create(
        self,
        version: str,
        capabilities: dict[str, Any],
        client_info: dict[str, Any],
        owner: str | None = None,
    ) -> Session: ...

    def resolve(self, token: str) -> Session: ...

    def end(self, session: Session) -> None: ...


class EndedSessions:
    """The denylist: ended sessions until their tokens would have expired anyway, at most ``limit``.

    A busy server ends sessions all the time (a DELETE each: 95 a second in bench/soak.py), so an
    entry is kept small: a 60-bit key in a set, and the key and the expiry in two arrays. A map
    from the id to its expiry held about 186 bytes an entry (the 22-character id, a float, an
    OrderedDict node); this holds about 90 (tracemalloc, 100,000 entries).

    The key is ``hash(session_id)`` cut to 60 bits. Str hashes differ from process to process,
    which is fine: the denylist is per process (what the fleet shares are ids, never keys). Below
    2**60 an int is a 32-byte object; a full 64-bit hash would take 36 (40 allocated). Two ids
    with one key would refuse a live session (404, and its client starts a new one): the odds
    are about n / 2**60 for each lookup with n entries, 1e-13 with 100,000.

    The arrays are a FIFO in the order sessions ended, with a head index (compacted when the head
    passes half): expired entries are forgotten from the front, and past the bound the oldest go.
    Sessions end nearly in the order their tokens expire (one TTL for all); one that ends out of
    order just waits behind the others to be forgotten, and the bound holds anyway. A session is
    in the FIFO at most once (one ended here is echoed by the fleet).

    The check on each request is one membership test of ``Session.ended_key`` in ``keys``.
    """

    __slots__ = ("_fifo_expiries", "_fifo_keys", "_head", "keys", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.keys: set[int] = set()
        self._fifo_keys = array("q")
        self._fifo_expiries = array("d")
        self._head = 0

    def __contains__(self, session_id: str) -> bool:
        return denylist_key(session_id) in self.keys

    def __len__(self) -> int:
        return len(self.keys)

    def add(self, session_id: str, expires_at: float) -> None:
        key = denylist_key(session_id)
        if key in self.keys:
            return  # ended already (here, and now heard from the fleet)
        self.keys.add(key)
        self._fifo_keys.append(key)
        self._fifo_expiries.append(expires_at)
        if len(self.keys) > self.limit:
            self._drop_oldest()

    def forget_expired(self, now: float) -> None:
        """Forget the entries at the front whose tokens have expired (refused anyway)."""
        expiries = self._fifo_expiries
        while self._head < len(expiries) and expiries[self._head] <= now:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        head = self._head
        self.keys.discard(self._fifo_keys[head])
        head += 1
        if head * 2 > len(self._fifo_keys):
            del self._fifo_keys[:head]
            del self._fifo_expiries[:head]
            head = 0
        self._head = head


@dataclass(frozen=True)
class JwtSettings:
    """HS256 with shared secrets (the first signs; all verify, for rotation), or
    RS256/ES256 with a private key file (signing) and public key files (verifying)."""

    secrets: tuple[str, ...] = ()
    algorithm: str = "HS256"
    private_key_file: Path | None = None
    public_key_files: tuple[Path, ...] = ()
    ttl_seconds: float = 24 * 3600.0
    verified_cache_size: int = 10_000
    denylist_size: int = 100_000
    # Where ended sessions are shared with other instances (None: this process only).
    denylist_dir: Path | None = None
    denylist_poll_seconds: float = 0.1


class JwtSessions:
    """Stateless sessions: the token is the session."""

    def __init__(self, settings: JwtSettings) -> None:
        self.settings = settings
        self.algorithm = settings.algorithm
        self._tokens: TokenCodec
        if settings.private_key_file is not None:
            public_keys = [path.read_text() for path in settings.public_key_files]
            if not public_keys:
                raise ValueError(
                    "an asymmetric session key needs at least one public key file to verify with"
                )
            self._tokens = PyJwtTokens(self.algorithm, settings.private_key_file.read_text(), public_keys)
        else:
            if self.algorithm != "HS256":
                raise ValueError(f"{self.algorithm} needs a private key file")
            self._tokens = Hs256Tokens(list(settings.secrets) or [secrets.token_urlsafe(32)])
        # Verifying a token costs tens of microseconds; a verified one is remembered.
        self._verified: BoundedMap[str, Session] = BoundedMap(settings.verified_cache_size)
        # Ended sessions until their token would have expired anyway.
        self._ended = EndedSessions(settings.denylist_size)
        self._ended_keys = self._ended.keys  # what each request looks in
        self._shared: SharedLog | None = None
        if settings.denylist_dir is not None:
            self._shared = SharedLog(settings.denylist_dir, settings.denylist_poll_seconds, "ended sessions")

    @property
    def generated_secret(self) -> bool:
        return not self.settings.secrets and self.settings.private_key_file is None

    def create(
        self,
        version: str,
        capabilities: dict[str, Any],
        client_info: dict[str, Any],
        owner: str | None = None,
    ) -> Session:
        capabilities, client_info = compact_claims(capabilities, client_info)
        now = time.time()
        expires_at = int(now + self.settings.ttl_seconds)
        session_id = secrets.token_urlsafe(_SESSION_ID_BYTES)
        claims = {
            "sid": session_id,
            "v": version,
            "cap": capabilities,
            "ci": client_info,
            "iat": int(now),
            "exp": expires_at,
        }
        if owner is not None:
            claims["own"] = owner  # the principal's subject: the session is bound to it
        token = self._tokens.encode(claims)
        session = Session(session_id, token, version, capabilities, client_info, expires_at, owner)
        self._verified.put(token, session)
        return session

    def resolve(self, token: str) -> Session:
        now = time.time()
        session: Session | None = self._verified.get(token)
        if session is None:
            session = self._verify(token)
            if session.ended_key not in self._ended_keys:  # a token refused again and again is not remembered
                self._verified.put(token, session)
        if session.expires_at <= now:
            self._verified.pop(token, None)
            raise SessionNotFound("the session has expired")
        shared = self._shared
        if shared is not None and now >= shared.next_poll:
            for session_id, expires_at, _ in shared.refresh(now):
                self._ended.add(session_id, expires_at)
        if session.ended_key in self._ended_keys:
            self._verified.pop(token, None)  # ended on another instance since it was remembered
            raise SessionNotFound("the session has ended")
        return session

    def _verify(self, token: str) -> Session:
        try:
            claims = self._tokens.decode(token)
        except InvalidToken:
            raise SessionNotFound("the session id is not valid") from None
        return _session_from_claims(token, claims)

    def ended_elsewhere(self, payload: dict[str, Any]) -> None:
        """Another instance ended a session (the fleet's ``ENDED`` message: ``sid``, ``exp``)."""
        session_id, expires_at = payload.get("sid"), payload.get("exp")
        if isinstance(session_id, str) and isinstance(expires_at, int | float) and expires_at > time.time():
            self._ended.add(session_id, float(expires_at))

    def end(self, session: Session) -> None:
        self._ended.add(session.id, session.expires_at)
        self._verified.pop(session.token, None)
        now = time.time()
        if self._shared is not None:
            self._shared.add(session.id, session.expires_at, now)
        self._ended.forget_expired(now)


def _session_from_claims(token: str, claims: dict[str, Any]) -> Session:
    """The session a verified token carries; SessionNotFound when a claim it needs is missing or
    of the wrong type (RFC 7519 section 4.1: exp and iat are NumericDates)."""
    capabilities = claims.get("cap")
    client_info = claims.get("ci")
    version = claims.get("v")
    session_id = claims.get("sid")
    expires_at = claims.get("exp")
    issued_at = claims.get("iat")
    owner = claims.get("own")
    if not (
        isinstance(version, str)
        and isinstance(session_id, str)
        and type(expires_at) in (int, float)
        and type(issued_at) in (int, float)
    ):
        raise SessionNotFound("the session id is not valid")
    return Session(
        session_id,
        token,
        version,
        capabilities if isinstance(capabilities, dict) else {},
        client_info if isinstance(client_info, dict) else {},
        float(expires_at),  # type: ignore[arg-type]
        owner if isinstance(owner, str) else None,
    )


class MemorySessions:
    """Stateful sessions in an in-process table (one process, or sticky routing)."""

    def __init__(self, ttl_seconds: float = 24 * 3600.0, max_sessions: int = 100_000) -> None:
        self.ttl_seconds = ttl_seconds
        self._sessions: BoundedMap[str, Session] = BoundedMap(max_sessions)

    def create(
        self,
        version: str,
        capabilities: dict[str, Any],
        client_info: dict[str, Any],
        owner: str | None = None,
    ) -> Session:
        session_id = secrets.token_urlsafe(_SESSION_ID_BYTES)
        session = Session(
            session_id, session_id, version, capabilities, client_info, time.time() + self.ttl_seconds, owner
        )
        self._sessions.put(session_id, session)
        return session

    def resolve(self, token: str) -> Session:
        session: Session | None = self._sessions.get(token)
        if session is None:
            raise SessionNotFound("unknown session")
        if session.expires_at <= time.time():
            self._sessions.pop(token, None)
            raise SessionNotFound("the session has expired")
        return session

    def end(self, session: Session) -> None:
        self._sessions.pop(session.token, None)
