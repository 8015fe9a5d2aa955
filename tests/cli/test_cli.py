"""`palyra` and `palyrad` as a user runs them: real processes, real exit codes, real output."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.cli import (
    PALYRAD,
    Daemon,
    isolated_env,
    one_error_line,
    palyra,
    run,
    stop,
)
from tests.support.daemon import free_port, wait_healthy

DETERMINISTIC_MODELS = {
    "deterministic": "chat",
    "deterministic-embed": "embeddings",
    "deterministic-transcribe": "audio_transcription",
}


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return isolated_env(tmp_path)


# --- help and usage errors --------------------------------------------------------------

HELP = {
    "palyra": (["--help"], ["chat", "models", "config"]),
    "chat": (["chat", "--help"], ["--model", "--no-stream"]),
    "models": (["models", "--help"], ["list"]),
    "config": (["config", "--help"], ["validate", "show"]),
}


def test_help_exits_zero(env: dict[str, str]) -> None:
    # Each process takes a moment to start: run them side by side.
    with ThreadPoolExecutor(len(HELP)) as pool:
        futures = {name: pool.submit(palyra, *args, env=env) for name, (args, _) in HELP.items()}
    results = {name: future.result() for name, future in futures.items()}
    for name, (_, words) in HELP.items():
        result = results[name]
        assert result.returncode == 0, (name, result.stderr)
        assert "Usage: palyra" in result.stdout, name
        for word in words:
            assert word in result.stdout, (name, word)
        assert result.stderr == ""


USAGE_ERRORS = {
    "chat-without-text": (["chat"], "Missing argument"),
    "models-typo": (["models", "lst"], "No such command 'lst'"),
    "unknown-option": (["chat", "--bogus", "hi"], "--bogus"),
}


def test_usage_errors_exit_two_with_one_line(env: dict[str, str]) -> None:
    with ThreadPoolExecutor(len(USAGE_ERRORS)) as pool:
        results = list(pool.map(lambda case: palyra(*case[0], env=env), USAGE_ERRORS.values()))
    for (name, (_, needle)), result in zip(USAGE_ERRORS.items(), results, strict=True):
        assert result.returncode == 2, name
        line = one_error_line(result)
        assert line.startswith("palyra: usage error: "), name
        assert needle in line, name
        assert result.stdout == "", name


def test_palyrad_bad_port_is_a_usage_error(env: dict[str, str]) -> None:
    result = run([PALYRAD, "--port", "abc"], env)
    assert result.returncode == 2
    line = one_error_line(result)
    assert line.startswith("palyrad: usage error: ")
    assert "--port" in line


def test_empty_message_from_stdin_is_a_usage_error(env: dict[str, str]) -> None:
    result = palyra("chat", "-", env=env, stdin="\n")
    assert result.returncode == 2
    assert "empty" in one_error_line(result)


# --- config validate / show -------------------------------------------------------------


def test_config_validate_without_a_file_uses_builtin_defaults(env: dict[str, str]) -> None:
    result = palyra("config", "validate", env=env)
    assert result.returncode == 0, result.stderr
    assert "built-in defaults" in result.stdout
    assert "1 provider, 3 models" in result.stdout


def test_config_validate_a_good_file(tmp_path: Path, env: dict[str, str]) -> None:
    path = tmp_path / "good.toml"
    path.write_text(
        "version = 1\n"
        "[[model_provider.providers]]\n"
        'provider_id = "oai"\n'
        'kind = "openai_compatible"\n'
        'api_key_vault_ref = "global/openai_api_key"\n'
        "[[model_provider.models]]\n"
        'model_id = "gpt-4o-mini"\n'
        'provider_id = "oai"\n'
    )
    result = palyra("config", "validate", str(path), env=env)
    assert result.returncode == 0, result.stderr
    assert str(path) in result.stdout
    assert "1 provider, 1 model" in result.stdout


def test_config_validate_finds_the_xdg_file(env: dict[str, str]) -> None:
    path = Path(env["XDG_CONFIG_HOME"]) / "palyra" / "config.toml"
    path.parent.mkdir(parents=True)
    path.write_text("version = 1\n[daemon]\nport = 9001\n")
    result = palyra("config", "validate", env=env)
    assert result.returncode == 0, result.stderr
    assert str(path) in result.stdout


def test_config_validate_a_bad_file(tmp_path: Path, env: dict[str, str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        "version = 1\n"
        "[[model_provider.providers]]\n"
        'provider_id = "det"\n'
        'kind = "deterministic"\n'
        "[[model_provider.providers]]\n"
        'provider_id = "oai"\n'
        'kind = "openai_compatible"\n'
        'bse_url = "https://api.openai.com/v1"\n'
    )
    result = palyra("config", "validate", str(path), env=env)
    assert result.returncode == 1
    assert result.stdout == ""
    assert one_error_line(result) == (
        f"palyra: error: config: {path}: model_provider.providers[1].bse_url: unknown key"
    )


def test_config_validate_a_missing_file(tmp_path: Path, env: dict[str, str]) -> None:
    result = palyra("config", "validate", str(tmp_path / "nope.toml"), env=env)
    assert result.returncode == 1
    assert "file not found" in one_error_line(result)


def test_config_validate_a_file_with_a_plain_api_key(tmp_path: Path, env: dict[str, str]) -> None:
    secret = "sk-do-not-print-me-42"
    path = tmp_path / "key.toml"
    path.write_text(f'version = 1\n[daemon]\napi_key = "{secret}"\n')
    result = palyra("config", "validate", str(path), env=env)
    assert result.returncode == 1
    line = one_error_line(result)
    assert "daemon.api_key" in line
    assert "palyra auth" in line
    assert secret not in result.stderr + result.stdout


def test_bad_env_value_fails_with_the_env_name(env: dict[str, str]) -> None:
    result = palyra("config", "validate", env={**env, "PALYRA_DAEMON_PORT": "abc"})
    assert result.returncode == 1
    line = one_error_line(result)
    assert "daemon.port (from env PALYRA_DAEMON_PORT)" in line


def test_config_show_prints_the_effective_config(tmp_path: Path, env: dict[str, str]) -> None:
    path = tmp_path / "pg.toml"
    path.write_text(
        "version = 1\n"
        "[state]\n"
        'backend = "postgres"\n'
        'url = "postgresql://palyra:pg-s3cret@db.internal/palyra"\n'
    )
    env = {**env, "PALYRA_CONFIG": str(path), "PALYRA_DAEMON_PORT": "9123"}
    result = palyra("config", "show", env=env)
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["version"] == 1
    assert shown["daemon"]["port"] == 9123  # env override visible
    assert shown["daemon"]["bind"] == "127.0.0.1"  # default
    assert shown["state"]["backend"] == "postgres"  # file
    assert shown["state"]["url"] == "postgresql://palyra:<redacted>@db.internal/palyra"
    assert "pg-s3cret" not in result.stdout
    assert [m["model_id"] for m in shown["model_provider"]["models"]] == list(DETERMINISTIC_MODELS)

    revealed = palyra("config", "show", "--show-secrets", env=env)
    assert revealed.returncode == 0, revealed.stderr
    url = json.loads(revealed.stdout)["state"]["url"]
    assert url == "postgresql://palyra:pg-s3cret@db.internal/palyra"


def test_global_config_flag(tmp_path: Path, env: dict[str, str]) -> None:
    path = tmp_path / "flag.toml"
    path.write_text("version = 1\n[cron]\ntimezone = 'Europe/Prague'\n")
    result = palyra("--config", str(path), "config", "show", env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["cron"]["timezone"] == "Europe/Prague"


# --- against a running daemon -----------------------------------------------------------


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    root = tmp_path_factory.mktemp("daemon")
    state_dir = root / "palyra-state"
    port = free_port()
    # No config file anywhere: the daemon runs on the built-in deterministic registry.
    env = isolated_env(root, PALYRA_STATE_DIR=str(state_dir))
    log = root / "palyrad.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [PALYRAD, "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_healthy(process, port, log)
        yield Daemon(process, port, state_dir, {**env, "PALYRA_DAEMON_PORT": str(port)})
    finally:
        stop(process)


def test_daemon_wrote_a_private_admin_token(daemon: Daemon) -> None:
    token = daemon.state_dir / "admin.token"
    assert token.read_text().strip()
    assert token.stat().st_mode & 0o777 == 0o600
    assert daemon.state_dir.stat().st_mode & 0o777 == 0o700


def test_chat_streams_the_answer(daemon: Daemon) -> None:
    result = palyra("chat", "hello there", env=daemon.env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello there\n"
    assert result.stderr == ""


def test_chat_no_stream_reads_stdin(daemon: Daemon) -> None:
    result = palyra("chat", "--no-stream", "-", env=daemon.env, stdin="from stdin\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "from stdin\n"


def test_chat_streaming_reads_stdin_with_a_model(daemon: Daemon) -> None:
    result = palyra(
        "chat", "-m", "deterministic", "-", env=daemon.env, stdin="line one\nline two\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "line one\nline two\n"


def test_chat_with_an_unknown_model_fails_in_one_line(daemon: Daemon) -> None:
    for args in (["chat", "-m", "nope", "hi"], ["chat", "--no-stream", "--model", "nope", "hi"]):
        result = palyra(*args, env=daemon.env)
        assert result.returncode == 1
        line = one_error_line(result)
        assert line.startswith("palyra: error: ")
        assert "nope" in line
        assert result.stdout == ""


def test_chat_tool_command_without_tools_echoes(daemon: Daemon) -> None:
    result = palyra("chat", "--no-stream", "/tool x {}", env=daemon.env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "/tool x {}\n"
    assert "[tool call]" not in result.stdout


def test_models_list_json(daemon: Daemon) -> None:
    result = palyra("models", "list", "--json", env=daemon.env)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert {row["id"]: row["palyra"]["role"] for row in data} == DETERMINISTIC_MODELS
    assert {row["palyra"]["provider_id"] for row in data} == {"deterministic-primary"}


def test_models_status_discover_and_test_connection(daemon: Daemon) -> None:
    status = palyra("models", "status", "--json", env=daemon.env)
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    provider = data["providers"][0]
    assert provider["provider_id"] == "deterministic-primary"
    assert provider["circuit"]["state"] == "closed"
    assert {m["model_id"] for m in data["models"] if m["available"]} == set(DETERMINISTIC_MODELS)
    table = palyra("models", "status", env=daemon.env)
    assert table.returncode == 0 and "deterministic-primary" in table.stdout
    probe = palyra("models", "test-connection", "--json", env=daemon.env)
    assert probe.returncode == 0, probe.stderr
    assert json.loads(probe.stdout)["deterministic-primary"]["state"] == "ok"
    assert palyra("models", "discover", env=daemon.env).returncode == 0
    unknown = palyra("models", "test-connection", "--provider", "nope", env=daemon.env)
    assert unknown.returncode == 1
    assert "no provider 'nope'" in one_error_line(unknown)


def test_models_list_table(daemon: Daemon) -> None:
    result = palyra("models", "list", env=daemon.env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["model", "role", "provider", "source"]
    # Whole ids even though stdout is a pipe, not a terminal: one row a line.
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert rows == {
        model_id: [model_id, role, "deterministic-primary", "configured"]
        for model_id, role in DETERMINISTIC_MODELS.items()
    }


def test_cli_url_flag_and_env_token(daemon: Daemon, env: dict[str, str]) -> None:
    # No state dir, no port in env: --url and PALYRA_ADMIN_TOKEN say everything.
    token = (daemon.state_dir / "admin.token").read_text().strip()
    url = f"http://127.0.0.1:{daemon.port}"
    result = palyra("--url", url, "chat", "hi", env={**env, "PALYRA_ADMIN_TOKEN": token})
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hi\n"


def test_wrong_token_is_refused(daemon: Daemon) -> None:
    result = palyra("models", "list", env={**daemon.env, "PALYRA_ADMIN_TOKEN": "wrong"})
    assert result.returncode == 1
    assert "401" in one_error_line(result)


def test_no_token_anywhere_says_where_to_find_one(daemon: Daemon, tmp_path: Path) -> None:
    env = {**daemon.env, "PALYRA_STATE_DIR": str(tmp_path / "empty-state")}
    result = palyra("models", "list", env=env)
    assert result.returncode == 1
    line = one_error_line(result)
    assert "no admin token" in line
    assert "PALYRA_ADMIN_TOKEN" in line


# Keep this test last in the module: it stops the shared daemon.
def test_cli_fails_cleanly_when_the_daemon_is_stopped(daemon: Daemon) -> None:
    assert palyra("models", "list", "--json", env=daemon.env).returncode == 0
    assert stop(daemon.process) == 0  # SIGTERM: a clean shutdown
    assert (daemon.state_dir / "admin.token").exists()

    result = palyra("models", "list", env=daemon.env)
    assert result.returncode == 1
    line = one_error_line(result)
    assert line.startswith(
        f"palyra: error: cannot reach the daemon at http://127.0.0.1:{daemon.port}"
    )
    assert result.stdout == ""

    # Without a token as well, the daemon being down is still what the user is told.
    (daemon.state_dir / "admin.token").unlink()
    result = palyra("chat", "hi", env=daemon.env)
    assert result.returncode == 1
    assert "cannot reach the daemon" in one_error_line(result)
