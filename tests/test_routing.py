"""Routing against scripted fake upstreams: retries, failover, the circuit breaker,
discovery and health, counted by what each upstream received."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp.test_utils import TestServer
from openai import AsyncOpenAI

from palyra.config import validate_config
from palyra.server.keys import GATEWAY
from tests.conftest import ADMIN_TOKEN, UPSTREAM_KEY, GatewayFactory
from tests.fakes.upstream import ChatReply, ErrorReply, FakeUpstream, Reply
from tests.support.clock import FakeClock

CHAT = "/v1/chat/completions"
USER = [{"role": "user", "content": "hello"}]


@pytest.fixture
async def first() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream(api_key=UPSTREAM_KEY, models=["gpt-4o-mini", "extra-model"]) as fake:
        yield fake


@pytest.fixture
async def second() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream(api_key=UPSTREAM_KEY) as fake:
        yield fake


def provider(pid: str, upstream: FakeUpstream, **extra: Any) -> dict[str, Any]:
    return {
        "provider_id": pid,
        "kind": "openai_compatible",
        "base_url": upstream.openai_base_url,
        "allow_private_base_url": True,
        "api_key_env": "PALYRA_TEST_UPSTREAM_KEY",
        **extra,
    }


def config(
    tmp_path: Path,
    first: FakeUpstream,
    second: FakeUpstream,
    *,
    providers: dict[str, dict[str, Any]] | None = None,
    models: list[dict[str, Any]] | None = None,
    more_providers: list[dict[str, Any]] | None = None,
    **model_provider: Any,
) -> Any:
    extra = providers or {}
    settings = {
        "max_retries": 2,
        "retry_backoff_ms": 10,
        "discovery_ttl_ms": 3_600_000,
        "health_ttl_ms": 3_600_000,
        **model_provider,
    }
    return validate_config(
        {
            "version": 1,
            "daemon": {"state_dir": str(tmp_path / "state")},
            "model_provider": {
                **settings,
                "providers": [
                    provider("p1", first, **extra.get("p1", {})),
                    provider("p2", second, **extra.get("p2", {})),
                    *(more_providers or []),
                ],
                "models": models
                or [
                    {"model_id": "primary", "provider_id": "p1", "upstream_model": "gpt-4o-mini"},
                    {"model_id": "backup", "provider_id": "p2", "upstream_model": "gpt-4o-mini"},
                ],
            },
        }
    )


def sdk(server: TestServer) -> AsyncOpenAI:
    return AsyncOpenAI(
        api_key=ADMIN_TOKEN, base_url=str(server.make_url("/v1")), max_retries=0, timeout=30
    )


async def console(server: TestServer, method: str, path: str, body: Any = None) -> Any:
    async with (
        aiohttp.ClientSession() as http,
        http.request(
            method,
            server.make_url(path),
            json=body,
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        ) as response,
    ):
        assert response.status == 200, await response.text()
        return await response.json()


def provider_status(status: dict[str, Any], pid: str) -> dict[str, Any]:
    return next(p for p in status["providers"] if p["provider_id"] == pid)


async def test_503_is_retried_then_fails_over(
    tmp_path: Path, first: FakeUpstream, second: FakeUpstream, start_gateway: GatewayFactory
) -> None:
    server = await start_gateway(config(tmp_path, first, second))
    first.script(CHAT, *[ErrorReply(503)] * 3)
    raw = await sdk(server).chat.completions.with_raw_response.create(
        model="primary", messages=USER
    )
    assert raw.parse().choices[0].message.content == "echo: hello"
    assert len(first.requests_to(CHAT)) == 3  # the try and max_retries retries
    assert len(second.requests_to(CHAT)) == 1
    assert raw.headers["x-palyra-provider-id"] == "p2"
    assert raw.headers["x-palyra-model-id"] == "backup"
    assert raw.headers["x-palyra-retry-count"] == "2"
    assert raw.headers["x-palyra-failover-count"] == "1"


async def test_429_retry_after_is_honoured(
    tmp_path: Path, first: FakeUpstream, second: FakeUpstream, start_gateway: GatewayFactory
) -> None:
    server = await start_gateway(config(tmp_path, first, second))
    first.script(CHAT, ErrorReply(429, retry_after="1"))
    started = time.monotonic()
    raw = await sdk(server).chat.completions.with_raw_response.create(
        model="primary", messages=USER
    )
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 2.5, elapsed
    assert raw.headers["x-palyra-provider-id"] == "p1"
    assert raw.headers["x-palyra-retry-count"] == "1"
    assert second.requests_to(CHAT) == []


async def test_retry_after_longer_than_the_request_fails_over_at_once(
    tmp_path: Path, first: FakeUpstream, second: FakeUpstream, start_gateway: GatewayFactory
) -> None:
    server = await start_gateway(config(tmp_path, first, second, request_timeout_ms=5000))
    first.script(CHAT, ErrorReply(429, retry_after="30"))
    started = time.monotonic()
    raw = await sdk(server).chat.completions.with_raw_response.create(
        model="primary", messages=USER
    )
    assert time.monotonic() - started < 1.5
    assert raw.headers["x-palyra-provider-id"] == "p2"
    assert len(first.requests_to(CHAT)) == 1


async def test_plain_400_is_neither_retried_nor_failed_over(
    tmp_path: Path, first: FakeUpstream, second: FakeUpstream, start_gateway: GatewayFactory
) -> None:
    server = await start_gateway(config(tmp_path, first, second))
    first.script(CHAT, ErrorReply(400, "unsupported value: 'stop'", code="invalid_value"))
    with pytest.raises(openai.BadRequestError) as caught:
        await sdk(server).chat.completions.create(model="primary", messages=USER)
    assert "unsupported value" in caught.value.message
    assert len(first.requests_to(CHAT)) == 1
    assert second.requests_to(CHAT) == []
    assert caught.value.response.headers["x-palyra-retry-count"] == "0"


async def test_credential_error_fails_over_without_retry_and_shows_auth_failed(
    tmp_path: Path, first: FakeUpstream, second: FakeUpstream, start_gateway: GatewayFactory
) -> None:
    server = await start_gateway(config(tmp_path, first, second))
    first.script(CHAT, ErrorReply(401))
    raw = await sdk(server).chat.completions.with_raw_response.create(
        model="primary", messages=USER
    )
    assert raw.headers["x-palyra-provider-id"] == "p2"
    assert len(first.requests_to(CHAT)) == 1
    status = await console(server, "GET", "/console/v1/models/status")
    assert provider_status(status, "p1")["health"]["state"] == "auth_failed"


async def test_context_error_fails_over_only_to_larger_windows(
    tmp_path: Path, first: FakeUpstream, second: FakeUpstream, start_gateway: GatewayFactory
) -> None:
    async with FakeUpstream(api_key=UPSTREAM_KEY) as third:
        models = [
            {
                "model_id": "primary",
                "provider_id": "p1",
                "max_context_tokens": 8000,
                "max_output_tokens": 100,
            },
            {
                "model_id": "same-size",
                "provider_id": "p2",
                "max_context_tokens": 8000,
                "max_output_tokens": 100,
            },
            {
                "model_id": "bigger",
                "provider_id": "p3",
                "max_context_tokens": 32000,
                "max_output_tokens": 100,
            },
        ]
        server = await start_gateway(
            config(tmp_path, first, second, models=models, more_providers=[provider("p3", third)])
        )
        first.script(CHAT, ErrorReply(400, "This model's maximum context length is 8000 tokens."))
        raw = await sdk(server).chat.completions.with_raw_response.create(
            model="primary", messages=USER
        )
        assert raw.headers["x-palyra-model-id"] == "bigger"
        assert second.requests_to(CHAT) == []
        assert len(third.requests_to(CHAT)) == 1


async def test_failover_disabled_keeps_to_the_requested_model(
    tmp_path: Path, first: FakeUpstream, second: FakeUpstream, start_gateway: GatewayFactory
) -> None:
    server = await start_gateway(config(tmp_path, first, second, failover_enabled=False))
    first.script(CHAT, *[ErrorReply(503)] * 3)
    with pytest.raises(openai.APIStatusError) as caught:
        await sdk(server).chat.completions.create(model="primary", messages=USER)
    assert caught.value.status_code == 503
    assert second.requests_to(CHAT) == []


async def test_circuit_opens_blocks_then_probes_once(
    tmp_path: Path, first: FakeUpstream, second: FakeUpstream, start_gateway: GatewayFactory
) -> None:
    server = await start_gateway(
        config(
            tmp_path,
            first,
            second,
            failover_enabled=False,
            max_retries=0,
            circuit_breaker_failure_threshold=2,
            circuit_breaker_cooldown_ms=1000,
        )
    )
    clock = clocked(server)
    client = sdk(server)
    first.script(CHAT, ErrorReply(500), ErrorReply(500))
    for _ in range(2):
        with pytest.raises(openai.APIStatusError):
            await client.chat.completions.create(model="primary", messages=USER)
    assert len(first.requests_to(CHAT)) == 2

    # Open: nothing reaches the upstream; the answer is 503 with Retry-After.
    with pytest.raises(openai.APIStatusError) as caught:
        await client.chat.completions.create(model="primary", messages=USER)
    assert caught.value.status_code == 503
    assert caught.value.code == "providers_unavailable"
    assert caught.value.response.headers["retry-after"] == "1"
    assert len(first.requests_to(CHAT)) == 2
    status = await console(server, "GET", "/console/v1/models/status")
    circuit = provider_status(status, "p1")["circuit"]
    assert circuit["state"] == "open" and 0 < circuit["retry_after_ms"] <= 1000

    # Half-open: of three concurrent requests exactly one is let through, as the probe.
    clock.now += 1.05  # the cooldown passes
    first.script(CHAT, ChatReply(content="probe ok", delay_s=0.5))
    results = await asyncio.gather(
        *(client.chat.completions.create(model="primary", messages=USER) for _ in range(3)),
        return_exceptions=True,
    )
    assert len(first.requests_to(CHAT)) == 3
    answered = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, openai.APIStatusError)]
    assert len(answered) == 1 and len(refused) == 2
    assert all(r.status_code == 503 for r in refused)

    # The probe succeeded: closed again, traffic flows.
    await client.chat.completions.create(model="primary", messages=USER)
    assert len(first.requests_to(CHAT)) == 4

    # Open it again, then let the probe fail: open for another cooldown.
    first.script(CHAT, ErrorReply(500), ErrorReply(500))
    for _ in range(2):
        with pytest.raises(openai.APIStatusError):
            await client.chat.completions.create(model="primary", messages=USER)
    clock.now += 1.05  # the cooldown passes
    first.script(CHAT, ErrorReply(503))
    with pytest.raises(openai.APIStatusError):
        await client.chat.completions.create(model="primary", messages=USER)
    sent = len(first.requests_to(CHAT))
    with pytest.raises(openai.APIStatusError) as again:
        await client.chat.completions.create(model="primary", messages=USER)
    assert again.value.code == "providers_unavailable"
    assert len(first.requests_to(CHAT)) == sent


async def test_open_circuit_fails_over_to_the_other_provider(
    tmp_path: Path, first: FakeUpstream, second: FakeUpstream, start_gateway: GatewayFactory
) -> None:
    server = await start_gateway(
        config(tmp_path, first, second, max_retries=0, circuit_breaker_failure_threshold=1)
    )
    first.script(CHAT, ErrorReply(502))
    client = sdk(server)
    await client.chat.completions.create(model="primary", messages=USER)
    raw = await client.chat.completions.with_raw_response.create(model="primary", messages=USER)
    assert raw.headers["x-palyra-provider-id"] == "p2"
    assert raw.headers["x-palyra-failover-count"] == "0"  # skipped, not tried
    assert len(first.requests_to(CHAT)) == 1


async def test_stream_fails_over_before_its_first_token(
    tmp_path: Path, first: FakeUpstream, second: FakeUpstream, start_gateway: GatewayFactory
) -> None:
    server = await start_gateway(config(tmp_path, first, second, max_retries=0))
    first.script(CHAT, ChatReply(content="never", error_event_after_chunks=1))
    stream = await sdk(server).chat.completions.create(model="primary", messages=USER, stream=True)
    text = ""
    async for chunk in stream:
        for choice in chunk.choices:
            text += choice.delta.content or ""
    assert text == "echo: hello"
    assert len(first.requests_to(CHAT)) == 1 and len(second.requests_to(CHAT)) == 1


async def test_stream_failure_after_first_token_ends_with_an_error(
    tmp_path: Path, first: FakeUpstream, second: FakeUpstream, start_gateway: GatewayFactory
) -> None:
    server = await start_gateway(config(tmp_path, first, second))
    first.script(CHAT, ChatReply(content="alpha beta gamma delta", error_event_after_chunks=3))
    stream = await sdk(server).chat.completions.create(model="primary", messages=USER, stream=True)
    text = ""
    with pytest.raises(openai.APIError):
        async for chunk in stream:
            for choice in chunk.choices:
                text += choice.delta.content or ""
    assert text and "delta" not in text
    assert second.requests_to(CHAT) == []


def clocked(server: TestServer) -> FakeClock:
    """Give the daemon's breakers a clock the test moves (before any breaker exists)."""
    clock = FakeClock()
    board = server.app[GATEWAY].breakers
    assert board.items() == []
    board._clock = clock
    return clock


