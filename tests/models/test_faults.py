"""Faults on the wire between the daemon and its upstreams, over loopback.

A TCP proxy (`tests/fakes/faulty.py`) in front of the fake upstream resets connections before
the headers and in the middle of a stream, stalls, trickles a body that never ends, and answers
garbage or an HTML page; a name under `.invalid` never resolves. Each fault is driven through
both provider kinds, then through the daemon: each must end in a retry, a failover or a clear
502/504, and be counted once by the provider's circuit breaker.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Literal

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer

from palyra.breaker import CircuitBreaker
from palyra.config import ModelConfig, ProviderConfig, ProviderSettings, validate_config
from palyra.credentials import EnvCredentials
from palyra.errors import (
    ErrorClass,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from palyra.models.anthropic import AnthropicProvider
from palyra.models.http import HttpProvider
from palyra.models.openai import OpenAIProvider
from palyra.server.keys import GATEWAY
from palyra.types import ChatDelta, ChatRequest
from tests.conftest import ADMIN_TOKEN, UPSTREAM_KEY, GatewayFactory
from tests.fakes.faulty import (
    GARBAGE,
    FaultyProxy,
    Pass,
    Raw,
    ResetAfterFrames,
    ResetBeforeHeaders,
    Stall,
    Trickle,
    html_200,
)
from tests.fakes.upstream import FakeUpstream, Reply

Kind = Literal["openai", "anthropic"]
KINDS: list[Kind] = ["openai", "anthropic"]
TIMEOUT_MS = 400
# Frames up to and including the first one with content: OpenAI opens with a role chunk;
# Anthropic with message_start, content_block_start and a ping.
FIRST_CONTENT_FRAMES = {"openai": 2, "anthropic": 4}
CHAT_PATH = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages"}

# An answer that keeps coming and never ends: whole, and as a stream of keep-alive comments.
ENDLESS_JSON = Trickle(
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{",
    piece=b" ",
)
ENDLESS_SSE = Trickle(
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
    piece=b"9\r\n: ping\n\n\n\r\n",
)


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream(api_key=UPSTREAM_KEY) as fake:
        yield fake


@pytest.fixture
async def proxy(upstream: FakeUpstream) -> AsyncIterator[FaultyProxy]:
    port = int(upstream.url.rsplit(":", 1)[1])
    async with FaultyProxy(target=("127.0.0.1", port)) as faulty:
        yield faulty


def base_url(kind: Kind, root: str) -> str:
    return root + "/v1" if kind == "openai" else root


def chat(stream: bool = False) -> ChatRequest:
    return ChatRequest.model_validate(
        {"messages": [{"role": "user", "content": "hello there"}], "stream": stream}
    )


MODEL = ModelConfig(
    model_id="m", provider_id="p", upstream_model="gpt-4o-mini", max_output_tokens=100
)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as http:
        yield http


Make = Callable[[Kind, str], HttpProvider]


@pytest.fixture
def make(session: aiohttp.ClientSession) -> Make:
    def build(kind: Kind, root: str) -> HttpProvider:
        config = ProviderConfig(
            provider_id="p",
            kind="openai_compatible" if kind == "openai" else "anthropic",
            base_url=base_url(kind, root),
            allow_private_base_url=True,
            api_key_env="KEY",
        )
        settings = ProviderSettings(
            request_timeout_ms=TIMEOUT_MS,
            max_retries=0,
            retry_backoff_ms=0,
            circuit_breaker_failure_threshold=3,
            circuit_breaker_cooldown_ms=30000,
        )
        cls = OpenAIProvider if kind == "openai" else AnthropicProvider
        credentials = EnvCredentials({"KEY": UPSTREAM_KEY})
        return cls(config, session=session, settings=settings, credentials=credentials)

    return build


async def first_content(stream: AsyncIterator[ChatDelta]) -> ChatDelta:
    async for delta in stream:
        if delta.content:
            return delta
    raise AssertionError("the stream ended without content")


async def drain(stream: AsyncIterator[ChatDelta]) -> None:
    async for _ in stream:
        pass


# --- the provider kinds, fault by fault ----------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_reset_before_headers_is_unreachable_whole_and_streamed(
    kind: Kind, proxy: FaultyProxy, make: Make
) -> None:
    provider = make(kind, proxy.url)
    proxy.script(CHAT_PATH[kind], ResetBeforeHeaders(), ResetBeforeHeaders())
    with pytest.raises(UpstreamUnreachable, match="before answering") as whole:
        await provider.chat(chat(), MODEL)
    with pytest.raises(UpstreamUnreachable, match="before answering") as streamed:
        await anext(provider.stream_chat(chat(True), MODEL))
    for error in (whole.value, streamed.value):
        assert error.status == 502 and error.error_class is ErrorClass.RETRYABLE


@pytest.mark.parametrize("kind", KINDS)
async def test_reset_mid_stream_after_the_first_token_raises_after_it(
    kind: Kind, proxy: FaultyProxy, make: Make, upstream: FakeUpstream
) -> None:
    provider = make(kind, proxy.url)
    release = asyncio.Event()
    proxy.script(CHAT_PATH[kind], ResetAfterFrames(FIRST_CONTENT_FRAMES[kind], release))
    stream = provider.stream_chat(chat(True), MODEL)
    first = await first_content(stream)
    assert first.content
    release.set()
    with pytest.raises(UpstreamUnreachable, match="middle of the answer") as caught:
        await drain(stream)
    assert caught.value.status == 502
    await upstream.wait_streams_closed()


@pytest.mark.parametrize("kind", KINDS)
async def test_a_stream_that_stalls_after_its_first_token_times_out(
    kind: Kind, proxy: FaultyProxy, make: Make
) -> None:
    # The connection stays open and says nothing more: the wait for the next bytes is
    # bounded by the request timeout (within a quarter of it more), not held forever.
    never = asyncio.Event()
    proxy.script(CHAT_PATH[kind], ResetAfterFrames(FIRST_CONTENT_FRAMES[kind], never))
    stream = make(kind, proxy.url).stream_chat(chat(True), MODEL)
    assert (await first_content(stream)).content
    loop = asyncio.get_running_loop()
    waited = loop.time()
    with pytest.raises(UpstreamTimeout) as caught:
        await drain(stream)
    waited = loop.time() - waited
    assert caught.value.status == 504
    assert TIMEOUT_MS / 1000 <= waited < TIMEOUT_MS / 1000 * 1.25 + 0.5


@pytest.mark.parametrize("kind", KINDS)
async def test_a_slow_reader_of_a_stream_is_not_a_stall(
    kind: Kind, proxy: FaultyProxy, make: Make
) -> None:
    # Bytes waiting unread are no stall of the upstream's, however long the reader takes.
    proxy.script(CHAT_PATH[kind], Pass())
    stream = make(kind, proxy.url).stream_chat(chat(True), MODEL)
    assert (await first_content(stream)).content
    await asyncio.sleep(TIMEOUT_MS / 1000 * 2)
    await drain(stream)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_stream_cut_cleanly_before_its_end_is_a_protocol_error(
    kind: Kind, proxy: FaultyProxy, make: Make, upstream: FakeUpstream
) -> None:
    # Whole HTTP, broken SSE: the body ends (Content-Length met) with no [DONE]/message_stop.
    body = (
        b'data: {"choices":[{"index":0,"delta":{"content":"half"}}]}\n\n'
        if kind == "openai"
        else b'event: message_start\ndata: {"type":"message_start","message":{}}\n\n'
        b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
        b'"content_block":{"type":"text","text":"half"}}\n\n'
    )
    upstream.script(
        CHAT_PATH[kind], Reply(body=body, headers={"Content-Type": "text/event-stream"})
    )
    stream = make(kind, proxy.url).stream_chat(chat(True), MODEL)
    assert (await first_content(stream)).content == "half"
    with pytest.raises(UpstreamProtocolError, match="ended") as caught:
        await drain(stream)
    assert caught.value.status == 502


@pytest.mark.parametrize("kind", KINDS)
async def test_headers_that_never_come_time_out_whole_and_streamed(
    kind: Kind, proxy: FaultyProxy, make: Make
) -> None:
    provider = make(kind, proxy.url)
    proxy.script(CHAT_PATH[kind], Stall(), Stall())
    with pytest.raises(UpstreamTimeout) as whole:
        await provider.chat(chat(), MODEL)
    with pytest.raises(UpstreamTimeout) as streamed:
        await anext(provider.stream_chat(chat(True), MODEL))
    for error in (whole.value, streamed.value):
        assert error.status == 504 and error.error_class is ErrorClass.RETRYABLE


@pytest.mark.parametrize("kind", KINDS)
async def test_a_whole_answer_that_never_ends_hits_the_request_timeout(
    kind: Kind, proxy: FaultyProxy, make: Make
) -> None:
    # Bytes keep arriving, so no read ever waits long: only the timeout of the whole request
    # can end this.
    proxy.script(CHAT_PATH[kind], ENDLESS_JSON)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(UpstreamTimeout) as caught:
        await make(kind, proxy.url).chat(chat(), MODEL)
    assert caught.value.status == 504
    assert loop.time() - started < TIMEOUT_MS / 1000 * 5


@pytest.mark.parametrize("kind", KINDS)
async def test_garbage_instead_of_http_is_a_protocol_error(
    kind: Kind, proxy: FaultyProxy, make: Make
) -> None:
    provider = make(kind, proxy.url)
    proxy.script(CHAT_PATH[kind], GARBAGE, GARBAGE)
    with pytest.raises(UpstreamProtocolError, match="not HTTP") as whole:
        await provider.chat(chat(), MODEL)
    with pytest.raises(UpstreamProtocolError, match="not HTTP"):
        await anext(provider.stream_chat(chat(True), MODEL))
    assert whole.value.status == 502 and whole.value.error_class is ErrorClass.RETRYABLE
    assert "\\x16" not in whole.value.message  # named, not quoted


@pytest.mark.parametrize("kind", KINDS)
async def test_a_200_with_an_html_page_is_a_protocol_error_whole_and_streamed(
    kind: Kind, proxy: FaultyProxy, make: Make
) -> None:
    provider = make(kind, proxy.url)
    proxy.script(CHAT_PATH[kind], html_200(), html_200())
    with pytest.raises(UpstreamProtocolError, match="HTML") as whole:
        await provider.chat(chat(), MODEL)
    with pytest.raises(UpstreamProtocolError, match="HTML"):
        await anext(provider.stream_chat(chat(True), MODEL))
    assert "nginx" not in whole.value.message  # named, not quoted


@pytest.mark.parametrize("kind", KINDS)
async def test_a_name_that_does_not_resolve_is_unreachable(kind: Kind, make: Make) -> None:
    provider = make(kind, "https://upstream.palyra-test.invalid")
    with pytest.raises(UpstreamUnreachable, match="cannot resolve") as whole:
        await provider.chat(chat(), MODEL)
    with pytest.raises(UpstreamUnreachable, match="cannot resolve"):
        await anext(provider.stream_chat(chat(True), MODEL))
    assert whole.value.status == 502 and whole.value.error_class is ErrorClass.RETRYABLE


async def test_a_refused_connection_is_unreachable(make: Make) -> None:
    async with FaultyProxy() as gone:
        root = gone.url
    with pytest.raises(UpstreamUnreachable, match="cannot connect"):
        await make("openai", root).chat(chat(), MODEL)


# --- through the daemon: retry, failover, status, and the breaker ---------------------------


def gateway_config(
    tmp_path: Path, kind: Kind, faulty_root: str, backup: FakeUpstream, **settings: Any
) -> Any:
    return validate_config(
        {
            "version": 1,
            "daemon": {"state_dir": str(tmp_path / "state")},
            "model_provider": {
                "max_retries": 1,
                "retry_backoff_ms": 1,
                "request_timeout_ms": TIMEOUT_MS,
                "circuit_breaker_failure_threshold": 10,
                "discovery_ttl_ms": 3_600_000,
                "health_ttl_ms": 3_600_000,
                **settings,
                "providers": [
                    {
                        "provider_id": "p1",
                        "kind": "openai_compatible" if kind == "openai" else "anthropic",
                        "base_url": base_url(kind, faulty_root),
                        "allow_private_base_url": True,
                        "api_key_env": "PALYRA_TEST_UPSTREAM_KEY",
                    },
                    {
                        "provider_id": "p2",
                        "kind": "openai_compatible",
                        "base_url": backup.openai_base_url,
                        "allow_private_base_url": True,
                        "api_key_env": "PALYRA_TEST_UPSTREAM_KEY",
                    },
                ],
                "models": [
                    {
                        "model_id": "primary",
                        "provider_id": "p1",
                        "upstream_model": "gpt-4o-mini",
                        "fallbacks": ["backup"],
                    },
                    {"model_id": "backup", "provider_id": "p2", "upstream_model": "gpt-4o-mini"},
                ],
            },
        }
    )


@pytest.fixture
async def backup() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream(api_key=UPSTREAM_KEY) as fake:
        yield fake


def breaker(server: TestServer, provider_id: str) -> CircuitBreaker:
    found = server.app[GATEWAY].breakers.peek(provider_id)
    assert found is not None, f"no request reached {provider_id}"
    return found


HEADERS = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
# Far past every timeout the daemon is given here: a hang is a failure, not a stuck test.
CLIENT_TIMEOUT = aiohttp.ClientTimeout(total=10)
BODY = {"model": "primary", "messages": [{"role": "user", "content": "hello there"}]}


async def post(
    server: TestServer, body: dict[str, Any] = BODY
) -> tuple[int, dict[str, str], dict[str, Any]]:
    async with (
        aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as http,
        http.post(server.make_url("/v1/chat/completions"), json=body, headers=HEADERS) as response,
    ):
        return response.status, dict(response.headers), await response.json()


# Faults that fail every try alike, and what the client gets when nothing else can serve.
WHOLE_FAULTS = [
    pytest.param(ResetBeforeHeaders(), 502, "upstream_unreachable", id="reset-before-headers"),
    pytest.param(GARBAGE, 502, "upstream_protocol_error", id="garbage"),
    pytest.param(html_200(), 502, "upstream_protocol_error", id="html-200"),
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("fault", "status", "code"), WHOLE_FAULTS)
async def test_a_fault_is_retried_then_fails_over_and_counted_once(
    kind: Kind,
    fault: Raw | ResetBeforeHeaders,
    status: int,
    code: str,
    tmp_path: Path,
    proxy: FaultyProxy,
    backup: FakeUpstream,
    start_gateway: GatewayFactory,
) -> None:
    server = await start_gateway(gateway_config(tmp_path, kind, proxy.url, backup))
    proxy.script(CHAT_PATH[kind], fault, fault)
    answered, headers, body = await post(server)
    assert answered == 200, body
    assert headers["x-palyra-provider-id"] == "p2"
    assert (headers["x-palyra-retry-count"], headers["x-palyra-failover-count"]) == ("1", "1")
    assert len(proxy.requests_to(CHAT_PATH[kind])) == 2  # the try and its retry
    assert breaker(server, "p1").failures == 1  # one failed request, not one per try
    assert breaker(server, "p2").failures == 0


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("fault", "status", "code"), WHOLE_FAULTS)
async def test_a_fault_with_nowhere_else_to_go_is_a_clear_error(
    kind: Kind,
    fault: Raw | ResetBeforeHeaders,
    status: int,
    code: str,
    tmp_path: Path,
    proxy: FaultyProxy,
    backup: FakeUpstream,
    start_gateway: GatewayFactory,
) -> None:
    config = gateway_config(tmp_path, kind, proxy.url, backup, failover_enabled=False)
    server = await start_gateway(config)
    proxy.script(CHAT_PATH[kind], fault, fault)
    answered, headers, body = await post(server)
    assert (answered, body["error"]["code"]) == (status, code)
    assert body["error"]["message"].startswith("provider p1: ")
    assert headers["x-palyra-retry-count"] == "1"
    assert breaker(server, "p1").failures == 1


@pytest.mark.parametrize("kind", KINDS)
async def test_a_fault_then_an_answer_is_a_retry_and_no_failure(
    kind: Kind,
    tmp_path: Path,
    proxy: FaultyProxy,
    backup: FakeUpstream,
    start_gateway: GatewayFactory,
) -> None:
    server = await start_gateway(gateway_config(tmp_path, kind, proxy.url, backup))
    proxy.script(CHAT_PATH[kind], ResetBeforeHeaders(), Pass())
    answered, headers, _ = await post(server)
    assert answered == 200
    assert (headers["x-palyra-provider-id"], headers["x-palyra-retry-count"]) == ("p1", "1")
    assert breaker(server, "p1").failures == 0


@pytest.mark.parametrize("kind", KINDS)
async def test_timeouts_whole_and_streamed_are_504_counted_once(
    kind: Kind,
    tmp_path: Path,
    proxy: FaultyProxy,
    backup: FakeUpstream,
    start_gateway: GatewayFactory,
) -> None:
    # A timeout uses up the request's time: no retry fits after it, so no retry is made.
    config = gateway_config(tmp_path, kind, proxy.url, backup, failover_enabled=False)
    server = await start_gateway(config)
    proxy.script(CHAT_PATH[kind], Stall(), ENDLESS_JSON, ENDLESS_SSE)
    for body in (BODY, BODY, {**BODY, "stream": True}):
        answered, headers, error = await post(server, body)
        assert (answered, error["error"]["code"]) == (504, "upstream_timeout")
        assert headers["x-palyra-retry-count"] == "0"
    assert len(proxy.requests_to(CHAT_PATH[kind])) == 3
    assert breaker(server, "p1").failures == 3


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_an_answer_that_never_ends_fails_over(
    kind: Kind,
    stream: bool,
    tmp_path: Path,
    proxy: FaultyProxy,
    backup: FakeUpstream,
    start_gateway: GatewayFactory,
) -> None:
    # Streamed, the upstream sends keep-alive comments and never a token: only the bound on
    # the wait for the first token ends it.
    server = await start_gateway(gateway_config(tmp_path, kind, proxy.url, backup))
    proxy.script(CHAT_PATH[kind], ENDLESS_SSE if stream else ENDLESS_JSON)
    async with (
        aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as http,
        http.post(
            server.make_url("/v1/chat/completions"),
            json={**BODY, "stream": stream},
            headers=HEADERS,
        ) as response,
    ):
        text = await response.text()
    assert response.status == 200, text
    assert response.headers["x-palyra-provider-id"] == "p2"
    assert response.headers["x-palyra-failover-count"] == "1"
    assert "[DONE]" in text if stream else "choices" in text
    assert breaker(server, "p1").failures == 1


@pytest.mark.parametrize("kind", KINDS)
async def test_dns_failure_is_retried_then_a_502_counted_once(
    kind: Kind, tmp_path: Path, backup: FakeUpstream, start_gateway: GatewayFactory
) -> None:
    # (A resolver may take a while to say no: time enough for the retry to fit.)
    config = gateway_config(
        tmp_path,
        kind,
        "https://upstream.palyra-test.invalid",
        backup,
        request_timeout_ms=10_000,
        failover_enabled=False,
    )
    server = await start_gateway(config)
    answered, headers, body = await post(server)
    assert (answered, body["error"]["code"]) == (502, "upstream_unreachable")
    assert "cannot resolve the host upstream.palyra-test.invalid" in body["error"]["message"]
    assert headers["x-palyra-retry-count"] == "1"
    assert breaker(server, "p1").failures == 1


@pytest.mark.parametrize("kind", KINDS)
async def test_dns_failure_fails_over(
    kind: Kind, tmp_path: Path, backup: FakeUpstream, start_gateway: GatewayFactory
) -> None:
    config = gateway_config(tmp_path, kind, "https://upstream.palyra-test.invalid", backup)
    server = await start_gateway(config)
    answered, headers, _ = await post(server)
    # (Discovery at start found p1 unreachable, so it may already be at the back of the line.)
    assert answered == 200 and headers["x-palyra-provider-id"] == "p2"


async def read_until_content(response: aiohttp.ClientResponse) -> bytes:
    seen = b""
    while b'"content":"' not in seen.replace(b'"content":""', b""):
        chunk = await response.content.readany()
        assert chunk, f"the stream ended before any content: {seen!r}"
        seen += chunk
    return seen


@pytest.mark.parametrize("kind", KINDS)
async def test_a_reset_mid_stream_ends_with_an_error_event_and_is_counted_once(
    kind: Kind,
    tmp_path: Path,
    proxy: FaultyProxy,
    backup: FakeUpstream,
    upstream: FakeUpstream,
    start_gateway: GatewayFactory,
) -> None:
    server = await start_gateway(gateway_config(tmp_path, kind, proxy.url, backup))
    release = asyncio.Event()
    proxy.script(CHAT_PATH[kind], ResetAfterFrames(FIRST_CONTENT_FRAMES[kind], release))
    async with (
        aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as http,
        http.post(
            server.make_url("/v1/chat/completions"), json={**BODY, "stream": True}, headers=HEADERS
        ) as response,
    ):
        assert response.status == 200
        seen = await read_until_content(response)
        release.set()  # the client has its first token: now break the upstream
        seen += await response.read()  # the stream ends, and cleanly: no payload error
    frames = [frame for frame in seen.decode().split("\n\n") if frame]
    last = orjson.loads(frames[-1].removeprefix("data: "))
    assert last["error"]["code"] == "upstream_unreachable"
    assert "p1" in last["error"]["message"]
    assert not any(frame == "data: [DONE]" for frame in frames)
    # Not retried (the client has the bytes), nothing sent to the backup, counted once.
    assert len(proxy.requests_to(CHAT_PATH[kind])) == 1
    assert backup.requests_to("/v1/chat/completions") == []
    assert breaker(server, "p1").failures == 1
    await upstream.wait_streams_closed()


@pytest.mark.parametrize("kind", KINDS)
async def test_a_stream_that_always_breaks_after_its_first_token_opens_the_circuit(
    kind: Kind,
    tmp_path: Path,
    proxy: FaultyProxy,
    backup: FakeUpstream,
    start_gateway: GatewayFactory,
) -> None:
    # Its first token came each time, yet none of its answers did: a failing provider.
    config = gateway_config(
        tmp_path,
        kind,
        proxy.url,
        backup,
        circuit_breaker_failure_threshold=2,
        # (With failover, an unhealthy p1 would go to the back of the line after one break.)
        failover_enabled=False,
    )
    server = await start_gateway(config)
    for _ in range(2):
        release = asyncio.Event()
        proxy.script(CHAT_PATH[kind], ResetAfterFrames(FIRST_CONTENT_FRAMES[kind], release))
        async with (
            aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as http,
            http.post(
                server.make_url("/v1/chat/completions"),
                json={**BODY, "stream": True},
                headers=HEADERS,
            ) as response,
        ):
            seen = await read_until_content(response)
            release.set()
            assert b'"error"' in seen + await response.read()
    assert breaker(server, "p1").state == "open"
    answered, _, body = await post(server)
    assert (answered, body["error"]["code"]) == (503, "providers_unavailable")
    assert len(proxy.requests_to(CHAT_PATH[kind])) == 2  # the open circuit kept the third away


async def test_two_models_of_one_failing_provider_count_one_failure(
    tmp_path: Path, proxy: FaultyProxy, start_gateway: GatewayFactory
) -> None:
    provider = {
        "provider_id": "p1",
        "kind": "openai_compatible",
        "base_url": proxy.url + "/v1",
        "allow_private_base_url": True,
        "api_key_env": "PALYRA_TEST_UPSTREAM_KEY",
    }
    config = validate_config(
        {
            "version": 1,
            "daemon": {"state_dir": str(tmp_path / "state")},
            "model_provider": {
                "max_retries": 0,
                "discovery_ttl_ms": 3_600_000,
                "health_ttl_ms": 3_600_000,
                "providers": [provider],
                "models": [
                    {"model_id": "primary", "provider_id": "p1", "fallbacks": ["sibling"]},
                    {"model_id": "sibling", "provider_id": "p1"},
                ],
            },
        }
    )
    server = await start_gateway(config)
    proxy.script("/v1/chat/completions", ResetBeforeHeaders(), ResetBeforeHeaders())
    answered, headers, body = await post(server)
    assert (answered, body["error"]["code"]) == (502, "upstream_unreachable")
    assert headers["x-palyra-failover-count"] == "1"
    assert len(proxy.requests_to("/v1/chat/completions")) == 2
    assert breaker(server, "p1").failures == 1  # one request failed there, not two


# --- answers too large to hold -------------------------------------------------------------


def gzip_bomb(size: int) -> bytes:
    """A JSON body of `size` bytes, almost all spaces, gzipped to a few kilobytes."""
    return gzip.compress(b'{"choices": []' + b" " * size + b"}", compresslevel=9)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(
            Reply(body=b'{"x": "' + b"a" * 300_000 + b'"}', headers={"Content-Type": "x"}),
            id="content-length",
        ),
        pytest.param(
            Reply(
                body=gzip_bomb(20 * 1024 * 1024),
                headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
            ),
            id="gzip-bomb",
        ),
    ],
)
async def test_an_answer_past_the_body_limit_is_refused_not_held(
    kind: Kind, reply: Reply, make: Make, upstream: FakeUpstream
) -> None:
    provider = make(kind, upstream.url)
    provider.max_body_bytes = 100_000
    upstream.script(CHAT_PATH[kind], reply)
    with pytest.raises(UpstreamProtocolError, match="larger than 100000 bytes") as caught:
        await provider.chat(chat(), MODEL)
    assert caught.value.status == 502


async def test_an_endless_chunked_answer_is_cut_at_the_body_limit(
    make: Make, proxy: FaultyProxy
) -> None:
    provider = make("openai", proxy.url)
    provider.max_body_bytes = 100_000
    proxy.script(
        "/v1/chat/completions",
        Trickle(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n",
            piece=b"4000\r\n" + b" " * 0x4000 + b"\r\n",
            every_s=0,
        ),
    )
    with pytest.raises(UpstreamProtocolError, match="larger than"):
        await provider.chat(chat(), MODEL)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_redirect_is_not_followed(kind: Kind, make: Make, upstream: FakeUpstream) -> None:
    # Followed, it would carry the key and the prompt wherever the answer points.
    moved = upstream.url + "/elsewhere"
    upstream.script(CHAT_PATH[kind], Reply(status=307, headers={"Location": moved}))
    with pytest.raises(UpstreamProtocolError, match="307, a redirect") as caught:
        await make(kind, upstream.url).chat(chat(), MODEL)
    assert caught.value.status == 502
    assert upstream.requests_to("/elsewhere") == []
