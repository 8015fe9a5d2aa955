"""Agent runs over HTTP against the daemon app: offline on the deterministic provider, and
against the fake OpenAI upstream for tool-call scripts, limits, timeouts and cancels."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer

from palyra.config import AgentsConfig, PalyraConfig, StateConfig
from palyra.server.keys import RUNTIME
from tests.conftest import ADMIN_TOKEN, GatewayFactory, gateway_config
from tests.cron.conftest import backend_config
from tests.fakes.upstream import ChatReply, FakeUpstream
from tests.state.conftest import drop_schema, postgres_schema_url

__all__ = ["backend_config"]  # the fixture, run once per backend

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
CHAT = "/v1/chat/completions"
AGENTS_TOML = """version = 1
[[agents]]
agent_id = "helper"
model = "gpt-4o-mini"
system_prompt = "Be brief."
tools = ["calculator", "current_time"]
max_turns = 3
max_tool_calls = 2
[[agents]]
agent_id = "quick"
model = "gpt-4o-mini"
timeout_s = 0.5
"""


def with_agents(config: PalyraConfig, tmp_path: Path) -> PalyraConfig:
    path = tmp_path / "agents.toml"
    path.write_text(AGENTS_TOML)
    return config.model_copy(update={"agents": AgentsConfig(file=str(path))})


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers=AUTH) as session:
        yield session


async def post_run(
    http: aiohttp.ClientSession, server: TestServer, body: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    async with http.post(server.make_url("/console/v1/runs"), json=body) as response:
        return response.status, await response.json()


async def test_offline_run_with_a_tool_call_on_the_deterministic_provider(
    tmp_path: Path, start_gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    server = await start_gateway(gateway_config(None, tmp_path / "state"))
    status, run = await post_run(
        http, server, {"agent_id": "default", "input": '/tool calculator {"expression": "6*7"}'}
    )
    assert status == 200, run
    assert run["status"] == "succeeded" and run["origin"] == "api"
    types = [e["type"] for e in run["events"]]
    assert types == ["run_started", "tool_call", "tool_result", "model_text", "run_finished"]
    call, result = run["events"][1], run["events"][2]
    assert call["name"] == "calculator" and orjson.loads(call["arguments"]) == {"expression": "6*7"}
    assert result["ok"] is True and result["content"] == "42"
    assert run["output"] == f"tool {call['id']} returned: 42"
    assert run["tool_calls"] == 1 and run["turns"] == 2
    assert run["usage"]["prompt_tokens"] > 0 and run["usage"]["completion_tokens"] > 0
    async with http.get(server.make_url(f"/console/v1/runs/{run['run_id']}")) as response:
        stored = await response.json()
    assert stored == run


async def test_streamed_run_sends_each_event_as_sse(
    tmp_path: Path, start_gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    server = await start_gateway(gateway_config(None, tmp_path / "state"))
    body = {"input": '/tool current_time {"zone": "Asia/Tokyo"}', "stream": True}
    async with http.post(server.make_url("/console/v1/runs"), json=body) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        lines = [line.decode().strip() async for line in response.content]
    data = [line[6:] for line in lines if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    events = [orjson.loads(d) for d in data[:-1]]
    assert [e["type"] for e in events] == [
        "run_started",
        "tool_call",
        "tool_result",
        "model_text",
        "run_finished",
    ]
    assert "+09:00 (Asia/Tokyo" in events[2]["content"]
    assert events[-1]["status"] == "succeeded"
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5]


async def test_bad_run_requests_name_the_field(
    tmp_path: Path, start_gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    server = await start_gateway(gateway_config(None, tmp_path / "state"))
    for body, param in [
        ({"agent_id": "default"}, "input"),
        ({"input": "hi", "agent_id": "ghost"}, "agent_id"),
        ({"input": "hi", "stream": "yes"}, "stream"),
        ({"input": "hi", "origin": "cron"}, "origin"),
        ({"input": "hi", "temperature": 1}, "temperature"),
    ]:
        status, answer = await post_run(http, server, body)
        assert status in (400, 404), body
        assert answer["error"]["param"] == param, answer
    async with http.get(server.make_url("/console/v1/runs/run_nope")) as response:
        assert response.status == 404
    async with http.get(server.make_url("/console/v1/agents")) as response:
        agents = (await response.json())["agents"]
    assert [a["agent_id"] for a in agents] == ["default"]


async def test_hostile_run_requests_are_400s_and_store_nothing(
    backend_config: PalyraConfig, start_gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    server = await start_gateway(backend_config)
    for body, param, words in [
        ({"input": "a\x00b"}, "input", "NUL"),  # PostgreSQL text cannot hold it
        ({"input": "hi", "session_id": "s\x00"}, "session_id", "without NUL"),
        ({"input": "hi", "session_id": "s" * 129}, "session_id", "at most 128 characters"),
        ({"input": "hi", "session_id": 7}, "session_id", "a string"),
        ({"input": "hi", "agent_id": "a" * 100_000}, "agent_id", "at most 64 characters"),
        ({"input": "x" * 100_001}, "input", "longer than 100000 characters"),
    ]:
        status, answer = await post_run(http, server, body)
        assert status == 400, (param, answer)
        assert answer["error"]["param"] == param, answer
        assert answer["error"]["message"].startswith(f"{param}: "), answer
        assert words in answer["error"]["message"], answer
        assert len(answer["error"]["message"]) < 300, answer
    for raw in (b'{"input": NaN}', b'{"input": "hi", "stream": Infinity}', b"[1e400]"):
        async with http.post(server.make_url("/console/v1/runs"), data=raw) as response:
            assert response.status == 400, raw
    # An id no run can have is not looked up: NUL is an error in PostgreSQL, not a miss.
    for method, path in (("GET", "run%00x"), ("POST", "run%00x/cancel"), ("GET", "r" * 200)):
        async with http.request(method, server.make_url(f"/console/v1/runs/{path}")) as response:
            answer = await response.json()
            assert response.status == 404 and answer["error"]["param"] == "run_id", answer
            assert len(answer["error"]["message"]) < 100
    stored = await server.app[RUNTIME].agents.store.db.fetch_all("SELECT run_id FROM agent_runs")
    assert stored == []


async def test_tool_errors_reach_the_model_and_the_run_goes_on(
    tmp_path: Path,
    upstream: FakeUpstream,
    start_gateway: GatewayFactory,
    http: aiohttp.ClientSession,
) -> None:
    config = with_agents(
        gateway_config(upstream, tmp_path / "state", failover_enabled=False), tmp_path
    )
    server = await start_gateway(config)
    upstream.script(
        CHAT,
        ChatReply(
            content=None,
            tool_calls=[
                {"id": "c1", "name": "teleport", "arguments": {}},
                {"id": "c2", "name": "calculator", "arguments": {"expression": "1/0"}},
            ],
            usage=(20, 5),
        ),
        ChatReply(content="Could not do it.", usage=(40, 4)),
    )
    status, run = await post_run(http, server, {"agent_id": "helper", "input": "go"})
    assert status == 200
    assert run["status"] == "succeeded" and run["output"] == "Could not do it."
    results = [e for e in run["events"] if e["type"] == "tool_result"]
    assert [r["ok"] for r in results] == [False, False]
    assert "unknown tool 'teleport'" in results[0]["content"]
    assert results[1]["content"] == "error: calculator: division by zero"
    assert run["usage"] == {"prompt_tokens": 60, "completion_tokens": 9, "total_tokens": 69}
    first, second = (r.json for r in upstream.requests_to(CHAT))
    # The built-in tools went upstream in OpenAI's function format, with their JSON schema.
    names = [t["function"]["name"] for t in first["tools"]]
    assert names == ["calculator", "current_time"]
    assert first["tools"][0]["function"]["parameters"]["required"] == ["expression"]
    assert first["messages"][0] == {"role": "system", "content": "Be brief."}
    tool_messages = [m for m in second["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_messages] == ["c1", "c2"]


async def test_limits_end_the_run(
    tmp_path: Path,
    upstream: FakeUpstream,
    start_gateway: GatewayFactory,
    http: aiohttp.ClientSession,
) -> None:
    config = with_agents(
        gateway_config(upstream, tmp_path / "state", failover_enabled=False), tmp_path
    )
    server = await start_gateway(config)
    calc = {"name": "calculator", "arguments": {"expression": "1+1"}}
    upstream.script(CHAT, *[ChatReply(content=None, tool_calls=[calc]) for _ in range(3)])
    _, run = await post_run(http, server, {"agent_id": "helper", "input": "loop"})
    assert (run["status"], run["error_kind"]) == ("failed", "max_tool_calls")
    assert run["tool_calls"] == 2
    upstream.clear()
    upstream.script(CHAT, ChatReply(content="slow", delay_s=3))
    _, run = await post_run(http, server, {"agent_id": "quick", "input": "wait"})
    assert (run["status"], run["error_kind"]) == ("failed", "timeout")
    assert "timeout_s (0.5 s)" in run["error_message"]


async def test_a_run_can_be_cancelled(
    tmp_path: Path,
    upstream: FakeUpstream,
    start_gateway: GatewayFactory,
    http: aiohttp.ClientSession,
) -> None:
    config = with_agents(
        gateway_config(upstream, tmp_path / "state", failover_enabled=False), tmp_path
    )
    server = await start_gateway(config)
    upstream.script(CHAT, ChatReply(content="slow", delay_s=5))
    body = {"agent_id": "helper", "input": "wait", "stream": True}
    async with http.post(server.make_url("/console/v1/runs"), json=body) as response:
        run_id = response.headers["x-palyra-run-id"]
        async with http.post(server.make_url(f"/console/v1/runs/{run_id}/cancel")) as cancel:
            assert cancel.status == 200
            cancelled = await cancel.json()
        rest = await asyncio.wait_for(response.read(), 5)
    assert cancelled["status"] == "cancelled"
    assert b'"type":"run_finished"' in rest and rest.endswith(b"data: [DONE]\n\n")
    assert cancelled["events"][-1]["type"] == "run_finished"


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_a_nul_in_what_the_model_says_is_stored_on_every_backend(
    backend: str,
    tmp_path: Path,
    upstream: FakeUpstream,
    start_gateway: GatewayFactory,
    http: aiohttp.ClientSession,
) -> None:
    # The model's text is not the client's to validate: PostgreSQL text cannot hold a NUL,
    # so the run must store it somehow rather than fail with the database's error.
    config = with_agents(
        gateway_config(upstream, tmp_path / "state", failover_enabled=False), tmp_path
    )
    schema = ""
    if backend == "postgres":
        url, schema = await postgres_schema_url()
        config = config.model_copy(update={"state": StateConfig(backend="postgres", url=url)})
    try:
        server = await start_gateway(config)
        upstream.script(CHAT, ChatReply(content="a\x00b", usage=(5, 2)))
        status, run = await post_run(http, server, {"agent_id": "helper", "input": "go"})
        assert status == 200, run
        assert run["status"] == "succeeded", run
        assert run["output"] == "a\ufffdb"
        async with http.get(server.make_url(f"/console/v1/runs/{run['run_id']}")) as response:
            stored = await response.json()
        assert stored["output"] == "a\ufffdb"
    finally:
        if schema:
            await drop_schema(schema)


async def test_clients_that_leave_streamed_runs_leave_every_run_recorded(
    tmp_path: Path, start_gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    # Found by the fuzz suite: a client that went away mid-stream cancelled its run while an
    # event was being written; the number of that event was handed out again for the end
    # (a UNIQUE violation: the run's end was lost), and a cancel during BEGIN left SQLite in
    # a transaction, so every later run answered 500 until a restart.
    server = await start_gateway(gateway_config(None, tmp_path / "state"))
    body = {"input": '/tool current_time {"zone": "UTC"}', "stream": True}
    run_ids = []
    for _ in range(6):
        reader, writer = await asyncio.open_connection(server.host, server.port)
        payload = orjson.dumps(body)
        writer.write(
            b"POST /console/v1/runs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {ADMIN_TOKEN}\r\n".encode()
            + b"Content-Length: %d\r\n\r\n" % len(payload)
            + payload
        )
        await writer.drain()
        head = await reader.readuntil(b"run_started")
        first = await reader.readuntil(b"\n\n")
        run_ids.append(orjson.loads((head + first).rpartition(b"data: ")[2])["run_id"])
        writer.transport.abort()  # a reset, mid-run
    status, run = await post_run(http, server, {"input": "still there?"})
    assert status == 200 and run["status"] == "succeeded", run
    for run_id in run_ids:
        for _ in range(200):  # a cancel is recorded as its task ends, just after the reset
            async with http.get(server.make_url(f"/console/v1/runs/{run_id}")) as response:
                stored = await response.json()
            if stored["status"] != "running":
                break
            await asyncio.sleep(0.01)
        assert stored["status"] in ("cancelled", "succeeded"), stored
        seqs = [e["seq"] for e in stored["events"]]
        assert seqs == sorted(set(seqs)) and stored["events"][-1]["type"] == "run_finished"
