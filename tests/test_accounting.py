"""Accounting through the daemon (issue 15, points 1-4 and 7): client keys made with the admin
API and used with the official OpenAI and Anthropic SDKs against the fake upstreams; their
models, rpm, tpm and budget held; one ledger record per request however it ends (whole,
streamed, failed upstream, refused, a bad body, a client gone mid-stream, an agent run); the
usage summary and Prometheus counters; and three daemons sharing PostgreSQL and Redis holding
one key to its rpm, its revocation and its budget."""

from __future__ import annotations

import asyncio
import calendar
import datetime as dt
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from openai import AsyncOpenAI
from prometheus_client.parser import text_string_to_metric_families

from palyra.config import PalyraConfig, validate_config
from palyra.daemon import build_app
from palyra.server.keys import GATEWAY, RUNTIME
from tests.conftest import ADMIN_TOKEN, UPSTREAM_KEY, GatewayFactory
from tests.fakes.upstream import ChatReply, ErrorReply, FakeUpstream, Reply
from tests.state.conftest import drop_schema, postgres_schema_url

CHAT = "/v1/chat/completions"
KEYS = "/console/v1/keys"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
REDIS_URL = os.environ.get("PALYRA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# "priced" costs $1000 per million input tokens and $2000 per million output tokens, so the
# usage (100, 50) the fake is scripted to report costs 0.1 + 0.1 = $0.20.
PRICE = {"input_cost_per_mtok": 1000.0, "output_cost_per_mtok": 2000.0}
USAGE = (100, 50)
COST = 0.2
# How long a record may take to reach the ledger (the writer batches every 0.5 s).
LEDGER_WAIT_S = 10.0
AGENTS_TOML = """version = 1
[[agents]]
agent_id = "helper"
model = "priced"
system_prompt = "Be brief."
max_turns = 2
"""


class GatedUpstream(FakeUpstream):
    """The fake upstream, whose chat answers can be held until the test lets them go."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gate: asyncio.Event | None = None
        self.held = 0

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        gate = self.gate
        if gate is not None and request.path == CHAT:
            self.held += 1
            await gate.wait()
        return await super()._handle(request)


@pytest.fixture
async def upstream() -> AsyncIterator[GatedUpstream]:
    fake = GatedUpstream(api_key=UPSTREAM_KEY)
    await fake.start()
    try:
        yield fake
    finally:
        fake.gate = None
        await fake.close()


def accounting_config(
    upstream: FakeUpstream,
    state_dir: Path,
    *,
    usage: dict[str, Any] | None = None,
    state: dict[str, Any] | None = None,
    agents_file: str = "",
    failover: bool = False,
) -> PalyraConfig:
    fake = {
        "kind": "openai_compatible",
        "base_url": upstream.openai_base_url,
        "allow_private_base_url": True,
        "api_key_env": "PALYRA_TEST_UPSTREAM_KEY",
        "discovery": False,
    }
    providers = [
        # One retry on "oai", none on "oai-b": the retries and failovers a record counts.
        {"provider_id": "oai", **fake, "max_retries": 1},
        {"provider_id": "oai-b", **fake},
        {
            "provider_id": "claude",
            "kind": "anthropic",
            "base_url": upstream.anthropic_base_url,
            "allow_private_base_url": True,
            "api_key_env": "PALYRA_TEST_UPSTREAM_KEY",
            "discovery": False,
        },
        {"provider_id": "det", "kind": "deterministic"},
    ]
    models = [
        {"model_id": "priced", "provider_id": "oai", "upstream_model": "gpt-4o-mini", **PRICE},
        {"model_id": "plain", "provider_id": "oai", "upstream_model": "gpt-4o-mini"},
        {"model_id": "fo", "provider_id": "oai", "upstream_model": "gpt-4o-mini", **PRICE},
        {
            "model_id": "fo",
            "provider_id": "oai-b",
            "upstream_model": "gpt-4o-mini",
            "priority": 1,
            **PRICE,
        },
        {
            "model_id": "claude",
            "provider_id": "claude",
            "upstream_model": "claude-sonnet-4-5",
            "max_output_tokens": 4096,
            **PRICE,
        },
        {"model_id": "deterministic", "provider_id": "det"},
    ]
    raw: dict[str, Any] = {
        "version": 1,
        "daemon": {"state_dir": str(state_dir)},
        "model_provider": {
            # Off: a failure is the client's to see, not another model's to mend (the
            # deployments of one model are still tried in turn).
            "failover_enabled": failover,
            "max_retries": 0,
            "retry_backoff_ms": 0,
            "circuit_breaker_failure_threshold": 10,
            "discovery_ttl_ms": 3_600_000,
            "health_ttl_ms": 3_600_000,
            "providers": providers,
            "models": models,
        },
    }
    if usage is not None:
        raw["usage"] = usage
    if state is not None:
        raw["state"] = state
    if agents_file:
        raw["agents"] = {"file": agents_file}
    return validate_config(raw)


@pytest.fixture
async def server(
    upstream: GatedUpstream, tmp_path: Path, start_gateway: GatewayFactory
) -> TestServer:
    return await start_gateway(accounting_config(upstream, tmp_path / "state"))


# --- helpers ----------------------------------------------------------------------------


async def admin(server: TestServer, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession(headers=AUTH) as http,
        http.request(method, str(server.make_url(path)), json=body) as response,
    ):
        return response.status, await response.json(content_type=None)


async def make_key(server: TestServer, **fields: Any) -> tuple[dict[str, Any], str]:
    status, answer = await admin(server, "POST", KEYS, {"name": "team-a", **fields})
    assert status == 201, answer
    return answer["key"], answer["secret"]


def sdk(server: TestServer, secret: str) -> AsyncOpenAI:
    return AsyncOpenAI(
        api_key=secret, base_url=str(server.make_url("/v1")), max_retries=0, timeout=30
    )


def rid() -> str:
    return "req-" + uuid.uuid4().hex[:16]


def said(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


async def chat(
    client: AsyncOpenAI, model: str = "priced", *, request_id: str = "", **kwargs: Any
) -> Any:
    headers = {"x-request-id": request_id} if request_id else {}
    kwargs.setdefault("messages", said("hello"))
    return await client.chat.completions.create(model=model, extra_headers=headers, **kwargs)


async def stream_text(
    client: AsyncOpenAI, model: str = "priced", *, request_id: str = "", **kwargs: Any
) -> str:
    stream = await chat(client, model, request_id=request_id, stream=True, **kwargs)
    parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
    return "".join(parts)


async def requests_page(server: TestServer, query: str = "") -> list[dict[str, Any]]:
    status, page = await admin(server, "GET", f"/console/v1/requests?limit=200{query}")
    assert status == 200, page
    records: list[dict[str, Any]] = page["requests"]
    return records


async def wait_for(
    condition: Callable[[], Awaitable[Any]], what: str, timeout_s: float = LEDGER_WAIT_S
) -> Any:
    """`condition()`'s first truthy answer, asked every 50 ms for at most `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        await asyncio.sleep(0.05)


async def record_of(server: TestServer, request_id: str) -> dict[str, Any]:
    """The one ledger record of `request_id`, once the writer has written it; then, with the
    writer flushed, that it is the only one."""

    async def found() -> list[dict[str, Any]]:
        return [r for r in await requests_page(server) if r["request_id"] == request_id]

    await wait_for(found, f"ledger record of {request_id}")
    await server.app[RUNTIME].usage.flush()
    records = await found()
    assert len(records) == 1, records
    return records[0]


def assert_no_text(record: dict[str, Any], *texts: str) -> None:
    assert record["prompt"] is None and record["answer"] is None, record
    shown = json.dumps(record)
    for text in texts:
        assert text not in shown, (text, record)


def sse_without_usage(text: str) -> bytes:
    def frame(delta: dict[str, Any], finish: str | None) -> bytes:
        chunk = {
            "id": "chatcmpl-nousage",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-4o-mini",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"

    return (
        frame({"role": "assistant", "content": text}, None)
        + frame({}, "stop")
        + b"data: [DONE]\n\n"
    )


def next_utc_midnight_ms(now_s: float) -> int:
    today = dt.datetime.fromtimestamp(now_s, dt.UTC).date()
    tomorrow = today + dt.timedelta(days=1)
    return calendar.timegm(tomorrow.timetuple()) * 1000


# --- client keys and their limits ---------------------------------------------------------


async def test_a_client_key_calls_its_models_whole_and_streamed_and_no_other(
    server: TestServer, upstream: GatedUpstream
) -> None:
    _, secret = await make_key(server, models=["priced", "claude"])
    async with sdk(server, secret) as client:
        answer = await chat(client)
        assert answer.choices[0].message.content and answer.model == "priced"
        assert await stream_text(client) == "echo: hello"
        assert sorted(m.id for m in (await client.models.list()).data) == ["claude", "priced"]
        with pytest.raises(openai.PermissionDeniedError) as refused:
            await chat(client, "plain")
        assert refused.value.status_code == 403 and refused.value.code == "model_not_allowed"
        assert "'plain'" in refused.value.message and "team-a" in refused.value.message
    # The Anthropic SDK on /v1/messages, the key sent as x-api-key.
    async with anthropic.AsyncAnthropic(
        api_key=secret, base_url=str(server.make_url("")), max_retries=0, timeout=30
    ) as claude:
        message = await claude.messages.create(
            model="claude", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        )
        assert message.content[0].type == "text" and message.usage.output_tokens > 0
        with pytest.raises(anthropic.PermissionDeniedError) as refused_too:
            await claude.messages.create(
                model="plain", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
            )
        assert "'plain'" in str(refused_too.value)
    # Only the allowed calls reached the upstream.
    assert len(upstream.requests_to(CHAT)) == 2 and len(upstream.requests_to("/v1/messages")) == 1


async def test_rpm_gives_429_rate_limit_exceeded_with_retry_after(server: TestServer) -> None:
    key, secret = await make_key(server, rpm=3, models=["deterministic"])
    async with sdk(server, secret) as client:
        for _ in range(3):
            await chat(client, "deterministic")
        request_id = rid()
        with pytest.raises(openai.RateLimitError) as refused:
            await chat(client, "deterministic", request_id=request_id)
    error = refused.value
    assert error.code == "rate_limit_exceeded" and "rpm limit 3" in error.message
    assert 1 <= int(error.response.headers["Retry-After"]) <= 60
    record = await record_of(server, request_id)
    assert (record["key_id"], record["status"], record["model"]) == (
        key["key_id"],
        429,
        "deterministic",
    )
    assert "rpm limit 3" in record["error"]
    # The admin token is held to nothing.
    async with sdk(server, ADMIN_TOKEN) as client:
        await chat(client, "deterministic")


async def test_tpm_counts_the_estimate_and_then_what_was_used(
    server: TestServer, upstream: GatedUpstream
) -> None:
    # Each request asks for up to 600 tokens: two estimates (600 and a few of prompt each)
    # cannot both fit in 1000, but one estimate and a corrected 15 can.
    _, secret = await make_key(server, tpm=1000, models=["priced"])
    upstream.script(CHAT, ChatReply(usage=(10, 5)), ChatReply(usage=(10, 5)))
    upstream.gate = asyncio.Event()
    async with sdk(server, secret) as client:
        first = asyncio.ensure_future(chat(client, max_tokens=600))

        async def held() -> bool:
            return upstream.held == 1

        await wait_for(held, "the first request at the upstream")
        with pytest.raises(openai.RateLimitError) as refused:
            await chat(client, max_tokens=600)
        assert refused.value.code == "rate_limit_exceeded"
        assert "tpm limit 1000" in refused.value.message
        assert 1 <= int(refused.value.response.headers["Retry-After"]) <= 60
        upstream.gate.set()
        assert (await first).usage.total_tokens == 15
        # The first now weighs its 15 tokens, not its estimate: the second fits.
        assert (await chat(client, max_tokens=600)).usage.total_tokens == 15
        # A request that alone is past the key's tpm can never fit: a 400, not a wait.
        with pytest.raises(openai.BadRequestError) as never:
            await chat(client, max_tokens=1200)
        assert never.value.code == "exceeds_tpm_limit"


async def test_a_budget_is_spent_at_config_prices_then_429_budget_exceeded(
    server: TestServer, upstream: GatedUpstream
) -> None:
    key, secret = await make_key(server, budget_usd=0.3, budget_period="day")
    upstream.script(CHAT, ChatReply(usage=USAGE), ChatReply(usage=USAGE))
    whole, streamed, refused_id = rid(), rid(), rid()
    async with sdk(server, secret) as client:
        await chat(client, request_id=whole)  # $0.20 of $0.30
        await stream_text(client, request_id=streamed)  # $0.40: spent
        now_s = time.time()
        with pytest.raises(openai.RateLimitError) as refused:
            await chat(client, request_id=refused_id)
    error = refused.value
    assert error.code == "budget_exceeded"
    assert "team-a" in error.message and "$0.4000 of its $0.30 budget" in error.message
    reset_ms = next_utc_midnight_ms(now_s)
    reset_text = dt.datetime.fromtimestamp(reset_ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    assert f"for this day; it resets at {reset_text}" in error.message
    retry_after = int(error.response.headers["Retry-After"])
    assert abs(retry_after - (reset_ms / 1000 - now_s)) < 30, retry_after
    for request_id in (whole, streamed):
        record = await record_of(server, request_id)
        assert record["cost_usd"] == pytest.approx(COST) and record["status"] == 200
        assert record["key_id"] == key["key_id"] and not record["cost_estimated"]
    record = await record_of(server, refused_id)
    assert record["status"] == 429 and record["cost_usd"] is None
    assert "budget" in record["error"]
    assert len(upstream.requests_to(CHAT)) == 2


async def test_failover_never_takes_a_key_to_a_model_it_may_not_call(
    upstream: GatedUpstream, tmp_path: Path, start_gateway: GatewayFactory
) -> None:
    # With failover on, "priced" failing would move on to "claude" (another provider): not
    # for a key that may call "priced" only, which gets the failure instead.
    config = accounting_config(upstream, tmp_path / "state", failover=True)
    server = await start_gateway(config)
    _, secret = await make_key(server, models=["priced"])
    upstream.script(CHAT, ErrorReply(500), ErrorReply(500))
    async with sdk(server, ADMIN_TOKEN) as client:
        assert (await chat(client)).model != "priced"  # the admin's request moved on
    upstream.script(CHAT, ErrorReply(500), ErrorReply(500))
    request_id = rid()
    async with sdk(server, secret) as client:
        with pytest.raises(openai.APIStatusError) as failed:
            await chat(client, request_id=request_id)
    assert failed.value.status_code == 502
    record = await record_of(server, request_id)
    assert (record["model"], record["provider"], record["status"]) == ("priced", "oai", 502)
    assert record["failovers"] == 0 and record["retries"] == 1


# --- the ledger -----------------------------------------------------------------------------


async def test_one_record_per_request_however_it_ends(
    server: TestServer, upstream: GatedUpstream
) -> None:
    key, secret = await make_key(server, name="ledger", models=["priced", "fo"])
    ids = {kind: rid() for kind in ("whole", "stream", "estimated", "failed", "retried", "fo")}
    upstream.script(
        CHAT,
        ChatReply(content="whole answer text", usage=USAGE),
        ChatReply(content="streamed answer text", usage=USAGE),
        Reply(body=sse_without_usage("abcdefgh"), headers={"Content-Type": "text/event-stream"}),
        ErrorReply(500),
        ErrorReply(500),
        ErrorReply(500),
        ChatReply(usage=USAGE),
        ErrorReply(500),
        ErrorReply(500),
        ChatReply(usage=USAGE),
    )
    async with sdk(server, secret) as client:
        await chat(client, request_id=ids["whole"], messages=said("secret prompt one"))
        await stream_text(client, request_id=ids["stream"], messages=said("secret prompt two"))
        assert await stream_text(client, request_id=ids["estimated"]) == "abcdefgh"
        with pytest.raises(openai.APIStatusError) as failed:
            await chat(client, request_id=ids["failed"])
        await chat(client, request_id=ids["retried"])
        await chat(client, "fo", request_id=ids["fo"])

    base = {"key_id": key["key_id"], "key_name": "ledger", "agent_id": None, "route": CHAT}
    record = await record_of(server, ids["whole"])
    assert record | base == record
    assert (record["model"], record["provider"], record["deployment"]) == (
        "priced",
        "oai",
        "priced@oai",
    )
    assert (record["status"], record["input_tokens"], record["output_tokens"]) == (200, 100, 50)
    assert record["cost_usd"] == pytest.approx(COST) and record["cost_estimated"] is False
    assert record["stream"] is False and record["ttft_ms"] is None and record["latency_ms"] > 0
    assert (record["retries"], record["failovers"], record["error"]) == (0, 0, None)
    assert_no_text(record, "secret prompt one", "whole answer text")

    record = await record_of(server, ids["stream"])
    assert record | base == record and record["stream"] is True and record["status"] == 200
    assert (record["input_tokens"], record["output_tokens"]) == USAGE
    assert record["cost_usd"] == pytest.approx(COST) and record["cost_estimated"] is False
    assert 0 < record["ttft_ms"] <= record["latency_ms"]
    assert_no_text(record, "secret prompt two", "streamed answer text")

    # The upstream sent no usage: Palyra's own count, so marked estimated, still priced.
    record = await record_of(server, ids["estimated"])
    assert record["status"] == 200 and record["cost_estimated"] is True
    assert record["output_tokens"] == 2 and record["input_tokens"] > 0
    expected = (record["input_tokens"] * 1000 + 2 * 2000) / 1_000_000
    assert record["cost_usd"] == pytest.approx(expected)
    assert record["ttft_ms"] is not None

    record = await record_of(server, ids["failed"])
    assert record["status"] == failed.value.status_code >= 500
    assert (record["model"], record["provider"], record["retries"]) == ("priced", "oai", 1)
    assert record["error"] and record["cost_usd"] is None and record["input_tokens"] == 0

    record = await record_of(server, ids["retried"])
    assert (record["status"], record["retries"], record["failovers"]) == (200, 1, 0)
    assert record["cost_usd"] == pytest.approx(COST)

    record = await record_of(server, ids["fo"])
    assert (record["status"], record["model"], record["provider"]) == (200, "fo", "oai-b")
    assert record["deployment"] == "fo@oai-b" and record["failovers"] == 1
    assert record["cost_usd"] == pytest.approx(COST)


async def test_refusals_and_bad_bodies_are_recorded_once(server: TestServer) -> None:
    key, secret = await make_key(server, name="refused", models=["priced"])
    not_allowed, bad_body, unknown = rid(), rid(), rid()
    async with sdk(server, secret) as client:
        with pytest.raises(openai.PermissionDeniedError):
            await chat(client, "plain", request_id=not_allowed)
        with pytest.raises(openai.BadRequestError) as bad:
            await chat(client, request_id=bad_body, messages=[{"role": "wizard", "content": "x"}])
        with pytest.raises(openai.APIStatusError) as missing:
            await chat(client, "no-such-model", request_id=unknown)
    record = await record_of(server, not_allowed)
    assert (record["key_id"], record["status"], record["model"]) == (key["key_id"], 403, "plain")
    assert "may not call model 'plain'" in record["error"] and record["cost_usd"] is None
    record = await record_of(server, bad_body)
    assert (record["key_id"], record["status"], record["route"]) == (key["key_id"], 400, CHAT)
    assert record["error"] and record["error"] in bad.value.message
    record = await record_of(server, unknown)
    assert record["status"] == missing.value.status_code and record["key_id"] == key["key_id"]


async def test_a_client_gone_mid_stream_is_recorded_as_499(
    server: TestServer, upstream: GatedUpstream
) -> None:
    key, secret = await make_key(server, name="leaver")
    long_answer = " ".join(f"word{i}" for i in range(400))
    upstream.script(CHAT, ChatReply(content=long_answer, chunk_delay_s=0.02, usage=USAGE))
    request_id = rid()
    async with sdk(server, secret) as client:
        stream = await chat(client, request_id=request_id, stream=True)
        seen = 0
        async for _ in stream:
            seen += 1
            if seen == 3:
                break
        await stream.close()
    record = await record_of(server, request_id)
    assert (record["status"], record["stream"], record["key_id"]) == (499, True, key["key_id"])
    assert record["error"] == "client closed request"
    assert (record["model"], record["provider"], record["deployment"]) == (
        "priced",
        "oai",
        "priced@oai",
    )
    # No usage came before the client left: what was relayed, counted by Palyra.
    assert record["cost_estimated"] is True and record["output_tokens"] > 0
    assert record["ttft_ms"] is not None and record["ttft_ms"] <= record["latency_ms"]

    async def cancelled() -> bool:
        return upstream.cancelled_streams == 1

    await wait_for(cancelled, "the upstream stream cancelled")


async def test_no_prompt_or_answer_text_in_the_ledger_by_default(
    server: TestServer, upstream: GatedUpstream
) -> None:
    _, secret = await make_key(server)
    upstream.script(CHAT, ChatReply(content="the private answer", usage=USAGE))
    request_id = rid()
    async with sdk(server, secret) as client:
        await chat(client, request_id=request_id, messages=said("the private prompt"))
    record = await record_of(server, request_id)
    assert_no_text(record, "the private prompt", "the private answer")


async def test_log_payloads_keeps_the_prompt_and_the_answer(
    upstream: GatedUpstream, tmp_path: Path, start_gateway: GatewayFactory
) -> None:
    config = accounting_config(upstream, tmp_path / "state", usage={"log_payloads": True})
    server = await start_gateway(config)
    _, secret = await make_key(server)
    upstream.script(
        CHAT,
        ChatReply(content="the kept answer", usage=USAGE),
        ChatReply(content="the kept streamed answer", usage=USAGE),
    )
    whole, streamed = rid(), rid()
    async with sdk(server, secret) as client:
        await chat(client, request_id=whole, messages=said("the kept prompt"))
        await stream_text(client, request_id=streamed, messages=said("the kept streamed prompt"))
    record = await record_of(server, whole)
    assert "the kept prompt" in (record["prompt"] or "")
    assert "the kept answer" in (record["answer"] or "")
    record = await record_of(server, streamed)
    assert "the kept streamed prompt" in (record["prompt"] or "")
    assert record["answer"] == "the kept streamed answer"


# --- seeing it ------------------------------------------------------------------------------


async def test_usage_by_key_and_model_and_the_prometheus_counters(
    server: TestServer, upstream: GatedUpstream
) -> None:
    alpha, alpha_secret = await make_key(server, name="alpha")
    beta, beta_secret = await make_key(server, name="beta")
    upstream.script(CHAT, *[ChatReply(usage=USAGE) for _ in range(3)])
    ids = [rid() for _ in range(4)]
    async with sdk(server, alpha_secret) as client:
        await chat(client, request_id=ids[0])
        await stream_text(client, request_id=ids[1])
        with pytest.raises(openai.NotFoundError):  # an error, and no spend
            await chat(client, "nope", request_id=ids[2])
    async with sdk(server, beta_secret) as client:
        await chat(client, request_id=ids[3])
    for request_id in ids:
        await record_of(server, request_id)

    status, by_key = await admin(server, "GET", "/console/v1/usage?group_by=key&since=1h")
    assert status == 200, by_key
    groups = {g["key_id"]: g for g in by_key["groups"]}
    assert set(groups) == {alpha["key_id"], beta["key_id"]}
    a, b = groups[alpha["key_id"]], groups[beta["key_id"]]
    assert (a["key_name"], a["requests"], a["errors"]) == ("alpha", 3, 1)
    assert (a["input_tokens"], a["output_tokens"]) == (200, 100)
    assert a["cost_usd"] == pytest.approx(2 * COST) and a["unpriced_requests"] == 1
    assert (b["requests"], b["input_tokens"], b["output_tokens"]) == (1, 100, 50)
    assert b["cost_usd"] == pytest.approx(COST)
    assert by_key["total"]["cost_usd"] == pytest.approx(3 * COST)
    assert by_key["total"]["requests"] == 4

    _, by_model = await admin(server, "GET", "/console/v1/usage?group_by=model&since=1h")
    models = {g["group"]: g for g in by_model["groups"]}
    # An unknown model is the client's invention: the ledger keeps no name for it.
    assert set(models) == {"priced", ""} and models[""]["requests"] == 1
    assert models["priced"]["requests"] == 3 and models["priced"]["errors"] == 0
    assert models["priced"]["cost_usd"] == pytest.approx(3 * COST)
    assert models["priced"]["input_tokens"] == 300 and models[""]["cost_usd"] is None

    async with (
        aiohttp.ClientSession(headers=AUTH) as http,
        http.get(str(server.make_url("/metrics"))) as response,
    ):
        assert response.status == 200
        text = await response.text()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }

    def sample(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    tokens = "palyra_usage_tokens_total"
    assert sample(tokens, key="alpha", model="priced", kind="input") == 200
    assert sample(tokens, key="alpha", model="priced", kind="output") == 100
    assert sample(tokens, key="beta", model="priced", kind="input") == 100
    cost = "palyra_usage_cost_usd_total"
    assert sample(cost, key="alpha", model="priced") == pytest.approx(2 * COST)
    assert sample(cost, key="beta", model="priced") == pytest.approx(COST)
    assert not any(n == tokens and ("model", "nope") in labels for n, labels in samples)


async def test_an_agent_run_and_an_agent_bound_key_are_recorded_with_the_agent(
    upstream: GatedUpstream, tmp_path: Path, start_gateway: GatewayFactory
) -> None:
    agents = tmp_path / "agents.toml"
    agents.write_text(AGENTS_TOML)
    config = accounting_config(upstream, tmp_path / "state", agents_file=str(agents))
    server = await start_gateway(config)
    upstream.script(CHAT, ChatReply(content="done", usage=USAGE), ChatReply(usage=USAGE))
    status, run = await admin(
        server, "POST", "/console/v1/runs", {"agent_id": "helper", "input": "hi"}
    )
    assert status == 200 and run["status"] == "succeeded", run

    async def agent_records() -> list[dict[str, Any]]:
        return [r for r in await requests_page(server) if r["agent_id"] == "helper"]

    (record,) = await wait_for(agent_records, "the agent run's record")
    assert (record["route"], record["key_id"], record["model"], record["status"]) == (
        "agent",
        None,
        "priced",
        200,
    )
    assert (record["input_tokens"], record["output_tokens"]) == USAGE
    assert record["cost_usd"] == pytest.approx(COST)

    key, secret = await make_key(server, name="bot", agent_id="helper")
    request_id = rid()
    async with sdk(server, secret) as client:
        await chat(client, request_id=request_id)
    record = await record_of(server, request_id)
    assert (record["key_id"], record["agent_id"], record["route"]) == (
        key["key_id"],
        "helper",
        CHAT,
    )


# --- three daemons sharing PostgreSQL and Redis -------------------------------------------


async def redis_or_skip() -> None:
    redis = pytest.importorskip("redis.asyncio")
    client = redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        await client.ping()
    except (OSError, redis.RedisError) as exc:
        pytest.skip(f"Redis not reachable at {REDIS_URL}: {exc}")
    finally:
        await client.aclose()


@pytest.fixture
async def three(upstream: GatedUpstream, tmp_path: Path) -> AsyncIterator[list[TestServer]]:
    """Three daemons on one PostgreSQL schema and one Redis, each its own state dir."""
    await redis_or_skip()
    url, schema = await postgres_schema_url()
    servers: list[TestServer] = []
    env = {"PALYRA_ADMIN_TOKEN": ADMIN_TOKEN, "PALYRA_TEST_UPSTREAM_KEY": UPSTREAM_KEY}
    try:
        for n in range(3):
            state = {"backend": "postgres", "url": url, "redis_url": REDIS_URL}
            config = accounting_config(upstream, tmp_path / f"state-{n}", state=state)
            server = TestServer(build_app(config, env=env), host="127.0.0.1")
            await server.start_server()
            servers.append(server)
        yield servers
    finally:
        for server in servers:
            await server.close()
        await drop_schema(schema)


async def known_everywhere(servers: list[TestServer], secret: str) -> None:
    """Wait until every daemon takes the key (made on one, the others learn it in 0.5 s)."""
    for server in servers:
        async with sdk(server, secret) as client:

            async def known(client: AsyncOpenAI = client) -> bool:
                try:
                    await client.models.list()
                except openai.AuthenticationError:
                    return False
                return True

            await wait_for(known, "the key known to every daemon", timeout_s=5)


async def test_three_daemons_hold_a_key_to_its_rpm_and_its_revocation(
    three: list[TestServer],
) -> None:
    _, secret = await make_key(three[0], name="shared", rpm=5, models=["deterministic"])
    await known_everywhere(three, secret)
    clients = [sdk(server, secret) for server in three]
    try:

        async def one(n: int) -> int:
            try:
                await chat(clients[n % 3], "deterministic")
            except openai.RateLimitError as exc:
                assert exc.code == "rate_limit_exceeded" and "Retry-After" in exc.response.headers
                return 429
            return 200

        statuses = await asyncio.gather(*(one(n) for n in range(15)))
        assert statuses.count(200) == 5 and statuses.count(429) == 10, statuses
    finally:
        for client in clients:
            await client.close()

    key, secret = await make_key(three[0], name="revoked")
    await known_everywhere(three, secret)
    status, _ = await admin(three[0], "DELETE", f"{KEYS}/{key['key_id']}")
    assert status == 200
    revoked_at = time.monotonic()
    for server in three:
        async with sdk(server, secret) as client:

            async def refused(client: AsyncOpenAI = client) -> bool:
                try:
                    await chat(client, "deterministic")
                except openai.AuthenticationError as exc:
                    assert exc.code == "key_revoked"
                    return True
                return False

            await wait_for(refused, "the revocation seen", timeout_s=2)
        assert time.monotonic() - revoked_at < 1.0, "a daemon took a revoked key after 1 s"


async def spend_on(server: TestServer, secret: str, upstream: FakeUpstream) -> None:
    upstream.script(CHAT, ChatReply(usage=USAGE))
    async with sdk(server, secret) as client:
        await chat(client)  # $0.20: past a $0.15 budget


async def budget_refused(server: TestServer, secret: str) -> bool:
    async with sdk(server, secret) as client:
        try:
            await chat(client, "deterministic")  # priced at nothing: spends none
        except openai.RateLimitError as exc:
            assert exc.code == "budget_exceeded" and "Retry-After" in exc.response.headers
            return True
    return False


async def test_a_budget_spent_on_one_daemon_is_seen_by_the_others_within_a_second(
    three: list[TestServer], upstream: GatedUpstream
) -> None:
    _, secret = await make_key(three[0], name="budgeted", budget_usd=0.15, budget_period="day")
    await known_everywhere(three, secret)
    for server in three:  # each daemon has had a request of the key
        assert not await budget_refused(server, secret)
    await spend_on(three[0], secret, upstream)
    spent_at = time.monotonic()
    assert await budget_refused(three[0], secret)
    for server in three[1:]:

        async def refused(server: TestServer = server) -> bool:
            return await budget_refused(server, secret)

        await wait_for(refused, "the spend seen by another daemon", timeout_s=3)
        assert time.monotonic() - spent_at < 1.5, "another daemon saw the spend after 1.5 s"


# Found: a daemon's budget book read back only the keys it had checked itself.
async def test_a_daemon_that_never_saw_the_key_refuses_a_budget_spent_elsewhere(
    three: list[TestServer], upstream: GatedUpstream
) -> None:
    _, secret = await make_key(three[0], name="budgeted", budget_usd=0.15, budget_period="day")
    await known_everywhere(three, secret)
    await spend_on(three[0], secret, upstream)
    assert await budget_refused(three[0], secret)

    async def seen() -> bool:
        return await budget_refused(three[1], secret)

    await wait_for(seen, "the spend seen by the second daemon", timeout_s=3)
    # Redis has the spend now (the second daemon read it there); the third, which never had a
    # request of this key, must refuse its very first one once its book has synced.
    accounting = three[2].app[GATEWAY].router.accounting
    assert accounting is not None
    await accounting.budgets.sync()
    assert await budget_refused(three[2], secret)
