"""The built-in tools an agent may be given: `current_time`, `calculator`, `http_fetch`.

Each tool declares its arguments as a pydantic model; its JSON schema is what providers see
(the gateway maps it to each provider's tool format), and the same model validates what the
model sends back. Whatever goes wrong — unknown tool, bad arguments, a failing call — comes
back as a `ToolOutcome` with `ok=False` whose text the model reads; it never ends the run.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from ipaddress import IPv6Address
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import aiohttp
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from palyra.agents.calculator import CalculatorError, calculate, format_number
from palyra.egress import guarded_session, ip_literal, is_numeric_spelling, refusal_in
from palyra.redact import redact_secrets
from palyra.types import FunctionDefinition, Tool

FETCH_MAX_BYTES = 256 * 1024
FETCH_TIMEOUT_S = 10.0
# What the model is shown of a page: enough to read, small enough not to flood its context.
FETCH_MAX_CHARS = 20_000
DEFAULT_PORTS = {"http": 80, "https": 443}
_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*")


class ToolFailure(Exception):
    """A tool could not do what was asked; the message goes to the model."""


@dataclass(slots=True)
class ToolEnv:
    """What tools may use: the agent's host allow-list and the daemon's HTTP pool for
    `http_fetch` (see `fetch_session`)."""

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


@dataclass(frozen=True, slots=True)
class HostRule:
    """One `allowed_hosts` entry: a host name, `*.` and a domain (its subdomains), or an IP
    address (IPv6 in brackets when a port follows), with an optional `:port`. Without one,
    only the URL scheme's default port (80, 443) is allowed: allowing a host must not open
    every service on it (allowing 127.0.0.1 would reach the daemon itself, or Redis)."""

    host: str  # lower case, no trailing dot; an IP address in canonical form; the domain of *.
    port: int | None = None
    wildcard: bool = False

    @property
    def names_a_private_host(self) -> bool:
        """Whether the entry itself says the host may be private: an IP address, or
        localhost. Any other name must resolve to public addresses (no DNS rebinding)."""
        return not self.wildcard and (self.host == "localhost" or ip_literal(self.host) is not None)

    def matches(self, scheme: str, host: str, port: int) -> bool:
        if port != (self.port or DEFAULT_PORTS[scheme]):
            return False
        if self.wildcard:
            return host.endswith("." + self.host)
        return host == self.host

    def __str__(self) -> str:
        host = f"*.{self.host}" if self.wildcard else self.host
        if isinstance(ip_literal(host), IPv6Address) and self.port is not None:
            host = f"[{host}]"
        return host if self.port is None else f"{host}:{self.port}"


def parse_host_rule(text: str) -> HostRule:
    """An `allowed_hosts` entry; ValueError says what is wrong with it."""
    entry = text.strip().lower()
    if "/" in entry or "@" in entry:
        raise ValueError(f"{text!r}: give a host and optional :port, no scheme, path or user")
    port_text: str | None = None
    if entry.startswith("["):
        host, bracket, rest = entry[1:].partition("]")
        if not bracket or not isinstance(ip_literal(host), IPv6Address) or "%" in host:
            raise ValueError(f"{text!r}: brackets are for an IPv6 address, as in [::1]:8080")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{text!r}: only :port may follow the brackets")
            port_text = rest[1:]
    elif entry.count(":") > 1:
        host = entry  # a bare IPv6 address; with a port it must be in brackets
        if not isinstance(ip_literal(host), IPv6Address) or "%" in host:
            raise ValueError(f"{text!r}: not an IPv6 address (with a port: [::1]:8080)")
    else:
        host, colon, port_text_found = entry.partition(":")
        port_text = port_text_found if colon else None
    port = None
    if port_text is not None:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ValueError(f"{text!r}: the port must be a number 1-65535")
        port = int(port_text)
    wildcard = host.startswith("*.")
    name = host[2:] if wildcard else host.rstrip(".")
    literal = ip_literal(name)
    if literal is not None:
        if wildcard:
            raise ValueError(f"{text!r}: *. goes before a domain name, not an IP address")
        name = str(literal)
    elif is_numeric_spelling(name):
        raise ValueError(f"{text!r}: write an IP address as dotted decimal (a.b.c.d)")
    elif len(name) > 253 or not _NAME.fullmatch(name):
        raise ValueError(
            f"{text!r} is not a host (give example.com, *.example.com, 10.0.0.5, [::1] or "
            "localhost, each optionally with :port; no scheme or path)"
        )
    return HostRule(name, port, wildcard)


def allowed_rule(scheme: str, host: str, port: int, allowed: Iterable[str]) -> HostRule | None:
    """The allow-list entry that lets a URL's host and port through, if any."""
    literal = ip_literal(host)
    host = str(literal) if literal is not None else host.lower().rstrip(".")
    for entry in allowed:
        rule = parse_host_rule(entry)
        if rule.matches(scheme, host, port):
            return rule
    return None