async def first_chunk_then_rest(server: TestServer, model: str, between: Callable[[], None]) -> str:
    """Stream from `model`; call `between` once the first content chunk is in."""
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            server.make_url("/v1/chat/completions"),
            json={"model": model, "messages": USER, "stream": True},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        ) as response,
    ):
        seen = b""
        while b'"content":"' not in seen.replace(b'"content":""', b""):
            chunk = await response.content.readany()
            assert chunk, seen
            seen += chunk
        between()
        return (seen + await response.read()).decode()


async def test_a_stream_is_a_success_when_it_ends_not_at_its_first_token(
    tmp_path: Path, first: FakeUpstream, second: FakeUpstream, start_gateway: GatewayFactory
) -> None:
    server = await start_gateway(
        config(tmp_path, first, second, failover_enabled=False, max_retries=0)
    )
    first.script(CHAT, ErrorReply(500))
    with pytest.raises(openai.APIStatusError):
        await sdk(server).chat.completions.create(model="primary", messages=USER)
    breaker = server.app[GATEWAY].breakers.peek("p1")
    assert breaker is not None and breaker.failures == 1
    first.script(CHAT, ChatReply(content="one two three", chunk_delay_s=0.05))
    during: list[int] = []
    text = await first_chunk_then_rest(server, "primary", lambda: during.append(breaker.failures))
    assert "[DONE]" in text
    assert during == [1]  # a first token is no answer yet
    assert breaker.failures == 0  # the whole answer is


