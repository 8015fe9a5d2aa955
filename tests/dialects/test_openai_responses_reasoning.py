"""`/v1/responses` tool loops with reasoning on an Anthropic provider (translated), through the
official openai SDK and openai-agents against the gateway and the fake upstream.

With thinking enabled, Anthropic takes an assistant turn that called a tool back only when it
starts with the signed thinking blocks that led to the call (the fake holds requests to that
rule, as the real API does). The reasoning output item carries them as its
`encrypted_content` (Palyra's format: a prefix, then base64 of JSON): stored always, shown
when `include` asks for `reasoning.encrypted_content`, and read back from `input` items, from
the stored chain of `previous_response_id`, and from the store by the reasoning item's id.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp.test_utils import TestServer
from openai import AsyncOpenAI
from openai.types.responses import FunctionToolParam, Response, ResponseFunctionToolCall

from palyra.dialects.responses_reasoning import REASONING_STATE_PREFIX
from tests.conftest import ADMIN_TOKEN, PASS, GatewayFactory, responses_config
from tests.fakes.anthropic_wire import REDACTED_DATA, REDACTED_THINKING_TRIGGER
from tests.fakes.upstream import ChatReply, FakeUpstream

WEATHER: FunctionToolParam = {
    "type": "function",
    "name": "get_weather",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}
ASK = '/tool get_weather {"city": "Paris"}'
# The fake calls a tool when a tool's result is a /tool line: the first call's result asks
# for a second call, whose result the model answers with. Three turns, two of them tool calls.
RESULTS = ['/tool get_weather {"city": "Rome"}', "sunny"]
ENCRYPTED = "reasoning.encrypted_content"


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


def blocks_of(encrypted: str | None) -> list[dict[str, Any]]:
    """The thinking blocks in Palyra's `encrypted_content` (the format the docs give)."""
    assert encrypted is not None and encrypted.startswith(REASONING_STATE_PREFIX)
    blocks = json.loads(base64.b64decode(encrypted.removeprefix(REASONING_STATE_PREFIX)))
    assert isinstance(blocks, list)
    return blocks


async def whole(sdk: AsyncOpenAI, **params: Any) -> tuple[Response, None]:
    return await sdk.responses.create(**params), None


async def streamed(sdk: AsyncOpenAI, **params: Any) -> tuple[Response, list[Any]]:
    """The final response of a stream, and the `response.output_item.done` events."""
    done: list[Any] = []
    final: Response | None = None
    stream = await sdk.responses.create(**params, stream=True)
    async for event in stream:
        if event.type == "response.output_item.done":
            done.append(event.item)
        elif event.type == "response.completed":
            final = event.response
    assert final is not None
    return final, done


TURNS = {"whole": whole, "streamed": streamed}


def called(answer: Response) -> ResponseFunctionToolCall:
    kinds = [item.type for item in answer.output]
    assert kinds == ["reasoning", "function_call"], kinds
    call = answer.output[1]
    assert isinstance(call, ResponseFunctionToolCall) and call.name == "get_weather"
    return call


def assert_sent_with_thinking(upstream: FakeUpstream, turns: int) -> None:
    """What Anthropic was sent last: each assistant turn opened with its signed thinking."""
    sent = upstream.requests_to("/v1/messages")[-1].json
    assert sent["thinking"]["type"] == "enabled"
    assistants = [m for m in sent["messages"] if m["role"] == "assistant"]
    assert len(assistants) == turns
    for turn in assistants:
        assert [b["type"] for b in turn["content"]] == ["thinking", "tool_use"]
        assert turn["content"][0]["signature"]


