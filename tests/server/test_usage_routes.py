"""GET /console/v1/usage and /console/v1/requests over HTTP against the daemon app, with
records made through runtime.usage as the request path makes them: groups and totals,
relative and ISO ranges, pages that follow next_before, 400s naming the parameter, the
admin token required, and the Prometheus counters."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from palyra.server.keys import RUNTIME
from tests.conftest import ADMIN_TOKEN, GatewayFactory, gateway_config
from tests.usage.conftest import usage_record

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
MINUTE = 60_000


@pytest.fixture
async def server(tmp_path: Path, start_gateway: GatewayFactory) -> TestServer:
    server = await start_gateway(gateway_config(None, tmp_path / "state"))
    usage = server.app[RUNTIME].usage
    now = int(time.time() * 1000)
    key = {"key_id": "key_a", "key_name": "alpha"}
    for i in range(5):
        usage.record(usage_record(at_ms=now - i * MINUTE, request_id=f"a{i}", **key))
    usage.record(usage_record(at_ms=now - 90 * MINUTE, request_id="b0", model="claude"))
    usage.record(
        usage_record(
            at_ms=now - 3 * 86_400_000,
            request_id="c0",
            model="claude",
            status=502,
            cost_usd=None,
            error="upstream answered 502",
        )
    )
    await usage.flush()
    return server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers=AUTH) as session:
        yield session


async def get(http: aiohttp.ClientSession, server: TestServer, path: str) -> tuple[int, Any]:
    async with http.get(server.make_url(path)) as response:
        if response.content_type == "application/json":
            return response.status, await response.json()
        return response.status, await response.text()


async def test_usage_grouped_over_a_range(server: TestServer, http: aiohttp.ClientSession) -> None:
    status, answer = await get(http, server, "/console/v1/usage?group_by=model&since=1h")
    assert status == 200, answer
    assert answer["group_by"] == "model" and answer["truncated"] is False
    assert answer["until_ms"] - answer["since_ms"] == 3_600_000
    assert [(g["group"], g["requests"]) for g in answer["groups"]] == [("gpt-4o", 5)]
    assert answer["total"]["input_tokens"] == 500
    assert answer["total"]["cost_usd"] == pytest.approx(0.05)

    _, answer = await get(http, server, "/console/v1/usage?group_by=key")  # the last 30 days
    assert [(g["group"], g["key_name"], g["requests"]) for g in answer["groups"]] == [
        ("key_a", "alpha", 5),
        ("admin", "admin", 2),
    ]
    assert answer["total"]["errors"] == 1
    _, answer = await get(http, server, "/console/v1/usage?group_by=day&since=1w")
    assert sum(g["requests"] for g in answer["groups"]) == 7
    assert [g["start_ms"] for g in answer["groups"]] == sorted(
        g["start_ms"] for g in answer["groups"]
    )

    # ISO times, with and without an offset; an empty range is no error.
    _, answer = await get(
        http, server, "/console/v1/usage?since=2001-01-01&until=2001-01-02T00:00:00%2B01:00"
    )
    assert answer["since_ms"] == 978_307_200_000
    assert answer["until_ms"] == 978_307_200_000 + 86_400_000 - 3_600_000
    assert answer["groups"] == [] and answer["total"]["requests"] == 0


async def test_usage_groups_come_in_pages(server: TestServer, http: aiohttp.ClientSession) -> None:
    _, first = await get(http, server, "/console/v1/usage?group_by=key&limit=1")
    assert [g["group"] for g in first["groups"]] == ["key_a"]  # the busiest first
    assert first["truncated"] is True and first["next_offset"] == 1
    _, second = await get(http, server, "/console/v1/usage?group_by=key&limit=1&offset=1")
    assert [g["group"] for g in second["groups"]] == ["admin"]
    assert second["next_offset"] is None
    status, _ = await get(http, server, "/console/v1/usage?group_by=key&limit=0")
    assert status == 400


async def test_requests_paged_newest_first(server: TestServer, http: aiohttp.ClientSession) -> None:
    seen: list[str] = []
    path = "/console/v1/requests?limit=3"
    while True:
        status, page = await get(http, server, path)
        assert status == 200, page
        seen += [r["request_id"] for r in page["requests"]]
        if page["next_before"] is None:
            break
        path = f"/console/v1/requests?limit=3&before={page['next_before']}"
    assert seen == ["a0", "a1", "a2", "a3", "a4", "b0", "c0"]

    _, page = await get(http, server, "/console/v1/requests?status=error")
    (failed,) = page["requests"]
    assert (failed["request_id"], failed["status"], failed["error"]) == (
        "c0",
        502,
        "upstream answered 502",
    )
    assert failed["cost_usd"] is None and page["next_before"] is None
    _, page = await get(http, server, "/console/v1/requests?key_id=admin&model=claude&status=ok")
    assert [r["request_id"] for r in page["requests"]] == ["b0"]
    _, page = await get(http, server, "/console/v1/requests?key_id=key_a&limit=2")
    assert [r["request_id"] for r in page["requests"]] == ["a0", "a1"]
    assert page["next_before"] is not None


BAD = [
    ("/console/v1/usage?group_by=colour", "group_by", "must be one of key, model"),
    ("/console/v1/usage?since=yesterday", "since", "ISO 8601"),
    ("/console/v1/usage?since=7", "since", "duration before now"),
    ("/console/v1/usage?until=2001-13-01", "until", "ISO 8601"),
    ("/console/v1/usage?since=1d&until=2d", "since", "before until"),
    ("/console/v1/usage?since=1h&since=2h", "since", "once"),
    ("/console/v1/usage?since=1800-01-01", "since", "after 1970"),
    ("/console/v1/requests?limit=500", "limit", "from 1 to 200"),
    ("/console/v1/requests?limit=0", "limit", "from 1 to 200"),
    ("/console/v1/requests?status=fine", "status", "ok, error or an HTTP status"),
    ("/console/v1/requests?before=yesterday", "before", "epoch milliseconds"),
    ("/console/v1/requests?model=" + "m" * 300, "model", "at most 256"),
]


@pytest.mark.parametrize(("path", "param", "words"), BAD)
async def test_bad_values_are_400s_naming_the_parameter(
    server: TestServer, http: aiohttp.ClientSession, path: str, param: str, words: str
) -> None:
    status, answer = await get(http, server, path)
    assert status == 400, answer
    assert answer["error"]["param"] == param
    assert answer["error"]["message"].startswith(f"{param}: ")
    assert words in answer["error"]["message"]


async def test_the_admin_token_is_required(server: TestServer) -> None:
    async with aiohttp.ClientSession() as anonymous:
        for path in ("/console/v1/usage", "/console/v1/requests"):
            async with anonymous.get(server.make_url(path)) as response:
                assert response.status == 401


async def test_prometheus_counts_tokens_and_cost(
    server: TestServer, http: aiohttp.ClientSession
) -> None:
    _, text = await get(http, server, "/metrics")
    assert 'palyra_usage_tokens_total{key="alpha",kind="input",model="gpt-4o"} 500.0' in text
    assert 'palyra_usage_tokens_total{key="admin",kind="output",model="claude"} 100.0' in text
    assert 'palyra_usage_cost_usd_total{key="alpha",model="gpt-4o"} 0.05' in text
