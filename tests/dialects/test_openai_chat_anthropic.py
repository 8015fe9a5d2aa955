"""Chat completions on an Anthropic provider: what Anthropic cannot honour skips the candidate
for one that can serve the request (a 400 naming the parameter and the provider only when none
can), it never hides another candidate's error, and what real clients send by default is
served. Through the official openai SDK, langchain-openai and openai-agents against the
gateway, on the fake upstream."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from aiohttp.test_utils import TestServer
from openai import AsyncOpenAI
from pydantic import BaseModel

from palyra.config import PalyraConfig
from tests.conftest import ADMIN_TOKEN, GatewayFactory, gateway_config
from tests.fakes.upstream import ErrorReply, FakeUpstream

CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
ASK = [{"role": "user", "content": "hi"}]
# With reasoning_effort Anthropic thinks, and thinking takes temperature 1 only, top_p from
# 0.95 only and a max_tokens above 1024: each of these is what the Anthropic provider cannot
# honour (an OpenAI-compatible upstream takes them as they are).
THINKING_LIMITS: dict[str, tuple[dict[str, Any], str]] = {
    "temperature": ({"temperature": 0.5}, "temperature 0.5 with reasoning_effort 'low'"),
    "top_p": ({"top_p": 0.5}, "top_p 0.5 with reasoning_effort 'low'"),
    "max_tokens": ({"max_tokens": 512}, "max_tokens 512 with reasoning_effort 'low'"),
}


def sdk(gateway: TestServer) -> AsyncOpenAI:
    return AsyncOpenAI(
        api_key=ADMIN_TOKEN, base_url=str(gateway.make_url("/v1")), max_retries=0, timeout=20
    )


class FailingOver:
    """A gateway with failover on and no retries, started once a test has named its chain."""

    def __init__(self, config: PalyraConfig, start_gateway: GatewayFactory) -> None:
        self.config = config
        self._start_gateway = start_gateway
        self.client: AsyncOpenAI | None = None

    async def start(self, model_id: str, fallbacks: list[str]) -> AsyncOpenAI:
        for model in self.config.model_provider.models:
            if model.model_id == model_id:
                model.fallbacks = fallbacks
        self.client = sdk(await self._start_gateway(self.config))
        return self.client


@pytest.fixture
async def failing_over(
    upstream: FakeUpstream, tmp_path: Path, start_gateway: GatewayFactory
) -> AsyncIterator[FailingOver]:
    chain = FailingOver(gateway_config(upstream, tmp_path / "state", max_retries=0), start_gateway)
    yield chain
    if chain.client is not None:
        await chain.client.close()


async def complete(client: AsyncOpenAI, stream: bool, **fields: Any) -> tuple[str, str]:
    """(the provider that served, the answer's text), whole or streamed."""
    if not stream:
        raw = await client.chat.completions.with_raw_response.create(messages=ASK, **fields)
        completion = raw.parse()
        return raw.headers["x-palyra-provider-id"], completion.choices[0].message.content or ""
    async with client.chat.completions.with_streaming_response.create(
        messages=ASK, stream=True, **fields
    ) as response:
        text = ""
        async for chunk in await response.parse():
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
        return response.headers["x-palyra-provider-id"], text


# --- what Anthropic cannot honour: skipped, never the answer while another can serve ---------


@pytest.mark.parametrize("stream", [False, True])
async def test_a_failing_primary_s_error_is_not_hidden_by_an_anthropic_fallback_that_cannot_think(
    failing_over: FailingOver, upstream: FakeUpstream, stream: bool
) -> None:
    # Found in review: the Anthropic fallback refused the thinking limits while translating,
    # a 400 of its own that hid the primary's retryable 503.
    client = await failing_over.start("gpt-4o-mini", ["claude"])
    upstream.script(CHAT, ErrorReply(503, retry_after="7"))
    with pytest.raises(openai.APIStatusError) as caught:
        await complete(client, stream, model="gpt-4o-mini", reasoning_effort="low", temperature=0.5)
    assert caught.value.status_code == 503, caught.value.body
    assert caught.value.response.headers["x-palyra-provider-id"] == "oai"
    assert not upstream.requests_to(MESSAGES)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("limit", THINKING_LIMITS)
async def test_a_request_anthropic_cannot_think_with_is_served_by_a_capable_fallback(
    failing_over: FailingOver, upstream: FakeUpstream, limit: str, stream: bool
) -> None:
    client = await failing_over.start("claude", ["gpt-4o-mini"])
    fields, _ = THINKING_LIMITS[limit]
    served_by, text = await complete(
        client, stream, model="claude", reasoning_effort="low", **fields
    )
    assert served_by == "oai" and text
    assert not upstream.requests_to(MESSAGES)  # skipped before anything was sent
    [sent] = upstream.requests_to(CHAT)
    assert sent.json["reasoning_effort"] == "low"
    assert {name: sent.json[name] for name in fields} == fields


@pytest.mark.parametrize("limit", THINKING_LIMITS)
async def test_when_no_candidate_can_think_so_the_400_names_the_parameter_and_the_provider(
    client: AsyncOpenAI, upstream: FakeUpstream, limit: str
) -> None:
    fields, words = THINKING_LIMITS[limit]
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as caught:
            await complete(client, stream, model="claude", reasoning_effort="low", **fields)
        error = caught.value.body
        assert isinstance(error, dict)
        assert error["message"].startswith(f"provider claude (anthropic) cannot honour {words}")
        assert error["param"] == limit
        assert error["code"] == "unsupported_operation"
    assert not upstream.requests_to(MESSAGES)


async def test_a_malformed_request_is_still_an_immediate_400(
    failing_over: FailingOver, upstream: FakeUpstream
) -> None:
    # Wrong whatever serves it (a tool_choice naming no tool): not Anthropic's limit, so no
    # skip to another candidate that would refuse it just the same.
    client = await failing_over.start("claude", ["gpt-4o-mini"])
    named: Any = {"type": "function", "function": {"name": "nope"}}
    tool: Any = {"type": "function", "function": {"name": "get_time"}}
    with pytest.raises(openai.BadRequestError, match="no tool named 'nope'"):
        await client.chat.completions.create(
            model="claude", messages=ASK, tools=[tool], tool_choice=named
        )
    assert not upstream.requests_to(CHAT) and not upstream.requests_to(MESSAGES)


async def test_what_only_the_translation_finds_skips_to_a_capable_fallback(
    failing_over: FailingOver, upstream: FakeUpstream
) -> None:
    # Arguments an OpenAI model wrote and was cut off in: OpenAI takes them back as they are,
    # Anthropic's tool_use input must be an object.
    client = await failing_over.start("claude", ["gpt-4o-mini"])
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": '}}
    history: Any = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "done"},
    ]
    raw = await client.chat.completions.with_raw_response.create(model="claude", messages=history)
    assert raw.headers["x-palyra-provider-id"] == "oai"
    assert raw.headers["x-palyra-failover-count"] == "0"
    assert not upstream.requests_to(MESSAGES)


