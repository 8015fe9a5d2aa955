"""Client keys on the dialects' own routes: stored responses belong to the key that made
them, and count_tokens keeps to a key's models (found in review)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
from aiohttp.test_utils import TestServer
from openai import AsyncOpenAI

from tests.conftest import ADMIN_TOKEN, GatewayFactory, gateway_config


async def new_key(server: TestServer, **body: Any) -> str:
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as http,
        http.post(server.make_url("/console/v1/keys"), json={"name": "k", **body}) as response,
    ):
        assert response.status == 201, await response.text()
        return str((await response.json())["secret"])


def client(server: TestServer, key: str) -> AsyncOpenAI:
    return AsyncOpenAI(api_key=key, base_url=str(server.make_url("/v1")), max_retries=0)


async def test_a_stored_response_is_its_keys_alone(
    tmp_path: Path, start_gateway: GatewayFactory
) -> None:
    # Found in review: any client key could read, continue and delete any stored response.
    server = await start_gateway(gateway_config(None, tmp_path / "state"))
    alice, bob = client(server, await new_key(server)), client(server, await new_key(server))
    admin = client(server, ADMIN_TOKEN)
    mine = await alice.responses.create(model="deterministic", input="my secret plan")
    theirs = await admin.responses.create(model="deterministic", input="the admin's")
    for other, rid in ((bob, mine.id), (alice, theirs.id)):
        with pytest.raises(openai.NotFoundError):
            await other.responses.retrieve(rid)
        with pytest.raises(openai.NotFoundError):
            await other.responses.input_items.list(rid)
        with pytest.raises(openai.BadRequestError) as refused:
            await other.responses.create(
                model="deterministic", input="and?", previous_response_id=rid
            )
        assert refused.value.code == "previous_response_not_found"
        with pytest.raises(openai.NotFoundError):
            await other.responses.delete(rid)
    # Its own key, and the admin token, still reach it; the failed delete left it there.
    assert (await alice.responses.retrieve(mine.id)).id == mine.id
    assert (await admin.responses.retrieve(mine.id)).id == mine.id
    follow = await alice.responses.create(
        model="deterministic", input="and then?", previous_response_id=mine.id
    )
    assert follow.id
    await alice.responses.delete(mine.id)


async def test_count_tokens_keeps_to_the_keys_models(
    tmp_path: Path, start_gateway: GatewayFactory
) -> None:
    server = await start_gateway(gateway_config(None, tmp_path / "state"))
    key = await new_key(server, models=["deterministic-embed"])
    claude = anthropic.AsyncAnthropic(api_key=key, base_url=str(server.make_url("")), max_retries=0)
    with pytest.raises(anthropic.PermissionDeniedError):
        await claude.messages.count_tokens(
            model="deterministic", messages=[{"role": "user", "content": "hi"}]
        )