async def test_a_streamed_probe_settles_the_circuit_at_its_first_token(
    tmp_path: Path, first: FakeUpstream, second: FakeUpstream, start_gateway: GatewayFactory
) -> None:
    server = await start_gateway(
        config(
            tmp_path,
            first,
            second,
            failover_enabled=False,
            max_retries=0,
            circuit_breaker_failure_threshold=1,
            circuit_breaker_cooldown_ms=30_000,
        )
    )
    clock = clocked(server)
    first.script(CHAT, ErrorReply(500))
    with pytest.raises(openai.APIStatusError):
        await sdk(server).chat.completions.create(model="primary", messages=USER)
    breaker = server.app[GATEWAY].breakers.peek("p1")
    assert breaker is not None and breaker.state == "open"
    clock.now += 31
    assert breaker.state == "half_open"
    # The probe streams: the circuit closes with its first token, not only when (or if) the
    # client reads it to the end, so other requests need not wait out a long answer.
    first.script(CHAT, ChatReply(content="one two three", chunk_delay_s=0.05))
    during: list[str] = []
    await first_chunk_then_rest(server, "primary", lambda: during.append(breaker.state))
    assert during == ["closed"] and breaker.state == "closed"


async def test_candidates_follow_capabilities_and_tiers(
    tmp_path: Path, first: FakeUpstream, second: FakeUpstream, start_gateway: GatewayFactory
) -> None:
    async with FakeUpstream(api_key=UPSTREAM_KEY) as third:
        models = [
            {"model_id": "primary", "provider_id": "p1"},
            {"model_id": "premium", "provider_id": "p2", "cost_tier": "premium"},
            {"model_id": "cheap-blind", "provider_id": "p3", "cost_tier": "low", "vision": False},
        ]
        server = await start_gateway(
            config(
                tmp_path,
                first,
                second,
                models=models,
                more_providers=[provider("p3", third)],
                max_retries=0,
            )
        )
        client = sdk(server)
        first.script(CHAT, ErrorReply(503), ErrorReply(503))
        raw = await client.chat.completions.with_raw_response.create(model="primary", messages=USER)
        assert raw.headers["x-palyra-model-id"] == "cheap-blind"  # low cost first
        image = [
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
        ]
        raw = await client.chat.completions.with_raw_response.create(
            model="primary",
            messages=[{"role": "user", "content": image}],  # type: ignore[list-item,misc]
        )
        assert raw.headers["x-palyra-model-id"] == "premium"  # the blind one cannot see