def fetch_session(allowed_hosts: Iterable[str]) -> aiohttp.ClientSession:
    """The pool `http_fetch` uses, for every agent listed in `allowed_hosts` (all their
    entries): connections to non-public addresses are refused when they are made, except to
    hosts an entry names as private (`names_a_private_host`). Such a host is reachable only
    by URLs that name it, because each URL must first match its own agent's entry. No
    cookie jar: a cookie set in one run must not ride along in another (agent's) run."""
    rules = [parse_host_rule(entry) for entry in allowed_hosts]
    private = {rule.host for rule in rules if rule.names_a_private_host}
    return guarded_session(allowed_private=private, cookie_jar=aiohttp.DummyCookieJar())


async def _read_body(content: aiohttp.StreamReader, limit: int) -> bytes:
    """Up to `limit + 1` bytes of the body: read() returns what has arrived so far, not the
    body, so read until the limit is passed or the body ends."""
    body = bytearray()
    while len(body) <= limit:
        chunk = await content.read(limit + 1 - len(body))
        if not chunk:
            break
        body += chunk
    return bytes(body)


async def http_fetch(args: HttpFetchArgs, env: ToolEnv) -> str:
    parts = urlsplit(args.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ToolFailure("url must be an absolute http:// or https:// URL")
    if parts.username or parts.password:
        raise ToolFailure("url must not carry credentials")
    try:
        port = parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError:
        raise ToolFailure("url has an invalid port") from None
    if is_numeric_spelling(parts.hostname):
        raise ToolFailure(f"host {parts.hostname!r}: write an IP address as dotted decimal")
    if allowed_rule(parts.scheme, parts.hostname, port, env.allowed_hosts) is None:
        allowed = ", ".join(env.allowed_hosts) or "none"
        where = parts.hostname if parts.port is None else f"{parts.hostname}:{port}"
        raise ToolFailure(
            f"{where!r} is not allowed (allowed hosts: {allowed}; an entry without a port "
            "allows only port 80 for http and 443 for https)"
        )
    if env.session is None:
        raise ToolFailure("http_fetch is not available (no HTTP client)")
    timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT_S)
    try:
        # No redirects: a redirect could lead off the allow-list. The model sees the Location.
        async with env.session.get(args.url, allow_redirects=False, timeout=timeout) as response:
            body = await _read_body(response.content, FETCH_MAX_BYTES)
            status, ctype = response.status, response.headers.get("Content-Type", "")
            location = response.headers.get("Location", "")
    except TimeoutError:
        raise ToolFailure(f"no answer within {FETCH_TIMEOUT_S:.0f} s") from None
    except aiohttp.ClientError as exc:
        refused = refusal_in(exc)
        if refused is not None:
            raise ToolFailure(
                f"{refused}; a host may be private only when allowed_hosts names it by IP "
                "address or as localhost"
            ) from None
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
