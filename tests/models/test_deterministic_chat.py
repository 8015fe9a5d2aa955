"""The deterministic provider as a test double: structured output valid against the schema,
forced and several tool calls, n choices, logprobs, stop, and what it refuses."""

from __future__ import annotations

import datetime
import enum
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any, Literal

import openai
import pytest
from openai import AsyncOpenAI
from pydantic import BaseModel, Field

from palyra.config import ModelConfig, ProviderConfig, validate_config
from palyra.errors import InvalidRequest, Unsupported
from palyra.models.deterministic import DeterministicProvider
from palyra.types import ChatDelta, ChatRequest, ChatResult
from tests.conftest import ADMIN_TOKEN, GatewayFactory

jsonschema = pytest.importorskip("jsonschema")

PROVIDER = DeterministicProvider(ProviderConfig(provider_id="det", kind="deterministic"))
MODEL = ModelConfig(model_id="deterministic", provider_id="det")

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 1},
        "unit": {"enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "when": {"type": "string", "format": "date"},
    },
    "required": ["city", "unit", "days"],
    "additionalProperties": False,
}
LOOKUP = {
    "type": "object",
    "properties": {"ids": {"type": "array", "items": {"type": "integer"}, "minItems": 1}},
    "required": ["ids"],
}


def tool(name: str, parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


TOOLS = [tool("get_weather", WEATHER), tool("lookup", LOOKUP)]


def request(*messages: dict[str, Any], **extra: Any) -> ChatRequest:
    return ChatRequest.model_validate({"messages": list(messages), **extra})


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def valid(schema: dict[str, Any], value: Any) -> None:
    validator = jsonschema.validators.validator_for(schema)
    validator(schema, format_checker=validator.FORMAT_CHECKER).validate(value)


async def stream(req: ChatRequest) -> list[ChatDelta]:
    return [d async for d in PROVIDER.stream_chat(req, MODEL)]


def replies(result: ChatResult) -> dict[str, Any]:
    """The assistant message holding `result`'s calls, to send back in a history."""
    return {
        "role": "assistant",
        "content": result.content,
        "tool_calls": [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in result.tool_calls
        ],
    }


# --- structured output -----------------------------------------------------------------------


async def test_json_schema_is_answered_with_a_valid_instance() -> None:
    schema = {
        "type": "object",
        "properties": {
            "title": {"type": "string"},
            "rating": {"type": "number", "minimum": 0, "maximum": 5},
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
            "author": {"$ref": "#/$defs/Author"},
            "published": {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "null"}]},
        },
        "required": ["title", "rating", "tags", "author", "published"],
        "additionalProperties": False,
        "$defs": {
            "Author": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "email": {"format": "email"}},
                "required": ["name", "email"],
                "additionalProperties": False,
            }
        },
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "Review", "schema": schema}}
    one = await PROVIDER.chat(request(user("review the book"), response_format=fmt), MODEL)
    assert one.finish_reason == "stop" and one.usage.completion_tokens > 0
    valid(schema, json.loads(one.content or ""))
    again = await PROVIDER.chat(request(user("review the book"), response_format=fmt), MODEL)
    other = await PROVIDER.chat(request(user("review the film"), response_format=fmt), MODEL)
    assert again.content == one.content  # a pure function of the request
    assert other.content != one.content
    streamed = await stream(request(user("review the book"), response_format=fmt, stream=True))
    assert "".join(d.content or "" for d in streamed) == one.content


async def test_json_answers_are_never_cut_and_say_what_the_text_would() -> None:
    fmt = {"type": "json_object"}
    long = " ".join(["word"] * 50)
    result = await PROVIDER.chat(request(user(long), response_format=fmt, max_tokens=5), MODEL)
    assert json.loads(result.content or "") == {"echo": long}
    after_tool = request(
        user("/tool lookup {}"),
        {
            "role": "assistant",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "found 3"},
        tools=TOOLS,
        response_format=fmt,
    )
    answer = await PROVIDER.chat(after_tool, MODEL)
    assert json.loads(answer.content or "") == {"echo": "tool c1 returned: found 3"}


async def test_a_schema_with_no_buildable_instance_is_a_clear_400() -> None:
    schema = {"type": "object", "properties": {"me": {"$ref": "#"}}, "required": ["me"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "Loop", "schema": schema}}
    with pytest.raises(InvalidRequest) as caught:
        await PROVIDER.chat(request(user("x"), response_format=fmt), MODEL)
    assert caught.value.param == "response_format"
    assert "response_format.json_schema: no answer can be built" in caught.value.message


