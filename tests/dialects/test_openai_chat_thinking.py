"""Chat completions tool loops with Anthropic extended thinking (`reasoning_effort` on an
Anthropic provider), through the official openai SDK against the gateway and the fake upstream.

With thinking enabled, Anthropic takes an assistant turn that called a tool back only when
it starts with the thinking blocks that led to the call, signatures intact (the fake holds
requests to that rule, as the real API does). `reasoning_content` is only their text, so the
answer also carries them whole as `thinking_blocks`, streamed as complete blocks in the
deltas, and the gateway sends them back from the history.
"""

from __future__ import annotations

from typing import Any

import openai
import pytest
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionFunctionToolParam

from tests.fakes.anthropic_wire import REDACTED_THINKING_TRIGGER
from tests.fakes.upstream import FakeUpstream

WEATHER: ChatCompletionFunctionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
ASK = '/tool get_weather {"city": "Paris"}'
# The fake calls a tool when a tool's result is a /tool line: the first call's result asks
# for a second call, whose result the model answers with. Three turns, two of them tool calls.
RESULTS = ['/tool get_weather {"city": "Rome"}', "sunny"]


async def whole_turn(client: AsyncOpenAI, messages: list[Any]) -> dict[str, Any]:
    completion = await client.chat.completions.create(
        model="claude", messages=messages, tools=[WEATHER], reasoning_effort="low"
    )
    # The history as ordinary apps keep it: the SDK's reply object, dumped whole.
    return completion.choices[0].message.model_dump()


async def streamed_turn(client: AsyncOpenAI, messages: list[Any]) -> dict[str, Any]:
    """The assistant message a client rebuilds from the chunks: text and reasoning joined,
    tool calls joined by index, thinking blocks appended in order."""
    stream = await client.chat.completions.create(
        model="claude", messages=messages, tools=[WEATHER], reasoning_effort="low", stream=True
    )
    content, reasoning = "", ""
    calls: dict[int, dict[str, Any]] = {}
    blocks: list[dict[str, Any]] = []
    async for chunk in stream:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        extra = delta.model_extra or {}
        content += delta.content or ""
        reasoning += extra.get("reasoning_content") or ""
        blocks += extra.get("thinking_blocks") or []
        for part in delta.tool_calls or []:
            call = calls.setdefault(
                part.index,
                {"id": "", "type": "function", "function": {"name": "", "arguments": ""}},
            )
            call["id"] += part.id or ""
            if part.function is not None:
                call["function"]["name"] += part.function.name or ""
                call["function"]["arguments"] += part.function.arguments or ""
    message: dict[str, Any] = {"role": "assistant", "content": content or None}
    if calls:
        message["tool_calls"] = [calls[index] for index in sorted(calls)]
    if reasoning:
        message["reasoning_content"] = reasoning
    if blocks:
        message["thinking_blocks"] = blocks
    return message


TURNS = {"whole": whole_turn, "streamed": streamed_turn}


@pytest.mark.parametrize("mode", TURNS)
async def test_a_tool_loop_with_thinking_runs_three_turns(
    client: AsyncOpenAI, upstream: FakeUpstream, mode: str
) -> None:
    turn = TURNS[mode]
    messages: list[Any] = [{"role": "user", "content": ASK}]
    for result in RESULTS:
        message = await turn(client, messages)
        (call,) = message["tool_calls"]
        assert call["function"]["name"] == "get_weather"
        messages += [message, {"role": "tool", "tool_call_id": call["id"], "content": result}]
    # (Before the fix the second turn was the upstream's 400: the assistant turn came back
    # without the thinking that led to its call.)
    final = await turn(client, messages)
    assert final["content"] == "echo: sunny" and not final.get("tool_calls")
    assert final["thinking_blocks"][0]["thinking"] == "thinking about: sunny"
    for message in messages[1::2]:
        (block,) = message["thinking_blocks"]
        assert block["type"] == "thinking" and block["signature"]
        assert block["thinking"] == message["reasoning_content"]

    # What Anthropic was sent last: each assistant turn opened with its thinking, as given.
    sent = upstream.requests_to("/v1/messages")[-1].json
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assistants = [m for m in sent["messages"] if m["role"] == "assistant"]
    assert len(assistants) == 2
    for sent_turn, kept in zip(assistants, messages[1::2], strict=True):
        assert sent_turn["content"][0] == kept["thinking_blocks"][0]
        assert [b["type"] for b in sent_turn["content"]] == ["thinking", "tool_use"]


