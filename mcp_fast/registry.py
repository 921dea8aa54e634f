"""What a server offers: its tools, resources, prompts and completion handler, as registered.

``MCPServer``'s decorators build these records (``server.py``); the dispatcher reads them. Each
knows how to describe itself in a list result for the protocol version in force.
"""

from __future__ import annotations

import enum
import inspect
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypedDict

from mcp_fast.call import Principal
from mcp_fast.protocol.versions import VersionPolicy
from mcp_fast.schema import OutputSpec, Signature

# Tasks (2025-11-25): may a client call the tool as a task, or must it?
TaskSupport = Literal["forbidden", "optional", "required"]
# Who may share a cached result: every caller, or only the one who asked (server/utilities/caching).
CacheScope = Literal["public", "private"]


class ToolOptions(TypedDict, total=False):
    """What ``@server.tool(...)`` and ``server.add_tool(func, ...)`` take besides the function.

    ``annotations`` take the spec's names (readOnlyHint, destructiveHint, idempotentHint,
    openWorldHint, title). ``structured_output=False`` turns off outputSchema/structuredContent
    for a typed return value. ``input_schema`` replaces the schema derived from type hints:
    arguments are then passed as keyword arguments without validation. A plain ``def`` runs in
    the thread pool until it is seen to be quick, then on the event loop; ``inline=True`` keeps
    it on the loop, ``offload=True`` in the pool. ``task_support`` ("optional" or "required") lets clients
    call the tool as a task (2025-11-25, and the 2026 tasks extension); ``task_start="detach"``
    answers input-required rounds first and becomes a task at ``ctx.detach()``.
    ``cache_ttl`` (seconds) declares that the result depends only on the arguments for that
    long: the in-process result cache answers repeated calls (``--cache-size``);
    ``cache_scope="public"`` shares a result between callers, the default ``"private"`` keeps
    one per session or Authorization header (and caches nothing for anonymous callers).
    ``scopes=["files:write"]``: a caller whose token lacks one of them gets HTTP 403
    (insufficient_scope) and does not see the tool in tools/list. ``rate_limit="10/60s"``: at
    most that many calls per caller (principal, else session, else client address) in that
    window; more get HTTP 429.
    """

    title: str | None
    description: str | None
    annotations: Mapping[str, Any] | None
    icons: list[dict[str, Any]] | None
    structured_output: bool | None
    input_schema: dict[str, Any] | None
    inline: bool
    offload: bool
    meta: dict[str, Any] | None
    task_support: TaskSupport | None
    task_start: Literal["call", "detach"]
    cache_ttl: float | None
    cache_scope: CacheScope
    scopes: list[str] | tuple[str, ...] | frozenset[str] | None
    rate_limit: str | None


@dataclass(frozen=True, slots=True)
class Rate:
    """``count`` requests per ``seconds``, as ``"100/60s"`` says (``--rate-limit``, ``rate_limit=``)."""

    count: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.count / self.seconds


