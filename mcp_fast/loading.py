"""The app named on the command line: ``module:attribute`` to an MCPServer, or a message that
says what is wrong with it (no traceback)."""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import sys
import traceback
from collections.abc import Callable
from types import ModuleType

from mcp_fast.server import MCPServer

logger = logging.getLogger("mcp_fast")


class AppLoadError(Exception):
    """The ``module:attribute`` given on the command line does not name an MCPServer; the
    message says why, without a traceback."""


def load_app(spec: str | None) -> MCPServer:
    """The server that ``module:attribute`` names: an MCPServer, or a function that takes no
    arguments and returns one. ``module`` alone means ``module:server``."""
    if spec is None:
        from mcp_fast.demo import server

        return server
    module_name, _, attribute = spec.strip().partition(":")
    attribute = attribute or "server"
    _check_app_spelling(spec, module_name, attribute)
    module = _import_app_module(spec, module_name)
    if not hasattr(module, attribute):
        raise AppLoadError(
            f"app {spec!r}: module {module_name!r} ({_where(module)}) has no attribute {attribute!r}"
            + _servers_hint(module, module_name)
        )
    return _server_from(spec, module, attribute, getattr(module, attribute))


def _check_app_spelling(spec: str, module_name: str, attribute: str) -> None:
    if module_name.endswith(".py"):
        raise AppLoadError(
            f"app {spec!r}: name the module, not its file: {module_name.removesuffix('.py')}:{attribute}"
        )
    dotted = module_name.split(".")
    if not module_name or not all(part.isidentifier() for part in dotted) or not attribute.isidentifier():
        raise AppLoadError(f"app {spec!r}: write module:attribute, e.g. myapp:server")


def _put_current_directory_on_path() -> None:
    """``python -m mcp_fast`` puts the current directory first on sys.path; the installed
    ``mcp-fast`` script puts its own bin/ directory there instead. Both find ``myapp.py`` in the
    current directory alike (as uvicorn and gunicorn do)."""
    here = os.getcwd()
    if not any(os.path.abspath(entry or os.curdir) == here for entry in sys.path):
        sys.path.insert(0, here)


def _import_app_module(spec: str, module_name: str) -> ModuleType:
    _put_current_directory_on_path()
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise AppLoadError(
                f"app {spec!r}: no module named {exc.name!r} in the current directory ({os.getcwd()}) "
                "or on the Python path"
            ) from None
        raise AppLoadError(
            f"app {spec!r}: module {module_name!r} failed to import: {_describe(exc)}"
        ) from exc
    except Exception as exc:  # the app's own code may raise anything: say what and where
        raise AppLoadError(
            f"app {spec!r}: module {module_name!r} failed to import: {_describe(exc)}"
        ) from exc


def _server_from(spec: str, module: ModuleType, attribute: str, target: object) -> MCPServer:
    if isinstance(target, MCPServer):
        return target
    owner = _handler_owner(module, target)
    if owner is not None:
        kind, server_attribute = owner
        raise AppLoadError(
            f"app {spec!r}: {attribute!r} is a {kind} of the server {module.__name__}:{server_attribute}, "
            f"not a server; serve {module.__name__}:{server_attribute}"
        )
    if not callable(target):
        raise AppLoadError(
            f"app {spec!r}: {attribute!r} is {_a(target)}, not an MCPServer (or a function that returns one)"
        )
    if inspect.iscoroutinefunction(target):
        raise AppLoadError(
            f"app {spec!r}: {attribute!r} is an async function; a factory must be a plain function "
            "that returns an MCPServer"
        )
    needed = _required_parameters(target)
    if needed:
        raise AppLoadError(
            f"app {spec!r}: {attribute!r} is a function that takes arguments ({', '.join(needed)}), "
            "not an MCPServer; name an MCPServer, or a function that returns one and takes no arguments"
        )
    try:
        made = target()
    except Exception as exc:  # the factory is the app's code: say what it raised
        raise AppLoadError(f"app {spec!r}: the factory {attribute!r} raised {_describe(exc)}") from exc
    if not isinstance(made, MCPServer):
        raise AppLoadError(f"app {spec!r}: the factory {attribute!r} returned {_a(made)}, not an MCPServer")
    return made


def _handler_owner(module: ModuleType, target: object) -> tuple[str, str] | None:
    """("tool", "server") when ``target`` is the function of a tool (resource, prompt) of an
    MCPServer in ``module``: a common slip is naming a tool instead of its server."""
    for name, value in vars(module).items():
        if not isinstance(value, MCPServer):
            continue
        registry = value.registry
        kinds = (
            ("tool", registry.tools.values()),
            ("resource", [*registry.resources.values(), *registry.templates.values()]),
            ("prompt", registry.prompts.values()),
        )
        for kind, handlers in kinds:
            if any(handler.func is target for handler in handlers):
                return kind, name
    return None


def _required_parameters(target: Callable[..., object]) -> list[str]:
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):  # no signature to read (some built-ins): just call it
        return []
    return [
        name
        for name, parameter in signature.parameters.items()
        if parameter.default is parameter.empty
        and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
    ]


def _servers_hint(module: ModuleType, module_name: str) -> str:
    servers = [name for name, value in vars(module).items() if isinstance(value, MCPServer)]
    if not servers:
        return "; it defines no MCPServer"
    return "; its MCPServer: " + ", ".join(f"{module_name}:{name}" for name in servers)


def _where(module: ModuleType) -> str:
    file = getattr(module, "__file__", None)
    return _relative(file) if file else "a namespace package"


def _relative(path: str) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return path


def _describe(exc: BaseException) -> str:
    """``RuntimeError: boom (myapp.py, line 7)``: the exception and where it was raised, for a
    message instead of a traceback (--log-level debug logs the traceback too)."""
    logger.debug("the app failed", exc_info=exc)
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, SyntaxError):  # its text already says the file and line
        return text
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        text += f" ({_relative(frames[-1].filename)}, line {frames[-1].lineno})"
    return text


def _a(value: object) -> str:
    name = type(value).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"
