"""JSON Schema (2020-12) and argument validation from a handler's type hints.

pydantic does the work (see README, "Dependencies"): it turns type hints,
``Annotated[..., Field(...)]``, models, TypedDicts and Literals into JSON
Schema 2020-12, and its Rust core validates arguments in about a microsecond.
A hand-written validator would cover less and be slower.

Validation is strict (no "5" -> 5 coercion) so that what the schema promises is
what the handler receives.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, is_dataclass
from typing import Annotated, Any, Union, get_args, get_origin

import pydantic
import typing_extensions
from pydantic import BaseModel, BeforeValidator, ConfigDict
from pydantic.plugin._schema_validator import PluggableSchemaValidator
from pydantic_core import SchemaValidator

# Called with a name only known at run time, which static checkers can't follow.
_TYPED_DICT: Any = typing_extensions.TypedDict

_ARGS_SECTION = re.compile(r"^\s*(Args|Arguments|Parameters)\s*:\s*$")
_ARG_LINE = re.compile(r"^\s+(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


@dataclass(frozen=True, slots=True)
class Docstring:
    summary: str
    params: dict[str, str]


def _accept_integral_floats(annotation: Any) -> Any:
    """JSON Schema counts 1.0 as an integer (validation 6.1.1); strict pydantic would not."""
    if annotation is int:
        return Annotated[int, BeforeValidator(_integral_float)]
    if get_origin(annotation) is Annotated:
        base, *metadata = get_args(annotation)
        if base is int:
            return Annotated[(int, *metadata, BeforeValidator(_integral_float))]
    return annotation


def _integral_float(value: Any) -> Any:
    if type(value) is float and value.is_integer():
        return int(value)
    return value


def parse_docstring(func: Callable[..., Any]) -> Docstring:
    """First paragraph as the description; a Google-style ``Args:`` section for parameters."""
    doc = inspect.getdoc(func) or ""
    summary_lines: list[str] = []
    params: dict[str, str] = {}
    lines = doc.splitlines()
    index = 0
    while index < len(lines) and lines[index].strip():
        summary_lines.append(lines[index].strip())
        index += 1
    current: str | None = None
    in_args = False
    for line in lines[index:]:
        if _ARGS_SECTION.match(line):
            in_args = True
            continue
        if not in_args:
            continue
        if line.strip() and not line.startswith((" ", "\t")):
            in_args = False  # the next section starts
            continue
        match = _ARG_LINE.match(line)
        if match and (current is None or len(line) - len(line.lstrip()) <= 4):
            current = match.group(1).lstrip("*")
            params[current] = match.group(2).strip()
        elif current is not None and line.strip():
            params[current] = f"{params[current]} {line.strip()}".strip()
    return Docstring(" ".join(summary_lines), params)


@dataclass(slots=True)
class Signature:
    """What a handler takes: JSON arguments, plus the injected Context parameter."""

    input_schema: dict[str, Any]
    # None: an explicit schema; arguments pass as they are.
    validator: SchemaValidator | PluggableSchemaValidator | None
    argument_names: tuple[str, ...]
    context_param: str | None
    required: tuple[str, ...]
    descriptions: dict[str, str]


def _is_context(annotation: Any, context_type: type) -> bool:
    if annotation is context_type:
        return True
    origin = get_origin(annotation)
    if origin is Union or origin is types.UnionType:
        return any(_is_context(arg, context_type) for arg in get_args(annotation))
    return isinstance(annotation, type) and issubclass(annotation, context_type)


def inspect_signature(
    func: Callable[..., Any], context_type: type, model_name: str, *, strict: bool
) -> Signature:
    """Build the arguments model of ``func`` (all parameters but the Context one).

    ``strict``: tool arguments are JSON values and must match the schema exactly;
    prompt arguments and URI-template variables arrive as strings and may be
    converted ("5" -> 5) to the parameter's type.
    """
    hints = typing.get_type_hints(func, include_extras=True)
    doc = parse_docstring(func)
    fields: dict[str, Any] = {}
    context_param: str | None = None
    required: list[str] = []
    for name, param in inspect.signature(func).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(f"{func.__qualname__}: *args/**kwargs cannot be described as a JSON Schema")
        annotation = hints.get(name, Any)
        if _is_context(annotation, context_type):
            context_param = name
            continue
        default = ... if param.default is param.empty else param.default
        if default is ...:
            required.append(name)
        description = doc.params.get(name)
        # An explicit description=None would hide one given with Annotated[..., Field(...)].
        field_info = (
            pydantic.Field(default=default, description=description)
            if description
            else pydantic.Field(default=default)
        )
        if strict:
            annotation = _accept_integral_floats(annotation)
        fields[name] = (annotation, field_info)
    # The schema comes from a model (it carries defaults and descriptions); arguments
    # are validated against a TypedDict of the same fields, which yields the kwargs
    # dict directly: half the cost of building a model instance. A missing optional
    # argument is simply not passed, so the function's own default applies.
    model = pydantic.create_model(model_name, __config__=ConfigDict(strict=strict), **fields)
    schema = model.model_json_schema()
    schema.pop("title", None)
    schema.setdefault("properties", {})
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    arguments_type = _TYPED_DICT(
        model_name,
        {
            name: annotation if name in required else typing_extensions.NotRequired[annotation]
            for name, (annotation, _) in fields.items()
        },
    )
    setattr(arguments_type, "__pydantic_config__", ConfigDict(strict=strict))  # noqa: B010
    validator = pydantic.TypeAdapter(arguments_type).validator
    return Signature(
        input_schema=schema,
        validator=validator,
        argument_names=tuple(fields),
        context_param=context_param,
        required=tuple(required),
        descriptions={k: v for k, v in doc.params.items() if k in fields},
    )


def explicit_signature(func: Callable[..., Any], context_type: type, schema: dict[str, Any]) -> Signature:
    """For a handler registered with its own input schema: arguments are passed as
    keyword arguments without validation (the handler takes ``**arguments``)."""
    hints = typing.get_type_hints(func, include_extras=True)
    context_param = next(
        (
            name
            for name, annotation in hints.items()
            if name != "return" and _is_context(annotation, context_type)
        ),
        None,
    )
    required = schema.get("required", [])
    return Signature(
        input_schema=schema,
        validator=None,
        argument_names=tuple(schema.get("properties", {})),
        context_param=context_param,
        required=tuple(required) if isinstance(required, list) else (),
        descriptions={},
    )


def describe_validation_error(error: pydantic.ValidationError) -> str:
    """A short, person-readable list of what is wrong with the arguments.

    Built from pydantic's structured error list (location and message), not its
    repr, so no internal type names or URLs reach the client.
    """
    problems: list[str] = []
    for item in error.errors(include_url=False, include_context=False, include_input=False)[:10]:
        location = ".".join(str(part) for part in item["loc"]) or "arguments"
        problems.append(f"{location}: {item['msg']}")
    return "; ".join(problems)


@dataclass(slots=True)
class OutputSpec:
    """How a typed return value becomes ``structuredContent`` (2025-06-18 on)."""

    schema: dict[str, Any]
    wrap: bool  # True: the value is wrapped as {"result": value} (non-object return types)
    serializer: Callable[[Any], Any]


_NO_STRUCTURED = (str, bytes, type(None))


def _is_object_type(annotation: Any) -> bool:
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel) or is_dataclass(annotation):
            return True
        if typing_extensions.is_typeddict(annotation):
            return True
    origin = get_origin(annotation)
    return origin is dict


def output_spec(func: Callable[..., Any]) -> OutputSpec | None:
    """Derive outputSchema from the return annotation, or None when it is unstructured.

    Unstructured: no annotation, str, bytes, None, or content objects. Object-like
    types (models, dataclasses, TypedDicts, dicts) are the structured content
    themselves; other JSON types are wrapped in {"result": ...} as the spec's
    outputSchema must describe an object.
    """
    hints = typing.get_type_hints(func, include_extras=True)
    annotation = hints.get("return", inspect.Signature.empty)
    if annotation is inspect.Signature.empty or annotation is Any:
        return None
    if isinstance(annotation, type) and issubclass(annotation, _NO_STRUCTURED):
        return None
    from mcp_fast.content import is_content_annotation  # local: content imports nothing of ours

    if is_content_annotation(annotation):
        return None
    wrap = not _is_object_type(annotation)
    adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(annotation)
    value_schema = adapter.json_schema(mode="serialization")
    if wrap:
        schema: dict[str, Any] = {
            "type": "object",
            "properties": {"result": value_schema},
            "required": ["result"],
        }
    else:
        schema = value_schema
        schema.pop("title", None)

    def serialize(value: Any) -> Any:
        return adapter.dump_python(value, mode="json", by_alias=True)

    return OutputSpec(schema, wrap, serialize)
