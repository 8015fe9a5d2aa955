"""`palyra` as a newcomer first meets it (issue 16), against real `palyrad` processes: the
version, `palyra status`, shell completion, an unreachable daemon, tables in an 80-column
terminal, colour on a terminal only, human fields, plurals, empty lists, cron jobs by name,
a degraded store in `models status`, and progress bars on a terminal only."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from palyra import __version__ as VERSION
from palyra.cli.client import DaemonClient
from palyra.cli.common import duration, plural, relative
from palyra.config import StateConfig, validate_config
from palyra.state import open_database
from palyra.vault import open_vault
from tests.support.cli import (
    PALYRA,
    isolated_env,
    one_error_line,
    palyra,
    pseudo_terminal,
    read_until_closed,
    run,
)
from tests.support.daemon import free_port, running_daemon, threaded_upstream

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
COLOUR = re.compile(r"\x1b\[[0-9;]*3[0-9](;[0-9]+)*m")  # a foreground colour, any form
UPSTREAM_KEY = "sk-newcomer-upstream-key-0123456789"
PROVIDERS = ("deterministic-primary", "openai-production-east", "local-llama-unreachable")
MODELS = ("deterministic", "gpt-4o-mini-2024-07-18", "llama-3.1-70b-instruct")
KEY_NAME = "ci-pipeline-for-the-backend-team"
JOB_NAME = "nightly-digest-of-everything"
PROFILE = "work-account-primary"


@dataclass
class Palyrad:
    url: str
    env: dict[str, str]  # for the CLI: the daemon's URL and token, an isolated home
    state_dir: Path


def terminal(
    args: list[str], env: dict[str, str], columns: int = 80, stdin: str | None = None
) -> tuple[int, str]:
    """Run the CLI with stdout and stderr on one pseudo-terminal `columns` wide: its exit
    code and everything it showed, escape codes and all."""
    leader, follower = pseudo_terminal(columns)
    with subprocess.Popen(
        args,
        env={"TERM": "xterm", **env},
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
    ) as process:
        os.close(follower)
        shown = read_until_closed(leader)
        code = process.wait(timeout=30)
    os.close(leader)
    return code, shown.decode().replace("\r\n", "\n")


def shown(raw: str) -> str:
    """What a terminal shows of `raw`, near enough: escapes gone, `\\r` rewrites collapsed."""
    lines = [line.rsplit("\r", 1)[-1] for line in ANSI.sub("", raw).split("\n")]
    return "\n".join(lines)


def ok(*args: str, env: dict[str, str], stdin: str | None = None) -> str:
    result = palyra(*args, env=env, stdin=stdin)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout


def cli_env(root: Path, url: str, state_dir: Path, **extra: str) -> dict[str, str]:
    token = (state_dir / "admin.token").read_text().strip()
    return isolated_env(
        root / "cli",
        PALYRA_URL=url,
        PALYRA_ADMIN_TOKEN=token,
        PALYRA_STATE_DIR=str(state_dir),
        **extra,
    )


@pytest.fixture(scope="module")
def busy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Palyrad]:
    """A daemon with three providers (one fine, one without its key, one unreachable), a
    profile, a client key, a cron job that ran, and some usage."""
    root = tmp_path_factory.mktemp("newcomer")
    closed = free_port()
    with threaded_upstream(UPSTREAM_KEY) as upstream:
        config: dict[str, Any] = {
            "version": 1,
            "model_provider": {
                "providers": [
                    {"provider_id": PROVIDERS[0], "kind": "deterministic"},
                    {
                        "provider_id": PROVIDERS[1],
                        "kind": "openai_compatible",
                        "base_url": upstream.openai_base_url,
                        "allow_private_base_url": True,
                        "api_key_vault_ref": "global/openai_api_key",
                    },
                    {
                        "provider_id": PROVIDERS[2],
                        "kind": "openai_compatible",
                        "base_url": f"http://127.0.0.1:{closed}/v1",
                        "allow_private_base_url": True,
                    },
                ],
                "models": [
                    {"model_id": model, "provider_id": provider}
                    for model, provider in zip(MODELS, PROVIDERS, strict=True)
                ],
            },
        }
        with running_daemon(root, config, {}) as process:
            state_dir = root / "state"
            env = cli_env(root, process.url, state_dir, UPSTREAM_KEY_VAR=UPSTREAM_KEY)
            ok(
                "auth",
                "openai",
                "api-key",
                "--profile",
                PROFILE,
                "--env",
                "UPSTREAM_KEY_VAR",
                "--name",
                "Work account (primary)",
                "--default",
                env=env,
            )
            ok(
                "keys",
                "create",
                "--name",
                KEY_NAME,
                "--models",
                ",".join(MODELS[:2]),
                "--rpm",
                "600",
                "--tpm",
                "100000",
                "--budget-usd",
                "25",
                "--expires",
                "30d",
                env=env,
            )
            added = ok(
                "cron",
                "add",
                "--json",
                "--name",
                JOB_NAME,
                "--agent",
                "default",
                "--cron",
                "0 9 * * 1-5",
                "--tz",
                "Europe/Amsterdam",
                "--prompt",
                "summarise the day",
                env=env,
            )
            # By id here: what these tests look at must not hang on names working.
            job_id = json.loads(added)["job_id"]
            ok("cron", "trigger", job_id, env=env)
            ok("chat", "hello", env=env)
            deadline = time.monotonic() + 20
            while [
                r["status"] for r in json.loads(ok("cron", "runs", job_id, "--json", env=env))
            ] != ["succeeded"]:
                assert time.monotonic() < deadline, "the triggered run never finished"
                time.sleep(0.2)
            yield Palyrad(process.url, env, state_dir)


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Palyrad]:
    """A daemon on the built-in defaults with nothing made yet, and a Redis that is down."""
    root = tmp_path_factory.mktemp("bare")
    config = {"version": 1, "state": {"redis_url": f"redis://127.0.0.1:{free_port()}/0"}}
    with running_daemon(root, config, {}) as process:
        yield Palyrad(process.url, cli_env(root, process.url, root / "state"), root / "state")


# --- version, completion, help ------------------------------------------------------------


def test_version(tmp_path: Path) -> None:
    result = palyra("--version", env=isolated_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"palyra {VERSION}\n"
    assert VERSION[0].isdigit()


def test_shell_completion_installs_and_completes(tmp_path: Path) -> None:
    env = isolated_env(tmp_path, SHELL="/bin/bash")

    def from_bash(option: str) -> subprocess.CompletedProcess[str]:
        # Typer finds the shell among palyra's parents; `; true` keeps bash from exec'ing it.
        return run(["bash", "-c", f"{PALYRA} {option}; true"], env)

    assert "_palyra_completion" in from_bash("--show-completion").stdout
    installed = from_bash("--install-completion")
    assert "bash completion installed" in installed.stdout, installed.stderr
    home = Path(env["HOME"])
    assert "_palyra_completion" in (home / ".bash_completions" / "palyra.sh").read_text()
    assert ".bash_completions/palyra.sh" in (home / ".bashrc").read_text()
    # What bash asks when the user presses Tab after `palyra mod`.
    asked = {**env, "_PALYRA_COMPLETE": "complete_bash", "COMP_WORDS": "palyra mod"}
    assert ok(env={**asked, "COMP_CWORD": "1"}).split() == ["models"]


def test_flags_show_no_type_in_help(tmp_path: Path) -> None:
    env = isolated_env(tmp_path, COLUMNS="100")
    for args in (["chat", "--help"], ["models", "list", "--help"], ["--help"]):
        text = ok(*args, env=env)
        assert "<bool>" not in text, (args, text)
    assert "<str>" in ok("chat", "--help", env=env)  # options that take a value keep theirs


# --- no daemon ------------------------------------------------------------------------------


def test_no_daemon_names_the_url_and_how_to_point_elsewhere(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    url = f"http://127.0.0.1:{port}"
    from_env = isolated_env(tmp_path, PALYRA_URL=url, PALYRA_ADMIN_TOKEN="t")
    from_flag = isolated_env(tmp_path, PALYRA_ADMIN_TOKEN="t")
    from_port_env = isolated_env(tmp_path, PALYRA_DAEMON_PORT=str(port), PALYRA_ADMIN_TOKEN="t")
    config = tmp_path / "config" / "palyra" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f"version = 1\n[daemon]\nport = {port}\n")
    from_file = isolated_env(tmp_path, PALYRA_ADMIN_TOKEN="t", PALYRA_CONFIG=str(config))
    cases = [
        (["chat", "hi"], from_env, "from PALYRA_URL"),
        (["--url", url, "chat", "hi"], from_flag, "from --url"),
        (["models", "list"], from_port_env, "from PALYRA_DAEMON_PORT"),
        (["models", "list"], from_file, "from the config's daemon.port"),
        (["status"], from_env, "from PALYRA_URL"),
    ]
    with ThreadPoolExecutor(len(cases)) as pool:
        results = list(pool.map(lambda case: palyra(*case[0], env=case[1]), cases))
    for (args, _, source), result in zip(cases, results, strict=True):
        assert result.returncode == 1, args
        line = one_error_line(result)
        assert f"cannot reach the daemon at {url} ({source}): Connection refused" in line
        assert "--url" in line and "PALYRA_URL" in line, line
    answer = palyra("status", "--json", env=from_env)
    assert answer.returncode == 1
    assert json.loads(answer.stdout)["up"] is False
    assert json.loads(answer.stdout)["url"] == url


def test_without_a_config_file_the_hint_names_the_default_port() -> None:
    # (Found by review: it said "from the config's daemon.port" when there was no config.)
    client = DaemonClient.from_config(validate_config({"version": 1}), env={}, has_file=False)
    assert client.base_url == "http://127.0.0.1:7142"
    assert "(the default port: no config file)" in client.unreachable(ConnectionRefusedError())


# --- palyra status --------------------------------------------------------------------------


def test_status_says_up_version_uptime_providers_and_store(busy: Palyrad) -> None:
    data = json.loads(ok("status", "--json", env=busy.env))
    assert data["up"] is True and data["url"] == busy.url
    assert data["version"] == VERSION
    assert 0 < data["uptime_s"] < 600
    assert data["workers"] == 1 and data["pid"] > 0
    assert data["providers"]["count"] == 3
    assert data["providers"]["states"].get("ok") == 1
    assert set(data["providers"]["not_ok"]) == set(PROVIDERS[1:])
    assert data["dependencies"]["state_store"]["ok"] is True
    assert data["status"] == "ok"
    text = ok("status", env=busy.env)
    fields = {line.split()[0]: line for line in text.splitlines() if line[:1] != " "}
    assert f"up at {busy.url}" in fields["daemon"]
    assert f"palyrad {VERSION}" in fields["version"]
    assert re.search(r"uptime\s+\d+[smhd]", fields["uptime"])
    assert re.search(r"providers\s+3: 1 ok, ", fields["providers"])
    assert "state store  ok" in text and "redis        not used" in text


def test_status_with_a_wrong_token_still_says_the_daemon_is_up(busy: Palyrad) -> None:
    env = {**busy.env, "PALYRA_ADMIN_TOKEN": "wrong"}
    result = palyra("status", env=env)
    assert result.returncode == 1
    line = one_error_line(result)
    assert f"the daemon at {busy.url} is up (ok), but its status could not be read: 401" in line
    answer = palyra("status", "--json", env=env)
    assert answer.returncode == 1
    assert json.loads(answer.stdout)["up"] is True


def wait_degraded(daemon: Palyrad) -> None:
    """Until `/healthz` says the daemon is degraded (Redis is checked every 2 s)."""
    deadline = time.monotonic() + 20
    while True:
        with urllib.request.urlopen(f"{daemon.url}/healthz", timeout=5) as answer:
            if json.loads(answer.read())["status"] == "degraded":
                return
        assert time.monotonic() < deadline, "the daemon never noticed Redis is down"
        time.sleep(0.2)


def test_status_of_a_degraded_daemon(bare: Palyrad) -> None:
    wait_degraded(bare)
    data = json.loads(ok("status", "--json", env=bare.env))
    assert data["status"] == "degraded"
    assert data["dependencies"]["redis"]["ok"] is False
    text = ok("status", env=bare.env)
    assert re.search(r"status\s+degraded", text)
    assert re.search(r"redis\s+degraded: ", text)


def test_models_status_says_degraded(bare: Palyrad) -> None:
    # docs/deployment.md: `palyra models status` says so, not only its --json.
    wait_degraded(bare)
    status = ok("models", "status", env=bare.env)
    assert status.splitlines()[0].startswith("degraded: redis not answering: "), status


# --- tables in 80 columns, colour ---------------------------------------------------------

TABLES = {
    "models status": (["models", "status"], [*PROVIDERS, *MODELS]),
    "models list": (["models", "list"], MODELS),
    "keys list": (["keys", "list"], [KEY_NAME, *MODELS[:2]]),
    "cron list": (["cron", "list"], [JOB_NAME]),
    "cron runs": (["cron", "runs", "--limit", "5", "{job_id}"], ["manual", "succeeded"]),
    "auth profiles list": (["auth", "profiles", "list"], [PROFILE]),
    "agents list": (["agents", "list"], ["default"]),
    "runs list": (["runs", "list"], ["default", "cron", "succeeded"]),
    "usage": (["usage"], MODELS[:1]),
}


def _whole(word: str, text: str) -> bool:
    """`word` shows whole on one line, or folded across the lines of one column (its parts
    at the same place on lines that follow each other)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        for start in (m.start() for m in re.finditer(re.escape(word[:8]), line)):
            found, j = line[start:].split(" ")[0], i
            while len(found) < len(word) and j + 1 < len(lines):
                j += 1
                found += lines[j][start:].split(" ")[0]
            if found.startswith(word):
                return True
    return False


