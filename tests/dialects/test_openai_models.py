"""`GET /v1/models` and `GET /v1/models/{id}`, driven by the official `openai` SDK."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import openai
import pytest
from aiohttp.test_utils import TestServer
from openai import AsyncOpenAI

from palyra.config import validate_config
from tests.conftest import ADMIN_TOKEN, GatewayFactory, gateway_config
from tests.fakes.upstream import FakeUpstream


@pytest.fixture
async def slashed_client(
    upstream: FakeUpstream, tmp_path: Path, start_gateway: GatewayFactory
) -> AsyncIterator[tuple[AsyncOpenAI, TestServer]]:
    """The shared setup plus a model whose id has slashes, as routers name models."""
    raw = gateway_config(upstream, tmp_path / "state", discovery_ttl_ms=3_600_000).model_dump(
        mode="json", exclude_unset=True
    )
    raw["model_provider"]["models"].append(
        {"model_id": "openai/gpt-4o", "provider_id": "oai", "upstream_model": "gpt-4o"}
    )
    gateway = await start_gateway(validate_config(raw))
    sdk = AsyncOpenAI(api_key=ADMIN_TOKEN, base_url=str(gateway.make_url("/v1")), max_retries=0)
    yield sdk, gateway
    await sdk.close()


async def test_models_list(client: AsyncOpenAI) -> None:
    ids = [model.id async for model in client.models.list()]
    assert {"deterministic", "gpt-4o-mini", "claude", "whisper-1"} <= set(ids)
    raw = await client.models.with_raw_response.list()
    assert raw.headers["x-palyra-failover-count"] == "0"
    assert float(raw.headers["x-palyra-overhead-ms"]) >= 0


async def test_retrieve_is_the_model_object_of_the_list(client: AsyncOpenAI) -> None:
    listed = {model.id: model async for model in client.models.list()}
    raw = await client.models.with_raw_response.retrieve("whisper-1")
    assert float(raw.headers["x-palyra-overhead-ms"]) >= 0
    model = raw.parse()
    assert (model.id, model.object, model.created, model.owned_by) == (
        "whisper-1",
        "model",
        0,
        "oai",
    )
    assert model.model_extra == {
        "palyra": {
            "role": "audio_transcription",
            "provider_id": "oai",
            "source": "configured",
            "enabled": True,
            "max_context_tokens": listed["whisper-1"].model_extra["palyra"]["max_context_tokens"],  # type: ignore[index]
        }
    }
    assert model == listed["whisper-1"]


async def test_an_id_with_slashes(
    slashed_client: tuple[AsyncOpenAI, TestServer],
) -> None:
    client, gateway = slashed_client
    # The SDK percent-encodes the slash; curl and others send it as it is.
    model = await client.models.retrieve("openai/gpt-4o")
    assert model.id == "openai/gpt-4o" and model.owned_by == "oai"
    async with aiohttp.ClientSession() as http:
        async with http.get(
            gateway.make_url("/v1/models/openai/gpt-4o"),
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        ) as response:
            assert response.status == 200
            assert (await response.json())["id"] == "openai/gpt-4o"


async def test_an_unknown_id_is_a_404_naming_it(client: AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await client.models.retrieve("gpt-5-imaginary")
    assert caught.value.code == "model_not_found"
    assert caught.value.body["message"] == "The model 'gpt-5-imaginary' does not exist"  # type: ignore[index]
    assert caught.value.body["param"] == "model"  # type: ignore[index]
    assert caught.value.body["type"] == "invalid_request_error"  # type: ignore[index]


async def test_retrieve_needs_the_key(gateway: TestServer) -> None:
    unauthorized = AsyncOpenAI(
        api_key="wrong", base_url=str(gateway.make_url("/v1")), max_retries=0
    )
    with pytest.raises(openai.AuthenticationError):
        await unauthorized.models.retrieve("deterministic")
    await unauthorized.close()


async def test_a_client_key_sees_only_its_models(
    tmp_path: Path, start_gateway: GatewayFactory
) -> None:
    server = await start_gateway(gateway_config(None, tmp_path / "state"))
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as http,
        http.post(
            server.make_url("/console/v1/keys"),
            json={"name": "narrow", "models": ["deterministic"]},
        ) as response,
    ):
        secret = (await response.json())["secret"]
    client = AsyncOpenAI(api_key=secret, base_url=str(server.make_url("/v1")), max_retries=0)
    assert [m.id async for m in client.models.list()] == ["deterministic"]
    assert (await client.models.retrieve("deterministic")).id == "deterministic"
    with pytest.raises(openai.PermissionDeniedError) as refused:
        await client.models.retrieve("deterministic-embed")
    assert refused.value.code == "model_not_allowed"
