"""The server API: ``MCPServer`` with its ``@tool``, ``@resource``, ``@prompt`` decorators, and
``@middleware``, ``@lifespan`` and ``@route`` for what surrounds them.

Registration only: what is registered lives in ``registry.py``; the request pipeline
(``mcp_fast.pipeline``) and the dispatcher call it.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Literal, TypeVar, Unpack

from mcp_fast.call import Middleware, TokenVerifier
from mcp_fast.context import Context
from mcp_fast.protocol.envelope import header_params
from mcp_fast.registry import (
    CacheScope,
    Prompt,
    Rate,
    Registry,
    Resource,
    TaskSupport,
    Tool,
    ToolOptions,
    compile_template,
    parse_rate,
    placement,
)
from mcp_fast.routes import Route, RouteHandler, check_route
from mcp_fast.schema import explicit_signature, inspect_signature, output_spec, parse_docstring

F = TypeVar("F", bound=Callable[..., Any])
M = TypeVar("M", bound=Middleware)
# @server.lifespan: called with the server, returns an async context manager (for example
# a function decorated with contextlib.asynccontextmanager); what it yields is ctx.lifespan.
LifespanFunction = Callable[["MCPServer"], AbstractAsyncContextManager[Any]]
# @server.readiness_check("db"): True (or an awaitable of it) while the dependency is usable.
ReadinessCheck = Callable[[], bool | Awaitable[bool]]

__all__ = ["MCPServer"]


class MCPServer:
    """An MCP server: register handlers with the decorators; serve it with
    ``python -m mcp_fast module:server`` (or test it with ``mcp_fast.testing.connect``)."""

    def __init__(
        self,
        name: str,
        version: str = "0.1.0",
        *,
        title: str | None = None,
        instructions: str | None = None,
        icons: list[dict[str, Any]] | None = None,
        website_url: str | None = None,
        token_verifier: TokenVerifier | None = None,
    ) -> None:
        self.name = name
        self.version = version
        self.title = title
        self.instructions = instructions
        self.icons = icons
        self.website_url = website_url
        # Verifies opaque bearer tokens (``async def verify(token) -> Principal | None``): with
        # it, every HTTP request needs a valid token (ops/auth.py; JWTs: --auth-jwks).
        self.token_verifier = token_verifier
        # What /ready checks besides draining (``@server.readiness_check(name)``).
        self.readiness_checks: dict[str, ReadinessCheck] = {}
        self.registry = Registry()
        # Run around every request, first added outermost (pipeline/middleware.py).
        self.middleware_stack: list[Middleware] = []
        self.routes: dict[str, Route] = {}
        self._lifespan: LifespanFunction | None = None
        # What the lifespan function yielded, while the server runs (ctx.lifespan).
        self.lifespan_state: Any = None
        self._changed_listeners: list[Callable[[str], None]] = []
        self._resource_listeners: list[Callable[[str], None]] = []
        self._invalidation_listeners: list[Callable[[str | None, str | None], None]] = []

    # -- registration ------------------------------------------------------

    def tool(self, name: str | None = None, **options: Unpack[ToolOptions]) -> Callable[[F], F]:
        """Register a tool. Its input schema comes from the type hints, its description from
        the docstring (``Args:`` lines describe parameters); the options are ``ToolOptions``."""

        def register(func: F) -> F:
            self.add_tool(func, name=name, **options)
            return func

        return register

    def add_tool(
        self,
        func: Callable[..., Any],
        *,
        name: str | None = None,
        title: str | None = None,
        description: str | None = None,
        annotations: Mapping[str, Any] | None = None,
        icons: list[dict[str, Any]] | None = None,
        structured_output: bool | None = None,
        input_schema: dict[str, Any] | None = None,
        inline: bool = False,
        offload: bool = False,
        meta: dict[str, Any] | None = None,
        task_support: TaskSupport | None = None,
        task_start: Literal["call", "detach"] = "call",
        cache_ttl: float | None = None,
        cache_scope: CacheScope = "private",
        scopes: list[str] | tuple[str, ...] | frozenset[str] | None = None,
        rate_limit: str | None = None,
    ) -> Tool:
        """Register ``func`` as a tool (``ToolOptions`` says what each option does)."""
        required = frozenset(scopes or ())
        if any(not isinstance(scope, str) or not scope or " " in scope for scope in required):
            raise ValueError("scopes must be non-empty strings without spaces (RFC 6749 section 3.3)")
        rate: Rate | None = parse_rate(rate_limit) if rate_limit is not None else None
        if cache_ttl is not None and not cache_ttl > 0:
            raise ValueError("cache_ttl must be a positive number of seconds")
        if cache_ttl is not None and task_support is not None:
            raise ValueError("cache_ttl with task_support: a tool that runs as a task has no result to cache")
        tool_name = name or func.__name__
        if input_schema is not None:
            signature = explicit_signature(func, Context, input_schema)
        else:
            signature = inspect_signature(func, Context, f"{tool_name}Arguments", strict=True)
        output = None if structured_output is False else output_spec(func)
        tool = Tool(
            name=tool_name,
            title=title,
            description=description or parse_docstring(func).summary,
            func=func,
            placement=placement(func, inline, offload),
            signature=signature,
            output=output,
            annotations=dict(annotations) if annotations else None,
            icons=icons,
            meta=meta,
            task_support=task_support,
            task_start=task_start,
            header_params=header_params(signature.input_schema),
            cache_ttl=cache_ttl,
            cache_scope=cache_scope,
            scopes=required,
            rate_limit=rate,
        )
        self.registry.tools[tool_name] = tool
        self._changed("tools")
        return tool

    def remove_tool(self, name: str) -> None:
        if self.registry.tools.pop(name, None) is not None:
            self._changed("tools")

    def resource(
        self,
        uri: str,
        *,
        name: str | None = None,
        title: str | None = None,
        description: str | None = None,
        mime_type: str | None = None,
        annotations: Mapping[str, Any] | None = None,
        icons: list[dict[str, Any]] | None = None,
        size: int | None = None,
        inline: bool = False,
        offload: bool = False,
        cache_ttl: float | None = None,
        cache_scope: CacheScope = "private",
    ) -> Callable[[F], F]:
        """Register a resource at ``uri``, or a resource template when ``uri``
        holds ``{var}`` expressions (their values are passed as arguments).

        The handler returns str (text), bytes (blob), or a list of contents dicts.
        ``cache_ttl`` (seconds): how long a read stays valid -- the result cache keeps it
        and 2026-07-28 clients get it as ``ttlMs`` with ``cacheScope`` (``cache_scope``:
        "public" for content that is the same for every caller, default "private").
        ``notify_resource_updated(uri)`` drops the cached read at once.
        """
        if cache_ttl is not None and not cache_ttl > 0:
            raise ValueError("cache_ttl must be a positive number of seconds")

        def register(func: F) -> F:
            pattern = compile_template(uri)
            resource = Resource(
                uri=uri,
                name=name or func.__name__,
                title=title,
                description=description or parse_docstring(func).summary or None,
                mime_type=mime_type,
                func=func,
                placement=placement(func, inline, offload),
                signature=inspect_signature(func, Context, f"{func.__name__}Arguments", strict=False),
                pattern=pattern,
                annotations=dict(annotations) if annotations else None,
                icons=icons,
                size=size,
                cache_ttl=cache_ttl,
                cache_scope=cache_scope,
            )
            if pattern is None:
                self.registry.resources[uri] = resource
            else:
                self.registry.templates[uri] = resource
            self._changed("resources")
            return func

        return register

    def prompt(
        self,
        name: str | None = None,
        *,
        title: str | None = None,
        description: str | None = None,
        icons: list[dict[str, Any]] | None = None,
        inline: bool = False,
        offload: bool = False,
    ) -> Callable[[F], F]:
        """Register a prompt; its arguments are the handler's parameters (strings on the wire).

        The handler returns a str (one user message), a list of messages
        (``{"role": ..., "content": {...}}``), or a full GetPromptResult dict.
        """

        def register(func: F) -> F:
            prompt_name = name or func.__name__
            self.registry.prompts[prompt_name] = Prompt(
                name=prompt_name,
                title=title,
                description=description or parse_docstring(func).summary or None,
                func=func,
                placement=placement(func, inline, offload),
                signature=inspect_signature(func, Context, f"{prompt_name}Arguments", strict=False),
                icons=icons,
            )
            self._changed("prompts")
            return func

        return register

    def completion(self) -> Callable[[F], F]:
        """Register the completion/complete handler: ``(ref, argument, context) -> list[str] | dict``."""

        def register(func: F) -> F:
            self.registry.completion = func
            return func

        return register

    def notify_list_changed(self, kind: str) -> None:
        """Announce that the "tools", "resources" or "prompts" list changed (list_changed)."""
        self._changed(kind)

    def notify_resource_updated(self, uri: str) -> None:
        """Tell subscribed clients that ``uri`` changed (notifications/resources/updated
        on the GET stream of every session that subscribed to it in this process)."""
        for listener in self._resource_listeners:
            listener(uri)

    def invalidate_cache(self, *, tool: str | None = None, uri: str | None = None) -> None:
        """Drop cached results: of ``tool``, of the resource at ``uri``, or (neither) all.

        For data that changed before its ``cache_ttl`` ran out. Per process, as the cache is.
        """
        for listener in self._invalidation_listeners:
            listener(tool, uri)

    def on_invalidate(self, listener: Callable[[str | None, str | None], None]) -> None:
        self._invalidation_listeners.append(listener)

    def on_resource_updated(self, listener: Callable[[str], None]) -> None:
        self._resource_listeners.append(listener)

    def remove_listeners(self, owner: object) -> None:
        """Forget every listener that is a method of ``owner`` (a pipeline or transport that stops)."""

        def kept(listener: object) -> bool:
            return getattr(listener, "__self__", None) is not owner

        self._changed_listeners[:] = filter(kept, self._changed_listeners)
        self._resource_listeners[:] = filter(kept, self._resource_listeners)
        self._invalidation_listeners[:] = filter(kept, self._invalidation_listeners)

    def on_list_changed(self, listener: Callable[[str], None]) -> None:
        """Called with "tools", "resources" or "prompts" whenever the registry changes."""
        self._changed_listeners.append(listener)

    def _changed(self, kind: str) -> None:
        self.registry.version += 1
        for listener in self._changed_listeners:
            listener(kind)

    # -- around the handlers ---------------------------------------------------

    def add_middleware(self, middleware: Middleware) -> None:
        """Run ``middleware`` around every request: ``async def fn(call, call_next)``.

        It may return ``await call_next(call)`` (the handler's result, or the next middleware's),
        return a result of its own, or raise ``McpError``. Several run in the order added, the
        first added outermost. A server with none pays nothing for the chain.
        """
        if not callable(middleware):
            raise TypeError(f"a middleware must be an async function, not {type(middleware).__name__}")
        target: Any = middleware
        if not (inspect.isfunction(middleware) or inspect.ismethod(middleware)):
            target = getattr(middleware, "__call__", middleware)  # noqa: B004 - an object with async __call__
        if not inspect.iscoroutinefunction(target):
            raise TypeError(
                f"middleware {getattr(middleware, '__name__', middleware)!r} must be an async function: "
                "async def fn(call, call_next)"
            )
        self.middleware_stack.append(middleware)

    def middleware(self, middleware: M) -> M:
        """``@server.middleware`` (no parentheses): ``add_middleware`` as a decorator."""
        self.add_middleware(middleware)
        return middleware

    def lifespan(self, function: LifespanFunction) -> LifespanFunction:
        """``@server.lifespan``: ``function(server)`` returns an async context manager (write it with
        ``contextlib.asynccontextmanager``), entered once per process before serving and left after
        the last request; what it yields is ``ctx.lifespan`` in handlers."""
        if not callable(function):
            raise TypeError("@server.lifespan takes a function that returns an async context manager")
        self._lifespan = function
        return function

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The lifespan around serving (``app.py``, ``mcp_fast.testing``): enter, serve, leave."""
        if self._lifespan is None:
            yield
            return
        manager = self._lifespan(self)
        if not hasattr(manager, "__aenter__"):
            raise TypeError(
                f"the lifespan function {getattr(self._lifespan, '__name__', '?')!r} must return an async "
                "context manager (decorate it with @contextlib.asynccontextmanager)"
            )
        async with manager as state:
            self.lifespan_state = state
            try:
                yield
            finally:
                self.lifespan_state = None

    def readiness_check(self, name: str) -> Callable[[F], F]:
        """``@server.readiness_check("database")``: a function (``def`` or ``async def``, no
        arguments) that returns True while a dependency is usable. ``GET /ready`` answers 503 while
        any check returns False, raises or takes over two seconds, and names each check."""

        def register(check: F) -> F:
            if not name or name in self.readiness_checks:
                raise ValueError(f"readiness check name {name!r} is empty or taken")
            self.readiness_checks[name] = check
            return check

        return register

    def route(
        self, path: str, *, methods: Sequence[str] = ("GET",), check_host: bool = True, inline: bool = False
    ) -> Callable[[F], F]:
        """A plain HTTP endpoint next to MCP (``routes.py``): the handler takes an ``HttpRequest``
        and returns bytes, str, a dict or list (JSON), None (204) or a ``Response``."""

        def register(handler: F) -> F:
            self.add_route(path, handler, methods=methods, check_host=check_host, inline=inline)
            return handler

        return register

    def add_route(
        self,
        path: str,
        handler: RouteHandler,
        *,
        methods: Sequence[str] = ("GET",),
        check_host: bool = True,
        inline: bool = False,
    ) -> None:
        wanted = check_route(path, methods)
        if path in self.routes:
            raise ValueError(f"a route for {path} is registered already")
        self.routes[path] = Route(path, wanted, handler, check_host, inline)
