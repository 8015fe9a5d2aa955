"""The run history over HTTP against the daemon app, on each state backend: runs from the CLI,
the console and cron are listed newest first, filtered by agent, source and status, paged with
`next_before`; a background run outlives its request; a run is followed with `after_seq`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from palyra.config import PalyraConfig
from tests.conftest import ADMIN_TOKEN, GatewayFactory
from tests.cron.conftest import backend_config

__all__ = ["backend_config"]  # the fixture, run once per backend

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers=AUTH) as session:
        yield session


async def call(
    http: aiohttp.ClientSession, server: TestServer, method: str, path: str, body: Any = None
) -> tuple[int, Any]:
    async with http.request(method, server.make_url(path), json=body) as response:
        return response.status, await response.json()


async def until_finished(http: aiohttp.ClientSession, server: TestServer, run_id: str) -> Any:
    for _ in range(200):
        status, run = await call(http, server, "GET", f"/console/v1/runs/{run_id}")
        assert status == 200, run
        if run["status"] != "running":
            return run
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} still running")


async def test_runs_from_every_source_are_listed_filtered_and_paged(
    backend_config: PalyraConfig, start_gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    server = await start_gateway(backend_config)
    long_input = "tell me about " + "x" * 500
    for body in (
        {"input": "from the cli", "origin": "cli"},
        {"input": long_input},
        {"input": '/tool calculator {"expression": "6*7"}', "origin": "cli"},
    ):
        status, run = await call(http, server, "POST", "/console/v1/runs", body)
        assert status == 200 and run["status"] == "succeeded", run
    job = {"name": "hourly", "agent_id": "default", "prompt": "tick", "schedule": {"every": "1h"}}
    status, created = await call(http, server, "POST", "/console/v1/cron/jobs", job)
    assert status == 201, created
    status, fired = await call(
        http, server, "POST", f"/console/v1/cron/jobs/{created['job_id']}/trigger"
    )
    assert status == 202, fired
    for _ in range(200):
        _, runs = await call(http, server, "GET", f"/console/v1/cron/jobs/{created['job_id']}/runs")
        if runs["runs"][0]["status"] != "running":
            break
        await asyncio.sleep(0.05)
    cron_run_id = runs["runs"][0]["agent_run_id"]
    assert cron_run_id

    status, page = await call(http, server, "GET", "/console/v1/runs")
    assert status == 200, page
    listed = page["runs"]
    assert [r["source"] for r in listed] == ["cron", "cli", "console", "cli"]
    assert page["next_before"] is None
    assert listed[0]["run_id"] == cron_run_id and listed[0]["cron_job_id"] == created["job_id"]
    # Input and output cut short in the list; whole on the run's page.
    console = listed[2]
    assert len(console["input_excerpt"]) == 200 and console["input_excerpt"].endswith("…")
    assert "events" not in console
    _, whole = await call(http, server, "GET", f"/console/v1/runs/{console['run_id']}")
    assert whole["input"] == long_input and whole["source"] == "console"
    assert listed[1]["output_excerpt"].endswith("returned: 42")

    _, cli = await call(http, server, "GET", "/console/v1/runs?source=cli")
    assert [r["input_excerpt"] for r in cli["runs"]] == [
        '/tool calculator {"expression": "6*7"}',
        "from the cli",
    ]
    _, cron = await call(http, server, "GET", "/console/v1/runs?source=cron&status=succeeded")
    assert [r["run_id"] for r in cron["runs"]] == [cron_run_id]
    _, none = await call(http, server, "GET", "/console/v1/runs?status=failed")
    assert none == {"runs": [], "next_before": None}
    _, other = await call(http, server, "GET", "/console/v1/runs?agent_id=nobody")
    assert other["runs"] == []

    # Pages of two: every run once, in order.
    seen: list[str] = []
    path = "/console/v1/runs?limit=2"
    while True:
        _, page = await call(http, server, "GET", path)
        seen += [r["run_id"] for r in page["runs"]]
        if page["next_before"] is None:
            break
        path = f"/console/v1/runs?limit=2&before={page['next_before']}"
    assert seen == [r["run_id"] for r in listed]


async def test_bad_history_queries_name_the_parameter(
    backend_config: PalyraConfig, start_gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    server = await start_gateway(backend_config)
    for query, param in [
        ("source=api", "source"),
        ("status=done", "status"),
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("before=yesterday", "before"),
        ("before=1:run%20x", "before"),
        ("agent_id=a%00b", "agent_id"),
        ("agent_id=a&agent_id=b", "agent_id"),
        ("source=cli&source=cron", "source"),
    ]:
        status, answer = await call(http, server, "GET", f"/console/v1/runs?{query}")
        assert status == 400, (query, answer)
        assert answer["error"]["param"] == param, (query, answer)
    status, answer = await call(http, server, "GET", "/console/v1/runs/run_x?after_seq=-1")
    assert status == 400 and answer["error"]["param"] == "after_seq"


async def test_a_background_run_outlives_its_request_and_is_followed_by_seq(
    backend_config: PalyraConfig, start_gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    server = await start_gateway(backend_config)
    body = {"input": '/tool calculator {"expression": "2+3"}', "background": True}
    status, started = await call(http, server, "POST", "/console/v1/runs", body)
    assert status == 202, started
    assert started["source"] == "console" and started["events"][0]["type"] == "run_started"
    run = await until_finished(http, server, started["run_id"])
    assert run["status"] == "succeeded" and run["output"].endswith("returned: 5")
    seqs = [e["seq"] for e in run["events"]]
    _, later = await call(http, server, "GET", f"/console/v1/runs/{run['run_id']}?after_seq=2")
    assert [e["seq"] for e in later["events"]] == seqs[2:]
    status, answer = await call(
        http,
        server,
        "POST",
        "/console/v1/runs",
        {"input": "hi", "background": True, "stream": True},
    )
    assert status == 400 and answer["error"]["param"] == "background"