def test_tables_fit_80_columns_and_never_cut_an_id(busy: Palyrad) -> None:
    jobs = json.loads(ok("cron", "list", "--json", env=busy.env))
    table_args = [
        [arg.format(job_id=jobs[0]["job_id"]) for arg in args] for args, _ in TABLES.values()
    ]
    with ThreadPoolExecutor(4) as pool:
        runs = dict(
            zip(
                TABLES,
                pool.map(lambda args: terminal([PALYRA, *args], busy.env), table_args),
                strict=True,
            )
        )
    keys = json.loads(ok("keys", "list", "--json", env=busy.env))
    agent_runs = json.loads(ok("runs", "list", "--json", env=busy.env))
    ids = {
        "keys list": [k["key_id"] for k in keys],
        "cron list": [j["job_id"] for j in jobs],
        "runs list": [r["run_id"] for r in agent_runs],
    }
    for name, (code, raw) in runs.items():
        text = shown(raw)
        assert code == 0, (name, text)
        width = max(len(line.rstrip()) for line in text.splitlines())
        assert width <= 80, (name, text)
        assert "…" not in text, (name, text)
        for word in [*TABLES[name][1], *ids.get(name, [])]:
            assert _whole(word, text), (name, word, text)


def test_a_long_error_goes_below_the_table_in_three_lines_at_most(busy: Palyrad) -> None:
    code, raw = terminal([PALYRA, "models", "status"], busy.env)
    assert code == 0
    lines = shown(raw).splitlines()
    table_end = lines.index("", 1)  # the providers table, then a blank line
    providers = lines[:table_end]
    rows = [line for line in providers if line.split(" ")[0] in PROVIDERS]
    assert len(rows) == 3, providers  # one line per provider: no cell wraps
    missing = next(i for i, line in enumerate(providers) if line.startswith(f"{PROVIDERS[1]}: "))
    error = []
    for line in providers[missing:]:
        if error and line.startswith(tuple(f"{p}: " for p in PROVIDERS)):
            break
        error.append(line)
    assert 1 <= len(error) <= 3, providers
    assert "global/openai_api_key" in " ".join(error)