@pytest.mark.parametrize("mode", TURNS)
async def test_redacted_thinking_goes_back_too(
    client: AsyncOpenAI, upstream: FakeUpstream, mode: str
) -> None:
    turn = TURNS[mode]
    messages: list[Any] = [
        {"role": "system", "content": REDACTED_THINKING_TRIGGER},
        {"role": "user", "content": ASK},
    ]
    message = await turn(client, messages)
    thinking, redacted = message["thinking_blocks"]
    assert thinking["type"] == "thinking" and thinking["signature"]
    assert redacted["type"] == "redacted_thinking" and redacted["data"]
    # The redacted block has no text: reasoning is the thinking block's alone.
    assert message["reasoning_content"] == thinking["thinking"]
    call_id = message["tool_calls"][0]["id"]
    messages += [message, {"role": "tool", "tool_call_id": call_id, "content": "cloudy"}]
    final = await turn(client, messages)
    assert final["content"] == "echo: cloudy"
    sent = upstream.requests_to("/v1/messages")[-1].json["messages"][1]["content"]
    assert sent[:2] == [thinking, redacted]


async def test_without_thinking_the_blocks_stay_behind(
    client: AsyncOpenAI, upstream: FakeUpstream
) -> None:
    messages: list[Any] = [{"role": "user", "content": ASK}]
    message = await whole_turn(client, messages)
    call_id = message["tool_calls"][0]["id"]
    messages += [message, {"role": "tool", "tool_call_id": call_id, "content": "sunny"}]
    # The same history, the next turn without reasoning_effort: Anthropic needs no thinking
    # back then, and would refuse it in a final assistant message; it is left out.
    completion = await client.chat.completions.create(
        model="claude", messages=messages, tools=[WEATHER]
    )
    assert completion.choices[0].message.content == "echo: sunny"
    sent = upstream.requests_to("/v1/messages")[-1].json
    assert "thinking" not in sent
    assert [b["type"] for b in sent["messages"][1]["content"]] == ["tool_use"]


@pytest.mark.parametrize("stream", [False, True])
async def test_thinking_blocks_never_reach_an_openai_compatible_upstream(
    client: AsyncOpenAI, upstream: FakeUpstream, stream: bool
) -> None:
    # A history an Anthropic-served turn left, continued on another provider kind.
    messages: list[Any] = [
        {"role": "user", "content": ASK},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
            "reasoning_content": "The user wants weather.",
            "thinking_blocks": [
                {"type": "thinking", "thinking": "The user wants weather.", "signature": "SIG"},
                {"type": "redacted_thinking", "data": "REDACTED-DATA"},
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
    ]
    answer = await client.chat.completions.create(
        model="gpt-4o-mini", messages=messages, tools=[WEATHER], stream=stream
    )
    if stream:
        async for _ in answer:  # type: ignore[union-attr]
            pass
    sent = upstream.requests_to("/v1/chat/completions")[-1].json
    assert sent["messages"][1]["tool_calls"][0]["id"] == "toolu_1"
    for key in ("thinking_blocks", "reasoning_content"):
        assert all(key not in m for m in sent["messages"])
    assert "REDACTED-DATA" not in str(sent) and "SIG" not in str(sent)


async def test_bad_thinking_blocks_are_a_400_naming_them(client: AsyncOpenAI) -> None:
    messages: list[Any] = [
        {"role": "user", "content": ASK},
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": "{}"},
                }
            ],
            "thinking_blocks": [{"type": "thinking", "thinking": 42}],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
    ]
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(
            model="claude", messages=messages, tools=[WEATHER], reasoning_effort="low"
        )
    assert caught.value.status_code == 400
    assert "messages[1].thinking_blocks[0].thinking: must be a string" in str(caught.value)
