"""agents.toml validation, the safe calculator, and the built-in tools' failure modes."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from palyra.agents.calculator import CalculatorError, calculate
from palyra.agents.registry import DEFAULT_AGENT_ID, load_agents, parse_agents
from palyra.agents.tools import ToolEnv, run_tool
from palyra.config import ConfigError, validate_config

ALL_TOOLS = ("current_time", "calculator", "http_fetch")


def problems(raw: dict[str, object]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_agents(raw, "agents.toml")
    return caught.value.problems


def test_default_agent_exists_without_a_file(tmp_path: Path) -> None:
    config = validate_config({"version": 1})
    registry = load_agents(config, None, {"XDG_CONFIG_HOME": str(tmp_path)})
    assert [a.agent_id for a in registry.all()] == [DEFAULT_AGENT_ID]
    default = registry.get("default")
    assert default is not None
    assert (default.max_turns, default.max_tool_calls, default.timeout_s) == (8, 4, 120)
    assert default.model == ""


def test_agents_file_beside_the_config_and_redefining_default(tmp_path: Path) -> None:
    (tmp_path / "agents.toml").write_text(
        "version = 1\n"
        "[[agents]]\n"
        'agent_id = "default"\n'
        'model = "gpt-4o-mini"\n'
        "[[agents]]\n"
        'agent_id = "web"\n'
        'tools = ["http_fetch"]\n'
        'allowed_hosts = ["Example.com", "*.example.org"]\n'
        "max_turns = 3\n"
    )
    config = validate_config({"version": 1})
    registry = load_agents(config, tmp_path / "config.toml", {})
    assert registry.source == tmp_path / "agents.toml"
    assert registry.get("default").model == "gpt-4o-mini"  # type: ignore[union-attr]
    web = registry.get("web")
    assert web is not None and web.allowed_hosts == ("example.com", "*.example.org")
    assert web.max_turns == 3 and web.max_tool_calls == 4


def test_errors_name_the_agent_and_the_key() -> None:
    found = problems(
        {
            "version": 1,
            "agents": [
                {"agent_id": "ok"},
                {"agent_id": "busy", "max_turns": 0, "tools": ["calculator", "teleport"]},
                {"agent_id": "typo", "sytem_prompt": "x"},
                {"display_name": "nameless"},
                {"agent_id": "ok"},
                {"agent_id": "hosts", "allowed_hosts": ["example.com"]},
                {"agent_id": "BAD ID"},
            ],
        }
    )
    assert "agent 'busy' (agents[1]).max_turns: input should be greater than or equal to 1" in found
    assert any(
        p.startswith("agent 'busy' (agents[1]).tools: unknown tool 'teleport'") for p in found
    )
    assert "agent 'typo' (agents[2]).sytem_prompt: unknown key" in found
    assert "agents[3].agent_id: required" in found
    assert "agent 'ok' (agents[4]).agent_id: duplicate agent id 'ok'" in found
    assert any("agent 'hosts' (agents[5]).allowed_hosts: set, but" in p for p in found)
    assert any(p.startswith("agent 'BAD ID' (agents[6]).agent_id: must be") for p in found)


def test_file_level_errors() -> None:
    assert problems({"agents": []}) == ["version: required; put `version = 1` at the top"]
    assert "agent: unknown key (agents are [[agents]] tables)" in problems(
        {"version": 1, "agent": []}
    )


def test_an_explicit_agents_file_must_exist(tmp_path: Path) -> None:
    config = validate_config({"version": 1, "agents": {"file": str(tmp_path / "nope.toml")}})
    with pytest.raises(ConfigError, match="file not found"):
        load_agents(config, None, {})


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("(2 + 3) * 4 / 8", 2.5),
        ("7 // 2 + 7 % 2", 4),
        ("-2 ** 2", -4),
        ("2 ** 100", 2**100),
        ("max(3, sqrt(16), abs(-5))", 5),
        ("round(pi, 3)", 3.142),
    ],
)
def test_calculator(expression: str, value: float) -> None:
    assert calculate(expression) == value


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("__import__('os').system('true')", "unsupported syntax"),
        ("().__class__", "unsupported syntax"),
        ("x + 1", "unsupported syntax"),
        ("'a' * 3", "only numbers"),
        ("9 ** 9 ** 9", "exponent larger than 1000"),
        ("(10 ** 1000) ** 10", "result too large"),
        ("1 / 0", "division by zero"),
        ("2 +", "cannot parse"),
        ("1e308 * 10", "not a finite number"),
        ("1" * 501, "longer than 500"),
    ],
)
def test_calculator_refuses(expression: str, reason: str) -> None:
    with pytest.raises(CalculatorError, match=reason):
        calculate(expression)


async def test_tool_failures_become_results() -> None:
    env = ToolEnv()
    unknown = await run_tool("teleport", "{}", ALL_TOOLS, env)
    assert not unknown.ok and "unknown tool 'teleport'" in unknown.content
    not_offered = await run_tool("http_fetch", "{}", ("calculator",), env)
    assert not not_offered.ok and "unknown tool 'http_fetch'" in not_offered.content
    bad_json = await run_tool("calculator", "{nope", ALL_TOOLS, env)
    assert not bad_json.ok and "not valid JSON" in bad_json.content
    bad_args = await run_tool("calculator", '{"expr": "1"}', ALL_TOOLS, env)
    assert (
        not bad_args.ok and "bad arguments" in bad_args.content and "expression" in bad_args.content
    )
    failing = await run_tool("calculator", '{"expression": "1/0"}', ALL_TOOLS, env)
    assert failing == type(failing)(False, "error: calculator: division by zero")
    ok = await run_tool("calculator", '{"expression": "6*7"}', ALL_TOOLS, env)
    assert ok.ok and ok.content == "42"


async def test_current_time_in_a_zone() -> None:
    env = ToolEnv(now=lambda: 1_782_000_000.0)  # 2026-06-21T00:00:00Z
    result = await run_tool("current_time", '{"zone": "Europe/Prague"}', ALL_TOOLS, env)
    assert result.ok and result.content.startswith("2026-06-21T02:00:00+02:00 (Europe/Prague")
    bad = await run_tool("current_time", '{"zone": "Mars/Olympus"}', ALL_TOOLS, env)
    assert not bad.ok and "unknown IANA time zone" in bad.content


async def test_http_fetch_allowed_hosts_and_size_limit() -> None:
    import aiohttp

    async def small(request: web.Request) -> web.Response:
        return web.Response(text="hello from the page")

    async def huge(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 1_000_000)

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound("http://elsewhere.invalid/")

    app = web.Application()
    app.router.add_get("/small", small)
    app.router.add_get("/huge", huge)
    app.router.add_get("/moved", moved)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    async with aiohttp.ClientSession() as session:
        env = ToolEnv(allowed_hosts=("127.0.0.1",), session=session)

        async def fetch(url: str) -> tuple[bool, str]:
            outcome = await run_tool("http_fetch", f'{{"url": "{url}"}}', ALL_TOOLS, env)
            return outcome.ok, outcome.content

        ok, text = await fetch(str(server.make_url("/small")))
        assert (
            ok and text.startswith("HTTP 200 text/plain") and text.endswith("hello from the page")
        )
        ok, text = await fetch(str(server.make_url("/huge")))
        assert ok and "[truncated]" in text and len(text) < 21_000
        ok, text = await fetch(str(server.make_url("/moved")))
        assert ok and "HTTP 302" in text and "Location: http://elsewhere.invalid/" in text
        ok, text = await fetch("http://localhost:1/")
        assert not ok and "host 'localhost' is not allowed (allowed hosts: 127.0.0.1)" in text
        ok, text = await fetch("file:///etc/passwd")
        assert not ok and "absolute http:// or https:// URL" in text
    await server.close()