def test_states_are_coloured_on_a_terminal_only(busy: Palyrad) -> None:
    for args in (["models", "status"], ["status"], ["models", "test-connection"]):
        _, raw = terminal([PALYRA, *args], busy.env)
        assert "\x1b[32mok" in raw, (args, raw)  # green
        assert "\x1b[31m" in raw, (args, raw)  # red: missing_auth, unreachable
        _, plain = terminal([PALYRA, *args], {**busy.env, "NO_COLOR": "1"})
        assert not COLOUR.search(plain), (args, plain)
        piped = palyra(*args, env=busy.env)
        assert "\x1b" not in piped.stdout + piped.stderr, args
        assert "missing_auth" in piped.stdout


# --- fields, plurals, empty lists ---------------------------------------------------------


def test_profile_show_prints_fields_and_times(busy: Palyrad) -> None:
    text = ok("auth", "profiles", "show", PROFILE, env=busy.env)
    fields = dict(line.split(None, 1) for line in text.splitlines() if " " in line.strip())
    assert fields["profile"].strip() == PROFILE
    assert fields["credential"].strip() == "api key"
    assert fields["default"].strip() == "yes"
    assert fields["secrets"].strip() == f"api_key in profile:{PROFILE}/api_key"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(\d+[smh].* ago\)\n?", fields["created"])
    # No Python reprs, no raw millisecond timestamps.
    assert "{" not in text and "None" not in text and "True" not in text, text
    assert not re.search(r"\d{13}", text), text