_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*(s|sec|m|min|h)?\s*$")
_RATE_UNITS = {None: 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_rate(text: str) -> Rate:
    """``"100/60s"``, ``"10/m"``, ``"5/1.5s"``: a count over a window; ValueError naming the
    expected form otherwise."""
    match = _RATE.match(text)
    if match is None:
        raise ValueError(f"rate {text!r}: expected COUNT/WINDOW such as 100/60s, 10/m or 1000/h")
    count = int(match.group(1))
    seconds = float(match.group(2) or 1) * _RATE_UNITS[match.group(3)]
    if count < 1 or seconds <= 0:
        raise ValueError(f"rate {text!r}: the count and the window must be positive")
    return Rate(count, seconds)


# Transports without HTTP: no bearer token, so a tool's scopes do not apply there.
LOCAL_TRANSPORTS: Final = frozenset({"stdio", "memory"})


class RunMode(enum.Enum):
    TASK = "task"  # async def: its own Task, started at once (nothing scheduled if it does not wait)
    ADAPTIVE = "adaptive"  # def: the thread pool until it is seen to be quick, then the loop
    INLINE = "inline"  # def with inline=True: always on the loop
    THREAD = "thread"  # def with offload=True: always in the thread pool


# Calls a def handler makes in the thread pool, each quicker than the limit, before it runs on the
# loop (ADAPTIVE): a handler that blocks from its first call never touches the loop.
TRIAL_CALLS = 3
# How long a def handler may run on the loop before it moves to the thread pool: a millisecond of
# stall delays every other client of the process by as much (--offload-after).
OFFLOAD_AFTER_S = 0.001
# Slow calls on the loop, within SLOW_WINDOW calls, that move a handler to the pool for good: one
# alone may be the machine's doing (a garbage collection, another process on the core), not the
# handler's; two close together are the handler's (one that blocks every other call included).
SLOW_CALLS = 2
SLOW_WINDOW = 64


@dataclass(slots=True)
class Placement:
    """Where a handler runs, and (ADAPTIVE) what has been learned of it (``dispatch/runner.py``)."""

    mode: RunMode
    on_loop: bool  # a def handler runs on the event loop now (else: the thread pool, or a Task)
    is_async: bool
    adaptive: bool
    name: str = "handler"  # what the log and an async handler's Task are called
    trials_left: int = TRIAL_CALLS
    slow_calls: int = 0  # on the loop: slow calls so far within the window
    quick_since_slow: int = 0  # on the loop: quick calls since the last slow one


def placement(func: Callable[..., Any], inline: bool = False, offload: bool = False) -> Placement:
    """Where ``func`` runs: ``async def`` as a Task; a ``def`` on the loop (``inline``), in the
    thread pool (``offload``), or (the default) in the pool until seen to be quick."""
    if inline and offload:
        raise ValueError("inline=True and offload=True contradict each other: choose one")
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)
    if inspect.iscoroutinefunction(func):
        if inline or offload:
            raise ValueError(
                f"inline= and offload= are for def handlers; {func.__name__!r} is async def (a Task)"
            )
        return Placement(RunMode.TASK, False, True, False, name)
    if inline:
        return Placement(RunMode.INLINE, True, False, False, name)
    if offload:
        return Placement(RunMode.THREAD, False, False, False, name)
    return Placement(RunMode.ADAPTIVE, False, False, True, name)


def _drop_none(mapping: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in mapping.items() if value is not None}


@dataclass(slots=True)
class Tool:
    name: str
    title: str | None
    description: str
    func: Callable[..., Any]
    placement: Placement
    signature: Signature
    output: OutputSpec | None
    annotations: dict[str, Any] | None
    icons: list[dict[str, Any]] | None
    meta: dict[str, Any] | None
    task_support: TaskSupport | None = None
    # "call": a task from the start; "detach": answer questions first, then ctx.detach().
    task_start: Literal["call", "detach"] = "call"
    # Arguments mirrored into Mcp-Param-* headers (2026-07-28 x-mcp-header).
    header_params: tuple[tuple[str, bytes, str], ...] = ()
    # The result depends only on the arguments for this many seconds: the result cache keeps it.
    cache_ttl: float | None = None
    cache_scope: CacheScope = "private"  # "public": the same for every caller
    # A caller needs every one of these OAuth scopes (ops/auth.py: 403 without, hidden in lists).
    scopes: frozenset[str] = frozenset()
    # At most this many calls per caller per window (ops/ratelimit.py: 429 above).
    rate_limit: Rate | None = None
    # Takes no Context, never a task: such a call needs no Context at all.
    plain: bool = field(init=False)

    def __post_init__(self) -> None:
        self.plain = self.signature.context_param is None and self.task_support is None

    def allows(self, principal: Principal | None, transport: str) -> bool:
        """May this caller call the tool? Without declared scopes: anyone. With scopes: a
        principal holding all of them; a caller without a principal only over a transport with
        no HTTP (stdio, the in-process test client: basic/authorization.mdx, stdio takes its
        credentials from the environment). An HTTP caller without a token is never let in."""
        scopes = self.scopes
        if not scopes:
            return True
        if principal is None:
            return transport in LOCAL_TRANSPORTS
        return scopes <= principal.scopes

    def definition(self, policy: VersionPolicy) -> dict[str, Any]:
        """The tools/list entry, shaped for the version in force."""
        entry: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "inputSchema": self.signature.input_schema,
        }
        if policy.titles and self.title:
            entry["title"] = self.title
        if policy.structured_output and self.output is not None:
            entry["outputSchema"] = self.output.schema
        if self.annotations:
            entry["annotations"] = self.annotations
        if policy.icons and self.icons:
            entry["icons"] = self.icons
        if policy.tasks and self.task_support is not None:
            entry["execution"] = {"taskSupport": self.task_support}
        if self.meta:
            entry["_meta"] = self.meta
        return entry


