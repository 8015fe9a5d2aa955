"""agents.toml validation, the safe calculator, and the built-in tools' failure modes."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import pytest
from aiohttp import web

from palyra.agents.calculator import CalculatorError, calculate
from palyra.agents.registry import (
    DEFAULT_AGENT_ID,
    AgentRegistry,
    AgentSpec,
    load_agents,
    parse_agents,
)
from palyra.agents.service import AgentService
from palyra.agents.tools import (
    DEFAULT_PORTS,
    FETCH_MAX_BYTES,
    FETCH_MAX_CHARS,
    ToolEnv,
    allowed_rule,
    fetch_session,
    run_tool,
)
from palyra.config import ConfigError, validate_config
from palyra.egress import address_class
from palyra.routing import Routed
from palyra.state.db import Database, SqliteDatabase
from palyra.types import ChatRequest, ChatResult, ToolCallResult, Usage

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


class Site:
    """A web app on loopback, and a count of the connections made to it at all (a refused
    fetch must not even connect)."""

    def __init__(self, app: web.Application) -> None:
        self.connections = 0
        self.port = 0
        self._runner = web.AppRunner(app, access_log=None)
        self._tcp: asyncio.Server | None = None

    async def __aenter__(self) -> Site:
        await self._runner.setup()
        handler = self._runner.server
        assert handler is not None

        def protocol() -> asyncio.Protocol:
            self.connections += 1
            return handler()

        self._tcp = await asyncio.get_running_loop().create_server(protocol, "127.0.0.1", 0)
        self.port = self._tcp.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._tcp is not None
        self._tcp.close()
        await self._runner.cleanup()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


async def fetch(env: ToolEnv, url: str) -> tuple[bool, str]:
    outcome = await run_tool("http_fetch", orjson.dumps({"url": url}).decode(), ALL_TOOLS, env)
    return outcome.ok, outcome.content


def page_app() -> web.Application:
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
    return app


async def test_http_fetch_allowed_hosts_and_size_limit() -> None:
    async with Site(page_app()) as site:
        allowed = (f"127.0.0.1:{site.port}",)
        async with fetch_session(allowed) as session:
            env = ToolEnv(allowed_hosts=allowed, session=session)
            ok, text = await fetch(env, site.url("/small"))
            assert ok and text.startswith("HTTP 200 text/plain")
            assert text.endswith("hello from the page")
            ok, text = await fetch(env, site.url("/huge"))
            assert ok and "[truncated]" in text and len(text) < 21_000
            ok, text = await fetch(env, site.url("/moved"))
            assert ok and "HTTP 302" in text and "Location: http://elsewhere.invalid/" in text
            ok, text = await fetch(env, "http://localhost:1/")
            assert not ok and f"'localhost:1' is not allowed (allowed hosts: {allowed[0]};" in text
            ok, text = await fetch(env, "file:///etc/passwd")
            assert not ok and "absolute http:// or https:// URL" in text


def test_allowed_hosts_entries_take_ports_and_are_normalised() -> None:
    agents = parse_agents(
        {
            "version": 1,
            "agents": [
                {
                    "agent_id": "web",
                    "tools": ["http_fetch"],
                    "allowed_hosts": [
                        "Example.com",
                        "*.example.org:8443",
                        "127.0.0.1:6379",
                        "[::1]:8080",
                        "[0:0::1]",
                        "localhost:7142",
                    ],
                }
            ],
        }
    )
    assert agents["web"].allowed_hosts == (
        "example.com",
        "*.example.org:8443",
        "127.0.0.1:6379",
        "[::1]:8080",
        "::1",
        "localhost:7142",
    )
    found = problems(
        {
            "version": 1,
            "agents": [
                {"agent_id": "a", "tools": ["http_fetch"], "allowed_hosts": [entry]}
                for entry in (
                    "0x7f000001",
                    "example.com:0",
                    "https://example.com/",
                    "*.10.0.0.1",
                    "[example.com]:80",
                )
            ],
        }
    )
    assert len(found) == 5
    assert "write an IP address as dotted decimal" in found[0]
    assert "the port must be a number 1-65535" in found[1]
    assert "no scheme, path or user" in found[2]
    assert "*. goes before a domain name" in found[3]
    assert "brackets are for an IPv6 address" in found[4]


@pytest.mark.parametrize(
    ("entry", "url", "allowed"),
    [
        ("example.com", "http://example.com/", True),
        ("example.com", "https://example.com:443/", True),
        ("example.com", "http://example.com:8080/", False),
        ("example.com", "https://example.com:80/", False),
        ("example.com:8080", "http://example.com:8080/", True),
        ("example.com:8080", "http://example.com/", False),
        ("*.example.com", "https://api.example.com/", True),
        ("*.example.com", "https://example.com/", False),
        ("*.example.com", "https://api.example.com:8443/", False),
        ("[::1]:8080", "http://[::1]:8080/", True),
        ("[::1]:8080", "http://[0::1]:8080/", True),
        ("[::1]:8080", "http://[::1]:8081/", False),
        ("127.0.0.1", "http://127.0.0.1:6379/", False),
        ("127.0.0.1", "http://127.0.0.1/", True),
    ],
)
def test_allowed_hosts_match_host_and_port(entry: str, url: str, allowed: bool) -> None:
    parts = urlsplit(url)
    assert parts.hostname is not None
    port = parts.port or DEFAULT_PORTS[parts.scheme]
    assert (allowed_rule(parts.scheme, parts.hostname, port, (entry,)) is not None) is allowed


async def test_allowing_a_host_does_not_open_its_other_ports() -> None:
    # Allowing the page at 127.0.0.1 once reached every service on loopback: the daemon
    # itself, Redis on 6379. An entry allows its own port (or 80/443), nothing else.
    async with Site(page_app()) as page, Site(page_app()) as service:
        for entry in (f"127.0.0.1:{page.port}", "127.0.0.1", "localhost"):
            async with fetch_session((entry,)) as session:
                env = ToolEnv(allowed_hosts=(entry,), session=session)
                ok, text = await fetch(env, service.url("/small"))
                assert not ok and f"'127.0.0.1:{service.port}' is not allowed" in text
        assert service.connections == 0
        both = (f"localhost:{page.port}", f"127.0.0.1:{page.port}")
        async with fetch_session(both) as session:
            env = ToolEnv(allowed_hosts=both, session=session)
            for host in ("localhost", "127.0.0.1"):
                ok, text = await fetch(env, page.url("/small", host))
                assert ok and text.endswith("hello from the page")
            ok, text = await fetch(env, page.url("/small", "0x7f000001"))
            assert not ok and "write an IP address as dotted decimal" in text
        assert page.connections == 2


async def test_an_allowed_name_that_resolves_to_a_private_address_is_refused() -> None:
    # This machine's own name: a name, not an entry that says "private", which resolves
    # (through /etc/hosts, as a rebinding DNS would) to loopback or a private address.
    name = socket.gethostname().lower()
    answers = socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)
    addresses = {str(info[4][0]) for info in answers}
    if name == "localhost" or not all(address_class(a) for a in addresses):
        pytest.skip(f"{name} does not resolve to private addresses only ({addresses})")
    async with Site(page_app()) as site:
        allowed = (f"{name}:{site.port}",)
        async with fetch_session(allowed) as session:
            env = ToolEnv(allowed_hosts=allowed, session=session)
            ok, text = await fetch(env, site.url("/small", name))
        assert not ok and f"refused to connect to {name} (" in text
        assert "address; a host may be private only when allowed_hosts names it" in text
        assert site.connections == 0


async def test_http_fetch_reads_a_chunked_page_to_its_end() -> None:
    # read(n) returns what has arrived, not the body: a page sent in pieces came back cut
    # short at the first piece, with no [truncated] mark.
    async def pieces(request: web.Request) -> web.StreamResponse:
        size, count = int(request.query["size"]), int(request.query["count"])
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for index in range(count):
            await response.write(str(index % 10).encode() * size)
            await asyncio.sleep(0.02)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/pieces", pieces)
    async with Site(app) as site:
        allowed = (f"127.0.0.1:{site.port}",)
        async with fetch_session(allowed) as session:
            env = ToolEnv(allowed_hosts=allowed, session=session)
            ok, text = await fetch(env, site.url("/pieces?size=1000&count=5"))
            head, _, body = text.partition("\n\n")
            assert ok and head == "HTTP 200 text/plain"
            assert body == "".join(str(i) * 1000 for i in range(5))
            # Past the byte limit in pieces: cut at the limit, and marked.
            size = FETCH_MAX_BYTES // 8
            ok, text = await fetch(env, site.url(f"/pieces?size={size}&count=10"))
            head, _, body = text.partition("\n\n")
            assert ok and head == "HTTP 200 text/plain\n[truncated]"
            assert len(body) == FETCH_MAX_CHARS


async def test_no_cookie_set_in_one_run_reaches_another(db: Database) -> None:
    seen: list[str | None] = []

    async def set_cookie(request: web.Request) -> web.Response:
        response = web.Response(text="set")
        response.set_cookie("session", "run-a-secret")
        return response

    async def echo(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Cookie"))
        return web.Response(text=f"cookie: {request.headers.get('Cookie')}")

    app = web.Application()
    app.router.add_get("/set", set_cookie)
    app.router.add_get("/echo", echo)
    async with Site(app) as site:
        paths = {"a": ["/set", "/echo"], "b": ["/echo"]}

        async def chat(request: ChatRequest) -> Routed[ChatResult]:
            # Each run fetches its agent's paths, one tool call a turn, then answers.
            agent = request.messages[0].content
            done = sum(1 for m in request.messages if m.role == "tool")
            todo = paths[str(agent)]
            if done == len(todo):
                return Routed(ChatResult("done", "stop", Usage(1, 1)))
            url = orjson.dumps({"url": site.url(todo[done], "localhost")}).decode()
            call = ToolCallResult(f"call_{done}", "http_fetch", url)
            return Routed(ChatResult(None, "tool_calls", Usage(1, 1), [call]))

        # A name: aiohttp's jar keeps no cookies for IP addresses at all.
        allowed = (f"localhost:{site.port}",)
        agents = {
            agent_id: AgentSpec(
                agent_id=agent_id,
                system_prompt=agent_id,
                tools=("http_fetch",),
                allowed_hosts=allowed,
            )
            for agent_id in paths
        }
        service = AgentService(AgentRegistry(agents), chat, node_id="node-a")
        await service.start(db, heartbeat=False)
        try:
            first = await service.run("a", "fetch")
            second = await service.run("b", "fetch")
        finally:
            await service.aclose()
    assert (first.status, first.tool_calls, second.status) == ("succeeded", 2, "succeeded")
    # Run b sent no cookie of run a's; nor did run a itself: the jar keeps none at all.
    assert seen == [None, None]


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await SqliteDatabase.open(tmp_path / "palyra.db")
    yield database
    await database.close()