# --- parameters Palyra has no name for ---------------------------------------------------------


async def test_an_unknown_parameter_on_the_anthropic_model_is_a_400_naming_it(
    client: AsyncOpenAI, upstream: FakeUpstream
) -> None:
    # Found in review: dropped silently (200 OK), though it may change the answer.
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as caught:
            await complete(client, stream, model="claude", extra_body={"frobnicate": 1})
        error = caught.value.body
        assert isinstance(error, dict)
        assert error["message"].startswith(
            "provider claude (anthropic) cannot honour parameter 'frobnicate'"
        )
        assert error["param"] == "frobnicate"
    assert not upstream.requests_to(MESSAGES)
    # Null is no value: nothing asked, nothing refused.
    await complete(client, False, model="claude", extra_body={"frobnicate": None})
    assert len(upstream.requests_to(MESSAGES)) == 1


async def test_an_unknown_parameter_is_served_by_a_fallback_that_is_sent_it(
    failing_over: FailingOver, upstream: FakeUpstream
) -> None:
    client = await failing_over.start("claude", ["gpt-4o-mini"])
    served_by, _ = await complete(client, False, model="claude", extra_body={"frobnicate": 1})
    assert served_by == "oai"
    assert upstream.requests_to(CHAT)[-1].json["frobnicate"] == 1
    assert not upstream.requests_to(MESSAGES)