def test_plurals(busy: Palyrad) -> None:
    result = palyra("run", "--agent", "default", "hello", env=busy.env)
    assert result.returncode == 0, result.stderr
    summary = result.stderr.splitlines()[-1]
    assert re.fullmatch(r"\[succeeded\] \d+ tokens, 0 tool calls, 1 turn", summary), summary


def test_empty_lists_say_so(bare: Palyrad) -> None:
    cases = {
        ("keys", "list"): "no client keys yet (make one with `palyra keys create`)",
        ("cron", "list"): "no cron jobs yet (add one with `palyra cron add`)",
        ("auth", "profiles", "list"): "no auth profiles yet (add one with `palyra auth ",
        ("vault", "list", "global"): "no secrets in global yet",
        ("usage",): "no usage yet since ",
    }
    with ThreadPoolExecutor(len(cases)) as pool:
        texts = list(pool.map(lambda args: ok(*args, env=bare.env), cases))
        jsons = list(pool.map(lambda args: ok(*args[:3], "--json", env=bare.env), list(cases)[:4]))
    for (args, message), text in zip(cases.items(), texts, strict=True):
        assert len(text.splitlines()) == 1 and text.startswith(message), (args, text)
    assert all(json.loads(text) == [] for text in jsons)


# --- agent runs ---------------------------------------------------------------------------