@pytest.mark.parametrize("mode", TURNS)
async def test_a_tool_loop_chained_with_previous_response_id(
    sdk: AsyncOpenAI, upstream: FakeUpstream, mode: str
) -> None:
    turn = TURNS[mode]
    params: dict[str, Any] = {"model": "claude", "tools": [WEATHER], "reasoning": {"effort": "low"}}
    answer, done = await turn(sdk, input=ASK, **params)
    first = answer
    for result in RESULTS:
        call = called(answer)
        reasoning = answer.output[0]
        assert reasoning.type == "reasoning"
        assert reasoning.summary[0].text.startswith("thinking about: ")
        # Not asked for with `include`: not shown (it is kept in the stored response).
        assert reasoning.encrypted_content is None
        if done is not None:
            assert done[0].type == "reasoning" and done[0].encrypted_content is None
        output = {"type": "function_call_output", "call_id": call.call_id, "output": result}
        # (Before the fix the second turn was the upstream's 400: the assistant turn came
        # back without the thinking that led to its call.)
        answer, done = await turn(sdk, input=[output], previous_response_id=answer.id, **params)
    assert answer.output_text == "echo: sunny"
    assert_sent_with_thinking(upstream, turns=2)

    # Kept in the stored response: shown on retrieval when asked for, as the API does.
    stored = await sdk.responses.retrieve(first.id)
    assert stored.output[0].type == "reasoning"
    assert stored.output[0].encrypted_content is None
    shown = await sdk.responses.retrieve(first.id, include=[ENCRYPTED])
    assert shown.output[0].type == "reasoning"
    (block,) = blocks_of(shown.output[0].encrypted_content)
    assert block["type"] == "thinking" and block["thinking"] == f"thinking about: {ASK}"
    assert block["signature"]
    listed = await sdk.responses.input_items.list(answer.id, order="asc")
    reasonings = [item for item in listed.data if item.type == "reasoning"]
    assert len(reasonings) == 2 and all(r.encrypted_content is None for r in reasonings)  # type: ignore[union-attr]
    listed = await sdk.responses.input_items.list(answer.id, order="asc", include=[ENCRYPTED])
    reasonings = [item for item in listed.data if item.type == "reasoning"]
    assert all(blocks_of(r.encrypted_content) for r in reasonings)  # type: ignore[union-attr]


@pytest.mark.parametrize("mode", TURNS)
async def test_a_stateless_tool_loop_sends_the_items_back(
    sdk: AsyncOpenAI, upstream: FakeUpstream, mode: str
) -> None:
    turn = TURNS[mode]
    params: dict[str, Any] = {
        "model": "claude",
        "tools": [WEATHER],
        "reasoning": {"effort": "low"},
        "store": False,
        "include": [ENCRYPTED],
    }
    items: list[Any] = [{"role": "user", "content": ASK}]
    answer, done = await turn(sdk, input=items, **params)
    for result in RESULTS:
        call = called(answer)
        reasoning = answer.output[0]
        assert reasoning.type == "reasoning"
        (block,) = blocks_of(reasoning.encrypted_content)
        assert block["thinking"] == reasoning.summary[0].text and block["signature"]
        if done is not None:
            # Streamed: the reasoning item's output_item.done carries it, as the final does.
            assert done[0].type == "reasoning"
            assert done[0].encrypted_content == reasoning.encrypted_content
        # The output items as a client keeps them (openai-agents dumps them the same way).
        items += [item.model_dump(exclude_none=True) for item in answer.output]
        items.append({"type": "function_call_output", "call_id": call.call_id, "output": result})
        answer, done = await turn(sdk, input=items, **params)
    assert answer.output_text == "echo: sunny"
    assert_sent_with_thinking(upstream, turns=2)
    # Nothing was stored: the state came back in the items only.
    with pytest.raises(openai.NotFoundError):
        await sdk.responses.retrieve(answer.id)


