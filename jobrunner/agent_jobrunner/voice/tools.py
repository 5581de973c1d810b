"""Function tools declared as plain Python functions with type hints.

    @function_tool
    async def get_weather(city: Annotated[str, "the city"], unit: Literal["c", "f"] = "c") -> str:
        \"\"\"The current weather in a city.\"\"\"

The JSON schema the model sees comes from the signature (types, defaults, ``Annotated``
descriptions) and the docstring; calls are checked against it before the function runs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import json
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

JsonSchema = dict[str, Any]


class ToolError(Exception):
    """A call the model made that cannot be carried out (unknown tool, bad arguments)."""


@dataclasses.dataclass(frozen=True)
class FunctionTool:
    name: str
    description: str
    parameters: JsonSchema
    function: Callable[..., Any]

    async def invoke(self, arguments: str | Mapping[str, Any]) -> str:
        """Check ``arguments`` (JSON text or a mapping), call the function, return its result as text.

        Synchronous functions run in a worker thread, so they may block without stalling audio.
        """
        kwargs = self.bind(arguments)
        if inspect.iscoroutinefunction(self.function):
            result = await self.function(**kwargs)
        else:
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(None, functools.partial(self.function, **kwargs))
            if inspect.isawaitable(result):
                result = await result
        return result if isinstance(result, str) else json.dumps(result, default=str)

    def bind(self, arguments: str | Mapping[str, Any]) -> dict[str, Any]:
        if isinstance(arguments, str):
            try:
                parsed = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError as err:
                raise ToolError(f"{self.name}: arguments are not JSON: {err}") from None
        else:
            parsed = dict(arguments)
        if not isinstance(parsed, dict):
            raise ToolError(f"{self.name}: arguments must be a JSON object")
        properties: dict[str, JsonSchema] = self.parameters["properties"]
        unknown = sorted(set(parsed) - set(properties))
        if unknown:
            raise ToolError(f"{self.name}: unknown argument(s) {', '.join(unknown)}")
        missing = [name for name in self.parameters["required"] if name not in parsed]
        if missing:
            raise ToolError(f"{self.name}: missing argument(s) {', '.join(missing)}")
        return {name: _check(self.name, name, value, properties[name]) for name, value in parsed.items()}


@typing.overload
def function_tool(
    function: Callable[..., Any], *, name: str | None = None, description: str | None = None
) -> FunctionTool: ...


@typing.overload
def function_tool(
    function: None = None, *, name: str | None = None, description: str | None = None
) -> Callable[[Callable[..., Any]], FunctionTool]: ...


def function_tool(
    function: Callable[..., Any] | None = None, *, name: str | None = None, description: str | None = None
) -> FunctionTool | Callable[[Callable[..., Any]], FunctionTool]:
    """Make a :class:`FunctionTool` of a function (usable bare or with arguments)."""

    def make(fn: Callable[..., Any]) -> FunctionTool:
        return FunctionTool(
            name=name or fn.__name__,
            description=description if description is not None else inspect.cleandoc(fn.__doc__ or ""),
            parameters=parameters_schema(fn),
            function=fn,
        )

    return make(function) if function is not None else make


def as_tools(functions: Sequence[FunctionTool | Callable[..., Any]]) -> list[FunctionTool]:
    tools = [f if isinstance(f, FunctionTool) else function_tool(f) for f in functions]
    names = [t.name for t in tools]
    if len(set(names)) != len(names):
        raise ValueError(f"tool names must be unique: {names}")
    return tools


def parameters_schema(fn: Callable[..., Any]) -> JsonSchema:
    hints = typing.get_type_hints(fn, include_extras=True)
    properties: dict[str, JsonSchema] = {}
    required: list[str] = []
    for parameter in inspect.signature(fn).parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise TypeError(f"{fn.__name__}: *args and **kwargs cannot be described to a model")
        if parameter.name not in hints:
            raise TypeError(f"{fn.__name__}: parameter {parameter.name!r} has no type hint")
        schema = type_schema(hints[parameter.name])
        if parameter.default is parameter.empty:
            required.append(parameter.name)
        elif parameter.default is not None:
            schema["default"] = parameter.default
        properties[parameter.name] = schema
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


def type_schema(hint: Any) -> JsonSchema:
    """The JSON schema of one annotation."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Annotated:
        schema = type_schema(args[0])
        notes = [a for a in args[1:] if isinstance(a, str)]
        if notes:
            schema["description"] = " ".join(notes)
        return schema
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            inner = type_schema(options[0])
            return {"anyOf": [inner, {"type": "null"}]} if len(options) != len(args) else inner
        return {"anyOf": [type_schema(a) for a in args]}
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin in (list, Sequence, tuple) or hint in (list, tuple):
        item = args[0] if args else Any
        return {"type": "array", "items": {} if item is Any else type_schema(item)}
    if origin is dict or hint is dict:
        return {"type": "object"}
    simple = {str: "string", bool: "boolean", int: "integer", float: "number"}
    if hint in simple:
        return {"type": simple[hint]}
    raise TypeError(f"cannot describe {hint!r} to a model")


def _check(tool: str, name: str, value: Any, schema: JsonSchema) -> Any:
    """``value`` if it fits ``schema`` (ints are taken for numbers); raises ToolError otherwise."""
    if "anyOf" in schema:
        for option in schema["anyOf"]:
            try:
                return _check(tool, name, value, option)
            except ToolError:
                continue
        raise ToolError(f"{tool}: argument {name!r} has the wrong type")
    if "enum" in schema:
        if value not in schema["enum"]:
            raise ToolError(f"{tool}: argument {name!r} must be one of {schema['enum']}")
        return value
    kind = schema.get("type")
    checks: dict[str, Callable[[Any], bool]] = {
        "string": lambda v: isinstance(v, str),
        "boolean": lambda v: isinstance(v, bool),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "array": lambda v: isinstance(v, list),
        "object": lambda v: isinstance(v, dict),
        "null": lambda v: v is None,
    }
    if kind is not None and not checks[kind](value):
        raise ToolError(f"{tool}: argument {name!r} must be of type {kind}")
    if kind == "array":
        return [_check(tool, name, item, schema.get("items", {})) for item in value]
    return value
