"""Connecting OpenAI and Anthropic by API key, checked against the (fake) provider first."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from tests.auth.conftest import Console, auth_config, start_console
from tests.conftest import GatewayFactory
from tests.fakes.upstream import ErrorReply, FakeUpstream, Reply

GOOD_KEY = "sk-planted-good-key-0123456789abcdef"
BAD_KEY = "sk-planted-wrong-key-9876543210"

KINDS = [("openai", "openai_compatible", "gpt-4o-mini"), ("anthropic", "anthropic", "claude")]


async def nothing_stored(console: Console) -> None:
    status, body = await console.call("GET", "/console/v1/auth/profiles")
    assert status == 200 and body["profiles"] == []
    runtime_vault = console.server.app  # the store itself: no secret rows at all
    from palyra.server.keys import RUNTIME

    rows = await runtime_vault[RUNTIME].db.fetch_all("SELECT scope, name FROM vault_secrets")
    assert rows == []


@pytest.mark.parametrize(("route", "kind", "model"), KINDS)
async def test_connect_checks_then_stores(
    route: str,
    kind: str,
    model: str,
    tmp_path: Path,
    start_gateway: GatewayFactory,
    http: aiohttp.ClientSession,
) -> None:
    async with FakeUpstream(api_key=GOOD_KEY) as upstream:
        console = await start_console(start_gateway, auth_config(upstream, tmp_path / "s"), http)
        path = f"/console/v1/auth/providers/{route}/api-key"

        status, body = await console.call("POST", path, {"api_key": BAD_KEY, "profile_id": "p1"})
        assert status == 400 and body["error"]["code"] == "invalid_credential"
        await nothing_stored(console)

        for reply, want in (
            (ErrorReply(429, retry_after="7"), 429),
            (ErrorReply(503), 503),
            (ErrorReply(500), 503),
        ):
            upstream.script("/v1/models", reply)
            status, body = await console.call("POST", path, {"api_key": GOOD_KEY})
            assert status == want, body
            await nothing_stored(console)
        # Connections dropped (aiohttp retries a GET once on a reused connection: drop all).
        upstream.set_down(True)
        status, body = await console.call("POST", path, {"api_key": GOOD_KEY})
        assert status == 503, body
        await nothing_stored(console)
        upstream.set_down(False)

        # The check used the kind's own auth headers.
        seen = upstream.requests_to("/v1/models")[-1].headers
        if kind == "anthropic":
            assert seen.get("x-api-key") == GOOD_KEY and seen.get("anthropic-version")
        else:
            assert seen.get("authorization") == f"Bearer {GOOD_KEY}"

        status, body = await console.call(
            "POST", path, {"api_key": GOOD_KEY, "profile_id": "Main-Key", "profile_name": "Main"}
        )
        assert status == 200, body
        profile = body["profile"]
        assert profile["profile_id"] == "main-key" and profile["provider_kind"] == kind
        assert profile["credential_type"] == "api_key" and profile["is_default"] is True
        assert profile["vault_refs"] == {"api_key": "profile:main-key/api_key"}

        # The provider has no credential of its own: the default profile of its kind serves.
        status, answer = await console.call(
            "POST",
            "/v1/chat/completions",
            {"model": model, "messages": [{"role": "user", "content": "hi"}]},
        )
        assert status == 200, answer

        assert all(GOOD_KEY not in text and BAD_KEY not in text for text in console.bodies)


async def test_unreachable_provider_and_bad_bodies(
    tmp_path: Path, start_gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    upstream = FakeUpstream(api_key=GOOD_KEY)
    await upstream.start()
    config = auth_config(upstream, tmp_path / "s")
    await upstream.close()  # nothing listens there any more
    console = await start_console(start_gateway, config, http)
    path = "/console/v1/auth/providers/openai/api-key"
    status, body = await console.call("POST", path, {"api_key": GOOD_KEY})
    assert status == 503 and body["error"]["code"] == "provider_unavailable"
    await nothing_stored(console)
    for bad in (
        {},
        {"api_key": ""},
        {"api_key": 5},
        {"api_key": "sk has spaces"},
        {"api_key": GOOD_KEY, "apikey": GOOD_KEY},
        {"api_key": GOOD_KEY, "profile_id": "../x"},
        {"api_key": GOOD_KEY, "set_default": "yes"},
    ):
        status, body = await console.call("POST", path, bad)
        assert status == 400, (bad, body)
    status, _ = await console.call("POST", path, {"api_key": GOOD_KEY}, auth=False)
    assert status == 401
    assert all(GOOD_KEY not in text for text in console.bodies)


@pytest.mark.parametrize("host", ["0x7f000001", "localhost"])
async def test_a_key_is_never_sent_to_a_private_address_the_provider_was_not_allowed(
    host: str, tmp_path: Path, start_gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    # The provider's base_url is a name for loopback (a spelling the validator refuses
    # now, or a name it cannot judge, like 127.0.0.1.nip.io) without allow_private_base_url:
    # the check must not carry the key there.
    async with FakeUpstream(api_key=GOOD_KEY) as upstream:
        config = auth_config(upstream, tmp_path / "s")
        providers = config.model_provider.providers
        bad = providers[0].model_copy(
            update={
                "base_url": upstream.openai_base_url.replace("127.0.0.1", host),
                "allow_private_base_url": False,
            }
        )
        config = config.model_copy(
            update={
                "model_provider": config.model_provider.model_copy(
                    update={"providers": [bad, *providers[1:]]}
                )
            }
        )
        console = await start_console(start_gateway, config, http)
        status, body = await console.call(
            "POST", "/console/v1/auth/providers/openai/api-key", {"api_key": GOOD_KEY}
        )
        assert status == 400 and body["error"]["code"] == "provider_address_refused", body
        message = body["error"]["message"]
        assert "a loopback address" in message and "allow_private_base_url = true" in message
        assert [r for r in upstream.requests if host in r.headers.get("host", "")] == []
        await nothing_stored(console)
        # The anthropic provider is allowed to be private: its check still reaches the fake.
        status, body = await console.call(
            "POST", "/console/v1/auth/providers/anthropic/api-key", {"api_key": GOOD_KEY}
        )
        assert status == 200, body


async def test_a_refusal_in_a_shape_we_do_not_know_is_still_a_clear_answer(
    tmp_path: Path, start_gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    # Found by the fuzz suite: str() of an error body nested ~1,000 deep exhausted the
    # stack while the refusal's text was being made (a 500).
    deep = b"[" * 990 + b"0" + b"]" * 990
    async with FakeUpstream(api_key=GOOD_KEY) as upstream:
        console = await start_console(start_gateway, auth_config(upstream, tmp_path / "s"), http)
        for body in (b'{"error": ' + deep + b"}", b'{"object": ' + deep + b"}"):
            upstream.script(
                "/v1/models",
                Reply(status=401, body=body, headers={"Content-Type": "application/json"}),
            )
            path = "/console/v1/auth/providers/openai/api-key"
            status, answer = await console.call("POST", path, {"api_key": GOOD_KEY})
            assert 400 <= status < 500, answer
            assert len(answer["error"]["message"]) < 600
        await nothing_stored(console)