# --- forced tool calls -----------------------------------------------------------------------


async def test_tool_choice_required_calls_a_tool_with_valid_arguments() -> None:
    result = await PROVIDER.chat(request(user("hello"), tools=TOOLS, tool_choice="required"), MODEL)
    assert result.finish_reason == "tool_calls" and result.content is None
    [call] = result.tool_calls
    assert call.name == "get_weather"  # the first tool
    valid(WEATHER, json.loads(call.arguments))
    # The tools the message names come first.
    named = await PROVIDER.chat(
        request(user("please lookup the order"), tools=TOOLS, tool_choice="required"), MODEL
    )
    assert named.tool_calls[0].name == "lookup"
    valid(LOOKUP, json.loads(named.tool_calls[0].arguments))


async def test_required_after_tool_results_calls_the_next_tool_not_yet_called() -> None:
    first = request(user("go"), tools=TOOLS, tool_choice="required")
    one = await PROVIDER.chat(first, MODEL)
    history = [
        user("go"),
        replies(one),
        {"role": "tool", "tool_call_id": one.tool_calls[0].id, "content": "sunny"},
    ]
    two = await PROVIDER.chat(request(*history, tools=TOOLS, tool_choice="required"), MODEL)
    assert [c.name for c in two.tool_calls] == ["lookup"]
    # Every tool called: the first again (a forced choice is honoured, as a model must).
    history += [
        replies(two),
        {"role": "tool", "tool_call_id": two.tool_calls[0].id, "content": "1"},
    ]
    three = await PROVIDER.chat(request(*history, tools=TOOLS, tool_choice="required"), MODEL)
    assert [c.name for c in three.tool_calls] == ["get_weather"]
    assert three.tool_calls[0].id != one.tool_calls[0].id
    # With auto, the loop ends in text that includes the result.
    done = await PROVIDER.chat(request(*history, tools=TOOLS, tool_choice="auto"), MODEL)
    assert done.finish_reason == "stop"
    assert done.content == f"tool {two.tool_calls[0].id} returned: 1"


async def test_a_named_tool_is_called_with_command_arguments_or_generated_ones() -> None:
    choice = {"type": "function", "function": {"name": "lookup"}}
    generated = await PROVIDER.chat(request(user("hi"), tools=TOOLS, tool_choice=choice), MODEL)
    assert generated.tool_calls[0].name == "lookup"
    valid(LOOKUP, json.loads(generated.tool_calls[0].arguments))
    given = await PROVIDER.chat(
        request(user('/tool lookup {"ids": [7]}'), tools=TOOLS, tool_choice=choice), MODEL
    )
    assert json.loads(given.tool_calls[0].arguments) == {"ids": [7]}
    with pytest.raises(InvalidRequest, match="'nope', which is not among the tools"):
        await PROVIDER.chat(
            request(
                user("hi"),
                tools=TOOLS,
                tool_choice={"type": "function", "function": {"name": "nope"}},
            ),
            MODEL,
        )


async def test_tool_choice_none_and_auto_without_a_command_answer_in_text() -> None:
    for choice in ("none", "auto", None):
        result = await PROVIDER.chat(
            request(user("just talk"), tools=TOOLS, tool_choice=choice), MODEL
        )
        assert result.content == "just talk" and not result.tool_calls
    # "none" even with a command.
    none = await PROVIDER.chat(
        request(user('/tool lookup {"ids": [1]}'), tools=TOOLS, tool_choice="none"), MODEL
    )
    assert not none.tool_calls


async def test_allowed_tools_restricts_the_choice() -> None:
    choice = {
        "type": "allowed_tools",
        "allowed_tools": {
            "mode": "required",
            "tools": [{"type": "function", "function": {"name": "lookup"}}],
        },
    }
    result = await PROVIDER.chat(request(user("x"), tools=TOOLS, tool_choice=choice), MODEL)
    assert [c.name for c in result.tool_calls] == ["lookup"]


async def test_parameters_with_no_buildable_arguments_are_a_clear_400() -> None:
    bad = [tool("loop", {"type": "object", "properties": {"x": {"$ref": "#"}}, "required": ["x"]})]
    with pytest.raises(InvalidRequest, match="tools: loop: no arguments can be built"):
        await PROVIDER.chat(request(user("x"), tools=bad, tool_choice="required"), MODEL)


