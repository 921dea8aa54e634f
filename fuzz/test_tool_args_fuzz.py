"""Fuzzing tool arguments from each demo tool's advertised ``inputSchema``.

For every demo tool whose schema is derived from its type hints, values are generated
from the schema the server advertises in tools/list (a small JSON Schema -> Hypothesis
translation for the subset pydantic emits: string/integer/number/boolean/null/array/
object, enum/const, minimum/maximum (and exclusive ones), min/maxLength, required,
properties, additionalProperties, anyOf, $ref to $defs):

- valid arguments -> a result without isError, whose structuredContent (if any) matches
  the advertised outputSchema;
- invalid arguments (a required property missing, a value of the wrong JSON type, a
  number outside its bounds, a string outside its enum) -> with protocol 2025-11-25 an
  ``isError: true`` result whose text names the culprit (SEP-1303: input validation
  errors are tool execution errors); with 2025-06-18 a -32602 error naming it.

Tools left out, and why (each decided by code below, not by a hand-kept list):
- json_schema_2020_12_tool: its schema is given explicitly, not derived from type hints,
  and the server passes such arguments through unvalidated by design;
- tools that exist to show an error (their body raises and never returns:
  test_error_handling, protocol_error_job): they fail whatever the arguments;
- tools that ask the client something (sampling, elicitation, roots): they wait minutes
  for the client's answer by design (_inprocess.waits_for_client);
- tools with execution.taskSupport "required" (2025-11-25 tasks): a plain tools/call is
  refused with -32601 by design; driving the tasks flow is for a later suite.
Tools whose valid range means real work (emit_notifications: up to 10^6 notifications of
64 KiB) are called with values drawn from a smaller part of the valid range (BUDGET);
the bounds themselves are still checked by the invalid-value properties.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import orjson
import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

from examples.conformance import server as demo_server
from fuzz._inprocess import (
    Harness,
    always_fails,
    fast_demo_sleeps,
    list_tools,
    task_required,
    waits_for_client,
)
from fuzz._support import examples

# name -> property -> (low, high) drawn for valid calls, inside the schema's own bounds.
BUDGET: dict[str, dict[str, tuple[int, int]]] = {"emit_notifications": {"count": (0, 20), "size": (0, 300)}}
INT64 = (-(2**63), 2**63 - 1)  # the integers a JSON client can send (orjson reads larger ones as floats)
ANNOTATIONS = {
    "title",
    "description",
    "default",
    "examples",
    "$schema",
    "deprecated",
    "readOnly",
    "writeOnly",
}


DEFINITIONS = list_tools(demo_server)
FUZZED = sorted(
    name
    for name, tool in demo_server.registry.tools.items()
    if tool.signature.validator is not None
    and not always_fails(demo_server, name)
    and not waits_for_client(demo_server, name)
    and not task_required(DEFINITIONS[name])
)


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    h = Harness(demo_server)
    with fast_demo_sleeps():
        yield h
    h.close()


# ---------------------------------------------------------------------------
# JSON Schema -> strategies (the subset used by pydantic-derived schemas)

text = st.text(st.characters(exclude_categories=["Cs"]), max_size=30)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(*INT64) | st.floats(allow_nan=False, allow_infinity=False) | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=6,
)


def resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        ref = schema["$ref"]
        assert ref.startswith("#/$defs/"), f"unsupported $ref {ref}"
        schema = {
            **root["$defs"][ref.removeprefix("#/$defs/")],
            **{k: v for k, v in schema.items() if k != "$ref"},
        }
    return schema


def check_supported(schema: dict[str, Any]) -> None:
    known = ANNOTATIONS | {
        "type", "enum", "const", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength",
        "maxLength", "properties", "required", "additionalProperties", "items", "anyOf", "$ref", "$defs",
    }  # fmt: skip
    unknown = set(schema) - known
    if unknown:
        raise NotImplementedError(f"schema keywords this fuzzer does not translate: {sorted(unknown)}")


def int_bounds(schema: dict[str, Any]) -> tuple[int, int]:
    low, high = INT64
    if "minimum" in schema:
        low = max(low, math.ceil(schema["minimum"]))
    if "exclusiveMinimum" in schema:
        low = max(low, math.floor(schema["exclusiveMinimum"]) + 1)
    if "maximum" in schema:
        high = min(high, math.floor(schema["maximum"]))
    if "exclusiveMaximum" in schema:
        high = min(high, math.ceil(schema["exclusiveMaximum"]) - 1)
    return low, high


FLOAT_EDGES = [1.7976931348623157e308, -1.7976931348623157e308, 1e308, -1e308, 5e-324, -0.0, 2.0**53, 1e-300]


def edgy_integers(low: int, high: int) -> st.SearchStrategy[int]:
    """Integers in [low, high], with the edges (bounds, 0, +-1, 2**31, 2**53, 2**63) drawn often."""
    edges = [low, high, 0, 1, -1, 2**31, -(2**31), 2**53, -(2**53), 2**62, -(2**62), 2**63 - 1, -(2**63)]
    return st.sampled_from(sorted({e for e in edges if low <= e <= high})) | st.integers(low, high)


def valid(
    schema: dict[str, Any], root: dict[str, Any], budget: dict[str, tuple[int, int]] | None = None
) -> st.SearchStrategy[Any]:
    schema = resolve(schema, root)
    check_supported(schema)
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "anyOf" in schema:
        return st.one_of([valid(option, root) for option in schema["anyOf"]])
    kind = schema.get("type")
    if kind == "string":
        return st.text(
            st.characters(exclude_categories=["Cs"]),
            min_size=schema.get("minLength", 0),
            max_size=min(schema.get("maxLength", 40), 40),
        )
    if kind == "integer":
        return edgy_integers(*int_bounds(schema))
    if kind == "number":
        low, high = schema.get("minimum"), schema.get("maximum")
        floats = st.floats(
            min_value=low, max_value=high, allow_nan=False, allow_infinity=False,
            exclude_min="exclusiveMinimum" in schema, exclude_max="exclusiveMaximum" in schema,
        )  # fmt: skip
        if (
            low is None
            and high is None
            and "exclusiveMinimum" not in schema
            and "exclusiveMaximum" not in schema
        ):
            # Edges first; and a JSON number may be written as an integer.
            return st.sampled_from(FLOAT_EDGES) | floats | edgy_integers(*INT64)
        return floats
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        return (
            st.lists(valid(schema.get("items", {}), root), max_size=4)
            if schema.get("items")
            else st.lists(json_values, max_size=4)
        )
    if kind == "object":
        return objects(schema, root, budget or {})
    if kind is None and not set(schema) - ANNOTATIONS:
        return json_values  # {}: anything
    raise NotImplementedError(f"schema this fuzzer does not translate: {schema}")


def objects(
    schema: dict[str, Any], root: dict[str, Any], budget: dict[str, tuple[int, int]]
) -> st.SearchStrategy[dict[str, Any]]:
    properties = schema.get("properties", {})
    required = set(schema.get("required", []))

    def prop(name: str) -> st.SearchStrategy[Any]:
        if name in budget:
            low, high = int_bounds(resolve(properties[name], root))
            return st.integers(max(low, budget[name][0]), min(high, budget[name][1]))
        return valid(properties[name], root)

    base = st.fixed_dictionaries(
        {name: prop(name) for name in properties if name in required},
        optional={name: prop(name) for name in properties if name not in required},
    )
    if schema.get("additionalProperties", True) is False:
        return base
    # JSON Schema: without additionalProperties: false, other members are allowed.
    extra = st.dictionaries(text.filter(lambda k: k not in properties), json_values, max_size=2)
    return st.builds(lambda known, more: {**more, **known}, base, extra)


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def is_valid(value: Any, schema: dict[str, Any], root: dict[str, Any]) -> bool:
    return bool(
        jsonschema.Draft202012Validator({**resolve(schema, root), "$defs": root.get("$defs", {})}).is_valid(
            value
        )
    )


def wrong_values(schema: dict[str, Any], root: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values that the (property) schema refuses: other JSON types, out of bounds, off enum.

    Integral floats (1.0) are not drawn for integer schemas: JSON Schema counts them as
    integers (see test_integral_json_numbers_are_valid_integers).
    """
    schema = resolve(schema, root)
    candidates: list[st.SearchStrategy[Any]] = [json_values]
    kind = schema.get("type")
    if kind == "integer":
        candidates.append(
            st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer())
        )
        low, high = int_bounds(schema)
        if low > INT64[0]:
            candidates.append(st.integers(INT64[0], low - 1))
        if high < INT64[1]:
            candidates.append(st.integers(high + 1, INT64[1]))
    if "enum" in schema:
        candidates.append(text)
    strategy = st.one_of(candidates)
    return strategy.filter(
        lambda v: (
            not (kind == "integer" and isinstance(v, float) and v.is_integer())
            and not is_valid(v, schema, root)
        )
    )