def test_runs_list_and_show(busy: Palyrad) -> None:
    result = palyra("run", '/tool calculator {"expression": "17*23"}', env=busy.env)
    assert result.returncode == 0, result.stderr
    run_id = result.stderr.split("[run ", 1)[1].split("]", 1)[0]
    runs = json.loads(ok("runs", "list", "--source", "cli", "--json", env=busy.env))
    assert runs[0]["run_id"] == run_id and {r["source"] for r in runs} == {"cli"}
    assert all(
        r["source"] == "cron"
        for r in json.loads(ok("runs", "list", "--source", "cron", "--json", env=busy.env))
    )
    text = ok("runs", "show", run_id, env=busy.env)
    fields = dict(
        line.split(None, 1) for line in text.splitlines() if line[:1].isalpha() and " " in line
    )
    assert fields["run"].strip() == run_id
    assert fields["source"].strip() == "cli" and fields["status"].strip() == "succeeded"
    assert fields["model"].strip() == "deterministic"
    assert re.fullmatch(
        r"\d+ tokens \(\d+ in, \d+ out\), 1 tool call, 2 turns", fields["usage"].strip()
    )
    assert '  [tool call] calculator {"expression":"17*23"}' in text.splitlines()
    assert "  [tool result] calculator: 391" in text.splitlines()
    assert text.splitlines()[-1].endswith("returned: 391")
    bad = palyra("runs", "list", "--source", "bogus", env=busy.env)
    assert bad.returncode == 2 and "--source must be one of cli, cron, console" in bad.stderr
    unknown = palyra("runs", "show", "run_nope", env=busy.env)
    assert unknown.returncode == 1 and "no run 'run_nope'" in one_error_line(unknown)


# --- cron jobs by name ----------------------------------------------------------------------