# --- several tool calls in one turn ----------------------------------------------------------

SEVERAL = (
    '/tool get_weather {"city": "Oslo", "unit": "celsius", "days": 1}\n'
    "/tool lookup {\n"
    '  "ids": [1, 2]\n'
    "}\n"
    '/tool get_weather {"city": "Lima", "unit": "celsius", "days": 2}'
)


async def test_several_tool_lines_are_several_calls_whole_and_streamed() -> None:
    whole = await PROVIDER.chat(request(user(SEVERAL), tools=TOOLS), MODEL)
    assert [c.name for c in whole.tool_calls] == ["get_weather", "lookup", "get_weather"]
    assert json.loads(whole.tool_calls[1].arguments) == {"ids": [1, 2]}  # spans lines
    assert len({c.id for c in whole.tool_calls}) == 3
    deltas = await stream(request(user(SEVERAL), tools=TOOLS, stream=True))
    calls: dict[int, dict[str, str]] = {}
    for delta in deltas:
        for part in delta.tool_calls or ():
            got = calls.setdefault(part.index, {"id": "", "name": "", "arguments": ""})
            got["id"] += part.id or ""
            got["name"] += part.name or ""
            got["arguments"] += part.arguments
    assert sorted(calls) == [0, 1, 2]
    assert [calls[i] for i in range(3)] == [
        {"id": c.id, "name": c.name, "arguments": c.arguments} for c in whole.tool_calls
    ]
    assert deltas[-1].finish_reason == "tool_calls"
    # parallel_tool_calls false: one call a turn.
    one = await PROVIDER.chat(request(user(SEVERAL), tools=TOOLS, parallel_tool_calls=False), MODEL)
    assert [c.name for c in one.tool_calls] == ["get_weather"]


async def test_after_several_results_the_text_holds_each() -> None:
    whole = await PROVIDER.chat(request(user(SEVERAL), tools=TOOLS), MODEL)
    results = [
        {"role": "tool", "tool_call_id": c.id, "content": f"result {i}"}
        for i, c in enumerate(whole.tool_calls)
    ]
    final = await PROVIDER.chat(
        request(user(SEVERAL), replies(whole), *results, tools=TOOLS), MODEL
    )
    assert final.content == "\n".join(
        f"tool {c.id} returned: result {i}" for i, c in enumerate(whole.tool_calls)
    )


async def test_a_line_naming_an_unknown_tool_makes_the_message_plain_text() -> None:
    text = '/tool lookup {"ids": [1]}\n/tool unknown {}'
    result = await PROVIDER.chat(request(user(text), tools=TOOLS), MODEL)
    assert result.content == text and not result.tool_calls


async def test_custom_tools_take_free_text() -> None:
    custom = [{"type": "custom", "custom": {"name": "shell"}}]
    result = await PROVIDER.chat(request(user("/tool shell ls -la /tmp"), tools=custom), MODEL)
    [call] = result.tool_calls
    assert (call.type, call.name, call.arguments) == ("custom", "shell", "ls -la /tmp")


# --- n, logprobs, stop, refusals -------------------------------------------------------------


async def test_n_gives_n_identical_choices_and_counts_them() -> None:
    one = await PROVIDER.chat(request(user("same every time")), MODEL)
    three = await PROVIDER.chat(request(user("same every time"), n=3), MODEL)
    assert three.content == one.content
    assert three.usage.completion_tokens == 3 * one.usage.completion_tokens
    assert [c["index"] for c in three.more_choices or ()] == [1, 2]
    for choice in three.more_choices or ():
        assert choice["message"]["content"] == one.content
        assert choice["finish_reason"] == "stop"
    deltas = await stream(request(user("same every time"), n=2, stream=True))
    [other] = deltas[-1].more_choices or []
    assert other["index"] == 1 and other["delta"]["content"] == one.content


