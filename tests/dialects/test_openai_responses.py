"""`/v1/responses` with the official `openai` SDK (and openai-agents) as the client, on every
provider kind: the deterministic provider, an OpenAI-compatible and an Anthropic provider on
the fake upstream (served by translation onto chat), and an OpenAI-compatible provider with
`responses_passthrough` (the upstream's own `/v1/responses`)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp.test_utils import TestServer
from openai import AsyncOpenAI
from openai.types.responses import (
    FunctionToolParam,
    ResponseFunctionToolCall,
    ResponseInputMessageItem,
    ResponseInputParam,
    ResponseInputText,
    ResponseOutputMessage,
)
from pydantic import BaseModel

from tests.conftest import ADMIN_TOKEN, PASS, GatewayFactory, responses_config
from tests.fakes.upstream import ChatReply, ErrorReply, FakeUpstream

MODELS = ["deterministic", "gpt-4o-mini", "claude", PASS]
PROVIDER_OF = {"deterministic": "det", "gpt-4o-mini": "oai", "claude": "claude", PASS: "oai-pass"}
# Where each model's requests land on the fake upstream (the deterministic one: nowhere).
UPSTREAM_PATH = {
    "gpt-4o-mini": "/v1/chat/completions",
    "claude": "/v1/messages",
    PASS: "/v1/responses",
}
WEATHER: FunctionToolParam = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}
ASK_WEATHER = '/tool get_weather {"city": "Oslo"}'


@pytest.fixture
async def server(
    upstream: FakeUpstream, tmp_path: Path, start_gateway: GatewayFactory
) -> TestServer:
    config = responses_config(upstream, tmp_path / "state", failover_enabled=False, max_retries=0)
    return await start_gateway(config)


@pytest.fixture
async def sdk(server: TestServer) -> AsyncIterator[AsyncOpenAI]:
    client = AsyncOpenAI(
        api_key=ADMIN_TOKEN, base_url=str(server.make_url("/v1")), max_retries=0, timeout=20
    )
    yield client
    await client.close()


class Forecast(BaseModel):
    city: str
    celsius: float
    windy: bool


def input_text(item: Any) -> str:
    """The text of a listed input message (`ResponseInputMessageItem`)."""
    assert isinstance(item, ResponseInputMessageItem)
    part = item.content[0]
    assert isinstance(part, ResponseInputText)
    return part.text


def upstream_bodies(upstream: FakeUpstream, model: str) -> list[dict[str, Any]]:
    path = UPSTREAM_PATH.get(model)
    return [] if path is None else [r.json for r in upstream.requests_to(path)]


# --- whole answers ---------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
async def test_create_with_a_string_and_with_items(
    sdk: AsyncOpenAI, upstream: FakeUpstream, model: str
) -> None:
    raw = await sdk.responses.with_raw_response.create(
        model=model, input="hello there", instructions="Answer briefly.", metadata={"k": "v"}
    )
    assert raw.headers["x-palyra-provider-id"] == PROVIDER_OF[model]
    assert raw.headers["x-palyra-model-id"] == model
    answer = raw.parse()
    assert answer.id.startswith("resp_") and len(answer.id) == len("resp_") + 32
    assert answer.object == "response" and answer.status == "completed"
    assert answer.model == model
    assert "hello there" in answer.output_text
    assert answer.instructions == "Answer briefly." and answer.metadata == {"k": "v"}
    assert answer.model_extra is not None and answer.model_extra["store"] is True
    assert answer.usage is not None
    assert answer.usage.input_tokens > 0 and answer.usage.output_tokens > 0
    assert answer.usage.total_tokens == answer.usage.input_tokens + answer.usage.output_tokens
    assert answer.usage.input_tokens_details.cached_tokens == 0
    assert answer.usage.output_tokens_details.reasoning_tokens == 0
    message = answer.output[-1]
    assert isinstance(message, ResponseOutputMessage) and message.status == "completed"

    items: ResponseInputParam = [
        {"role": "developer", "content": "Be kind."},
        {"role": "user", "content": [{"type": "input_text", "text": "first part"}]},
        {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "the question"}],
        },
    ]
    answer = await sdk.responses.create(model=model, input=items)
    assert "the question" in answer.output_text
    if model == PASS:
        sent = upstream_bodies(upstream, model)[-1]
        assert sent["input"] == items and sent["store"] is False
        assert sent["model"] == "gpt-4o-mini"
    elif model in UPSTREAM_PATH:
        # Translated: the developer message and both user messages reached the upstream.
        assert "Be kind." in json.dumps(upstream_bodies(upstream, model)[-1])


@pytest.mark.parametrize("model", MODELS)
async def test_function_tool_round_trip(
    sdk: AsyncOpenAI, upstream: FakeUpstream, model: str
) -> None:
    called = await sdk.responses.create(
        model=model, input=ASK_WEATHER, tools=[WEATHER], tool_choice="auto"
    )
    call = called.output[-1]
    assert isinstance(call, ResponseFunctionToolCall)
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Oslo"}
    assert call.id is not None and call.status == "completed"
    assert called.tools[0].type == "function"  # echoed as asked
    answered = await sdk.responses.create(
        model=model,
        input=[
            {"role": "user", "content": ASK_WEATHER},
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 C"},
        ],
        tools=[WEATHER],
    )
    assert answered.status == "completed"
    if model in ("deterministic", PASS):
        assert "sunny, 21 C" in answered.output_text
    sent = json.dumps(upstream_bodies(upstream, model)[-1:])
    if model in UPSTREAM_PATH:
        # The call and its output went upstream as the upstream's own tool call and result.
        assert call.call_id in sent and "sunny, 21 C" in sent


@pytest.mark.parametrize("model", MODELS)
async def test_json_schema_text_format(
    sdk: AsyncOpenAI, upstream: FakeUpstream, model: str
) -> None:
    if model == "gpt-4o-mini":
        # The fake's chat route answers JSON for json_object only: the model's part, scripted.
        upstream.script("/v1/chat/completions", ChatReply('{"echo": "give me json"}'))
    schema = {
        "type": "object",
        "properties": {"echo": {"type": "string"}},
        "required": ["echo"],
        "additionalProperties": False,
    }
    answer = await sdk.responses.create(
        model=model,
        # (The fake Anthropic's forced answer call takes its input from a /tool command.)
        input='/tool echo {"echo": "give me json"}',
        text={"format": {"type": "json_schema", "name": "echo", "schema": schema, "strict": True}},
    )
    assert isinstance(json.loads(answer.output_text)["echo"], str), answer.output_text
    assert answer.text is not None and answer.text.format is not None
    assert answer.text.format.type == "json_schema"
    if model == "deterministic":
        # The SDK's own structured outputs, on the provider that answers the schema offline.
        parsed = await sdk.responses.parse(model=model, input="weather?", text_format=Forecast)
        assert isinstance(parsed.output_parsed, Forecast)
    if model == "gpt-4o-mini":
        sent = upstream.requests_to("/v1/chat/completions")[-1].json["response_format"]
        assert sent == {
            "type": "json_schema",
            "json_schema": {"name": "echo", "schema": schema, "strict": True},
        }


async def test_parameters_reach_the_chat_upstream(sdk: AsyncOpenAI, upstream: FakeUpstream) -> None:
    await sdk.responses.create(
        model="gpt-4o-mini",
        input="hi",
        max_output_tokens=64,
        temperature=0.5,
        top_p=0.9,
        parallel_tool_calls=False,
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
        reasoning={"effort": "low", "summary": "auto"},
        text={"format": {"type": "json_object"}, "verbosity": "low"},
        user="u-1",
        metadata={"never": "upstream"},
        include=["reasoning.encrypted_content"],
        truncation="auto",
    )
    sent = upstream.requests_to("/v1/chat/completions")[-1].json
    assert sent["max_completion_tokens"] == 64
    assert (sent["temperature"], sent["top_p"], sent["parallel_tool_calls"]) == (0.5, 0.9, False)
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    assert sent["tools"][0]["function"]["strict"] is True
    assert sent["reasoning_effort"] == "low"
    assert sent["response_format"] == {"type": "json_object"} and sent["verbosity"] == "low"
    assert sent["user"] == "u-1"
    for absent in ("metadata", "include", "truncation", "input", "instructions"):
        assert absent not in sent


# --- streams ---------------------------------------------------------------------------------

TEXT_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]
CALL_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
    "response.output_item.done",
    "response.completed",
]


def squeezed(kinds: list[str]) -> list[str]:
    """The event kinds with runs of the same kind (deltas) as one."""
    return [k for i, k in enumerate(kinds) if i == 0 or kinds[i - 1] != k]


@pytest.mark.parametrize("model", MODELS)
async def test_stream_events_in_order(sdk: AsyncOpenAI, model: str) -> None:
    kinds: list[str] = []
    sequence: list[int] = []
    async with sdk.responses.stream(model=model, input="stream this answer please") as stream:
        async for event in stream:
            kinds.append(event.type)
            sequence.append(event.sequence_number)
        final = await stream.get_final_response()
    assert squeezed(kinds) == TEXT_EVENTS
    assert sequence == list(range(len(kinds)))
    assert "stream this answer please" in final.output_text
    assert final.usage is not None and final.usage.output_tokens > 0
    # Stored before its last event left: readable at once.
    stored = await sdk.responses.retrieve(final.id)
    assert stored.output_text == final.output_text and stored.status == "completed"

    kinds = []
    async with sdk.responses.stream(model=model, input=ASK_WEATHER, tools=[WEATHER]) as stream:
        async for event in stream:
            kinds.append(event.type)
        final = await stream.get_final_response()
    assert squeezed(kinds) == CALL_EVENTS
    call = final.output[-1]
    assert isinstance(call, ResponseFunctionToolCall)
    assert json.loads(call.arguments) == {"city": "Oslo"}


async def test_stream_reasoning_as_summary_events(sdk: AsyncOpenAI, upstream: FakeUpstream) -> None:
    upstream.script("/v1/chat/completions", ChatReply("the answer", reasoning="first I thought"))
    kinds: list[str] = []
    async with sdk.responses.stream(model="gpt-4o-mini", input="think") as stream:
        async for event in stream:
            kinds.append(event.type)
        final = await stream.get_final_response()
    assert squeezed(kinds)[:7] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
    ]
    reasoning = final.output[0]
    assert reasoning.type == "reasoning" and reasoning.summary[0].text == "first I thought"
    assert final.output_text == "the answer"


@pytest.mark.parametrize("model", ["gpt-4o-mini", PASS])
async def test_stream_failing_midway_ends_with_error_and_failed(
    sdk: AsyncOpenAI, upstream: FakeUpstream, model: str
) -> None:
    upstream.script(
        UPSTREAM_PATH[model], ChatReply("one two three four five", error_event_after_chunks=6)
    )
    kinds: list[str] = []
    sequence: list[int] = []
    stream = await sdk.responses.create(model=model, input="hi", stream=True)
    async for event in stream:
        kinds.append(event.type)
        sequence.append(event.sequence_number)
    assert kinds[-2:] == ["error", "response.failed"]
    assert "response.completed" not in kinds
    assert sequence == list(range(len(kinds)))


# --- stored responses ------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
async def test_previous_response_id_over_three_turns(
    sdk: AsyncOpenAI, upstream: FakeUpstream, model: str
) -> None:
    first = await sdk.responses.create(model=model, input="my name is Ada", instructions="one")
    second = await sdk.responses.create(
        model=model, input="what is my name", previous_response_id=first.id
    )
    third = await sdk.responses.create(
        model=model,
        input=[{"role": "user", "content": "say it again"}],
        previous_response_id=second.id,
    )
    assert "say it again" in third.output_text
    assert third.previous_response_id == second.id
    assert first.usage and second.usage and third.usage
    assert first.usage.input_tokens < second.usage.input_tokens < third.usage.input_tokens
    if model in UPSTREAM_PATH:
        sent = json.dumps(upstream_bodies(upstream, model)[-1])
        for said in ("my name is Ada", first.output_text, "what is my name", "say it again"):
            assert json.dumps(said)[1:-1] in sent
        # Instructions are not carried over from an earlier response, as in the API.
        assert '"one"' not in sent
    if model == PASS:
        body = upstream_bodies(upstream, model)[-1]
        assert "previous_response_id" not in body and body["store"] is False
        assert len(body["input"]) == 5  # two turns of question and answer, and the new one
    stored = await sdk.responses.retrieve(second.id)
    assert stored.previous_response_id == first.id and stored.output_text == second.output_text
    # The whole input the third answer was given, newest first, as the API lists it.
    items = await sdk.responses.input_items.list(third.id)
    assert [item.type for item in items.data] == ["message"] * 5
    assert input_text(items.data[0]) == "say it again"
    assert input_text(items.data[-1]) == "my name is Ada"


async def test_retrieve_input_items_and_delete(sdk: AsyncOpenAI) -> None:
    answer = await sdk.responses.create(
        model="deterministic",
        input=[
            {"role": "user", "content": "one"},
            {"role": "user", "content": [{"type": "input_text", "text": "two"}]},
            {"role": "user", "content": "three"},
        ],
    )
    got = await sdk.responses.retrieve(answer.id)
    assert got.model_dump() == answer.model_dump()

    page = await sdk.responses.input_items.list(answer.id, limit=2, order="asc")
    texts = [input_text(item) for item in page.data]
    assert texts == ["one", "two"] and page.has_more is True
    rest = await sdk.responses.input_items.list(
        answer.id, limit=2, order="asc", after=page.data[-1].id
    )
    assert [input_text(i) for i in rest.data] == ["three"]
    assert rest.has_more is False
    every = [item.id async for item in sdk.responses.input_items.list(answer.id, limit=1)]
    assert len(every) == 3 and len(set(every)) == 3
    newest_first = await sdk.responses.input_items.list(answer.id)
    assert input_text(newest_first.data[0]) == "three"

    await sdk.responses.delete(answer.id)
    with pytest.raises(openai.NotFoundError) as info:
        await sdk.responses.retrieve(answer.id)
    assert info.value.body == {
        "message": f"Response with id '{answer.id}' not found.",
        "type": "invalid_request_error",
        "code": None,
        "param": None,
    }
    with pytest.raises(openai.NotFoundError):
        await sdk.responses.delete(answer.id)
    with pytest.raises(openai.NotFoundError):
        await sdk.responses.input_items.list(answer.id)
    with pytest.raises(openai.BadRequestError) as chained:
        await sdk.responses.create(
            model="deterministic", input="hi", previous_response_id=answer.id
        )
    assert chained.value.code == "previous_response_not_found"


@pytest.mark.parametrize("model", ["deterministic", PASS])
async def test_item_references_name_stored_items(
    sdk: AsyncOpenAI, upstream: FakeUpstream, model: str
) -> None:
    called = await sdk.responses.create(model=model, input=ASK_WEATHER, tools=[WEATHER])
    call = called.output[-1]
    assert isinstance(call, ResponseFunctionToolCall) and call.id is not None
    answered = await sdk.responses.create(
        model=model,
        input=[
            {"role": "user", "content": ASK_WEATHER},
            {"type": "item_reference", "id": call.id},
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
        ],
        tools=[WEATHER],
    )
    assert "sunny" in answered.output_text
    if model == PASS:
        sent = upstream.requests_to("/v1/responses")[-1].json["input"]
        assert sent[1]["type"] == "function_call" and sent[1]["call_id"] == call.call_id


@pytest.mark.parametrize("model", ["gpt-4o-mini", PASS])
async def test_reasoning_echoed_back_is_taken(
    sdk: AsyncOpenAI, upstream: FakeUpstream, model: str
) -> None:
    upstream.script(UPSTREAM_PATH[model], ChatReply("the answer", reasoning="first I thought"))
    first = await sdk.responses.create(model=model, input="think")
    reasoning = first.output[0]
    assert reasoning.type == "reasoning" and reasoning.summary[0].text == "first I thought"
    # Chained: the upstream keeps nothing, so reasoning without its encrypted content stays
    # behind; the answer it led to goes on.
    await sdk.responses.create(model=model, input="and then?", previous_response_id=first.id)
    # Echoed back by the client: taken, and sent only where it can go.
    echoed = [item.model_dump(exclude_none=True) for item in first.output]
    await sdk.responses.create(
        model=model,
        input=[{"role": "user", "content": "think"}, *echoed],  # type: ignore[list-item]
    )
    chained, sent_back = upstream_bodies(upstream, model)[-2:]
    if model == PASS:
        assert [i.get("type") for i in chained["input"]] == ["message", "message", "message"]
        assert sent_back["input"][1]["type"] == "reasoning"
    else:
        assert "first I thought" not in json.dumps([chained, sent_back])
        assert "the answer" in json.dumps(chained) and "the answer" in json.dumps(sent_back)


async def test_store_false_is_not_stored(sdk: AsyncOpenAI) -> None:
    answer = await sdk.responses.create(model="deterministic", input="hi", store=False)
    assert answer.model_extra is not None and answer.model_extra["store"] is False
    with pytest.raises(openai.NotFoundError):
        await sdk.responses.retrieve(answer.id)


async def test_stored_responses_outlive_the_daemon(
    upstream: FakeUpstream, tmp_path: Path, start_gateway: GatewayFactory
) -> None:
    config = responses_config(upstream, tmp_path / "state")
    first = await start_gateway(config)
    client = AsyncOpenAI(api_key=ADMIN_TOKEN, base_url=str(first.make_url("/v1")), max_retries=0)
    answer = await client.responses.create(model="deterministic", input="remember me")
    await client.close()
    await first.close()  # written to the state store on the way down
    second = await start_gateway(config)
    client = AsyncOpenAI(api_key=ADMIN_TOKEN, base_url=str(second.make_url("/v1")), max_retries=0)
    stored = await client.responses.retrieve(answer.id)
    follow = await client.responses.create(
        model="deterministic", input="and now", previous_response_id=answer.id
    )
    await client.close()
    assert stored.output_text == answer.output_text
    assert follow.usage and answer.usage and follow.usage.input_tokens > answer.usage.input_tokens


# --- what cannot be served ----------------------------------------------------------------


@pytest.mark.parametrize("model", ["deterministic", "gpt-4o-mini", "claude"])
async def test_built_in_tools_and_unknown_parameters_are_named(
    sdk: AsyncOpenAI, model: str
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await sdk.responses.create(model=model, input="hi", tools=[{"type": "web_search"}])
    assert "'web_search'" in info.value.message
    assert f"provider {PROVIDER_OF[model]}" in info.value.message
    with pytest.raises(openai.BadRequestError) as unknown:
        await sdk.responses.create(model=model, input="hi", extra_body={"frobnicate": 1})
    assert "'frobnicate'" in unknown.value.message
    assert unknown.value.param == "frobnicate"


async def test_pass_through_takes_what_translation_cannot(
    sdk: AsyncOpenAI, upstream: FakeUpstream
) -> None:
    answer = await sdk.responses.create(
        model=PASS, input="hi", tools=[{"type": "web_search"}], extra_body={"frobnicate": 1}
    )
    assert answer.output_text == "echo: hi"
    sent = upstream.requests_to("/v1/responses")[-1].json
    assert sent["tools"] == [{"type": "web_search"}] and sent["frobnicate"] == 1


async def test_bad_input_is_named(sdk: AsyncOpenAI) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"input": 5}, "input must be a string or a list of items"),
        ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role must be"),
        ({"input": [{"type": "function_call", "name": "f"}]}, "input[0].call_id must be a string"),
        ({"input": "x", "max_output_tokens": "many"}, "max_output_tokens"),
        ({"input": "x", "tools": [{"type": "function", "name": "bad name!"}]}, "tools[0].name"),
        ({"input": "x", "text": {"format": {"type": "yaml"}}}, "text.format.type must be"),
        ({"input": "x", "background": True}, "background"),
        ({"input": "x", "metadata": {str(n): "v" for n in range(17)}}, "metadata"),
        ({"input": "x", "metadata": {"k": "v" * 513}}, "at most 512 characters"),
        ({"input": "x", "conversation": "conv_1"}, "previous_response_id"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "'msg_1' names no stored"),
    ]
    for body, expected in cases:
        with pytest.raises(openai.BadRequestError) as info:
            await sdk.post("/responses", body={"model": "deterministic", **body}, cast_to=object)
        assert expected in info.value.message, body
        assert ".str" not in info.value.message


# --- routing -------------------------------------------------------------------------------


@pytest.mark.parametrize("primary", ["gpt-4o-mini", PASS])
@pytest.mark.parametrize("stream", [False, True])
async def test_failover_to_another_provider(
    upstream: FakeUpstream,
    tmp_path: Path,
    start_gateway: GatewayFactory,
    primary: str,
    stream: bool,
) -> None:
    config = responses_config(upstream, tmp_path / "state", failover_enabled=True, max_retries=0)
    server = await start_gateway(config)
    upstream.script(UPSTREAM_PATH[primary], ErrorReply(503))
    client = AsyncOpenAI(api_key=ADMIN_TOKEN, base_url=str(server.make_url("/v1")), max_retries=0)
    try:
        if stream:
            async with client.responses.with_streaming_response.create(
                model=primary, input="hello", stream=True
            ) as raw:
                headers = raw.headers
                kinds = [line async for line in raw.iter_lines() if line.startswith("event: ")]
            assert kinds[-1] == "event: response.completed"
        else:
            raw_whole = await client.responses.with_raw_response.create(
                model=primary, input="hello"
            )
            headers = raw_whole.headers
            assert raw_whole.parse().output_text == "hello"
    finally:
        await client.close()
    assert headers["x-palyra-failover-count"] == "1"
    assert headers["x-palyra-provider-id"] == "det"  # the first other provider configured
    assert headers["x-palyra-model-id"] == "deterministic"
    assert len(upstream.requests_to(UPSTREAM_PATH[primary])) == 1


async def test_retried_on_the_same_pass_through_provider(
    upstream: FakeUpstream, tmp_path: Path, start_gateway: GatewayFactory
) -> None:
    config = responses_config(
        upstream, tmp_path / "state", failover_enabled=False, max_retries=1, retry_backoff_ms=1
    )
    server = await start_gateway(config)
    upstream.script("/v1/responses", ErrorReply(429, retry_after="0"))
    client = AsyncOpenAI(api_key=ADMIN_TOKEN, base_url=str(server.make_url("/v1")), max_retries=0)
    raw = await client.responses.with_raw_response.create(model=PASS, input="hi")
    await client.close()
    assert raw.headers["x-palyra-retry-count"] == "1"
    assert raw.parse().output_text == "echo: hi"


# --- openai-agents ---------------------------------------------------------------------------


async def test_openai_agents_runs_an_agent_with_a_function_tool(sdk: AsyncOpenAI) -> None:
    from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled

    set_tracing_disabled(True)  # nothing leaves the machine
    asked: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        asked.append(city)
        return f"sunny in {city}"

    # The deterministic provider calls a tool when the last user message is
    # `/tool NAME {json}`, and answers in text once the tool's output is back.
    agent = Agent(
        name="weather",
        instructions="Answer with the weather.",
        tools=[get_weather],
        model=OpenAIResponsesModel(model="deterministic", openai_client=sdk),
    )
    result = await Runner.run(agent, ASK_WEATHER)
    assert asked == ["Oslo"]
    assert "sunny in Oslo" in result.final_output
    # Streamed: the agent reads the typed events as they come.
    streamed = Runner.run_streamed(agent, ASK_WEATHER)
    kinds = {event.type async for event in streamed.stream_events()}
    assert asked == ["Oslo", "Oslo"]
    assert "sunny in Oslo" in streamed.final_output
    assert {"raw_response_event", "run_item_stream_event"} <= kinds


@pytest.mark.parametrize("stream", [False, True])
async def test_a_request_only_pass_through_can_carry_skips_to_a_candidate_that_can(
    upstream: FakeUpstream, tmp_path: Path, start_gateway: GatewayFactory, stream: bool
) -> None:
    # Found in review: a built-in tool refused by the translating primary ended the request
    # with a 400, although its fallback passes the request through and can serve it.
    config = responses_config(upstream, tmp_path / "state", max_retries=0)
    for model in config.model_provider.models:
        if model.model_id == "gpt-4o-mini":
            model.fallbacks = [PASS]
    server = await start_gateway(config)
    body = {
        "model": "gpt-4o-mini",
        "input": "search for it",
        "tools": [{"type": "web_search"}],
        "stream": stream,
    }
    async with aiohttp.ClientSession() as http:
        async with http.post(
            server.make_url("/v1/responses"),
            json=body,
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        ) as answer:
            assert answer.status == 200, await answer.text()
            # Skipped before anything was sent: no failover, and nothing reached chat.
            assert answer.headers["x-palyra-provider-id"] == "oai-pass"
            assert answer.headers["x-palyra-failover-count"] == "0"
            await answer.read()
    assert not upstream.requests_to("/v1/chat/completions")
    assert upstream.requests_to("/v1/responses")[-1].json["tools"] == [{"type": "web_search"}]
    # With no candidate that can carry it, the answer is the translator's 400, naming it.
    for model in config.model_provider.models:
        if model.model_id == "gpt-4o-mini":
            model.fallbacks = ["deterministic"]
    server = await start_gateway(config)
    async with aiohttp.ClientSession() as http:
        async with http.post(
            server.make_url("/v1/responses"),
            json={**body, "stream": False},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        ) as answer:
            assert answer.status == 400
            error = (await answer.json())["error"]
    assert "web_search" in error["message"] and "provider oai" in error["message"], error
