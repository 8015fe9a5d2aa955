"""Agent definitions: `agents.toml`, validated once at start-up.

```toml
version = 1

[[agents]]
agent_id = "researcher"          # [a-z0-9._-], <= 64
display_name = "Researcher"
model = ""                       # empty: the default chat model
system_prompt = "You look things up."
tools = ["current_time", "calculator", "http_fetch"]
auth_profile_id = ""             # optional: provider calls use this auth profile
max_turns = 8                    # model turns per run
max_tool_calls = 4               # tool calls per run
timeout_s = 120                  # whole run
allowed_hosts = ["example.com", "*.example.org", "api.example.net:8443", "127.0.0.1:8080"]
```

`allowed_hosts` (http_fetch only) lists where the agent may fetch from. An entry is a host
name, `*.` and a domain (its subdomains, not the domain itself), an IP address, or
`localhost`, optionally with `:port` (an IPv6 address in brackets then: `[::1]:8080`).
Without a port an entry allows only the URL scheme's default port: 80 for http, 443 for
https; any other port must be named, so that allowing a host does not open every service
on it. IP addresses must be written in dotted decimal (`0x7f000001` is refused).

Private, loopback, link-local and other non-public addresses are refused when connecting,
unless the entry names that host itself as an IP address or as `localhost`: an allowed name
that resolves to a private address (DNS rebinding) is refused. Redirects are not followed,
and no cookies are kept between fetches.

The file sits beside config.toml (or `[agents] file`); with no config file,
`$XDG_CONFIG_HOME/palyra/agents.toml` is used when present. An agent `default` always exists;
the file may redefine it. Errors name the agent and the key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from palyra.agents.tools import TOOL_NAMES, parse_host_rule
from palyra.config import ConfigError, PalyraConfig, read_toml

AGENTS_FILE = "agents.toml"
DEFAULT_AGENT_ID = "default"
_AGENT_ID = re.compile(r"^[a-z0-9._-]{1,64}$")


class AgentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    agent_id: str
    display_name: str = ""
    model: str = ""
    system_prompt: str = ""
    tools: tuple[str, ...] = ()
    auth_profile_id: str = ""
    max_turns: int = Field(default=8, ge=1, le=100)
    max_tool_calls: int = Field(default=4, ge=0, le=1000)
    timeout_s: float = Field(default=120, gt=0, le=86_400)
    allowed_hosts: tuple[str, ...] = ()

    @field_validator("agent_id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not _AGENT_ID.match(value):
            raise ValueError("must be 1-64 characters of a-z 0-9 . _ -")
        return value

    @field_validator("tools")
    @classmethod
    def _check_tools(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if name not in TOOL_NAMES:
                raise ValueError(
                    f"unknown tool {name!r}; built-in tools are {', '.join(sorted(TOOL_NAMES))}"
                )
        if len(set(value)) != len(value):
            raise ValueError("a tool is listed twice")
        return value

    @field_validator("allowed_hosts")
    @classmethod
    def _check_hosts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        # Kept as written, normalised (lower case, canonical addresses); parsed again by
        # http_fetch, which needs nothing else.
        return tuple(str(parse_host_rule(entry)) for entry in value)

    def view(self) -> dict[str, Any]:
        data = self.model_dump()
        data["display_name"] = self.display_name or self.agent_id
        data["tools"] = list(self.tools)
        data["allowed_hosts"] = list(self.allowed_hosts)
        data["auth_profile_id"] = self.auth_profile_id or None
        return data


DEFAULT_AGENT = AgentSpec(
    agent_id=DEFAULT_AGENT_ID,
    display_name="Default agent",
    system_prompt="You are a helpful assistant. Use the tools when they help.",
    tools=("current_time", "calculator"),
)


@dataclass(frozen=True, slots=True)
class AgentRegistry:
    agents: Mapping[str, AgentSpec]
    source: Path | None = None

    def get(self, agent_id: str) -> AgentSpec | None:
        return self.agents.get(agent_id)

    def all(self) -> list[AgentSpec]:
        return sorted(self.agents.values(), key=lambda a: a.agent_id)


def find_agents_file(
    config: PalyraConfig, config_path: Path | None, env: Mapping[str, str]
) -> tuple[Path | None, bool]:
    """Where agents.toml is, and whether it must exist (it must when named explicitly)."""
    if config.agents.file:
        path = Path(config.agents.file).expanduser()
        if not path.is_absolute() and config_path is not None:
            path = config_path.parent / path
        return path, True
    if config_path is not None:
        return config_path.parent / AGENTS_FILE, False
    base = env.get("XDG_CONFIG_HOME") or os.path.join(env.get("HOME", "~"), ".config")
    return Path(base).expanduser() / "palyra" / AGENTS_FILE, False


def load_agents(
    config: PalyraConfig, config_path: Path | None, env: Mapping[str, str]
) -> AgentRegistry:
    path, required = find_agents_file(config, config_path, env)
    if path is None or (not required and not path.exists()):
        return AgentRegistry({DEFAULT_AGENT_ID: DEFAULT_AGENT})
    return AgentRegistry(parse_agents(read_toml(path), str(path)), path)


def parse_agents(raw: Mapping[str, Any], source: str | None = None) -> dict[str, AgentSpec]:
    problems: list[str] = []
    version = raw.get("version")
    if version is None:
        problems.append("version: required; put `version = 1` at the top")
    elif type(version) is not int or version != 1:
        problems.append(f"version: must be 1 (got {version!r})")
    for key in raw:
        if key not in ("version", "agents"):
            problems.append(f"{key}: unknown key (agents are [[agents]] tables)")
    entries = raw.get("agents", [])
    if not isinstance(entries, list):
        problems.append("agents: must be an array of tables ([[agents]])")
        entries = []
    agents: dict[str, AgentSpec] = {DEFAULT_AGENT_ID: DEFAULT_AGENT}
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        where = f"agents[{index}]"
        if not isinstance(entry, dict):
            problems.append(f"{where}: must be a table")
            continue
        agent_id = entry.get("agent_id")
        if isinstance(agent_id, str) and agent_id:
            where = f"agent {agent_id!r} ({where})"
        try:
            spec = AgentSpec.model_validate(entry)
        except ValidationError as exc:
            problems.extend(f"{where}.{_loc(err['loc'])}: {_msg(err)}" for err in exc.errors())
            continue
        if spec.agent_id in seen:
            problems.append(f"{where}.agent_id: duplicate agent id {spec.agent_id!r}")
            continue
        if spec.allowed_hosts and "http_fetch" not in spec.tools:
            problems.append(f"{where}.allowed_hosts: set, but the agent has no http_fetch tool")
            continue
        seen.add(spec.agent_id)
        agents[spec.agent_id] = spec
    if problems:
        raise ConfigError(problems, source)
    return agents


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _msg(err: Any) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown key"
    if err["type"] == "missing":
        return "required"
    message = str(err["msg"]).removeprefix("Value error, ")
    return message[:1].lower() + message[1:]