@pytest.mark.parametrize("mode", TURNS)
async def test_redacted_thinking_goes_back_too(
    sdk: AsyncOpenAI, upstream: FakeUpstream, mode: str
) -> None:
    turn = TURNS[mode]
    params: dict[str, Any] = {
        "model": "claude",
        "tools": [WEATHER],
        "reasoning": {"effort": "low"},
        "instructions": REDACTED_THINKING_TRIGGER,
        "include": [ENCRYPTED],
    }
    first, _ = await turn(sdk, input=ASK, **params)
    call = called(first)
    reasoning = first.output[0]
    assert reasoning.type == "reasoning"
    thinking, redacted = blocks_of(reasoning.encrypted_content)
    assert thinking["type"] == "thinking" and thinking["signature"]
    assert redacted == {"type": "redacted_thinking", "data": REDACTED_DATA}
    # The redacted block has no text: the summary is the thinking block's alone.
    assert [part.text for part in reasoning.summary] == [thinking["thinking"]]
    output = {"type": "function_call_output", "call_id": call.call_id, "output": "cloudy"}
    final, _ = await turn(sdk, input=[output], previous_response_id=first.id, **params)
    assert final.output_text == "echo: cloudy"
    sent = upstream.requests_to("/v1/messages")[-1].json["messages"][1]["content"]
    assert sent == [thinking, redacted, sent[2]] and sent[2]["type"] == "tool_use"


@pytest.mark.parametrize("stream", [False, True])
async def test_redacted_thinking_alone_is_a_reasoning_item_without_summary(
    sdk: AsyncOpenAI, upstream: FakeUpstream, stream: bool
) -> None:
    # A thinking model may answer with nothing but encrypted reasoning: no text to summarise,
    # and still state to carry.
    from tests.fakes.anthropic_wire import ClaudeReply

    upstream.script("/v1/messages", ClaudeReply("the answer", redacted_thinking=True))
    params: dict[str, Any] = {"model": "claude", "input": "hi", "include": [ENCRYPTED]}
    answer, done = await (streamed if stream else whole)(sdk, **params)
    reasoning = answer.output[0]
    assert reasoning.type == "reasoning" and reasoning.summary == []
    assert blocks_of(reasoning.encrypted_content) == [
        {"type": "redacted_thinking", "data": REDACTED_DATA}
    ]
    assert answer.output_text == "the answer"
    if done is not None:
        assert done[0].encrypted_content == reasoning.encrypted_content


async def test_items_sent_back_by_id_find_their_state_in_the_store(
    sdk: AsyncOpenAI, upstream: FakeUpstream
) -> None:
    # What openai-agents sends by default (store on, no include): the output items again, the
    # reasoning item without encrypted content. As the API does with a stored response, the
    # reasoning is found by its id.
    params: dict[str, Any] = {"model": "claude", "tools": [WEATHER], "reasoning": {"effort": "low"}}
    first = await sdk.responses.create(input=ASK, **params)
    call = called(first)
    assert first.output[0].type == "reasoning"
    assert first.output[0].encrypted_content is None
    items: list[Any] = [
        {"role": "user", "content": ASK},
        *(item.model_dump(exclude_none=True) for item in first.output),
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
    ]
    final = await sdk.responses.create(input=items, **params)
    assert final.output_text == "echo: sunny"
    assert_sent_with_thinking(upstream, turns=1)
    # The input is stored as the client sent it.
    listed = await sdk.responses.input_items.list(final.id, order="asc")
    assert [item.type for item in listed.data] == [
        "message",
        "reasoning",
        "function_call",
        "function_call_output",
    ]


async def test_reasoning_state_that_is_not_palyras_is_left_out(
    sdk: AsyncOpenAI, upstream: FakeUpstream
) -> None:
    # Reasoning an OpenAI model gave (its own encrypted content) means nothing to Anthropic.
    items: list[Any] = [
        {"role": "user", "content": "think"},
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAAABfoo"},
        {"role": "assistant", "content": "thought"},
        {"role": "user", "content": "and then?"},
    ]
    answer = await sdk.responses.create(model="claude", input=items)
    assert answer.output_text == "echo: and then?"
    sent = upstream.requests_to("/v1/messages")[-1].json
    assert "gAAAAABfoo" not in json.dumps(sent)
    assert sent["messages"][1] == {"role": "assistant", "content": "thought"}


