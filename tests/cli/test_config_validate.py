"""`palyra config validate` checks what palyrad reads (config.toml and agents.toml) and lists
every problem in one run; a config.toml with problems does not stop the commands that only
need to find the daemon; config problems are shown one a line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from palyra.config import ConfigError, validate_config
from palyra.reload import ReloadRefused, read_candidate
from tests.support.cli import isolated_env, palyra
from tests.support.daemon import Daemon, running_daemon

GOOD = """version = 1
[[model_provider.providers]]
provider_id = "det"
kind = "deterministic"
[[model_provider.models]]
model_id = "m"
provider_id = "det"
"""

# An unknown tool and an unknown key: what a reload (SIGHUP, `palyra config reload`) refuses.
BAD_AGENTS = """version = 1
[[agents]]
agent_id = "helper"
tools = ["shell"]
colour = "red"
"""

UNKNOWN_TOOL = (
    "agent 'helper' (agents[0]).tools: unknown tool 'shell'; built-in tools are calculator, "
    "current_time, http_fetch"
)
UNKNOWN_KEY = "agent 'helper' (agents[0]).colour: unknown key"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return isolated_env(tmp_path)


def errors(stderr: str) -> list[str]:
    prefix = "palyra: error: "
    lines = stderr.splitlines()
    assert all(line.startswith(prefix) for line in lines), stderr
    return [line.removeprefix(prefix) for line in lines]


# --- agents.toml ------------------------------------------------------------------------


def test_validate_lists_the_problems_of_agents_toml_as_a_reload_does(
    tmp_path: Path, env: dict[str, str]
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(GOOD)
    agents = tmp_path / "agents.toml"
    agents.write_text(BAD_AGENTS)
    result = palyra("config", "validate", str(config), env=env)
    assert result.returncode == 1
    assert result.stdout == ""
    assert errors(result.stderr) == [
        f"config: {agents}: {UNKNOWN_TOOL}",
        f"config: {agents}: {UNKNOWN_KEY}",
    ]
    # The very problems a reload refuses the file with.
    with pytest.raises(ReloadRefused) as refused:
        read_candidate(config, env=env, overrides={})
    assert refused.value.problems == [UNKNOWN_TOOL, UNKNOWN_KEY]


def test_validate_says_what_it_checked(tmp_path: Path, env: dict[str, str]) -> None:
    config = tmp_path / "config.toml"
    config.write_text(GOOD)
    result = palyra("config", "validate", str(config), env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"ok: {config}: 1 provider, 1 model",
        f"ok: built-in agents (no {tmp_path / 'agents.toml'}): 1 agent",
    ]
    (tmp_path / "agents.toml").write_text('version = 1\n[[agents]]\nagent_id = "helper"\n')
    result = palyra("config", "validate", str(config), env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"ok: {config}: 1 provider, 1 model",
        f"ok: {tmp_path / 'agents.toml'}: 2 agents",  # helper and the built-in default
    ]


def test_validate_finds_agents_toml_where_palyrad_does(tmp_path: Path, env: dict[str, str]) -> None:
    # No config file: the XDG one.
    xdg_agents = Path(env["XDG_CONFIG_HOME"]) / "palyra" / "agents.toml"
    xdg_agents.parent.mkdir(parents=True)
    xdg_agents.write_text(BAD_AGENTS)
    result = palyra("config", "validate", env=env)
    assert result.returncode == 1
    assert errors(result.stderr) == [
        f"config: {xdg_agents}: {UNKNOWN_TOOL}",
        f"config: {xdg_agents}: {UNKNOWN_KEY}",
    ]
    # `[agents] file`, relative to config.toml, which must then exist.
    config = tmp_path / "elsewhere" / "config.toml"
    config.parent.mkdir()
    config.write_text('version = 1\n[agents]\nfile = "team.toml"\n')
    result = palyra("config", "validate", "--config", str(config), env=env)
    assert result.returncode == 1
    assert errors(result.stderr) == [f"config: {config.parent / 'team.toml'}: file not found"]


def test_problems_of_both_files_are_listed_in_one_run(tmp_path: Path, env: dict[str, str]) -> None:
    config = tmp_path / "config.toml"
    config.write_text(GOOD + "[daemon]\nprot = 8000\n")
    agents = tmp_path / "agents.toml"
    agents.write_text(BAD_AGENTS)
    result = palyra("config", "validate", str(config), env=env)
    assert result.returncode == 1
    assert errors(result.stderr) == [
        f"config: {config}: daemon.prot: unknown key",
        f"config: {agents}: {UNKNOWN_TOOL}",
        f"config: {agents}: {UNKNOWN_KEY}",
    ]


# --- references are checked whatever else is wrong ---------------------------------------

# A private base_url without allow_private_base_url, a plain api_key on a provider, a model on
# a provider that does not exist and a fallback to a model that does not.
SECTION_WITH_PROBLEMS = """version = 1
[model_provider]
default_chat_model_id = "missing"
[[model_provider.providers]]
provider_id = "oai"
kind = "openai_compatible"
base_url = "http://10.0.0.7/v1"
api_key = "sk-never-echo-this-0123456789"
[[model_provider.models]]
model_id = "m"
provider_id = "nowhere"
fallbacks = ["nope"]
"""


def test_references_are_checked_when_the_section_has_other_problems(
    tmp_path: Path, env: dict[str, str]
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(SECTION_WITH_PROBLEMS)
    result = palyra("config", "validate", str(config), env=env)
    assert result.returncode == 1
    problems = [line.removeprefix(f"config: {config}: ") for line in errors(result.stderr)]
    assert problems[0].startswith("model_provider.providers[0].api_key: plain API keys")
    assert problems[1:] == [
        "model_provider.providers[0].base_url: plain http is only allowed to loopback; use https",
        "model_provider.models[0].provider_id: no provider 'nowhere' is configured",
        "model_provider.models[0].fallbacks[0]: no model 'nope' is configured",
        "model_provider.default_chat_model_id: no model 'missing' is configured",
    ]
    assert "sk-never-echo-this" not in result.stderr


def problems_of(raw: dict[str, object]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        validate_config(raw)
    return caught.value.problems


def test_raw_references_leave_out_what_the_schema_already_reports() -> None:
    provider = {"provider_id": "p", "kind": "deterministic"}
    # A wrong role: the deployments' roles are not compared (it is reported once, as wrong).
    assert problems_of(
        {
            "version": 1,
            "model_provider": {
                "providers": [provider, {"provider_id": "q", "kind": "deterministic"}],
                "models": [
                    {"model_id": "m", "provider_id": "p", "role": "painting"},
                    {"model_id": "m", "provider_id": "q", "fallbacks": ["m", 7, "gone"]},
                ],
            },
        }
    ) == [
        "model_provider.models[0].role: input should be 'chat', 'embeddings' or "
        "'audio_transcription' (got 'painting')",
        "model_provider.models[1].fallbacks[1]: input should be a valid string (got 7)",
        "model_provider.models[1].fallbacks[0]: a model cannot fall back to itself",
        "model_provider.models[1].fallbacks[2]: no model 'gone' is configured",
    ]
    # Two deployments on one provider and fallbacks that disagree, beside a wrong number.
    assert problems_of(
        {
            "version": 1,
            "model_provider": {
                "max_retries": 99,
                "providers": [provider],
                "models": [
                    {"model_id": "a", "provider_id": "p"},
                    {"model_id": "m", "provider_id": "p", "fallbacks": ["a"]},
                    {"model_id": "m", "provider_id": "p", "fallbacks": ["b"]},
                ],
            },
        }
    ) == [
        "model_provider.max_retries: input should be less than or equal to 10 (got 99)",
        "model_provider.models[2].model_id: 'm' is already on provider 'p' as models[1]; "
        "deployments of one model must be on different providers",
        "model_provider.models[2].fallbacks[0]: no model 'b' is configured",
    ]
    # No providers and no models: the built-in ones, as when the section validates.
    assert problems_of(
        {
            "version": 1,
            "model_provider": {"max_retries": 99, "default_chat_model_id": "deterministic-embed"},
        }
    ) == [
        "model_provider.max_retries: input should be less than or equal to 10 (got 99)",
        "model_provider.default_chat_model_id: 'deterministic-embed' has role embeddings, not chat",
    ]


# --- a config.toml with problems and the daemon ------------------------------------------


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    with running_daemon(tmp_path / "daemon", {"version": 1}, {}) as running:
        yield running


def daemon_section(daemon: Daemon, tmp_path: Path) -> str:
    """Where the running daemon listens and keeps its admin token, as a config says it."""
    state = tmp_path / "daemon" / "state"
    return f'[daemon]\nport = {daemon.port}\nstate_dir = "{state}"\n'


def test_status_says_the_daemon_is_up_while_the_config_is_being_fixed(
    daemon: Daemon, tmp_path: Path, env: dict[str, str]
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(SECTION_WITH_PROBLEMS + daemon_section(daemon, tmp_path))
    env = {**env, "PALYRA_CONFIG": str(config)}
    result = palyra("status", env=env)
    assert result.returncode == 0, result.stderr
    assert f"up at {daemon.url}" in result.stdout
    # Said once, on stderr: the output stays what a script reads.
    assert result.stderr.splitlines() == [
        f"palyra: warning: config: {config}: 5 problems (`palyra config validate` lists "
        "them); only where the daemon listens and the state dir (for the admin token) is "
        "taken from it"
    ]
    result = palyra("--url", daemon.url, "status", "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["up"] is True
    assert "the state dir (for the admin token)" in result.stderr
    assert "where the daemon listens" not in result.stderr


def test_an_unknown_port_asks_for_url_and_url_is_enough(
    daemon: Daemon, tmp_path: Path, env: dict[str, str]
) -> None:
    config = tmp_path / "config.toml"
    section = daemon_section(daemon, tmp_path).replace(f"port = {daemon.port}", 'port = "x"')
    config.write_text(GOOD + "fallbacks = ['nope']\n" + section)
    env = {**env, "PALYRA_CONFIG": str(config)}
    result = palyra("models", "status", env=env)
    assert result.returncode == 1
    assert errors(result.stderr) == [
        f"config: {config}: daemon.port: input should be a valid integer, unable to parse "
        "string as an integer (got 'x')",
        f"config: {config}: model_provider.models[0].fallbacks[0]: no model 'nope' is configured",
        "cannot tell where the daemon listens while the config has these problems: fix them, "
        "or pass --url http://HOST:PORT (or set PALYRA_URL)",
    ]
    for args in (["--url", daemon.url, "status"], ["models", "status"]):
        result = palyra(*args, env={**env, "PALYRA_URL": daemon.url})
        assert result.returncode == 0, (args, result.stderr)
    # Neither the URL nor the token from the config: it is not needed, and not mentioned.
    token = (tmp_path / "daemon" / "state" / "admin.token").read_text().strip()
    result = palyra("--url", daemon.url, "status", env={**env, "PALYRA_ADMIN_TOKEN": token})
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_an_unreadable_config_is_no_guess_at_the_port(tmp_path: Path, env: dict[str, str]) -> None:
    config = tmp_path / "config.toml"
    config.write_text("version = 1\n[daemon\nport = 9\n")
    result = palyra("--config", str(config), "runs", "list", env=env)
    assert result.returncode == 1
    lines = errors(result.stderr)
    assert lines[0].startswith(f"config: {config}: invalid TOML: ")
    assert lines[1].startswith("cannot tell where the daemon listens")


def test_config_problems_are_one_a_line_wherever_they_are_shown(
    tmp_path: Path, env: dict[str, str]
) -> None:
    config = tmp_path / "config.toml"
    config.write_text("version = 1\n[daemon]\nprot = 1\n[cron]\ntimezone = 'Mars/Olympus'\n")
    env = {**env, "PALYRA_CONFIG": str(config)}
    for args in (["config", "show"], ["config", "validate"], ["vault", "list", "global"]):
        result = palyra(*args, env=env)
        assert result.returncode == 1, args
        lines = errors(result.stderr)
        assert lines[0] == f"config: {config}: daemon.prot: unknown key", args
        assert lines[1].startswith(f"config: {config}: cron.timezone: "), args
        assert len(lines) == 2, args


def test_a_config_error_is_one_line_as_a_string_and_lines_for_the_cli() -> None:
    # As a string it is palyrad's start error (and log line): all problems on one line.
    error = ConfigError(["a: x", "b: y"], "/etc/palyra.toml")
    assert str(error) == "/etc/palyra.toml: a: x; b: y"
    assert error.lines() == ["/etc/palyra.toml: a: x", "/etc/palyra.toml: b: y"]
    assert ConfigError(["a: x"]).lines() == ["a: x"]
