"""Client keys over HTTP: the admin API that makes them, and what a key opens, as the official
OpenAI SDK meets it. Revocation reaches another daemon sharing the store within a second."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
import structlog
from aiohttp.test_utils import TestServer
from openai import AsyncOpenAI

from palyra.callers import ADMIN, CALLER, Caller
from palyra.config import validate_config
from palyra.daemon import build_app
from palyra.server.keys import GATEWAY, RUNTIME
from tests.conftest import ADMIN_TOKEN, GatewayFactory, gateway_config
from tests.state.conftest import drop_schema, postgres_schema_url
from tests.support.clock import FakeClock

KEYS = "/console/v1/keys"
CHAT = {"model": "deterministic", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def server(tmp_path: Path, start_gateway: GatewayFactory) -> TestServer:
    return await start_gateway(gateway_config(None, tmp_path / "state"))


async def call(
    server: TestServer,
    method: str,
    path: str,
    body: Any = None,
    *,
    token: str = ADMIN_TOKEN,
    header: str = "Authorization",
) -> tuple[int, Any]:
    value = f"Bearer {token}" if header == "Authorization" else token
    async with (
        aiohttp.ClientSession() as http,
        http.request(
            method, str(server.make_url(path)), json=body, headers={header: value}
        ) as response,
    ):
        return response.status, await response.json(content_type=None)


async def create(server: TestServer, **body: Any) -> tuple[dict[str, Any], str]:
    status, answer = await call(server, "POST", KEYS, {"name": "team-a", **body})
    assert status == 201, answer
    return answer["key"], answer["secret"]


def sdk(server: TestServer, key: str) -> AsyncOpenAI:
    return AsyncOpenAI(api_key=key, base_url=str(server.make_url("/v1")), max_retries=0)


async def test_a_client_key_opens_the_inference_routes_and_nothing_else(
    server: TestServer,
) -> None:
    key, secret = await create(server, models=["deterministic"])
    seen: list[Caller] = []
    router = server.app[GATEWAY].router
    chat = router.chat

    async def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(CALLER.get())
        return await chat(*args, **kwargs)

    router.chat = spy  # type: ignore[method-assign]
    async with sdk(server, secret) as client:
        answer = await client.chat.completions.create(**CHAT)  # type: ignore[call-overload]
        assert answer.choices[0].message.content
        assert [m.id for m in (await client.models.list()).data]
    caller = seen[0]
    assert caller.kind == "key" and caller.key_id == key["key_id"]
    assert caller.key_name == "team-a" and caller.key is not None
    async with sdk(server, ADMIN_TOKEN) as admin:
        await admin.chat.completions.create(**CHAT)  # type: ignore[call-overload]
    assert seen[1] is ADMIN
    assert CALLER.get() is ADMIN  # nothing leaks out of a request

    for header in ("Authorization", "x-api-key"):
        for method, path in (
            ("GET", KEYS),
            ("POST", KEYS),
            ("GET", "/console/v1/models/status"),
            ("DELETE", f"{KEYS}/{key['key_id']}"),
            ("GET", "/metrics"),
        ):
            status, body = await call(server, method, path, {}, token=secret, header=header)
            assert status == 403, (header, method, path, body)
            error = body["error"]
            assert error["code"] == "client_key_not_allowed"
            assert "client keys may call the inference routes (/v1/...) only" in error["message"]
            assert secret not in str(body)
    status, _ = await call(server, "GET", "/healthz", token=secret)
    assert status == 200
    status, _ = await call(server, "GET", "/v1/models", token=secret, header="x-api-key")
    assert status == 200  # as Anthropic's clients send a key
    status, keys = await call(server, "GET", KEYS)
    assert status == 200 and keys["keys"][0]["status"] == "active"  # the DELETE did nothing


async def test_revoked_rotated_and_unknown_keys_are_401_saying_why(server: TestServer) -> None:
    key, secret = await create(server)
    async with sdk(server, secret) as client:
        await client.chat.completions.create(**CHAT)  # type: ignore[call-overload]

    status, rotated = await call(server, "POST", f"{KEYS}/{key['key_id']}/rotate")
    assert status == 200 and rotated["secret"] != secret
    assert rotated["key"]["prefix"] == rotated["secret"][:8]
    async with sdk(server, secret) as old:
        with pytest.raises(openai.AuthenticationError) as refused:
            await old.chat.completions.create(**CHAT)  # type: ignore[call-overload]
    assert "unknown client key" in str(refused.value) and secret not in str(refused.value)
    async with sdk(server, rotated["secret"]) as new:
        await new.chat.completions.create(**CHAT)  # type: ignore[call-overload]

        status, revoked = await call(server, "DELETE", f"{KEYS}/{key['key_id']}")
        assert status == 200 and revoked["key"]["status"] == "revoked"
        with pytest.raises(openai.AuthenticationError) as refused:
            await new.chat.completions.create(**CHAT)  # type: ignore[call-overload]
    assert refused.value.code == "key_revoked"
    assert f"client key {rotated['secret'][:8]}... (team-a) was revoked at" in str(refused.value)
    assert rotated["secret"] not in str(refused.value)
    status, again = await call(server, "POST", f"{KEYS}/{key['key_id']}/rotate")
    assert status == 409 and again["error"]["code"] == "key_revoked"
    status, body = await call(server, "GET", "/v1/models", token="pk-" + "x" * 43)
    assert status == 401 and "unknown client key" in body["error"]["message"]


async def test_a_key_expires_on_the_daemons_clock(server: TestServer) -> None:
    ring = server.app[RUNTIME].keys
    clock = FakeClock(time.time())
    ring.clock = ring.store.clock = clock
    key, secret = await create(server, expires_in="1h")
    assert key["expires_at_ms"] == int(clock.now * 1000) + 3_600_000
    async with sdk(server, secret) as client:
        await client.chat.completions.create(**CHAT)  # type: ignore[call-overload]
        clock.now += 3599
        await client.chat.completions.create(**CHAT)  # type: ignore[call-overload]
        clock.now += 1
        with pytest.raises(openai.AuthenticationError) as refused:
            await client.chat.completions.create(**CHAT)  # type: ignore[call-overload]
    assert refused.value.code == "key_expired" and "(team-a) expired at" in str(refused.value)
    status, shown = await call(server, "GET", f"{KEYS}/{key['key_id']}")
    assert status == 200 and shown["key"]["status"] == "expired"
    # Given a later expiry, it works again.
    status, _ = await call(server, "PATCH", f"{KEYS}/{key['key_id']}", {"expires_in": "1d"})
    assert status == 200
    async with sdk(server, secret) as client:
        await client.chat.completions.create(**CHAT)  # type: ignore[call-overload]


async def test_no_secret_in_any_answer_but_the_first_nor_in_the_log(
    server: TestServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with structlog.testing.capture_logs() as logs:
        key, secret = await create(server, models=["deterministic"], rpm=5, budget_usd=2)
        _, rotated = await call(server, "POST", f"{KEYS}/{key['key_id']}/rotate")
        new_secret = rotated["secret"]
        answers = [
            await call(server, "GET", KEYS),
            await call(server, "GET", f"{KEYS}/{key['key_id']}"),
            await call(server, "PATCH", f"{KEYS}/{key['key_id']}", {"name": "renamed"}),
            await call(server, "GET", "/console/v1/models/status"),
        ]
        async with sdk(server, new_secret) as client:
            await client.chat.completions.create(**CHAT)  # type: ignore[call-overload]
        answers.append(await call(server, "DELETE", f"{KEYS}/{key['key_id']}"))
        async with sdk(server, new_secret) as client:
            with pytest.raises(openai.AuthenticationError):
                await client.chat.completions.create(**CHAT)  # type: ignore[call-overload]
    hashes = [
        row["secret_hash"]
        for row in await server.app[RUNTIME].db.fetch_all("SELECT secret_hash FROM client_keys")
    ]
    assert [status for status, _ in answers] == [200] * len(answers)
    shown = str(answers) + str(logs) + caplog.text
    assert any(entry.get("path") == "/v1/chat/completions" for entry in logs)  # logs were caught
    for secret_text in (secret, new_secret, *hashes):
        assert secret_text not in shown
    assert answers[0][1]["keys"][0]["prefix"] == new_secret[:8]
    assert "secret" not in answers[0][1]["keys"][0] and "secret" not in answers[1][1]["key"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"name": "x", "colour": "red"}, "colour"),
        ({"name": " "}, "name: must not be empty"),
        ({}, "name"),
        ({"name": "x", "rpm": -1}, "rpm"),
        ({"name": "x", "rpm": "5"}, "rpm"),
        ({"name": "x", "tpm": True}, "tpm"),
        ({"name": "x", "budget_usd": 0}, "budget_usd"),
        ({"name": "x", "budget_period": "year"}, "budget_period"),
        ({"name": "x", "expires_in": "soon"}, "'soon' is not a duration"),
        ({"name": "x", "expires_in": "1d", "expires_at_ms": 10**13}, "not both"),
        ({"name": "x", "expires_at_ms": 1000}, "expires_at_ms: must be in the future"),
        ({"name": "x", "models": ["a", ""]}, "models: must not be empty"),
        ({"name": "bad\x00name"}, "name: must not contain control characters"),
        ({"name": "x", "agent_id": "ghost"}, "agent_id: no agent 'ghost'"),
    ],
)
async def test_a_bad_body_is_a_400_naming_the_field(
    server: TestServer, body: dict[str, Any], message: str
) -> None:
    status, answer = await call(server, "POST", KEYS, body)
    assert status == 400, answer
    assert message in answer["error"]["message"], answer
    status, keys = await call(server, "GET", KEYS)
    assert keys["keys"] == []


async def test_patch_changes_what_is_given_and_refuses_nonsense(server: TestServer) -> None:
    key, _ = await create(server, budget_usd=3, budget_period="week", agent_id="default")
    path = f"{KEYS}/{key['key_id']}"
    status, patched = await call(server, "PATCH", path, {"rpm": 7, "budget_usd": None})
    assert status == 200, patched
    changed = patched["key"]
    assert changed["rpm"] == 7 and changed["budget_usd"] is None
    assert changed["budget_period"] == "week" and changed["agent_id"] == "default"
    for body, message in (
        ({}, "nothing to change"),
        ({"name": None}, "name: must not be null"),
        ({"secret_hash": "x"}, "secret_hash"),
    ):
        status, answer = await call(server, "PATCH", path, body)
        assert status == 400 and message in answer["error"]["message"], answer
    for method, tail in (("GET", ""), ("PATCH", ""), ("DELETE", ""), ("POST", "/rotate")):
        status, answer = await call(server, method, f"{KEYS}/key_nope{tail}", {"rpm": 1})
        assert status == 404 and "no client key 'key_nope'" in answer["error"]["message"]


@pytest.fixture(params=["sqlite", "postgres"])
async def shared_store(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A `[state]` URL two daemons share ("" is SQLite in a shared state dir)."""
    if request.param == "sqlite":
        yield ""
        return
    url, schema = await postgres_schema_url()
    yield url
    await drop_schema(schema)