async def test_logprobs_are_the_answers_tokens_with_probability_one() -> None:
    text = "Grüße, naïve café — 東京 ok"
    result = await PROVIDER.chat(request(user(text), logprobs=True, top_logprobs=2), MODEL)
    entries = result.logprobs["content"]
    assert len(entries) == result.usage.completion_tokens
    assert bytes(b for e in entries for b in e["bytes"]).decode() == text
    assert all(e["logprob"] == 0.0 and len(e["top_logprobs"]) == 1 for e in entries)
    deltas = await stream(request(user(text), logprobs=True, stream=True))
    pieces = [d for d in deltas if d.content]
    assert "".join(d.content or "" for d in pieces) == text
    streamed = [e for d in pieces for e in d.logprobs["content"]]
    assert [e["bytes"] for e in streamed] == [e["bytes"] for e in entries]
    assert all(e["top_logprobs"] == [] for e in streamed)  # none asked for


async def test_stop_cuts_the_text_at_the_first_stop_sequence() -> None:
    result = await PROVIDER.chat(request(user("one. two. END three"), stop=["END", "two"]), MODEL)
    assert result.content == "one. " and result.finish_reason == "stop"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
        ({"web_search_options": {}}, "web_search_options"),
    ],
)
async def test_what_it_cannot_do_is_named(extra: dict[str, Any], param: str) -> None:
    req = request(user("x"), **extra)
    refusal = PROVIDER.unsupported(req)
    assert isinstance(refusal, Unsupported) and refusal.param == param
    assert refusal.message.startswith("provider det (deterministic) cannot honour")
    with pytest.raises(Unsupported):
        await PROVIDER.chat(req, MODEL)
    assert PROVIDER.unsupported(request(user("x"), n=4, logprobs=True, stop="s")) is None


# --- real clients on the embedded default ----------------------------------------------------
# The flows instructor, pydantic-ai and openai-agents build on, with the official SDK against
# the daemon configured with nothing (the deterministic provider alone), all offline.


class Unit(enum.Enum):
    CELSIUS = "celsius"
    FAHRENHEIT = "fahrenheit"


class Reading(BaseModel):
    at: datetime.datetime
    value: float = Field(ge=-90, le=60)
    unit: Unit


class Station(BaseModel):
    id: uuid.UUID
    name: str
    owner_email: str = Field(json_schema_extra={"format": "email"})
    location: tuple[float, float]
    readings: list[Reading] = Field(min_length=1, max_length=4)
    kind: Literal["manual", "automatic"]
    notes: str | None


class Report(BaseModel):
    title: str
    stations: list[Station]
    summary: Annotated[Station | Reading, Field(union_mode="left_to_right")]


class GetWeather(BaseModel):
    """The weather in a city."""

    city: str
    unit: Unit
    days: int = Field(ge=1, le=7)


class FinalResult(BaseModel):
    """The answer to give the user."""

    answer: str
    confidence: float = Field(ge=0, le=1)
    sources: list[str]


@pytest.fixture
async def offline(tmp_path: Path, start_gateway: GatewayFactory) -> AsyncIterator[AsyncOpenAI]:
    config = validate_config({"version": 1, "daemon": {"state_dir": str(tmp_path / "state")}})
    server = await start_gateway(config)
    sdk = AsyncOpenAI(
        api_key=ADMIN_TOKEN, base_url=str(server.make_url("/v1")), max_retries=0, timeout=20
    )
    yield sdk
    await sdk.close()


async def test_sdk_parse_gives_the_nested_pydantic_model(offline: AsyncOpenAI) -> None:
    messages: list[Any] = [{"role": "user", "content": "report on the stations"}]
    completion = await offline.chat.completions.parse(
        model="deterministic", messages=messages, response_format=Report
    )
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, Report) and parsed.stations
    assert all(isinstance(s.readings[0], Reading) for s in parsed.stations)
    # Streamed, the same answer.
    async with offline.chat.completions.stream(
        model="deterministic", messages=messages, response_format=Report
    ) as events:
        final = await events.get_final_completion()
    assert final.choices[0].message.parsed == parsed


async def test_sdk_named_tool_gives_parsed_arguments(offline: AsyncOpenAI) -> None:
    # instructor's TOOLS mode: one function named in tool_choice, its arguments the answer.
    completion = await offline.chat.completions.parse(
        model="deterministic",
        messages=[{"role": "user", "content": "weather?"}],
        tools=[openai.pydantic_function_tool(GetWeather)],
        tool_choice={"type": "function", "function": {"name": "GetWeather"}},
    )
    [call] = completion.choices[0].message.tool_calls or []
    assert isinstance(call.function.parsed_arguments, GetWeather)


