"""`palyra keys ...` as a user runs it, against a real `palyrad` on the deterministic provider:
the secret printed once, never again (not in lists, not in the daemon's log), tables that
fit 80 columns, and a key that works with the OpenAI SDK until it is revoked."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from palyra.cli.keys import NOT_AGAIN
from tests.support.cli import (
    PALYRA,
    PALYRAD,
    Daemon,
    in_terminal,
    isolated_env,
    one_error_line,
    palyra,
    stop,
)
from tests.support.daemon import free_port, wait_healthy

CHAT = {"model": "deterministic", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    root = tmp_path_factory.mktemp("keys-daemon")
    state_dir = root / "palyra-state"
    port = free_port()
    env = isolated_env(root, PALYRA_STATE_DIR=str(state_dir))
    log = root / "palyrad.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [PALYRAD, "--port", str(port), "--log-level", "debug"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_healthy(process, port, log)
        yield Daemon(process, port, state_dir, {**env, "PALYRA_DAEMON_PORT": str(port)})
    finally:
        stop(process)


def ok(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = palyra(*args, env=env)
    assert result.returncode == 0, (args, result.stderr)
    return result


def sdk(daemon: Daemon, key: str) -> openai.OpenAI:
    return openai.OpenAI(
        api_key=key, base_url=f"http://127.0.0.1:{daemon.port}/v1", max_retries=0, timeout=10
    )


def test_a_key_is_printed_once_works_and_stops_when_revoked(daemon: Daemon) -> None:
    created = ok(
        "keys",
        "create",
        "--name",
        "billing-app",
        "--models",
        "deterministic, other-model",
        "--rpm",
        "60",
        "--tpm",
        "20000",
        "--budget-usd",
        "12.5",
        "--budget-period",
        "week",
        "--expires",
        "30d",
        "--agent",
        "default",
        env=daemon.env,
    )
    # The secret alone on stdout, so `KEY=$(palyra keys create ...)` takes it whole.
    assert created.stdout.count("\n") == 1
    secret = created.stdout.strip()
    assert secret.startswith("pk-") and len(secret) >= 43
    assert NOT_AGAIN in created.stderr and "created key_" in created.stderr
    key_id = created.stderr.split()[1]

    answer = sdk(daemon, secret).chat.completions.create(**CHAT)  # type: ignore[call-overload]
    assert answer.choices[0].message.content

    listed = ok("keys", "list", env=daemon.env).stdout
    shown = ok("keys", "show", key_id, env=daemon.env).stdout
    as_json = json.loads(ok("keys", "show", key_id, "--json", env=daemon.env).stdout)
    for text in (listed, shown, json.dumps(as_json)):
        assert secret not in text and secret[8:] not in text
    assert key_id in listed and "billing-app" in listed and "60/20k" in listed
    assert "$12.5/week" in listed and "active" in listed
    lines = dict(line.split(None, 1) for line in shown.splitlines())
    assert lines["prefix"] == secret[:8] + "..."
    assert lines["models"] == "deterministic,other-model" and lines["agent"] == "default"
    assert as_json["rpm"] == 60 and as_json["tpm"] == 20000 and as_json["budget_usd"] == 12.5

    rotated = ok("keys", "rotate", key_id, env=daemon.env)
    new_secret = rotated.stdout.strip()
    assert new_secret.startswith("pk-") and new_secret != secret
    assert NOT_AGAIN in rotated.stderr
    with pytest.raises(openai.AuthenticationError):
        sdk(daemon, secret).chat.completions.create(**CHAT)  # type: ignore[call-overload]
    sdk(daemon, new_secret).chat.completions.create(**CHAT)  # type: ignore[call-overload]

    assert ok("keys", "revoke", key_id, env=daemon.env).stdout.startswith(f"revoked {key_id}")
    with pytest.raises(openai.AuthenticationError) as refused:
        sdk(daemon, new_secret).chat.completions.create(**CHAT)  # type: ignore[call-overload]
    assert refused.value.code == "key_revoked"
    assert "revoked" in ok("keys", "list", env=daemon.env).stdout
    again = palyra("keys", "rotate", key_id, env=daemon.env)
    assert again.returncode == 1 and "is revoked" in one_error_line(again)

    log = (daemon.state_dir.parent / "palyrad.log").read_text()
    assert "/v1/chat/completions" in log  # the log has the requests
    assert secret not in log and new_secret not in log


def test_the_list_fits_an_80_column_terminal(daemon: Daemon) -> None:
    for n in range(3):
        ok(
            "keys",
            "create",
            "--name",
            f"a-rather-long-key-name-for-team-{n}",
            "--models",
            "deterministic,gpt-4o-mini,claude-sonnet-4-5",
            "--rpm",
            "1000",
            "--tpm",
            "2000000",
            "--budget-usd",
            "1500",
            "--budget-period",
            "month",
            "--expires",
            "52w",
            env=daemon.env,
        )
    shown = in_terminal([PALYRA, "keys", "list"], {**daemon.env, "TERM": "xterm"})
    lines = shown.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 80, shown
    ids = [k["key_id"] for k in json.loads(ok("keys", "list", "--json", env=daemon.env).stdout)]
    assert all(key_id in shown for key_id in ids), shown  # ids whole, never folded
    assert sum("1000/2M" in line for line in lines) >= 3, shown
    assert sum("$1500/month" in line for line in lines) >= 3, shown


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--expires", "soon"], "--expires: 'soon' is not a duration"),
        (["--budget-period", "year"], "--budget-period must be day, week, month or total"),
        (["--budget-usd", "0"], "--budget-usd must be more than 0"),
        (["--models", " , "], "--models names no model"),
    ],
)
def test_bad_options_are_usage_errors(daemon: Daemon, args: list[str], message: str) -> None:
    result = palyra("keys", "create", "--name", "x", *args, env=daemon.env)
    assert result.returncode == 2 and message in one_error_line(result)
    assert result.stdout == ""


def test_an_unknown_key_and_agent_are_named(daemon: Daemon) -> None:
    missing = palyra("keys", "show", "key_nope", env=daemon.env)
    assert missing.returncode == 1 and "no client key 'key_nope'" in one_error_line(missing)
    ghost = palyra("keys", "create", "--name", "x", "--agent", "ghost", env=daemon.env)
    assert ghost.returncode == 1 and "agent_id: no agent 'ghost'" in one_error_line(ghost)
    assert ghost.stdout == ""


def test_no_daemon_is_one_line(tmp_path: Path) -> None:
    env = isolated_env(tmp_path, PALYRA_DAEMON_PORT=str(free_port()))
    result = palyra("keys", "list", env=env)
    assert result.returncode == 1 and "cannot reach the daemon" in one_error_line(result)