@dataclass(slots=True)
class Resource:
    uri: str  # a URI, or an RFC 6570 level-1 template such as test://template/{id}/data
    name: str
    title: str | None
    description: str | None
    mime_type: str | None
    func: Callable[..., Any]
    placement: Placement
    signature: Signature
    pattern: re.Pattern[str] | None  # set for templates
    annotations: dict[str, Any] | None
    icons: list[dict[str, Any]] | None
    size: int | None
    cache_ttl: float | None = None  # seconds a read stays valid: result cache and 2026 ttlMs
    cache_scope: CacheScope = "private"

    def definition(self, policy: VersionPolicy) -> dict[str, Any]:
        key = "uriTemplate" if self.pattern is not None else "uri"
        entry: dict[str, Any] = {key: self.uri, "name": self.name}
        if policy.titles and self.title:
            entry["title"] = self.title
        entry.update(
            _drop_none(
                {
                    "description": self.description,
                    "mimeType": self.mime_type,
                    "annotations": self.annotations,
                    "size": self.size,
                }
            )
        )
        if policy.icons and self.icons:
            entry["icons"] = self.icons
        return entry


@dataclass(slots=True)
class Prompt:
    name: str
    title: str | None
    description: str | None
    func: Callable[..., Any]
    placement: Placement
    signature: Signature
    icons: list[dict[str, Any]] | None

    def definition(self, policy: VersionPolicy) -> dict[str, Any]:
        arguments = [
            _drop_none(
                {
                    "name": name,
                    "description": self.signature.descriptions.get(name),
                    "required": name in self.signature.required,
                }
            )
            for name in self.signature.argument_names
        ]
        entry: dict[str, Any] = {"name": self.name, "arguments": arguments}
        if policy.titles and self.title:
            entry["title"] = self.title
        if self.description:
            entry["description"] = self.description
        if policy.icons and self.icons:
            entry["icons"] = self.icons
        return entry


CompletionHandler = Callable[..., Awaitable[Any] | Any]

_TEMPLATE_VAR = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def compile_template(template: str) -> re.Pattern[str] | None:
    """RFC 6570 level-1 ``{var}`` expressions to a regex; None when ``template`` is a plain URI."""
    if "{" not in template:
        return None
    parts: list[str] = []
    position = 0
    for match in _TEMPLATE_VAR.finditer(template):
        parts.append(re.escape(template[position : match.start()]))
        parts.append(f"(?P<{match.group(1)}>[^/?#]+)")
        position = match.end()
    parts.append(re.escape(template[position:]))
    return re.compile("".join(parts))


@dataclass
class Registry:
    """Everything the server offers. ``version`` changes on every edit so cached lists refresh."""

    tools: dict[str, Tool] = field(default_factory=dict)
    resources: dict[str, Resource] = field(default_factory=dict)
    templates: dict[str, Resource] = field(default_factory=dict)
    prompts: dict[str, Prompt] = field(default_factory=dict)
    completion: CompletionHandler | None = None
    version: int = 0
    # Seconds a def handler may run on the event loop before it moves to the thread pool.
    offload_after: float = OFFLOAD_AFTER_S