async def test_discovery_merges_with_configuration(
    tmp_path: Path, first: FakeUpstream, second: FakeUpstream, start_gateway: GatewayFactory
) -> None:
    server = await start_gateway(
        config(tmp_path, first, second, providers={"p2": {"discovery": False}})
    )
    client = sdk(server)
    await console(server, "POST", "/console/v1/models/discover", {})
    listed = {m.id: m.model_extra["palyra"] for m in (await client.models.list()).data}  # type: ignore[index]
    assert listed["primary"]["source"] == "configured"
    assert listed["extra-model"]["source"] == "discovered"
    assert listed["extra-model"]["provider_id"] == "p1"
    assert listed["gpt-4o-mini"]["source"] == "discovered"
    completion = await client.chat.completions.create(model="extra-model", messages=USER)
    assert completion.choices[0].message.content == "echo: hello"
    assert first.requests_to(CHAT)[-1].json["model"] == "extra-model"
    # p2 has discovery = false: its models (the fake's defaults) stay out, though health
    # probes do list them.
    assert "whisper-1" not in listed

    # A failed discovery keeps the last good list and says why.
    first.set_down(True)
    result = await console(server, "POST", "/console/v1/models/discover", {"provider_id": "p1"})
    assert result["providers"]["p1"]["last_error"]
    assert "extra-model" in result["providers"]["p1"]["model_ids"]
    assert "extra-model" in {m.id for m in (await client.models.list()).data}


async def test_health_moves_through_its_states(
    tmp_path: Path, first: FakeUpstream, second: FakeUpstream, start_gateway: GatewayFactory
) -> None:
    server = await start_gateway(
        config(
            tmp_path,
            first,
            second,
            providers={"p2": {"api_key_env": "UNSET_KEY_VAR"}},
            health_degraded_latency_ms=200,
        )
    )

    async def state(pid: str = "p1") -> str:
        result = await console(
            server, "POST", "/console/v1/models/test-connection", {"provider_id": pid}
        )
        return str(result["providers"][pid]["state"])

    assert await state() == "ok"
    assert await state("p2") == "missing_auth"
    first.script("/v1/models", Reply(json={"object": "list", "data": []}, delay_s=0.4))
    assert await state() == "degraded"
    first.script("/v1/models", ErrorReply(429))
    assert await state() == "rate_limited"
    first.script("/v1/models", ErrorReply(401))
    assert await state() == "auth_failed"
    first.set_down(True)
    assert await state() == "unreachable"
    first.set_down(False)
    assert await state() == "ok"
    status = await console(server, "GET", "/console/v1/models/status")
    p1 = provider_status(status, "p1")
    assert p1["health"]["last_probe_latency_ms"] is not None
    assert p1["health"]["last_error"]  # the last failure stays visible
    assert UPSTREAM_KEY not in str(status)
    models = {m["model_id"]: m for m in status["models"]}
    assert models["backup"]["available"] is False
    assert "missing_auth" in models["backup"]["reason"]