async def test_sdk_tool_loop_required_then_auto_ends_in_text(offline: AsyncOpenAI) -> None:
    tools = [
        openai.pydantic_function_tool(GetWeather),
        openai.pydantic_function_tool(FinalResult, name="final_result"),
    ]
    messages: list[Any] = [{"role": "user", "content": "what should I wear in Oslo?"}]
    first = await offline.chat.completions.parse(
        model="deterministic", messages=messages, tools=tools, tool_choice="required"
    )
    message = first.choices[0].message
    assert first.choices[0].finish_reason == "tool_calls"
    [call] = message.tool_calls or []
    assert isinstance(call.function.parsed_arguments, GetWeather)
    messages += [
        message.model_dump(mode="json", exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "12 C and rain"},
    ]
    # pydantic-ai's output tool: still required, the next tool not yet called is the answer.
    second = await offline.chat.completions.parse(
        model="deterministic", messages=messages, tools=tools, tool_choice="required"
    )
    [final] = second.choices[0].message.tool_calls or []
    assert final.function.name == "final_result"
    assert isinstance(final.function.parsed_arguments, FinalResult)
    # An agent that goes back to auto after its first turn gets text that ends the loop.
    third = await offline.chat.completions.create(
        model="deterministic", messages=messages, tools=tools, tool_choice="auto"
    )
    assert third.choices[0].finish_reason == "stop"
    assert third.choices[0].message.content == f"tool {call.id} returned: 12 C and rain"


async def test_sdk_streams_several_tool_calls(offline: AsyncOpenAI) -> None:
    tools: list[Any] = [{"type": "function", "function": {"name": n}} for n in ("a", "b")]
    text = '/tool a {"x": 1}\n/tool b {"y": 2}\n/tool a {}'
    calls: dict[int, dict[str, str]] = {}
    finish = None
    stream = await offline.chat.completions.create(
        model="deterministic",
        messages=[{"role": "user", "content": text}],
        tools=tools,
        stream=True,
    )
    async for chunk in stream:
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for part in choice.delta.tool_calls or ():
                got = calls.setdefault(part.index, {"name": "", "arguments": ""})
                got["name"] += (part.function and part.function.name) or ""
                got["arguments"] += (part.function and part.function.arguments) or ""
    assert finish == "tool_calls"
    assert calls == {
        0: {"name": "a", "arguments": '{"x":1}'},
        1: {"name": "b", "arguments": '{"y":2}'},
        2: {"name": "a", "arguments": "{}"},
    }


async def test_sdk_gets_n_choices_and_logprobs(offline: AsyncOpenAI) -> None:
    completion = await offline.chat.completions.create(
        model="deterministic",
        messages=[{"role": "user", "content": "twice, with logprobs"}],
        n=2,
        logprobs=True,
        top_logprobs=3,
    )
    assert [c.index for c in completion.choices] == [0, 1]
    for choice in completion.choices:
        assert choice.message.content == "twice, with logprobs"
        assert choice.logprobs is not None and choice.logprobs.content
        assert "".join(t.token for t in choice.logprobs.content) == "twice, with logprobs"
        assert all(t.logprob == 0.0 for t in choice.logprobs.content)
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 2 * len(completion.choices[0].logprobs.content)


class Forecast(BaseModel):
    city: str
    celsius: float
    advice: str


@pytest.mark.parametrize("api", ["responses", "chat_completions"])
async def test_an_openai_agents_agent_calls_its_tool_then_answers_in_its_type(
    offline: AsyncOpenAI, api: str
) -> None:
    agents = pytest.importorskip("agents")
    agents.set_tracing_disabled(True)
    asked: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        asked.append(city)
        return f"12 C in {city}"

    model_class = (
        agents.OpenAIResponsesModel if api == "responses" else agents.OpenAIChatCompletionsModel
    )
    agent = agents.Agent(
        name="weather",
        instructions="Help with the weather.",
        tools=[get_weather],
        # Forced at first; the SDK goes back to auto once a tool was used, so the run ends.
        model_settings=agents.ModelSettings(tool_choice="required"),
        model=model_class(model="deterministic", openai_client=offline),
        output_type=Forecast,
    )
    result = await agents.Runner.run(agent, "what should I wear in Oslo?")
    assert len(asked) == 1
    assert isinstance(result.final_output, Forecast)