async def test_a_revocation_reaches_the_other_daemon_within_a_second(
    tmp_path: Path, shared_store: str
) -> None:
    servers: list[TestServer] = []
    for n in range(2):
        state: dict[str, Any] = {"backend": "postgres", "url": shared_store} if shared_store else {}
        # SQLite is shared by sharing the state dir; PostgreSQL daemons each have their own.
        state_dir = tmp_path / (f"state-{n}" if shared_store else "state")
        config = validate_config(
            {"version": 1, "daemon": {"state_dir": str(state_dir)}, "state": state}
        )
        server = TestServer(build_app(config, env={"PALYRA_ADMIN_TOKEN": ADMIN_TOKEN}))
        await server.start_server()
        servers.append(server)
    one, other = servers
    loop = asyncio.get_running_loop()
    try:
        key, secret = await create(one)
        async with sdk(other, secret) as client:
            started = loop.time()
            while True:  # made on one, known to the other within a second
                try:
                    await client.models.list()
                    break
                except openai.AuthenticationError:
                    assert loop.time() - started < 1.0, "the other daemon never learnt the key"
                    await asyncio.sleep(0.05)
            status, _ = await call(one, "DELETE", f"{KEYS}/{key['key_id']}")
            assert status == 200
            started = loop.time()
            while True:
                try:
                    await client.models.list()
                except openai.AuthenticationError as exc:
                    assert exc.code == "key_revoked"
                    break
                assert loop.time() - started < 1.0, "the other daemon still takes the key"
                await asyncio.sleep(0.05)
    finally:
        for server in servers:
            await server.close()