async def test_metrics_count_requests_retries_and_failovers(
    tmp_path: Path, first: FakeUpstream, second: FakeUpstream, start_gateway: GatewayFactory
) -> None:
    server = await start_gateway(config(tmp_path, first, second))
    first.script(CHAT, *[ErrorReply(503)] * 3)
    await sdk(server).chat.completions.create(model="primary", messages=USER)
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            server.make_url("/metrics"), headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        ) as response,
    ):
        text = await response.text()
    assert 'palyra_retries_total{provider="p1"} 2.0' in text
    assert 'palyra_failovers_total{from_provider="p1"} 1.0' in text
    assert 'palyra_upstream_errors_total{error_class="retryable",provider="p1"} 3.0' in text
    assert (
        'palyra_requests_total{model="backup",route="/v1/chat/completions",status="200"} 1.0'
        in text
    )
    assert 'palyra_upstream_latency_seconds_count{model="backup",provider="p2"} 1.0' in text
    assert 'palyra_tokens_total{direction="in",model="backup",provider="p2"}' in text
    assert 'palyra_circuit_state{provider="p1"} 0.0' in text


async def test_discovered_models_survive_a_restart(
    tmp_path: Path, first: FakeUpstream, second: FakeUpstream, start_gateway: GatewayFactory
) -> None:
    settings = config(tmp_path, first, second)
    server = await start_gateway(settings)
    await console(server, "POST", "/console/v1/models/discover", {"provider_id": "p1"})
    await server.close()
    first.set_down(True)  # the restarted daemon cannot discover anything now
    restarted = await start_gateway(settings)
    ids = {m.id for m in (await sdk(restarted).models.list()).data}
    assert "extra-model" in ids


def test_chat_rooms_are_the_least_per_provider_kind_and_follow_discovery() -> None:
    from palyra.config import ModelConfig
    from palyra.routing import ModelRegistry
    from palyra.types import ModelProviderKind

    def p(pid: str, kind: str) -> dict[str, Any]:
        return {
            "provider_id": pid,
            "kind": kind,
            "base_url": "http://127.0.0.1:9/v1",
            "allow_private_base_url": True,
            "discovery": False,
        }

    settings = validate_config(
        {
            "version": 1,
            "model_provider": {
                "providers": [p("a", "openai_compatible"), p("b", "anthropic")],
                "models": [
                    {
                        "model_id": "big",
                        "provider_id": "a",
                        "max_context_tokens": 100_000,
                        "max_output_tokens": 1_000,
                    },
                    {
                        "model_id": "small",
                        "provider_id": "a",
                        "max_context_tokens": 8_000,
                        "max_output_tokens": 4_000,
                    },
                    {
                        "model_id": "claude",
                        "provider_id": "b",
                        "max_context_tokens": 50_000,
                        "max_output_tokens": 2_000,
                    },
                    {
                        "model_id": "emb",
                        "provider_id": "b",
                        "role": "embeddings",
                        "max_context_tokens": 10,
                        "max_output_tokens": 1,
                    },
                ],
            },
        }
    ).model_provider
    registry = ModelRegistry(settings)
    openai_kind, anthropic_kind = (
        ModelProviderKind.OPENAI_COMPATIBLE,
        ModelProviderKind.ANTHROPIC,
    )
    # The embeddings model's tiny window is no chat room.
    assert registry.chat_rooms() == {openai_kind: (8_000, 4_000), anthropic_kind: (50_000, 48_000)}
    registry.set_discovered(
        [
            ModelConfig(
                model_id="tiny", provider_id="b", max_context_tokens=2_000, max_output_tokens=500
            )
        ]
    )
    assert registry.chat_rooms()[anthropic_kind] == (2_000, 1_500)


# --- what a provider kind cannot honour --------------------------------------------------------


def claude_config(
    tmp_path: Path, first: FakeUpstream, second: FakeUpstream, **settings: Any
) -> Any:
    """p1 speaks Anthropic (on `first`), p2 is OpenAI-compatible (on `second`)."""
    return config(
        tmp_path,
        first,
        second,
        providers={"p1": {"kind": "anthropic", "base_url": first.anthropic_base_url}},
        models=[
            {"model_id": "claude", "provider_id": "p1", "upstream_model": "claude-sonnet-4-5"},
            {"model_id": "backup", "provider_id": "p2", "upstream_model": "gpt-4o-mini"},
        ],
        max_retries=0,
        **settings,
    )


async def test_a_provider_that_cannot_honour_the_request_is_skipped_for_one_that_can(
    tmp_path: Path, first: FakeUpstream, second: FakeUpstream, start_gateway: GatewayFactory
) -> None:
    server = await start_gateway(claude_config(tmp_path, first, second))
    client = sdk(server)
    for stream in (False, True):
        raw = await client.chat.completions.with_raw_response.create(
            model="claude", messages=USER, logprobs=True, stream=stream
        )
        # The requested model's provider cannot give logprobs: the one that can answers.
        assert raw.headers["x-palyra-model-id"] == "backup"
        assert raw.headers["x-palyra-failover-count"] == "0"
        if stream:
            chunks = [chunk async for chunk in raw.parse()]  # type: ignore[union-attr]
            assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert first.requests_to("/v1/messages") == []
    assert [r.json["logprobs"] for r in second.requests_to(CHAT)] == [True, True]
    # What it can honour, it serves itself.
    raw = await client.chat.completions.with_raw_response.create(model="claude", messages=USER)
    assert raw.headers["x-palyra-model-id"] == "claude"