async def test_harmless_parameters_and_top_k_are_served_by_anthropic(
    client: AsyncOpenAI, upstream: FakeUpstream
) -> None:
    harmless = {
        "seed": 7,
        "store": True,
        "metadata": {"run": "r1"},
        "service_tier": "auto",
        "prediction": {"type": "content", "content": "hi"},
        "prompt_cache_key": "k",
        "prompt_cache_retention": "24h",
        "prompt_cache_options": {"mode": "implicit"},
        "safety_identifier": "user-1",
    }
    for stream in (False, True):
        upstream.clear()
        served_by, text = await complete(
            client, stream, model="claude", extra_body={**harmless, "top_k": 5}
        )
        assert served_by == "claude" and text == "echo: hi"
        [sent] = upstream.requests_to(MESSAGES)
        assert sent.json["top_k"] == 5
        assert sent.json["metadata"] == {"user_id": "user-1"}


# --- what real clients send by default --------------------------------------------------------


class Place(BaseModel):
    name: str


# The fake calls the tool a prompt names (`/tool NAME {json}`): a forced answer tool too.
PLACE_PROMPT = '/tool place {"name": "Paris"}'


async def test_the_openai_sdks_default_requests_are_served_by_anthropic(
    client: AsyncOpenAI, upstream: FakeUpstream
) -> None:
    await client.chat.completions.create(model="claude", messages=ASK)
    stream = await client.chat.completions.create(model="claude", messages=ASK, stream=True)
    assert [chunk async for chunk in stream]
    async with client.chat.completions.stream(model="claude", messages=ASK) as helper:
        async for _ in helper:
            pass
    parsed = await client.chat.completions.parse(
        model="claude",
        messages=[{"role": "user", "content": PLACE_PROMPT}],
        response_format=Place,
    )
    assert parsed.choices[0].message.parsed == Place(name="Paris")
    assert len(upstream.requests_to(MESSAGES)) == 4


async def test_langchain_openais_default_requests_are_served_by_anthropic(
    gateway: TestServer, upstream: FakeUpstream
) -> None:
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def lookup(key: str) -> str:
        """Look a key up."""
        return f"value-of-{key}"

    http = httpx.AsyncClient()
    # stream_usage=True: what it sends to OpenAI's own base URL by default (stream_options).
    for stream_usage in (False, True):
        chat = ChatOpenAI(
            model="claude",
            http_async_client=http,
            base_url=str(gateway.make_url("/v1")),
            api_key=ADMIN_TOKEN,  # type: ignore[arg-type]
            max_retries=0,
            stream_usage=stream_usage,
        )
        assert (await chat.ainvoke("say hi")).content
        assert [chunk async for chunk in chat.astream("stream hi")]
        with_tools = chat.bind_tools([lookup])
        history: list[Any] = [HumanMessage('/tool lookup {"key": "k"}')]
        called = await with_tools.ainvoke(history)
        assert called.tool_calls, called
        history += [
            called,
            ToolMessage("value-of-k", tool_call_id=called.tool_calls[0]["id"]),
        ]
        assert "value-of-k" in json.dumps((await with_tools.ainvoke(history)).content)
        place = await chat.with_structured_output(Place).ainvoke(PLACE_PROMPT)
        assert place == Place(name="Paris")
    await http.aclose()
    assert len(upstream.requests_to(MESSAGES)) == 10


@pytest.mark.parametrize("streamed", [False, True])
async def test_openai_agents_default_chat_completions_requests_are_served_by_anthropic(
    client: AsyncOpenAI, upstream: FakeUpstream, streamed: bool
) -> None:
    from agents import Agent, ModelSettings, OpenAIChatCompletionsModel, Runner, function_tool
    from agents.run import RunConfig

    looked_up: list[str] = []

    @function_tool
    def lookup(key: str) -> str:
        """Look a key up."""
        looked_up.append(key)
        return f"value-of-{key}"

    # Its defaults, and what it sends OpenAI's own base URL by default (store, usage).
    for settings in (ModelSettings(), ModelSettings(store=True, include_usage=True)):
        agent = Agent(
            name="looker",
            instructions="Use the lookup tool, then answer.",
            tools=[lookup],
            model=OpenAIChatCompletionsModel(model="claude", openai_client=client),
            model_settings=settings,
        )
        prompt = '/tool lookup {"key": "ananas"}'
        run_config = RunConfig(tracing_disabled=True)
        if streamed:
            run = Runner.run_streamed(agent, prompt, run_config=run_config)
            async for _ in run.stream_events():
                pass
            output = run.final_output
        else:
            output = (await Runner.run(agent, prompt, run_config=run_config)).final_output
        assert "value-of-ananas" in str(output)
    assert looked_up == ["ananas", "ananas"]
    assert len(upstream.requests_to(MESSAGES)) == 4
