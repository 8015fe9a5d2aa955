"""A daemon whose state store or Redis stops answering keeps serving and says it is degraded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from palyra.config import validate_config
from tests.conftest import ADMIN_TOKEN, GatewayFactory
from tests.fakes.proxy import CuttableProxy
from tests.state.conftest import drop_schema, postgres_schema_url

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def health(server: TestServer) -> dict[str, object]:
    async with aiohttp.ClientSession() as http, http.get(server.make_url("/healthz")) as r:
        assert r.status == 200
        return dict(await r.json())


async def admin_status(server: TestServer) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(server.make_url("/console/v1/models/status"), headers=AUTH) as r,
    ):
        assert r.status == 200
        return dict(await r.json())


async def chat_works(server: TestServer) -> bool:
    body = {"model": "deterministic", "messages": [{"role": "user", "content": "still here"}]}
    async with (
        aiohttp.ClientSession() as http,
        http.post(server.make_url("/v1/chat/completions"), json=body, headers=AUTH) as r,
    ):
        return r.status == 200


async def wait_for_status(
    server: TestServer, wanted: str, within_s: float = 8
) -> dict[str, object]:
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        report = await health(server)
        if report["status"] == wanted:
            return report
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"status stayed {report}")
        await asyncio.sleep(0.2)


async def test_unreachable_redis_is_degraded_but_serving(
    tmp_path: Path, start_gateway: GatewayFactory
) -> None:
    config = validate_config(
        {
            "version": 1,
            "daemon": {"state_dir": str(tmp_path / "state")},
            "state": {"redis_url": "redis://:s3cret-pass@127.0.0.1:1/0"},
        }
    )
    server = await start_gateway(config)
    report = await wait_for_status(server, "degraded")
    # Anyone may ask /healthz: it names what is down, never how (hosts, ports, errors).
    assert report == {
        "status": "degraded",
        "dependencies": {"state_store": "ok", "redis": "degraded"},
    }
    async with aiohttp.ClientSession() as http, http.get(server.make_url("/healthz")) as r:
        public = await r.text()
    assert "127.0.0.1" not in public and "s3cret-pass" not in public
    # The admin's status says why, with the password redacted.
    redis = (await admin_status(server))["dependencies"]["redis"]
    assert redis["ok"] is False and "127.0.0.1" in redis["error"]
    assert "s3cret-pass" not in str(redis)
    assert await chat_works(server)


@pytest.fixture
async def postgres_via_proxy() -> AsyncIterator[tuple[str, CuttableProxy]]:
    url, schema = await postgres_schema_url()
    proxy = CuttableProxy(5432)
    await proxy.start()
    yield url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}"), proxy
    await proxy.close()
    await drop_schema(schema)


async def test_lost_postgres_is_degraded_but_serving(
    tmp_path: Path, start_gateway: GatewayFactory, postgres_via_proxy: tuple[str, CuttableProxy]
) -> None:
    url, proxy = postgres_via_proxy
    config = validate_config(
        {
            "version": 1,
            "daemon": {"state_dir": str(tmp_path / "state")},
            "state": {"backend": "postgres", "url": url},
        }
    )
    server = await start_gateway(config)
    await wait_for_status(server, "ok")
    proxy.cut()
    report = await wait_for_status(server, "degraded")
    assert report == {"status": "degraded", "dependencies": {"state_store": "degraded"}}
    assert (await admin_status(server))["dependencies"]["state_store"]["error"]
    assert await chat_works(server)
    proxy.up = True
    await wait_for_status(server, "ok")