async def test_a_fallback_that_cannot_honour_the_request_is_passed_over(
    tmp_path: Path, first: FakeUpstream, second: FakeUpstream, start_gateway: GatewayFactory
) -> None:
    async with FakeUpstream(api_key=UPSTREAM_KEY) as third:
        models = [
            {"model_id": "primary", "provider_id": "p3", "fallbacks": ["claude", "backup"]},
            {"model_id": "claude", "provider_id": "p1", "upstream_model": "claude-sonnet-4-5"},
            {"model_id": "backup", "provider_id": "p2", "upstream_model": "gpt-4o-mini"},
        ]
        server = await start_gateway(
            config(
                tmp_path,
                first,
                second,
                providers={"p1": {"kind": "anthropic", "base_url": first.anthropic_base_url}},
                more_providers=[provider("p3", third)],
                models=models,
                max_retries=0,
            )
        )
        third.script(CHAT, ErrorReply(503))
        raw = await sdk(server).chat.completions.with_raw_response.create(
            model="primary", messages=USER, n=2
        )
        assert raw.headers["x-palyra-model-id"] == "backup"
        assert len(raw.parse().choices) == 2
        assert first.requests_to("/v1/messages") == []


async def test_when_no_candidate_can_honour_the_request_the_400_names_what_and_who(
    tmp_path: Path, first: FakeUpstream, second: FakeUpstream, start_gateway: GatewayFactory
) -> None:
    both_anthropic = config(
        tmp_path,
        first,
        second,
        providers={
            "p1": {"kind": "anthropic", "base_url": first.anthropic_base_url},
            "p2": {"kind": "anthropic", "base_url": second.anthropic_base_url},
        },
        models=[
            {"model_id": "claude", "provider_id": "p1", "upstream_model": "c"},
            {"model_id": "backup", "provider_id": "p2", "upstream_model": "c"},
        ],
    )
    # Failover off; and on, with only candidates of the same kind.
    for cfg in (claude_config(tmp_path, first, second, failover_enabled=False), both_anthropic):
        server = await start_gateway(cfg)
        with pytest.raises(openai.BadRequestError) as caught:
            await sdk(server).chat.completions.create(
                model="claude",
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "input_audio",
                                "input_audio": {"data": "UklGRg==", "format": "wav"},
                            }
                        ],
                    }
                ],
            )
        error = caught.value.body
        assert isinstance(error, dict)
        assert error["message"].startswith(
            "provider p1 (anthropic) cannot honour input_audio content parts"
        ), error
        assert error["param"] == "messages[0].content[0]"
        assert caught.value.response.headers["x-palyra-model-id"] == "claude"
        assert first.requests_to("/v1/messages") == []
        assert second.requests_to(CHAT) == second.requests_to("/v1/messages") == []


async def test_a_request_with_deprecated_functions_needs_a_model_with_tool_calls(
    tmp_path: Path, first: FakeUpstream, second: FakeUpstream, start_gateway: GatewayFactory
) -> None:
    # Found in review: the capability check looked at `tools` only, so a request with the
    # deprecated `functions` reached a model configured without tool calls.
    models = [
        {"model_id": "primary", "provider_id": "p1", "tool_calls": False},
        {"model_id": "other", "provider_id": "p2"},
    ]
    server = await start_gateway(config(tmp_path, first, second, models=models, max_retries=0))
    client = sdk(server)
    functions = [{"name": "lookup", "parameters": {"type": "object", "properties": {}}}]
    with pytest.raises(openai.BadRequestError) as refused:
        await client.chat.completions.create(
            model="primary",
            messages=USER,
            functions=functions,  # type: ignore[arg-type]
        )
    assert "does not support tools" in refused.value.message
    assert not first.requests_to(CHAT)


# --- the breaker decides (issue 14's defect) ---------------------------------------------


async def test_threshold_n_lets_exactly_n_failed_requests_reach_the_primary(
    tmp_path: Path, first: FakeUpstream, second: FakeUpstream, start_gateway: GatewayFactory
) -> None:
    # Found: one live failure marked the primary unreachable and sorted it behind a healthy
    # fallback, so the second request never reached it (primary hit once, not twice).
    server = await start_gateway(
        config(tmp_path, first, second, max_retries=0, circuit_breaker_failure_threshold=2)
    )
    first.script(CHAT, *[ErrorReply(503)] * 5)
    client = sdk(server)
    for _ in range(4):
        raw = await client.chat.completions.with_raw_response.create(model="primary", messages=USER)
        assert raw.headers["x-palyra-provider-id"] == "p2"
    assert len(first.requests_to(CHAT)) == 2  # two failures reached it; then it opened
    assert len(second.requests_to(CHAT)) == 4


