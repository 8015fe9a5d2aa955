"""Where the daemon connects to: the egress guard checks the address a connection is opened
to, however the URL spelled its host, and the providers' pools use it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from palyra.config import ModelProviderConfig, ProviderConfig, validate_config
from palyra.credentials import EnvCredentials
from palyra.egress import (
    EgressGuard,
    EgressRefused,
    address_class,
    guarded_session,
    is_numeric_spelling,
    refusal_in,
)
from palyra.errors import ErrorClass, ProviderError
from palyra.gateway import Gateway
from palyra.types import ChatRequest
from tests.fakes.upstream import FakeUpstream


class Listener:
    """A loopback HTTP server that counts the connections made to it at all."""

    def __init__(self) -> None:
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    async def __aenter__(self) -> Listener:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    async with Listener() as server:
        yield server


async def refusal(session: aiohttp.ClientSession, url: str) -> EgressRefused:
    with pytest.raises(aiohttp.ClientConnectorError) as caught:
        async with session.get(url) as response:
            await response.read()
    found = refusal_in(caught.value)
    assert found is not None, caught.value
    return found


# --- what counts as public ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::127.0.0.1", "loopback"),  # IPv4-compatible; Python calls it global
        ("64:ff9b::127.0.0.1", "loopback"),  # NAT64
        ("2002:7f00:1::", "loopback"),  # 6to4
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.10", "private"),
        ("fd00::1", "private"),
        ("fec0::1", "private"),
        ("::ffff:10.0.0.1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("100.64.0.1", "CGNAT"),
        ("224.0.0.1", "multicast"),  # Python calls it global
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("0.1.2.3", "reserved"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("192.0.2.1", "reserved"),
        ("198.18.0.1", "reserved"),
        ("2001:db8::1", "reserved"),
        ("::8.8.8.8", "reserved"),
        ("8.8.8.8", None),
        ("93.184.216.34", None),
        ("2606:4700::1111", None),
        ("::ffff:8.8.8.8", None),
        ("64:ff9b::8.8.8.8", None),
    ],
)
def test_address_classes(address: str, kind: str | None) -> None:
    assert address_class(address) == kind


@pytest.mark.parametrize(
    ("host", "numeric"),
    [
        ("0x7f000001", True),
        ("0xa9fea9fe", True),
        ("012.0.0.1", True),
        ("0x7f.1", True),
        ("127.1", True),
        ("2130706433", True),
        ("127.0.0.1", False),
        ("api.openai.com", False),
        ("0x7f.example.com", False),
    ],
)
def test_numeric_spellings(host: str, numeric: bool) -> None:
    assert is_numeric_spelling(host) is numeric


def test_a_name_keeps_only_its_public_answers() -> None:
    def answer(host: str) -> Any:
        return {"hostname": "x", "host": host, "port": 443, "family": 2, "proto": 6, "flags": 0}

    guard = EgressGuard()
    mixed = [answer("10.0.0.7"), answer("93.184.216.34"), answer("169.254.169.254")]
    assert guard.answers("api.example.com", mixed) == [answer("93.184.216.34")]
    with pytest.raises(EgressRefused, match=r"refused to connect to api.example.com \(10"):
        guard.answers("api.example.com", [answer("10.0.0.7"), answer("127.0.0.1")])
    # A host allowed to be private keeps every answer.
    allowed = EgressGuard(allowed_private=["vllm.internal"])
    assert allowed.answers("vllm.internal.", mixed) == mixed


# --- at connect time ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "kind"),
    [
        ("0x7f000001", "loopback"),  # a name to aiohttp, 127.0.0.1 to getaddrinfo
        ("0x7f.1", "loopback"),
        ("localhost", "loopback"),  # a name that resolves to loopback, like 127.0.0.1.nip.io
        ("127.0.0.1", "loopback"),  # a literal: aiohttp resolves nothing, the socket check sees it
        ("[::ffff:127.0.0.1]", "loopback"),
        ("[::127.0.0.1]", "loopback"),
    ],
)
async def test_a_guarded_session_never_connects_to_loopback(
    listener: Listener, host: str, kind: str
) -> None:
    async with guarded_session() as session:
        refused = await refusal(session, f"http://{host}:{listener.port}/")
    assert refused.kind == kind and refused.address in ("127.0.0.1", "::ffff:7f00:1", "::7f00:1")
    assert "refused to connect to" in str(refused) and f"a {kind} address" in str(refused)
    assert listener.connections == 0


async def test_cloud_metadata_in_hex_is_link_local() -> None:
    async with guarded_session() as session:
        refused = await refusal(session, "http://0xa9fea9fe/latest/meta-data/")
    assert (refused.address, refused.kind) == ("169.254.169.254", "link-local")


async def test_hosts_allowed_to_be_private_are_reached_and_only_they(listener: Listener) -> None:
    async with guarded_session(allowed_private=["localhost"]) as session:
        async with session.get(f"http://localhost:{listener.port}/") as response:
            assert response.status == 200 and await response.read() == b"ok"
        # The same address under another name is still refused: the name was allowed.
        refused = await refusal(session, f"http://0x7f000001:{listener.port}/")
        assert refused.kind == "loopback"
    assert listener.connections == 1
    async with guarded_session(allowed_private=["127.0.0.1"]) as session:
        async with session.get(f"http://127.0.0.1:{listener.port}/") as response:
            assert response.status == 200
    assert listener.connections == 2


# --- the providers' pools -------------------------------------------------------------------


def provider_config(upstream: FakeUpstream, bad_host: str) -> ModelProviderConfig:
    """`bad` points at the fake on loopback under a spelling the old validator passed and
    this one refuses, without allow_private_base_url: what a name the validator cannot
    judge (127.0.0.1.nip.io) looks like to the daemon. `good` is on loopback, allowed."""
    config = validate_config(
        {
            "version": 1,
            "model_provider": {
                "max_retries": 2,
                "retry_backoff_ms": 0,
                "discovery_ttl_ms": 3_600_000,
                "health_ttl_ms": 3_600_000,
                "providers": [
                    {
                        "provider_id": provider_id,
                        "kind": "openai_compatible",
                        "base_url": upstream.openai_base_url,
                        "allow_private_base_url": True,
                        "discovery": False,
                        "api_key_env": "K",
                    }
                    for provider_id in ("bad", "good")
                ],
                "models": [
                    {"model_id": "m", "provider_id": "bad", "fallbacks": ["g"]},
                    {"model_id": "g", "provider_id": "good", "upstream_model": "gpt-4o-mini"},
                ],
            },
        }
    ).model_provider
    bad = config.providers[0].model_copy(
        update={
            "base_url": upstream.openai_base_url.replace("127.0.0.1", bad_host),
            "allow_private_base_url": False,
        }
    )
    return config.model_copy(update={"providers": [bad, config.providers[1]]})


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream(api_key="sk-k") as upstream:
        yield upstream


# A name is refused by the guard's resolver, an IP literal by its socket check (127.0.0.2:
# loopback, told apart from the allowed provider's 127.0.0.1 in what the fake saw).
@pytest.mark.parametrize("bad_host", ["0x7f000001", "localhost", "127.0.0.2"])
async def test_a_provider_never_reaches_a_private_address_it_was_not_allowed(
    fake: FakeUpstream, bad_host: str
) -> None:
    config = provider_config(fake, bad_host)
    assert ProviderConfig.model_validate(config.providers[1].model_dump()).allow_private_base_url
    gateway = Gateway(config, credentials=EnvCredentials({"K": "sk-k"}))
    await gateway.start()
    try:
        with pytest.raises(ProviderError) as caught:
            await gateway.providers["bad"].list_models()
        error = caught.value
        assert error.code == "upstream_address_refused" and error.status == 502
        assert error.error_class is ErrorClass.CONFIG
        assert "loopback address" in error.message and "allow_private_base_url" in error.message
        assert error.message.startswith("provider bad: refused to connect to")

        # Through the router: not retried (a config problem, not a blip), failed over.
        request = ChatRequest.model_validate(
            {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        )
        routed = await gateway.router.chat(request)
        assert routed.route.provider_id == "good"
        assert (routed.route.retries, routed.route.failovers) == (0, 1)

        # Health says so, naming the address class.
        status = await gateway.test_connection("bad")
        assert status["bad"]["state"] == "misconfigured", status
        assert "loopback" in status["bad"]["last_error"]
    finally:
        await gateway.aclose()
    # Only the allowed provider ever reached the fake.
    assert len(fake.requests_to("/v1/chat/completions")) == 1
    assert [r.headers["host"] for r in fake.requests if bad_host in r.headers["host"]] == []
