"""The fleet on Redis (``--redis URL``): what instances on several machines share.

Keys (all under ``--redis-prefix``, default ``mcp_fast:``, so servers can share one Redis):

- ``bus`` (pub/sub channel): messages for every instance (ended sessions, cancellations,
  list-changed and resource-updated notifications, task status); ``instance:<id>`` (channel):
  messages for one instance (answers to its server-to-client requests, tasks/cancel and
  tasks/update of its tasks). Pub/sub pushes: nothing on the request path polls.
- ``ended`` (sorted set, score = expiry): ended sessions, loaded at every (re)connect into the
  local denylist that the request path checks without a Redis call.
- ``es:<stream>`` (a Redis Stream, entry ids ``1-<n>`` for event ``<stream>_<n>``, capped at
  ``--event-store-max-events`` and expiring ``--event-store-max-age`` after its last write) and
  ``es:<stream>:m`` (its session and kind): the event store. Events are written behind the
  stream (batched per turn of the loop), never waited for; another instance replays a stream
  with XRANGE from the client's Last-Event-ID and follows the rest with a blocking XREAD, so no
  event is lost or repeated.
- ``task:<id>`` (JSON record, expiring with the task) and ``tasks:<owner>`` (a session's task
  ids): tasks every instance can read; ``rl:<key>`` (hash): token buckets, taken by a Lua script.

Outages: every operation has ``--redis-timeout``; one that cannot be done raises
``FleetUnavailable`` (JSON-RPC -32603, HTTP 503) at once while Redis is known to be down. A
supervisor task holds the pub/sub connection, pings, reconnects with backoff, and reloads the
denylist when Redis is back. One WARNING when it goes, one INFO when it is back.

``redis`` (the ``redis`` extra) is imported only when ``--redis`` is used.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

import orjson

from mcp_fast.bounded import BoundedMap
from mcp_fast.fleet.base import ENDED, BucketResult, FleetUnavailable, Grant, Subscribers, new_instance_id
from mcp_fast.fleet.event_store import (
    EventStore,
    MemoryEventStore,
    Replay,
    StreamKind,
    event_id,
    parse_event_id,
)

logger = logging.getLogger("mcp_fast.fleet")

MISSING_EXTRA: Final = "--redis needs the redis extra: pip install 'mcp-fast[redis]'"
URL_SCHEMES: Final = ("redis", "rediss")

_RECONNECT_FIRST_S: Final = 0.1
_RECONNECT_MAX_S: Final = 2.0
_PING_EVERY_S: Final = 1.0
_FOLLOW_BLOCK_MS: Final = 10_000
_MAX_PENDING_WRITES: Final = 100_000  # events waiting to be written behind their streams
_MAX_OUTBOX: Final = 10_000  # ended sessions waiting for Redis to come back
_MAX_ENDED_LOADED: Final = 100_000
_TASK_SET_TTL_MS: Final = 24 * 3_600_000  # the longest a task lives (tasks.MAX_TTL_MS)

# A token bucket, atomically: refill by the time passed (Redis's clock, the same for every
# instance), take ``cost`` when there is enough (ARGV[4] '1': as many whole tokens as there are,
# ``cost`` at most: a lease). Returns {tokens taken, tokens left, retry after s (-1: never)}.
_BUCKET_SCRIPT: Final = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local partial = ARGV[4] == '1'
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local then_ = tonumber(state[2])
if tokens == nil or then_ == nil then
  tokens = burst
  then_ = now
end
tokens = math.min(burst, tokens + math.max(0, now - then_) * rate)
local taken = 0
if tokens >= cost then
  taken = cost
elseif partial and tokens >= 1 then
  taken = math.floor(tokens)
end
local retry = 0
if taken > 0 then
  tokens = tokens - taken
elseif rate > 0 then
  local needed = cost
  if partial then
    needed = 1
  end
  retry = (needed - tokens) / rate
else
  retry = -1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
if rate > 0 then
  redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
end
return {tostring(taken), tostring(tokens), tostring(retry)}
"""

T = TypeVar("T")


class RedisExtraMissing(Exception):
    """``--redis`` without the ``redis`` package."""


def import_redis() -> Any:
    """``redis.asyncio``, or RedisExtraMissing naming the extra to install."""
    try:
        import redis.asyncio as aioredis
    except ImportError:
        raise RedisExtraMissing(MISSING_EXTRA) from None
    return aioredis