async def test_after_the_cooldown_the_next_request_probes_the_primary_and_traffic_returns(
    tmp_path: Path, first: FakeUpstream, second: FakeUpstream, start_gateway: GatewayFactory
) -> None:
    # Found: with a healthy fallback the primary was never probed by traffic after its
    # cooldown: it stayed behind the fallback until a /models probe said it was well.
    server = await start_gateway(
        config(
            tmp_path,
            first,
            second,
            max_retries=0,
            circuit_breaker_failure_threshold=1,
            circuit_breaker_cooldown_ms=2000,
        )
    )
    clock = clocked(server)
    client = sdk(server)
    first.script(CHAT, ErrorReply(503))
    raw = await client.chat.completions.with_raw_response.create(model="primary", messages=USER)
    assert raw.headers["x-palyra-provider-id"] == "p2"
    raw = await client.chat.completions.with_raw_response.create(model="primary", messages=USER)
    assert raw.headers["x-palyra-provider-id"] == "p2"  # open: skipped, not tried
    assert len(first.requests_to(CHAT)) == 1

    clock.now += 2.3  # the cooldown passes: the next request is the half-open probe
    raw = await client.chat.completions.with_raw_response.create(model="primary", messages=USER)
    assert raw.headers["x-palyra-provider-id"] == "p1"
    assert len(first.requests_to(CHAT)) == 2
    # The probe succeeded: closed, and traffic is back on the primary at once.
    for _ in range(3):
        raw = await client.chat.completions.with_raw_response.create(model="primary", messages=USER)
        assert raw.headers["x-palyra-provider-id"] == "p1"
    assert len(first.requests_to(CHAT)) == 5
    assert len(second.requests_to(CHAT)) == 2


async def test_a_failed_probe_opens_again_for_one_more_cooldown(
    tmp_path: Path, first: FakeUpstream, second: FakeUpstream, start_gateway: GatewayFactory
) -> None:
    server = await start_gateway(
        config(
            tmp_path,
            first,
            second,
            max_retries=0,
            circuit_breaker_failure_threshold=1,
            circuit_breaker_cooldown_ms=2000,
        )
    )
    clock = clocked(server)
    client = sdk(server)
    first.script(CHAT, ErrorReply(503), ErrorReply(503))
    await client.chat.completions.create(model="primary", messages=USER)
    clock.now += 2.3
    await client.chat.completions.create(model="primary", messages=USER)  # the probe: fails
    assert len(first.requests_to(CHAT)) == 2
    clock.now += 1.0  # within the new cooldown
    await client.chat.completions.create(model="primary", messages=USER)
    assert len(first.requests_to(CHAT)) == 2
    clock.now += 1.3
    await client.chat.completions.create(model="primary", messages=USER)  # probe again: ok
    assert len(first.requests_to(CHAT)) == 3


async def test_a_provider_whose_credential_was_refused_is_skipped_while_another_serves(
    tmp_path: Path, first: FakeUpstream, second: FakeUpstream, start_gateway: GatewayFactory
) -> None:
    server = await start_gateway(config(tmp_path, first, second, max_retries=0))
    client = sdk(server)
    first.script(CHAT, ErrorReply(401))
    raw = await client.chat.completions.with_raw_response.create(model="primary", messages=USER)
    assert raw.headers["x-palyra-provider-id"] == "p2"
    # auth_failed is definitive: no request goes there until a probe says otherwise.
    for _ in range(3):
        raw = await client.chat.completions.with_raw_response.create(model="primary", messages=USER)
        assert raw.headers["x-palyra-provider-id"] == "p2"
        assert raw.headers["x-palyra-failover-count"] == "0"
    assert len(first.requests_to(CHAT)) == 1


async def test_a_refused_credential_is_still_tried_when_nothing_else_can_serve(
    tmp_path: Path, first: FakeUpstream, second: FakeUpstream, start_gateway: GatewayFactory
) -> None:
    # Skipping it there would answer with our guess; trying it gives the upstream's own
    # error, or an answer at once when the credential has been mended since.
    server = await start_gateway(config(tmp_path, first, second, failover_enabled=False))
    client = sdk(server)
    first.script(CHAT, ErrorReply(401))
    with pytest.raises(openai.APIStatusError):
        await client.chat.completions.create(model="primary", messages=USER)
    reply = await client.chat.completions.create(model="primary", messages=USER)
    assert reply.choices[0].message.content == "echo: hello"
    assert len(first.requests_to(CHAT)) == 2


async def test_probe_health_orders_only_fallbacks_of_equal_rank(
    tmp_path: Path, first: FakeUpstream, second: FakeUpstream, start_gateway: GatewayFactory
) -> None:
    async with FakeUpstream(api_key=UPSTREAM_KEY) as third:
        models = [
            {"model_id": "primary", "provider_id": "p1", "upstream_model": "gpt-4o-mini"},
            {"model_id": "backup", "provider_id": "p2", "upstream_model": "gpt-4o-mini"},
            {"model_id": "spare", "provider_id": "p3", "upstream_model": "gpt-4o-mini"},
        ]
        server = await start_gateway(
            config(
                tmp_path,
                first,
                second,
                models=models,
                max_retries=0,
                more_providers=[provider("p3", third)],
            )
        )
        client = sdk(server)
        second.set_down(True)  # a probe finds p2 unreachable
        await console(server, "POST", "/console/v1/models/test-connection", {"provider_id": "p2"})
        second.set_down(False)
        first.script(CHAT, ErrorReply(503))
        # p2 and p3 are of equal rank (same tiers): the probe puts p3 first.
        raw = await client.chat.completions.with_raw_response.create(model="primary", messages=USER)
        assert raw.headers["x-palyra-provider-id"] == "p3"
        # The primary's probe result does not move it behind anything: it is asked first.
        await console(server, "POST", "/console/v1/models/test-connection", {"provider_id": "p1"})
        first.set_down(True)
        await console(server, "POST", "/console/v1/models/test-connection", {"provider_id": "p1"})
        first.set_down(False)
        sent = len(first.requests_to(CHAT))
        raw = await client.chat.completions.with_raw_response.create(model="primary", messages=USER)
        assert raw.headers["x-palyra-provider-id"] == "p1"
        assert len(first.requests_to(CHAT)) == sent + 1