def test_cron_jobs_are_found_by_name(busy: Palyrad) -> None:
    job_id = json.loads(ok("cron", "list", "--json", env=busy.env))[0]["job_id"]
    by_name = json.loads(ok("cron", "show", JOB_NAME, "--json", env=busy.env))
    assert by_name["job_id"] == job_id
    by_id = json.loads(ok("cron", "show", job_id, "--json", env=busy.env))
    assert (by_id["job_id"], by_id["name"]) == (job_id, JOB_NAME)
    assert ok("cron", "disable", JOB_NAME, env=busy.env).startswith(f"{job_id}: disabled")
    assert ok("cron", "enable", JOB_NAME, env=busy.env).startswith(f"{job_id}: enabled")
    unknown = palyra("cron", "show", "no-such-job", env=busy.env)
    assert unknown.returncode == 1
    assert "no cron job with id or name 'no-such-job'" in one_error_line(unknown)


def test_a_name_two_jobs_share_asks_for_the_id(bare: Palyrad) -> None:
    args = ["--agent", "default", "--every", "1h", "--prompt", "p", "--json"]
    ids = [json.loads(ok("cron", "add", "--name", "twin", *args, env=bare.env))["job_id"]]
    ids.append(json.loads(ok("cron", "add", "--name", "twin", *args, env=bare.env))["job_id"])
    result = palyra("cron", "show", "twin", env=bare.env)
    assert result.returncode == 1
    line = one_error_line(result)
    assert "2 cron jobs are named 'twin'" in line and all(i in line for i in ids)
    for job_id in ids:
        ok("cron", "rm", job_id, env=bare.env)


# --- progress on a terminal only ----------------------------------------------------------


def test_connection_tests_and_discovery_show_progress_on_a_terminal(busy: Palyrad) -> None:
    code, raw = terminal([PALYRA, "models", "test-connection"], busy.env)
    assert code == 1  # two providers are not healthy
    assert "probing" in raw and "3/3" in raw
    piped = palyra("models", "test-connection", env=busy.env)
    assert piped.returncode == 1 and "probing" not in piped.stdout + piped.stderr

    # The terminal's per-provider calls report what one call for all does.
    def health(text: str) -> dict[str, str]:
        return {
            words[0]: words[1]
            for words in map(str.split, text.splitlines())
            if words and words[0] in PROVIDERS
        }

    assert health(shown(raw)) == health(piped.stdout)
    assert health(piped.stdout) == dict(
        zip(PROVIDERS, ("ok", "missing_auth", "unreachable"), strict=True)
    )
    code, raw = terminal([PALYRA, "models", "discover"], busy.env)
    assert code == 0 and "discovering" in raw


def test_vault_rotate_key_shows_progress_on_a_terminal(busy: Palyrad) -> None:
    async def plant() -> None:
        db = await open_database(StateConfig(), busy.state_dir)
        try:
            vault = await open_vault(db, busy.state_dir, {})
            for i in range(45):
                await vault.put(f"global/planted-{i}", b"value-%d" % i)
        finally:
            await db.close()

    asyncio.run(plant())
    code, raw = terminal([PALYRA, "vault", "rotate-key"], busy.env)
    assert code == 0, raw
    assert "re-encrypting" in raw
    # The 45 planted, and the profile's API key.
    assert re.search(r"^re-encrypted 46 secrets under master key \w+$", shown(raw), re.M), raw
    piped = palyra("vault", "rotate-key", env=busy.env)
    assert piped.returncode == 0 and piped.stderr == ""
    assert piped.stdout.startswith("re-encrypted 46 secrets")


# --- the small pieces ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (42.9, "42s"),
        (312, "5m 12s"),
        (3600, "1h"),
        (7980, "2h 13m"),
        (273_600, "3d 4h"),
        (-190, "3m 10s"),
    ],
)
def test_durations_read_in_their_two_largest_units(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_relative_times_say_which_way() -> None:
    assert relative(125) == "in 2m 5s"
    assert relative(-125) == "2m 5s ago"


def test_plural() -> None:
    assert [plural(n, "turn") for n in (0, 1, 2)] == ["0 turns", "1 turn", "2 turns"]
    assert plural(1, "entry", "entries") == "1 entry" and plural(3, "entry", "entries") == (
        "3 entries"
    )
