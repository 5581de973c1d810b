"""Function tools from plain Python functions: the schema the model sees, and checked calls."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Annotated, Literal

import pytest

from agent_jobrunner.voice import FunctionTool, ToolError, function_tool
from agent_jobrunner.voice.tools import as_tools

pytestmark = pytest.mark.unit


@function_tool
async def book_table(
    restaurant: Annotated[str, "the restaurant's name"],
    people: int,
    when: Literal["lunch", "dinner"] = "dinner",
    outside: bool = False,
    budget: float | None = None,
    allergies: list[str] | None = None,
) -> dict[str, object]:
    """Book a table.

    Returns the booking.
    """
    return {"restaurant": restaurant, "people": people, "when": when, "outside": outside, "budget": budget}


def test_schema_from_type_hints_and_docstring() -> None:
    assert isinstance(book_table, FunctionTool)
    assert book_table.name == "book_table"
    assert book_table.description == "Book a table.\n\nReturns the booking."
    assert book_table.parameters == {
        "type": "object",
        "properties": {
            "restaurant": {"type": "string", "description": "the restaurant's name"},
            "people": {"type": "integer"},
            "when": {"enum": ["lunch", "dinner"], "default": "dinner"},
            "outside": {"type": "boolean", "default": False},
            "budget": {"anyOf": [{"type": "number"}, {"type": "null"}]},
            "allergies": {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}]},
        },
        "required": ["restaurant", "people"],
        "additionalProperties": False,
    }


async def test_invoke_checks_and_calls() -> None:
    result = await book_table.invoke('{"restaurant": "Chez Nous", "people": 2, "budget": 80}')
    assert json.loads(result) == {
        "restaurant": "Chez Nous",
        "people": 2,
        "when": "dinner",
        "outside": False,
        "budget": 80,
    }


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ("not json", "not JSON"),
        ("[1]", "JSON object"),
        ('{"people": 2}', "missing argument(s) restaurant"),
        ('{"restaurant": "x", "people": "two"}', "'people' must be of type integer"),
        ('{"restaurant": "x", "people": true}', "'people' must be of type integer"),
        ('{"restaurant": "x", "people": 2, "when": "breakfast"}', "must be one of"),
        ('{"restaurant": "x", "people": 2, "allergies": ["nuts", 3]}', "wrong type"),
        ('{"restaurant": "x", "people": 2, "pets": 1}', "unknown argument(s) pets"),
    ],
)
async def test_bad_calls_are_refused_before_the_function_runs(arguments: str, problem: str) -> None:
    with pytest.raises(ToolError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        await book_table.invoke(arguments)


async def test_sync_function_runs_off_the_event_loop() -> None:
    loop_thread = threading.get_ident()

    def where(city: str) -> str:
        """Which thread ran the call."""
        return f"{city}:{threading.get_ident() != loop_thread}"

    (tool,) = as_tools([where])
    assert await tool.invoke({"city": "paris"}) == "paris:True"


def test_named_tool_and_unique_names() -> None:
    @function_tool(name="weather", description="Weather now.")
    def get_weather(city: str) -> str:
        return city

    assert (get_weather.name, get_weather.description) == ("weather", "Weather now.")
    with pytest.raises(ValueError, match="unique"):
        as_tools([get_weather, get_weather])


def test_functions_the_model_cannot_call_are_refused() -> None:
    def untyped(city):  # type: ignore[no-untyped-def]
        return city

    def variadic(*cities: str) -> str:
        return ""

    def odd(when: asyncio.Event) -> str:
        return ""

    with pytest.raises(TypeError, match="no type hint"):
        function_tool(untyped)
    with pytest.raises(TypeError, match=r"\*args"):
        function_tool(variadic)
    with pytest.raises(TypeError, match="cannot describe"):
        function_tool(odd)