@st.composite
def invalid_arguments(
    draw: st.DrawFn, schema: dict[str, Any], budget: dict[str, tuple[int, int]]
) -> tuple[dict[str, Any], str]:
    """Arguments with exactly one fault, and the name of the property at fault."""
    properties = schema.get("properties", {})
    required = schema.get("required", [])
    args = dict(draw(objects(schema, schema, budget)))
    options = [("missing", name) for name in required] + [("wrong", name) for name in properties]
    how, name = draw(st.sampled_from(options))
    if how == "missing":
        del args[name]
    else:
        args[name] = draw(wrong_values(properties[name], schema))
    return args, name


# ---------------------------------------------------------------------------
# Calling tools


def call(h: Harness, name: str, arguments: Any, version: bytes = b"2025-11-25") -> Any:
    body = orjson.dumps(
        {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": name, "arguments": arguments}}
    )
    rec = h.post(body, version=version)
    note(f"{name}({arguments!r}) -> {rec.status} {rec.body[:400]!r} {b''.join(rec.chunks)[-400:]!r}")
    assert rec.exactly_one_answer(), rec.calls
    assert rec.status == 200
    answer = rec.messages()[-1]
    assert answer.get("id") == 7
    return answer


def check_valid_call(h: Harness, name: str, arguments: dict[str, Any]) -> None:
    definition = DEFINITIONS[name]
    assert jsonschema.Draft202012Validator(definition["inputSchema"]).is_valid(arguments), (
        "generator produced invalid arguments"
    )
    answer = call(h, name, arguments)
    assert "result" in answer, answer
    result = answer["result"]
    assert result.get("isError") is False, result
    assert isinstance(result.get("content"), list)
    if "outputSchema" in definition:
        # server/tools "Output Schema": structured results MUST conform to it.
        assert "structuredContent" in result, result
        errors = [
            e.message
            for e in jsonschema.Draft202012Validator(definition["outputSchema"]).iter_errors(
                result["structuredContent"]
            )
        ]
        assert not errors, (result["structuredContent"], errors)
    # What the showcase tools compute.
    if name == "echo":
        assert result["content"] == [{"type": "text", "text": arguments["message"]}]
    elif name == "add":
        a, b = int(arguments["a"]), int(arguments["b"])  # exact, also for integral floats
        assert result["structuredContent"] == {"a": a, "b": b, "sum": a + b}
    elif name == "convert_temperature":
        value = float(arguments["value"])
        expected = (
            value * 9 / 5 + 32 if arguments.get("unit", "celsius") == "celsius" else (value - 32) * 5 / 9
        )
        assert result["structuredContent"]["result"] == pytest.approx(expected, nan_ok=False)


def check_invalid_call(h: Harness, name: str, arguments: dict[str, Any], culprit: str) -> None:
    answer = call(h, name, arguments)
    assert "result" in answer, answer  # 2025-11-25: not a protocol error
    result = answer["result"]
    assert result.get("isError") is True, result
    (block,) = result["content"]
    assert block["type"] == "text" and culprit in block["text"], block
    assert (
        "Traceback" not in block["text"]
        and "pydantic" not in block["text"]
        and "https://" not in block["text"]
    )
    # Before 2025-11-25 the same arguments are a JSON-RPC error (-32602) naming the culprit.
    answer = call(h, name, arguments, version=b"2025-06-18")
    assert answer.get("error", {}).get("code") == -32602, answer
    assert culprit in answer["error"]["message"]


WITH_ARGS = [name for name in FUZZED if DEFINITIONS[name]["inputSchema"].get("properties")]
WITHOUT_ARGS = [name for name in FUZZED if name not in WITH_ARGS]


def arguments_of(name: str) -> st.SearchStrategy[dict[str, Any]]:
    schema = DEFINITIONS[name]["inputSchema"]
    return objects(schema, schema, BUDGET.get(name, {}))


def test_the_fuzzed_tools_are_the_type_hinted_ones() -> None:
    assert {"echo", "add", "convert_temperature", "countdown"} <= set(FUZZED)
    for name in FUZZED:  # every schema is in the translated subset
        schema = DEFINITIONS[name]["inputSchema"]
        valid(schema, schema)


@pytest.mark.parametrize("name", WITH_ARGS)
@settings(max_examples=examples(60))
@given(data=st.data())
def test_valid_arguments_are_accepted(harness: Harness, name: str, data: st.DataObject) -> None:
    check_valid_call(harness, name, data.draw(arguments_of(name), label="arguments"))


@settings(max_examples=examples(60))
@given(st.sampled_from(WITHOUT_ARGS), st.data())
def test_tools_without_parameters_accept_any_extra_members(
    harness: Harness, name: str, data: st.DataObject
) -> None:
    check_valid_call(harness, name, data.draw(arguments_of(name), label="arguments"))


@pytest.mark.parametrize("name", WITH_ARGS)
@settings(max_examples=examples(40))
@given(data=st.data())
def test_invalid_arguments_are_tool_errors(harness: Harness, name: str, data: st.DataObject) -> None:
    schema = DEFINITIONS[name]["inputSchema"]
    arguments, culprit = data.draw(
        invalid_arguments(schema, BUDGET.get(name, {})), label="arguments, culprit"
    )
    check_invalid_call(harness, name, arguments, culprit)


@settings(max_examples=examples(40))
@given(st.sampled_from(FUZZED), json_values.filter(lambda v: not isinstance(v, dict)))
def test_arguments_that_are_not_an_object_are_invalid_params(
    harness: Harness, name: str, arguments: Any
) -> None:
    """``arguments`` must be an object (CallToolRequest schema): a protocol error, -32602."""
    answer = call(harness, name, arguments)
    if arguments is None:
        assert "result" in answer  # absent/null arguments: {} (required ones are then missing)
        return
    assert answer.get("error", {}).get("code") == -32602, answer


INTEGER_PROPS = [
    (name, prop)
    for name in WITH_ARGS
    for prop, schema in DEFINITIONS[name]["inputSchema"]["properties"].items()
    if resolve(schema, DEFINITIONS[name]["inputSchema"]).get("type") == "integer" and name not in BUDGET
]


@pytest.mark.parametrize(("name", "prop"), INTEGER_PROPS)
@settings(max_examples=examples(15))
@given(data=st.data())
def test_integral_json_numbers_are_valid_integers(
    harness: Harness, name: str, prop: str, data: st.DataObject
) -> None:
    """JSON Schema 2020-12 (validation 6.1.1): "integer" is any number with a zero
    fractional part, so 3.0 is as valid as 3 for an integer property."""
    arguments = data.draw(arguments_of(name), label="arguments")
    value = data.draw(st.integers(-(2**53), 2**53), label=prop)
    schema = DEFINITIONS[name]["inputSchema"]
    low, high = int_bounds(resolve(schema["properties"][prop], schema))
    arguments[prop] = float(min(max(value, low), high))
    check_valid_call(harness, name, arguments)