def check_url(url: str) -> str | None:
    """What is wrong with a --redis URL (None: nothing)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return "not a URL"
    if parts.scheme not in URL_SCHEMES:
        return "must start with redis:// or rediss:// (TLS)"
    if not parts.hostname:
        return "names no host"
    return None


def shown_url(url: str) -> str:
    """The URL without its password, for logs."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


@dataclass(frozen=True)
class RedisSettings:
    url: str
    prefix: str = "mcp_fast:"
    timeout: float = 0.5  # seconds one operation may take
    max_events: int = 256  # events kept per stream
    max_age: float = 3600.0  # seconds a stream is kept after its last event


class RedisFleet(Subscribers):
    """The fleet's shared state in Redis; see the module's docstring."""

    shared = True

    def __init__(self, settings: RedisSettings, instance: str | None = None) -> None:
        super().__init__()
        self.instance = instance or new_instance_id()
        self.settings = settings
        self.prefix = settings.prefix
        self.timeout = settings.timeout
        self._bus = f"{self.prefix}bus"
        self._mine = f"{self.prefix}instance:{self.instance}"
        self.client: Any = None  # redis.asyncio.Redis: commands
        self.blocking_client: Any = None  # redis.asyncio.Redis: blocking reads (XREAD BLOCK)
        self._bucket_script: Any = None
        self._available = False
        self._reported_down = False  # the WARNING was logged: the INFO follows when it is back
        self._up = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._closing = False
        self._outbox: BoundedMap[str, float] = BoundedMap(_MAX_OUTBOX)  # endings Redis missed
        self.on_reconnect: list[Callable[[], None]] = []  # called each time Redis is (back) up
        self.events = RedisEventStore(self, settings.max_events, settings.max_age)
        self.event_store: EventStore = self.events

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def available(self) -> bool:
        return self._available

    async def start(self) -> None:
        """Connect (in the background: an unreachable Redis is reported, not fatal) and wait up
        to the timeout for the first connection, so that a healthy start is ready at once."""
        aioredis = import_redis()
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        options: dict[str, Any] = {
            "socket_connect_timeout": self.timeout,
            "retry": Retry(NoBackoff(), 1),  # once more on a pooled connection that Redis closed
        }
        self.client = aioredis.Redis.from_url(self.settings.url, socket_timeout=None, **options)
        self.blocking_client = aioredis.Redis.from_url(self.settings.url, socket_timeout=None, **options)
        self._bucket_script = self.client.register_script(_BUCKET_SCRIPT)
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.timeout * 4):
                await self._up.wait()

    async def close(self) -> None:
        self._closing = True
        await self.events.flush(self.timeout)
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        for client in (self.client, self.blocking_client):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.aclose()

    async def _supervise(self) -> None:
        """Hold the pub/sub connection; reconnect with backoff; ping so a hung Redis is noticed."""
        from redis.exceptions import RedisError

        backoff = _RECONNECT_FIRST_S
        while not self._closing:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                async with asyncio.timeout(self.timeout * 4):
                    await pubsub.subscribe(self._bus, self._mine)
                    await self._load_ended()
                    await self._flush_outbox()
                self._set_up()
                backoff = _RECONNECT_FIRST_S
                await self._listen(pubsub)
            except (RedisError, OSError, TimeoutError) as exc:
                self._set_down(exc)
            except Exception as exc:  # a bug must not end the supervisor (logged with its traceback)
                logger.exception("the fleet's Redis supervisor failed; reconnecting")
                self._set_down(exc)
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.shield(pubsub.aclose())
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _RECONNECT_MAX_S)

    async def _listen(self, pubsub: Any) -> None:
        """Pass on the messages of the other instances until the connection fails. A PING on the
        pub/sub connection itself every second: a Redis that hangs, or a connection that died
        without a word (a NAT that forgot it), is noticed within the timeout."""
        next_ping = time.monotonic()
        pong_due: float | None = None
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=_PING_EVERY_S / 2)
            if message is not None:
                kind = message.get("type")
                if kind == "message":
                    self._received(message["data"])
                elif kind == "pong":
                    pong_due = None
            now = time.monotonic()
            if pong_due is not None and now > pong_due:
                raise TimeoutError("Redis did not answer a ping in time")
            if pong_due is None and now >= next_ping:
                async with asyncio.timeout(self.timeout):
                    await pubsub.ping()
                pong_due = now + max(self.timeout, _PING_EVERY_S)
                next_ping = now + _PING_EVERY_S

    def _set_up(self) -> None:
        if self._reported_down:
            logger.info("the fleet store (Redis at %s) is back", shown_url(self.settings.url))
            self._reported_down = False
        self._available = True
        self._up.set()
        for hook in self.on_reconnect:
            try:
                hook()
            except Exception:
                logger.exception("a fleet reconnect hook failed")

    def _set_down(self, exc: BaseException) -> None:
        self._available = False
        self._up.clear()
        if not self._reported_down:
            self._reported_down = True
            logger.warning(
                "the fleet store (Redis at %s) is unavailable (%s): requests that need it are "
                "refused (503) until it is back; reconnecting",
                shown_url(self.settings.url),
                str(exc) or type(exc).__name__,
            )
        else:
            logger.debug("Redis still unavailable: %s", exc)

    # -- calling Redis ------------------------------------------------------------------

    async def call(self, operation: Callable[[Any], Awaitable[T]]) -> T:
        """``operation(redis)`` within the timeout; FleetUnavailable when it cannot be done
        (at once while Redis is known to be down)."""
        from redis.exceptions import RedisError

        if not self._available:
            raise FleetUnavailable()
        try:
            # wait_for, not asyncio.timeout: a request's first step may run outside a Task
            # (mcp_fast.net.eager), and asyncio.timeout needs one.
            return await asyncio.wait_for(operation(self.client), self.timeout)
        except (RedisError, OSError, TimeoutError) as exc:
            logger.debug("a Redis operation failed: %r", exc)
            raise FleetUnavailable() from None

    def key(self, name: str) -> str:
        return self.prefix + name

    # -- messages -------------------------------------------------------------------------

    def _received(self, data: bytes) -> None:
        try:
            message = orjson.loads(data)
            origin, topic, payload = message["o"], message["t"], message["p"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            logger.warning("a malformed fleet message was dropped")
            return
        if origin == self.instance or not isinstance(payload, dict):
            return  # our own, delivered here when it was published
        self.deliver(topic, payload)

    def _encode(self, topic: str, payload: dict[str, Any]) -> bytes:
        return orjson.dumps({"o": self.instance, "t": topic, "p": payload})

    async def publish(self, topic: str, payload: dict[str, Any]) -> None:
        data = self._encode(topic, payload)
        await self.call(lambda redis: redis.publish(self._bus, data))

    async def send(self, instance: str, topic: str, payload: dict[str, Any]) -> bool:
        if instance == self.instance:
            self.deliver(topic, payload)
            return True
        data = self._encode(topic, payload)
        channel = f"{self.prefix}instance:{instance}"
        receivers: int = await self.call(lambda redis: redis.publish(channel, data))
        return receivers > 0

    # -- ended sessions --------------------------------------------------------------------

    async def end_session(self, session_id: str, expires_at: float) -> None:
        data = self._encode(ENDED, {"sid": session_id, "exp": expires_at})

        async def write(redis: Any) -> None:
            async with redis.pipeline(transaction=False) as pipe:
                pipe.zadd(self.key("ended"), {session_id: expires_at})
                pipe.publish(self._bus, data)
                await pipe.execute()

        try:
            await self.call(write)
        except FleetUnavailable:
            self._outbox.put(session_id, expires_at)  # told to the fleet when Redis is back
            raise

    async def _load_ended(self) -> None:
        """Every ended session the fleet knows of, into this process's denylist (at connect)."""
        key = self.key("ended")
        now = time.time()
        await self.client.zremrangebyscore(key, "-inf", now)
        entries = await self.client.zrevrangebyscore(
            key, "+inf", now, start=0, num=_MAX_ENDED_LOADED, withscores=True
        )
        for session_id, expires_at in entries:
            self.deliver(ENDED, {"sid": session_id.decode(), "exp": float(expires_at)})

    async def _flush_outbox(self) -> None:
        if not self._outbox:
            return
        entries = dict(self._outbox.items())
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.zadd(self.key("ended"), entries)
            for session_id, expires_at in entries.items():
                pipe.publish(self._bus, self._encode(ENDED, {"sid": session_id, "exp": expires_at}))
            await pipe.execute()
        for session_id in entries:
            self._outbox.pop(session_id, None)

    # -- tasks --------------------------------------------------------------------------------

    async def save_task(self, task_id: str, owner: str, record: dict[str, Any], ttl_seconds: float) -> None:
        data = orjson.dumps(record)
        ttl_ms = max(1, math.ceil(ttl_seconds * 1000))

        async def write(redis: Any) -> None:
            async with redis.pipeline(transaction=False) as pipe:
                pipe.set(self.key(f"task:{task_id}"), data, px=ttl_ms)
                if owner:
                    pipe.sadd(self.key(f"tasks:{owner}"), task_id)
                    pipe.pexpire(self.key(f"tasks:{owner}"), _TASK_SET_TTL_MS)
                await pipe.execute()

        await self.call(write)

    async def load_task(self, task_id: str) -> dict[str, Any] | None:
        data = await self.call(lambda redis: redis.get(self.key(f"task:{task_id}")))
        return _record(data)

    async def owner_tasks(self, owner: str) -> list[dict[str, Any]]:
        async def read(redis: Any) -> list[dict[str, Any]]:
            ids = sorted(member.decode() for member in await redis.smembers(self.key(f"tasks:{owner}")))
            if not ids:
                return []
            values = await redis.mget([self.key(f"task:{task_id}") for task_id in ids])
            gone = [task_id for task_id, value in zip(ids, values, strict=True) if value is None]
            if gone:
                await redis.srem(self.key(f"tasks:{owner}"), *gone)
            return [record for value in values if (record := _record(value)) is not None]

        return await self.call(read)

    # -- rate limits ----------------------------------------------------------------------------

    async def take(self, key: str, rate: float, burst: float, cost: float = 1.0) -> BucketResult:
        script, bucket = self._bucket_script, self.key(f"rl:{key}")
        reply = await self.call(lambda redis: script(keys=[bucket], args=[rate, burst, cost, 0]))
        taken, remaining, retry_after = reply
        retry = float(retry_after)
        return BucketResult(float(taken) > 0, float(remaining), math.inf if retry < 0 else retry)

    async def take_up_to(self, key: str, rate: float, burst: float, most: int) -> Grant:
        script, bucket = self._bucket_script, self.key(f"rl:{key}")
        reply = await self.call(lambda redis: script(keys=[bucket], args=[rate, burst, most, 1]))
        taken, _remaining, retry_after = reply
        retry = float(retry_after)
        return Grant(int(float(taken)), math.inf if retry < 0 else retry)


def _record(data: bytes | None) -> dict[str, Any] | None:
    if data is None:
        return None
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _seq(entry_id: bytes | str) -> int:
    """The sequence number of a stream entry id ``1-<n>``."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.partition("-")[2])


# One write behind a stream: ("meta", stream, session id, kind), ("event", stream, seq, message)
# or ("end", stream, seq).
_Write = tuple[Any, ...]


class RedisEventStore:
    """This process's streams in memory (what a local resumption reads, with no Redis call),
    and every stream in Redis Streams (what another instance resumes)."""

    def __init__(self, fleet: RedisFleet, max_events: int, max_age: float) -> None:
        self.fleet = fleet
        self.local = MemoryEventStore(max_events=max_events)
        self.max_events = max_events
        self.max_age_ms = max(1, math.ceil(max_age * 1000))
        self._pending: list[_Write] = []
        self._writer: asyncio.Task[None] | None = None
        self.dropped = 0  # writes not made (Redis away, or too many waiting)

    def _stream_key(self, stream: str) -> str:
        return self.fleet.key(f"es:{stream}")

    # -- writing (this process's streams) ----------------------------------------------------------

    def open_stream(self, session_id: str, kind: StreamKind = "post") -> str:
        stream = self.local.open_stream(session_id, kind)
        self._write(("meta", stream, session_id, kind))
        return stream

    def append(self, stream: str, message: bytes) -> bytes:
        event = self.local.append(stream, message)
        seq = self.local.next_seq(stream)
        if seq is not None:
            self._write(("event", stream, seq - 1, message))
        return event

    def complete(self, stream: str) -> None:
        self.local.complete(stream)
        seq = self.local.next_seq(stream)
        if seq is not None:
            self._write(("end", stream, seq))

    def _write(self, item: _Write) -> None:
        """Queue a write; one task writes what waits, in order, one pipeline per turn."""
        if not self.fleet.available or len(self._pending) >= _MAX_PENDING_WRITES:
            self.dropped += 1
            return
        self._pending.append(item)
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write_pending())

    async def _write_pending(self) -> None:
        from redis.exceptions import RedisError

        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    async with asyncio.timeout(self.fleet.timeout * 4):
                        await self._write_batch(batch)
                except (RedisError, OSError, TimeoutError) as exc:
                    self.dropped += len(batch)
                    logger.debug("%d event store writes were dropped: %r", len(batch), exc)
        finally:
            self._writer = None

    async def _write_batch(self, batch: list[_Write]) -> None:
        touched: set[str] = set()
        async with self.fleet.client.pipeline(transaction=False) as pipe:
            for item in batch:
                kind, stream = item[0], item[1]
                key = self._stream_key(stream)
                if kind == "meta":
                    meta = orjson.dumps({"s": item[2], "k": item[3]})
                    pipe.set(f"{key}:m", meta, px=self.max_age_ms)
                elif kind == "event":
                    pipe.xadd(
                        key, {"d": item[3]}, id=f"1-{item[2]}", maxlen=self.max_events, approximate=True
                    )
                else:
                    pipe.xadd(key, {"end": b"1"}, id=f"1-{item[2]}", maxlen=self.max_events, approximate=True)
                touched.add(stream)
            for stream in touched:
                key = self._stream_key(stream)
                pipe.pexpire(key, self.max_age_ms)
                pipe.pexpire(f"{key}:m", self.max_age_ms)
            results = await pipe.execute(raise_on_error=False)
        failed = [result for result in results if isinstance(result, Exception)]
        if failed:
            logger.debug("%d event store writes failed: %r", len(failed), failed[0])

    async def flush(self, timeout: float) -> None:
        """Wait (at most ``timeout``) until what is queued is written."""
        writer = self._writer
        if writer is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(writer), timeout)

    # -- reading ------------------------------------------------------------------------------------

    async def replay(self, session_id: str, last_event_id: str) -> Replay | None:
        replay = self.local.replay_now(session_id, last_event_id)
        if replay is not None:
            return replay
        parsed = parse_event_id(last_event_id)
        if parsed is None:
            return None
        stream, after = parsed
        key = self._stream_key(stream)

        async def read(redis: Any) -> list[Any]:
            async with redis.pipeline(transaction=False) as pipe:
                pipe.get(f"{key}:m")
                pipe.xrange(key, min="1-0", max="+", count=1)
                pipe.xrange(key, min=f"(1-{after}", max="+")
                result: list[Any] = await pipe.execute()
                return result

        meta_data, first, entries = await self.fleet.call(read)
        meta = _record(meta_data)
        if meta is None or meta.get("s") != session_id:
            return None
        if first and _seq(first[0][0]) > after + 1:
            return None  # what the client missed fell out of the bounded stream: start over
        events: list[tuple[bytes, bytes]] = []
        complete = False
        last = after
        for entry_id, fields in entries:
            seq = _seq(entry_id)
            if b"end" in fields:
                complete = True
                break
            events.append((event_id(stream, seq), fields[b"d"]))
            last = seq
        kind: StreamKind = "get" if meta.get("k") == "get" else "post"
        return Replay(stream, events, complete, kind, False, last)

    async def follow(self, replay: Replay) -> AsyncIterator[tuple[bytes, bytes]]:
        """The rest of another instance's stream: XREAD BLOCK from the last event sent, until
        its end marker (or the stream expires)."""
        from redis.exceptions import RedisError

        key = self._stream_key(replay.stream)
        last = replay.last_seq
        while True:
            if not self.fleet.available:
                raise FleetUnavailable()
            try:
                reading = self.fleet.blocking_client.xread(
                    {key: f"1-{last}"}, block=_FOLLOW_BLOCK_MS, count=100
                )
                reply = await asyncio.wait_for(reading, _FOLLOW_BLOCK_MS / 1000 + self.fleet.timeout * 4)
            except (RedisError, OSError, TimeoutError):
                raise FleetUnavailable() from None
            if not reply:
                if not await self.fleet.call(lambda redis: redis.exists(key)):
                    return  # expired: nothing more will come
                continue
            for _name, entries in reply:
                for entry_id, fields in entries:
                    seq = _seq(entry_id)
                    if b"end" in fields:
                        return
                    last = seq
                    yield event_id(replay.stream, seq), fields[b"d"]

    def continue_stream(self, session_id: str, replay: Replay) -> str:
        return replay.stream if replay.local else self.open_stream(session_id, "get")
