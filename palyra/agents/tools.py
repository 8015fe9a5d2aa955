"""The built-in tools an agent may be given: `current_time`, `calculator`, `http_fetch`.

Each tool declares its arguments as a pydantic model; its JSON schema is what providers see
(the gateway maps it to each provider's tool format), and the same model validates what the
model sends back. Whatever goes wrong — unknown tool, bad arguments, a failing call — comes
back as a `ToolOutcome` with `ok=False` whose text the model reads; it never ends the run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import aiohttp
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from palyra.agents.calculator import CalculatorError, calculate, format_number
from palyra.redact import redact_secrets
from palyra.types import FunctionDefinition, Tool

FETCH_MAX_BYTES = 256 * 1024
FETCH_TIMEOUT_S = 10.0
# What the model is shown of a page: enough to read, small enough not to flood its context.
FETCH_MAX_CHARS = 20_000


class ToolFailure(Exception):
    """A tool could not do what was asked; the message goes to the model."""


@dataclass(slots=True)
class ToolEnv:
    """What tools may use: the agent's host allow-list and the daemon's HTTP pool."""

    allowed_hosts: tuple[str, ...] = ()
    session: aiohttp.ClientSession | None = None
    now: Callable[[], float] = field(default=time.time)


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    ok: bool
    content: str


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CurrentTimeArgs(_Args):
    zone: str = Field(default="UTC", description="IANA time zone, e.g. Europe/Prague")


class CalculatorArgs(_Args):
    expression: str = Field(description="arithmetic, e.g. (2 + 3) * 4 / 7 or sqrt(2) ** 3")


class HttpFetchArgs(_Args):
    url: str = Field(description="http(s) URL on one of the agent's allowed hosts")


async def current_time(args: CurrentTimeArgs, env: ToolEnv) -> str:
    try:
        tz = ZoneInfo(args.zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ToolFailure(f"unknown IANA time zone {args.zone!r}") from None
    now = datetime.fromtimestamp(env.now(), tz)
    return f"{now.isoformat(timespec='seconds')} ({args.zone}, {now.strftime('%A')})"


async def calculator(args: CalculatorArgs, env: ToolEnv) -> str:
    try:
        return format_number(calculate(args.expression))
    except CalculatorError as exc:
        raise ToolFailure(str(exc)) from None


def host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    host = host.lower().rstrip(".")
    for entry in allowed:
        if entry.startswith("*."):
            if host.endswith(entry[1:]):
                return True
        elif host == entry.strip("[]"):
            return True
    return False


async def http_fetch(args: HttpFetchArgs, env: ToolEnv) -> str:
    parts = urlsplit(args.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ToolFailure("url must be an absolute http:// or https:// URL")
    if parts.username or parts.password:
        raise ToolFailure("url must not carry credentials")
    if not host_allowed(parts.hostname, env.allowed_hosts):
        allowed = ", ".join(env.allowed_hosts) or "none"
        raise ToolFailure(f"host {parts.hostname!r} is not allowed (allowed hosts: {allowed})")
    if env.session is None:
        raise ToolFailure("http_fetch is not available (no HTTP client)")
    timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT_S)
    try:
        # No redirects: a redirect could lead off the allow-list. The model sees the Location.
        async with env.session.get(args.url, allow_redirects=False, timeout=timeout) as response:
            body = await response.content.read(FETCH_MAX_BYTES + 1)
            status, ctype = response.status, response.headers.get("Content-Type", "")
            location = response.headers.get("Location", "")
    except TimeoutError:
        raise ToolFailure(f"no answer within {FETCH_TIMEOUT_S:.0f} s") from None
    except aiohttp.ClientError as exc:
        raise ToolFailure(f"request failed: {redact_secrets(str(exc))}") from None
    truncated = len(body) > FETCH_MAX_BYTES
    text = body[:FETCH_MAX_BYTES].decode("utf-8", errors="replace")
    if len(text) > FETCH_MAX_CHARS:
        text, truncated = text[:FETCH_MAX_CHARS], True
    head = f"HTTP {status} {ctype}".rstrip()
    if location:
        head += f"\nLocation: {location}"
    if truncated:
        head += "\n[truncated]"
    return f"{head}\n\n{text}"


@dataclass(frozen=True, slots=True)
class BuiltinTool:
    name: str
    description: str
    args: type[_Args]
    run: Callable[[Any, ToolEnv], Awaitable[str]]

    def definition(self) -> Tool:
        schema = self.args.model_json_schema()
        schema.pop("title", None)
        for prop in schema.get("properties", {}).values():
            prop.pop("title", None)
        return Tool(
            function=FunctionDefinition(
                name=self.name, description=self.description, parameters=schema
            )
        )


BUILTIN_TOOLS: dict[str, BuiltinTool] = {
    tool.name: tool
    for tool in (
        BuiltinTool(
            "current_time",
            "The current date and time in an IANA time zone.",
            CurrentTimeArgs,
            current_time,
        ),
        BuiltinTool(
            "calculator",
            "Evaluate an arithmetic expression exactly; use it instead of mental arithmetic.",
            CalculatorArgs,
            calculator,
        ),
        BuiltinTool(
            "http_fetch",
            "GET a web page or API on an allowed host; returns status, type and body text.",
            HttpFetchArgs,
            http_fetch,
        ),
    )
}
TOOL_NAMES = frozenset(BUILTIN_TOOLS)
TOOL_TIMEOUT_S = 30.0


async def run_tool(
    name: str, arguments: str, offered: tuple[str, ...], env: ToolEnv
) -> ToolOutcome:
    tool = BUILTIN_TOOLS.get(name) if name in offered else None
    if tool is None:
        available = ", ".join(offered) or "none"
        return ToolOutcome(False, f"error: unknown tool {name!r}; available tools: {available}")
    try:
        raw = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return ToolOutcome(False, f"error: {name}: arguments are not valid JSON")
    try:
        args = tool.args.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}" for e in exc.errors()
        )
        return ToolOutcome(False, f"error: {name}: bad arguments: {problems}")
    try:
        async with asyncio.timeout(TOOL_TIMEOUT_S):
            return ToolOutcome(True, await tool.run(args, env))
    except ToolFailure as exc:
        return ToolOutcome(False, f"error: {name}: {exc}")
    except TimeoutError:
        return ToolOutcome(False, f"error: {name}: took longer than {TOOL_TIMEOUT_S:.0f} s")
    except Exception as exc:  # a tool bug must not end the run; the model sees a failure
        return ToolOutcome(False, f"error: {name} failed: {type(exc).__name__}")