@pytest.mark.parametrize("model", ["gpt-4o-mini", PASS])
async def test_palyras_reasoning_state_never_reaches_other_kinds(
    sdk: AsyncOpenAI, upstream: FakeUpstream, model: str
) -> None:
    # A conversation Claude began, continued on an OpenAI-compatible upstream: translated,
    # the thinking is reply-only; passed through, the upstream could not read Palyra's
    # content (it would refuse it), so the reasoning item stays behind.
    first = await sdk.responses.create(
        model="claude", input="think", reasoning={"effort": "low"}, include=[ENCRYPTED]
    )
    reasoning = first.output[0]
    assert reasoning.type == "reasoning" and reasoning.encrypted_content
    if model == PASS:
        upstream.script("/v1/responses", ChatReply("fine"))
    else:
        upstream.script("/v1/chat/completions", ChatReply("fine"))
    await sdk.responses.create(model=model, input="and then?", previous_response_id=first.id)
    echoed = [item.model_dump(exclude_none=True) for item in first.output]
    await sdk.responses.create(
        model=model,
        input=[{"role": "user", "content": "think"}, *echoed, {"role": "user", "content": "?"}],
    )
    path = "/v1/responses" if model == PASS else "/v1/chat/completions"
    for request in upstream.requests_to(path)[-2:]:
        sent = json.dumps(request.json)
        assert REASONING_STATE_PREFIX not in sent and "thinking_blocks" not in sent
        assert "echo: think" in sent  # the answer it led to goes on


async def test_damaged_reasoning_state_is_a_400_naming_it(sdk: AsyncOpenAI) -> None:
    for damaged in (REASONING_STATE_PREFIX + "not base64!", REASONING_STATE_PREFIX + "e30="):
        with pytest.raises(openai.BadRequestError) as caught:
            await sdk.responses.create(
                model="claude",
                input=[
                    {"role": "user", "content": "think"},
                    {"type": "reasoning", "summary": [], "encrypted_content": damaged},
                    {"role": "assistant", "content": "thought"},
                    {"role": "user", "content": "and then?"},
                ],
            )
        assert caught.value.status_code == 400
        assert "input[1].encrypted_content" in str(caught.value)


async def test_include_must_be_a_list(server: TestServer) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            server.make_url("/v1/responses"),
            json={"model": "claude", "input": "hi", "include": ENCRYPTED},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        ) as answer:
            assert answer.status == 400
            error = (await answer.json())["error"]
    assert error["param"] == "include" and "list" in error["message"]


# --- openai-agents ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [{}, {"store": False, "response_include": [ENCRYPTED]}],
    ids=["stored", "stateless"],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_openai_agents_runs_a_reasoning_agent_with_a_tool_on_claude(
    sdk: AsyncOpenAI, upstream: FakeUpstream, settings: dict[str, Any], stream: bool
) -> None:
    from agents import (
        Agent,
        ModelSettings,
        OpenAIResponsesModel,
        Runner,
        function_tool,
        set_tracing_disabled,
    )
    from openai.types.shared import Reasoning

    set_tracing_disabled(True)  # nothing leaves the machine
    asked: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        asked.append(city)
        return "sunny" if len(asked) > 1 else '/tool get_weather {"city": "Rome"}'

    agent = Agent(
        name="weather",
        instructions="Answer with the weather.",
        tools=[get_weather],
        model=OpenAIResponsesModel(model="claude", openai_client=sdk),
        model_settings=ModelSettings(reasoning=Reasoning(effort="low"), **settings),
    )
    if stream:
        run = Runner.run_streamed(agent, ASK)
        async for _ in run.stream_events():
            pass
        final_output = run.final_output
    else:
        final_output = (await Runner.run(agent, ASK)).final_output
    assert asked == ["Paris", "Rome"]
    assert final_output == "echo: sunny"
    assert_sent_with_thinking(upstream, turns=2)