# --- what an answer says when everything failed (issue 16) --------------------------------


async def test_when_every_candidate_fails_the_answer_names_each_and_its_error(
    tmp_path: Path, first: FakeUpstream, second: FakeUpstream, start_gateway: GatewayFactory
) -> None:
    server = await start_gateway(config(tmp_path, first, second, max_retries=0))
    first.script(CHAT, ErrorReply(503, message="first is overloaded"))
    second.script(CHAT, ErrorReply(401))
    with pytest.raises(openai.APIStatusError) as info:
        await sdk(server).chat.completions.create(model="primary", messages=USER)
    # The status and code stay the last candidate's, as before.
    assert info.value.status_code == 502
    error = info.value.body
    assert isinstance(error, dict)
    assert error["code"] == "upstream_auth_failed"
    assert error["message"] == (
        "all 2 candidates failed: [1] model primary on provider p1: upstream answered 503: "
        "first is overloaded; [2] model backup on provider p2: upstream refused the "
        "credential (401)"
    )


async def test_a_model_passed_over_for_its_credential_is_named_when_the_rest_fail(
    tmp_path: Path, first: FakeUpstream, second: FakeUpstream, start_gateway: GatewayFactory
) -> None:
    # (Found by review: asked for `primary`, the answer named only p2's failure, and nothing
    # said that `primary` was never tried.)
    server = await start_gateway(config(tmp_path, first, second, max_retries=0))
    client = sdk(server)
    first.script(CHAT, ErrorReply(401))
    await client.chat.completions.create(model="primary", messages=USER)  # p1: auth_failed
    second.script(CHAT, ErrorReply(500, message="backup broke"))
    with pytest.raises(openai.APIStatusError) as info:
        await client.chat.completions.create(model="primary", messages=USER)
    assert len(first.requests_to(CHAT)) == 1  # not tried again
    assert info.value.status_code == 502
    assert isinstance(info.value.body, dict)
    assert info.value.body["message"] == (
        "model backup on provider p2: upstream answered 500: backup broke; passed over, "
        "untried: model primary on provider p1 (auth_failed)"
    )


async def test_a_single_failure_reads_as_it_did(
    tmp_path: Path, first: FakeUpstream, second: FakeUpstream, start_gateway: GatewayFactory
) -> None:
    server = await start_gateway(config(tmp_path, first, second, failover_enabled=False))
    first.script(CHAT, ErrorReply(401))
    with pytest.raises(openai.APIStatusError) as info:
        await sdk(server).chat.completions.create(model="primary", messages=USER)
    assert isinstance(info.value.body, dict)
    assert info.value.body["message"] == "provider p1: upstream refused the credential (401)"


async def test_a_keyless_provider_refused_by_its_upstream_says_no_credential_was_sent(
    tmp_path: Path, first: FakeUpstream, second: FakeUpstream, start_gateway: GatewayFactory
) -> None:
    # A loopback OpenAI-compatible server configured with no credential at all, which wants one.
    keyless = {"p1": {"api_key_env": ""}}
    server = await start_gateway(
        config(tmp_path, first, second, providers=keyless, failover_enabled=False)
    )
    with pytest.raises(openai.APIStatusError) as info:
        await sdk(server).chat.completions.create(model="primary", messages=USER)
    assert "authorization" not in {k.lower() for k in first.requests_to(CHAT)[0].headers}
    assert info.value.status_code == 502
    assert isinstance(info.value.body, dict)
    assert info.value.body["code"] == "missing_credential"
    assert info.value.body["message"] == (
        "provider p1: no credential configured (api_key_vault_ref, auth_profile_id or "
        "api_key_env); the upstream answered 401 to a request sent without one"
    )


async def test_a_small_window_without_max_output_tokens_serves_requests_without_max_tokens(
    tmp_path: Path, start_gateway: GatewayFactory
) -> None:
    # `max_output_tokens` never written: its default must leave room for a prompt.
    small = validate_config(
        {
            "version": 1,
            "daemon": {"state_dir": str(tmp_path / "state")},
            "model_provider": {
                "providers": [{"provider_id": "det", "kind": "deterministic"}],
                "models": [{"model_id": "small", "provider_id": "det", "max_context_tokens": 300}],
            },
        }
    )
    server = await start_gateway(small)
    completion = await sdk(server).chat.completions.create(model="small", messages=USER)
    assert completion.choices[0].message.content == "hello"
