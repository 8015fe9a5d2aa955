"""The clients users bring, unchanged, against palyrad as a process.

One daemon for the module, on four providers: the deterministic provider, an
OpenAI-compatible and an Anthropic provider on the fake upstream (every dialect translated
onto them), and an OpenAI-compatible provider with Responses pass-through. The clients are the
official `openai` and `anthropic` SDKs, `openai-agents` in its default (Responses) mode, and
`langchain-openai`, each used the way its own documentation shows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from pydantic import BaseModel

from tests.fakes.upstream import ChatReply, FakeUpstream
from tests.support.daemon import Daemon, running_daemon, threaded_upstream

ADMIN_TOKEN = "real-clients-admin-token-0123456789"
UPSTREAM_KEY = "sk-fake-upstream-key"
# model id -> what serves it
MODELS = {
    "deterministic": "deterministic provider",
    "gpt-4o-mini": "OpenAI-compatible on the fake (translated)",
    "claude": "Anthropic on the fake",
    "gpt-pass": "OpenAI-compatible on the fake, Responses passed through",
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, FakeUpstream]]:
    root: Path = tmp_path_factory.mktemp("real-clients")
    with threaded_upstream(UPSTREAM_KEY) as fake:
        on_fake = {"allow_private_base_url": True, "api_key_env": "PALYRA_TEST_UPSTREAM_KEY"}
        config: dict[str, Any] = {
            "version": 1,
            "model_provider": {
                "providers": [
                    {"provider_id": "det", "kind": "deterministic"},
                    {
                        "provider_id": "oai",
                        "kind": "openai_compatible",
                        "base_url": fake.openai_base_url,
                        **on_fake,
                    },
                    {
                        "provider_id": "oai-pass",
                        "kind": "openai_compatible",
                        "base_url": fake.openai_base_url,
                        "responses_passthrough": True,
                        **on_fake,
                    },
                    {
                        "provider_id": "claude",
                        "kind": "anthropic",
                        "base_url": fake.anthropic_base_url,
                        **on_fake,
                    },
                ],
                "models": [
                    {"model_id": "deterministic", "provider_id": "det"},
                    {"model_id": "gpt-4o-mini", "provider_id": "oai"},
                    {
                        "model_id": "gpt-pass",
                        "provider_id": "oai-pass",
                        "upstream_model": "gpt-4o-mini",
                    },
                    {
                        "model_id": "claude",
                        "provider_id": "claude",
                        "upstream_model": "claude-sonnet-4-5",
                        "max_context_tokens": 200000,
                        "max_output_tokens": 4096,
                    },
                ],
            },
        }
        env = {"PALYRA_ADMIN_TOKEN": ADMIN_TOKEN, "PALYRA_TEST_UPSTREAM_KEY": UPSTREAM_KEY}
        with running_daemon(root, config, env) as daemon:
            yield daemon, fake
            log = daemon.log_text()
    # Whatever the clients did, the daemon logged no traceback and no secret.
    assert "Traceback" not in log, log[-4000:]
    assert UPSTREAM_KEY not in log and ADMIN_TOKEN not in log


@pytest.fixture
def daemon(stack: tuple[Daemon, FakeUpstream]) -> Daemon:
    return stack[0]


def openai_client(daemon: Daemon) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{daemon.url}/v1", api_key=ADMIN_TOKEN, max_retries=0)


def anthropic_client(daemon: Daemon) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=daemon.url, api_key=ADMIN_TOKEN, max_retries=0)


# --- openai: chat completions ----------------------------------------------------------------


@pytest.mark.parametrize("model", ["deterministic", "gpt-4o-mini", "claude"])
async def test_openai_chat_history_of_dumped_replies(daemon: Daemon, model: str) -> None:
    client = openai_client(daemon)
    tools: list[Any] = [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "parameters": {
                    "type": "object",
                    "properties": {"key": {"type": "string"}},
                    "required": ["key"],
                },
            },
        }
    ]
    history: list[Any] = []
    for turn in range(5):
        history.append({"role": "user", "content": f'/tool lookup {{"key": "k{turn}"}}'})
        reply = await client.chat.completions.create(model=model, messages=history, tools=tools)
        message = reply.choices[0].message
        assert message.tool_calls, (model, turn, message)
        # What apps store: the SDK's own reply object, dumped whole.
        history.append(message.model_dump())
        for call in message.tool_calls:
            history.append({"role": "tool", "tool_call_id": call.id, "content": "v"})
        reply = await client.chat.completions.create(model=model, messages=history, tools=tools)
        history.append(reply.choices[0].message.model_dump())
    assert len(history) == 20
    await client.close()


class City(BaseModel):
    name: str
    population: int
    districts: list[str]


async def test_openai_parse_on_the_deterministic_provider(daemon: Daemon) -> None:
    client = openai_client(daemon)
    completion = await client.chat.completions.parse(
        model="deterministic",
        messages=[{"role": "user", "content": "describe a city"}],
        response_format=City,
    )
    city = completion.choices[0].message.parsed
    assert isinstance(city, City)
    await client.close()


async def test_openai_parse_through_an_openai_compatible_upstream(
    stack: tuple[Daemon, FakeUpstream],
) -> None:
    # The schema goes upstream as the client sent it, and the upstream's answer comes back
    # for the SDK to parse (the fake holds no model: its answer is scripted).
    daemon, fake = stack
    answer = City(name="Oslo", population=700000, districts=["Frogner", "Grünerløkka"])
    fake.script("/v1/chat/completions", ChatReply(content=answer.model_dump_json()))
    client = openai_client(daemon)
    completion = await client.chat.completions.parse(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "describe a city"}],
        response_format=City,
    )
    assert completion.choices[0].message.parsed == answer
    sent = fake.requests_to("/v1/chat/completions")[-1].json["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["name"] == "City"
    assert sent["json_schema"]["schema"]["required"] == ["name", "population", "districts"]
    await client.close()


@pytest.mark.parametrize("stream", [False, True])
async def test_fields_the_upstream_adds_come_back_unchanged(
    stack: tuple[Daemon, FakeUpstream], stream: bool
) -> None:
    # Fields no schema names, on the body (every chunk's, streamed), the choice and the
    # message (each delta's), reach the client as the upstream sent them, through palyrad.
    daemon, fake = stack
    body_extra = {"x_trace": {"id": "t-1", "hops": [1, None, "two"]}}
    choice_extra = {"x_choice_note": "kept"}
    message_extra = {"x_message_meta": {"lang": "en"}}
    reply = ChatReply(
        content="hi", body_extra=body_extra, choice_extra=choice_extra, message_extra=message_extra
    )
    fake.script("/v1/chat/completions", reply)
    client = openai_client(daemon)
    asked: Any = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    if not stream:
        completion = await client.chat.completions.create(**asked)
        assert completion.model_extra == body_extra
        assert completion.choices[0].model_extra == choice_extra
        assert completion.choices[0].message.model_extra == message_extra
    else:
        chunks = [c async for c in await client.chat.completions.create(**asked, stream=True)]
        shown = [c for c in chunks if c.choices and c.choices[0].delta.content]
        assert shown and all(c.model_extra == body_extra for c in shown)
        assert all(c.choices[0].model_extra == choice_extra for c in shown)
        assert all(c.choices[0].delta.model_extra == message_extra for c in shown)
    await client.close()


# --- openai: responses -----------------------------------------------------------------------


@pytest.mark.parametrize("model", list(MODELS))
async def test_openai_responses_create_stream_retrieve_and_continue(
    daemon: Daemon, model: str
) -> None:
    client = openai_client(daemon)
    first = await client.responses.create(model=model, input="remember the word ananas")
    assert first.status == "completed" and first.output_text, first
    assert first.usage is not None and first.usage.total_tokens > 0
    again = await client.responses.retrieve(first.id)
    assert again.id == first.id and again.output_text == first.output_text
    items = await client.responses.input_items.list(first.id)
    assert [i.type for i in items.data] == ["message"]

    events: list[str] = []
    async with client.responses.stream(
        model=model, input="and now?", previous_response_id=first.id
    ) as stream:
        async for event in stream:
            events.append(event.type)
        second = await stream.get_final_response()
    assert events[:2] == ["response.created", "response.in_progress"], events
    assert "response.output_text.delta" in events and events[-1] == "response.completed"
    assert second.previous_response_id == first.id and second.output_text
    third = await client.responses.create(
        model=model, input="last one", previous_response_id=second.id
    )
    assert third.output_text
    deleted = await client.responses.delete(third.id)
    assert deleted is None or getattr(deleted, "deleted", True)
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(third.id)
    await client.close()


# --- anthropic: messages ---------------------------------------------------------------------


@pytest.mark.parametrize("model", ["deterministic", "claude", "gpt-4o-mini"])
async def test_anthropic_messages_create_stream_tools_and_count(daemon: Daemon, model: str) -> None:
    client = anthropic_client(daemon)
    message = await client.messages.create(
        model=model, max_tokens=256, messages=[{"role": "user", "content": "hello there"}]
    )
    assert message.type == "message" and message.content[0].type == "text", message
    assert message.usage.input_tokens > 0

    async with client.messages.stream(
        model=model, max_tokens=256, messages=[{"role": "user", "content": "stream this"}]
    ) as stream:
        text = "".join([piece async for piece in stream.text_stream])
        final = await stream.get_final_message()
    assert text and final.content[0].type == "text" and final.content[0].text == text

    tools: list[Any] = [
        {
            "name": "lookup",
            "description": "look a key up",
            "input_schema": {
                "type": "object",
                "properties": {"key": {"type": "string"}},
                "required": ["key"],
            },
        }
    ]
    asked: list[Any] = [{"role": "user", "content": '/tool lookup {"key": "k"}'}]
    call = await client.messages.create(
        model=model, max_tokens=256, messages=asked, tools=tools, tool_choice={"type": "any"}
    )
    assert call.stop_reason == "tool_use", call
    use = next(block for block in call.content if block.type == "tool_use")
    assert isinstance(use.input, dict) and "key" in use.input
    answered = await client.messages.create(
        model=model,
        max_tokens=256,
        tools=tools,
        messages=[
            *asked,
            {"role": "assistant", "content": [b.model_dump() for b in call.content]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "42"}],
            },
        ],
    )
    assert answered.stop_reason == "end_turn" and answered.content, answered

    counted = await client.messages.count_tokens(
        model=model, messages=[{"role": "user", "content": "how many tokens is this?"}]
    )
    assert counted.input_tokens > 0
    await client.close()


async def test_anthropic_errors_are_the_sdks_own(daemon: Daemon) -> None:
    client = anthropic_client(daemon)
    with pytest.raises(anthropic.NotFoundError):
        await client.messages.create(
            model="no-such-model", max_tokens=8, messages=[{"role": "user", "content": "x"}]
        )
    wrong = anthropic.AsyncAnthropic(base_url=daemon.url, api_key="wrong-key", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        await wrong.messages.create(
            model="claude", max_tokens=8, messages=[{"role": "user", "content": "x"}]
        )
    await client.close()
    await wrong.close()


# --- openai-agents ---------------------------------------------------------------------------


@pytest.mark.parametrize("model", list(MODELS))
async def test_openai_agents_run_an_agent_with_a_function_tool(daemon: Daemon, model: str) -> None:
    from agents import Agent, OpenAIResponsesModel, Runner, function_tool
    from agents.run import RunConfig

    looked_up: list[str] = []

    @function_tool
    def lookup(key: str) -> str:
        """Look a key up."""
        looked_up.append(key)
        return f"value-of-{key}"

    client = openai_client(daemon)
    agent = Agent(
        name="looker",
        instructions="Use the lookup tool, then answer.",
        tools=[lookup],
        model=OpenAIResponsesModel(model=model, openai_client=client),
    )
    result = await Runner.run(
        agent, '/tool lookup {"key": "ananas"}', run_config=RunConfig(tracing_disabled=True)
    )
    assert looked_up == ["ananas"]
    assert "value-of-ananas" in str(result.final_output)
    await client.close()


# --- langchain-openai ------------------------------------------------------------------------


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("responses_api", [False, True])
async def test_langchain_openai_chat_and_tools(
    daemon: Daemon, responses_api: bool, model: str
) -> None:
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def lookup(key: str) -> str:
        """Look a key up."""
        return f"value-of-{key}"

    # Its own HTTP client: langchain-openai caches a default one per process, bound to the
    # event loop of the test that made it.
    http = httpx.AsyncClient()
    chat = ChatOpenAI(
        model=model,
        http_async_client=http,
        base_url=f"{daemon.url}/v1",
        api_key=ADMIN_TOKEN,  # type: ignore[arg-type]
        use_responses_api=responses_api,
        max_retries=0,
    )
    answer = await chat.ainvoke("say hi")
    assert answer.content
    chunks = [chunk async for chunk in chat.astream("stream hi")]
    assert chunks
    with_tools = chat.bind_tools([lookup])
    history: list[Any] = [HumanMessage('/tool lookup {"key": "k"}')]
    called = await with_tools.ainvoke(history)
    assert called.tool_calls and called.tool_calls[0]["name"] == "lookup", called
    history += [
        called,
        ToolMessage(
            lookup.invoke(called.tool_calls[0]["args"]), tool_call_id=called.tool_calls[0]["id"]
        ),
    ]
    final = await with_tools.ainvoke(history)
    assert "value-of-k" in json.dumps(final.content)
    await http.aclose()


# --- pydantic-ai -----------------------------------------------------------------------------


@pytest.mark.parametrize("api", ["chat", "responses"])
async def test_pydantic_ai_agent_with_a_tool_and_structured_output(
    daemon: Daemon, api: str
) -> None:
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel, OpenAIResponsesModel
    from pydantic_ai.providers.openai import OpenAIProvider

    provider = OpenAIProvider(openai_client=openai_client(daemon))
    model = (
        OpenAIChatModel("deterministic", provider=provider)
        if api == "chat"
        else OpenAIResponsesModel("deterministic", provider=provider)
    )
    agent = Agent(model, output_type=City, instructions="Look the city up, then describe it.")
    looked_up: list[str] = []

    @agent.tool_plain
    def lookup(key: str) -> str:
        """Look a key up."""
        looked_up.append(key)
        return f"value-of-{key}"

    # The deterministic provider, asked with tool_choice required (pydantic-ai's structured
    # output is a tool too), calls the function tool first, then answers with the output tool.
    result = await agent.run("describe a city")
    assert isinstance(result.output, City)
    assert len(looked_up) == 1
