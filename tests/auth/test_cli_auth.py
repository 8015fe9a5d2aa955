"""`palyra auth ...` and `palyra vault ...` as a user runs them, against `palyrad` as a real
process, with planted secrets searched for in the daemon's log, every command's output and
every file in the state dir."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from pathlib import Path

import aiohttp

from tests.auth.oauth_server import CLIENT_ID, OAuthTestServer
from tests.fakes.oauth_upstream import TokenUpstream
from tests.support.cli import PALYRA, isolated_env
from tests.support.process import Daemon, start_daemon
from tests.support.secrets import files_holding

ADMIN = "cli-auth-admin-token-0123456789"
VAULT_SECRET = "sk-planted-vault-secret-abcdef0123"
OPENAI_KEY = "sk-planted-openai-key-0123456789"
ANTHROPIC_KEY = "sk-ant-planted-anthropic-key-4567"
WRONG_KEY = "sk-planted-wrong-key-7777777777"


def write_config(path: Path, upstream: TokenUpstream, oauth: OAuthTestServer) -> None:
    path.write_text(
        f"""version = 1
[model_provider]
max_retries = 0
failover_enabled = false
health_ttl_ms = 3600000
discovery_ttl_ms = 3600000

[[model_provider.providers]]
provider_id = "oai"
kind = "openai_compatible"
base_url = "{upstream.openai_base_url}"
allow_private_base_url = true
discovery = false

[[model_provider.providers]]
provider_id = "claude"
kind = "anthropic"
base_url = "{upstream.anthropic_base_url}"
allow_private_base_url = true
discovery = false

[[model_provider.models]]
model_id = "gpt-4o-mini"
provider_id = "oai"

[[model_provider.models]]
model_id = "claude"
provider_id = "claude"
upstream_model = "claude-sonnet-4-5"
max_output_tokens = 4096

[auth.openai_oauth]
authorization_endpoint = "{oauth.url}/oauth/authorize"
token_endpoint = "{oauth.url}/oauth/token"
client_id = "{CLIENT_ID}"
"""
    )


class Cli:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.outputs: list[str] = []

    async def __call__(
        self, *args: str, stdin: str = "", expect: int = 0
    ) -> subprocess.CompletedProcess[str]:
        result = await asyncio.to_thread(
            subprocess.run,
            [PALYRA, *args],
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        self.outputs += [result.stdout, result.stderr]
        assert result.returncode == expect, (args, result.stdout, result.stderr)
        return result


async def login(cli: Cli, http: aiohttp.ClientSession, daemon: Daemon) -> str:
    process = await asyncio.create_subprocess_exec(
        PALYRA,
        "auth",
        "openai",
        "login",
        "--no-browser",
        "--profile",
        "oa",
        "--default",
        "--poll",
        "0.1",
        env=cli.env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    url = ""
    while not url.startswith("http"):
        url = (await asyncio.wait_for(process.stdout.readline(), 20)).decode().strip()
    async with http.get(url, allow_redirects=False) as response:
        location = response.headers["Location"]
    assert location.startswith(daemon.url)
    async with http.get(location) as response:
        page = await response.text()
        assert response.status == 200, page
    out, err = await asyncio.wait_for(process.communicate(), 20)
    cli.outputs += [url, page, out.decode(), err.decode()]
    assert process.returncode == 0, err
    assert "signed in: profile oa" in out.decode()
    return page


async def test_cli_against_daemon_process_leaks_nothing(
    tmp_path: Path, oauth_server: OAuthTestServer
) -> None:
    upstream = TokenUpstream(oauth_server, static_keys=(OPENAI_KEY, ANTHROPIC_KEY))
    await upstream.start()
    config = tmp_path / "config.toml"
    write_config(config, upstream, oauth_server)
    env = isolated_env(
        tmp_path,
        PALYRA_CONFIG=str(config),
        PALYRA_ADMIN_TOKEN=ADMIN,
        PALYRA_VAULT_KEYRING="off",
        MY_OPENAI_KEY=OPENAI_KEY,
    )
    state_dir = tmp_path / "state" / "palyra"
    cli = Cli(env)

    # The vault works locally, daemon or not.
    await cli("vault", "set", "global/planted", "--value-stdin", stdin=VAULT_SECRET + "\n")
    assert (await cli("vault", "get", "global/planted")).stdout.strip() == "<redacted>"
    listed = json.loads((await cli("vault", "list", "global", "--json")).stdout)
    assert [(m["ref"], m["size"]) for m in listed] == [("global/planted", len(VAULT_SECRET))]
    await cli("vault", "set", "global/planted", stdin=VAULT_SECRET, expect=2)
    await cli("vault", "get", "global/../planted", expect=1)
    revealed = await cli("vault", "get", "global/planted", "--reveal")
    assert revealed.stdout.strip() == VAULT_SECRET
    cli.outputs.remove(revealed.stdout)  # the one place a secret is asked for

    daemon = await start_daemon(tmp_path, [], env)
    env["PALYRA_URL"] = daemon.url
    try:
        async with aiohttp.ClientSession() as http:
            wrong = await cli(
                "auth",
                "anthropic",
                "api-key",
                "--profile",
                "c1",
                "--stdin",
                stdin=WRONG_KEY,
                expect=1,
            )
            assert "refused the credential" in wrong.stderr and len(wrong.stderr.splitlines()) == 1
            await cli(
                "auth", "anthropic", "api-key", "--profile", "c1", "--stdin", stdin=ANTHROPIC_KEY
            )
            await cli("auth", "openai", "api-key", "--profile", "k1", "--env", "MY_OPENAI_KEY")
            await cli("auth", "openai", "api-key", "--profile", "k1", expect=2)
            await login(cli, http, daemon)

            profiles = json.loads((await cli("auth", "profiles", "list", "--json")).stdout)
            kinds = {p["profile_id"]: (p["credential_type"], p["is_default"]) for p in profiles}
            assert kinds == {
                "c1": ("api_key", True),
                "k1": ("api_key", False),
                "oa": ("oauth", True),
            }
            shown = json.loads((await cli("auth", "profiles", "show", "oa", "--json")).stdout)
            assert shown["refresh_state"] == "ok"
            await cli("auth", "profiles", "list")
            await cli("auth", "profiles", "refresh", "oa")
            await cli("auth", "profiles", "refresh", "k1", expect=1)
            answer = await cli("chat", "--no-stream", "--model", "gpt-4o-mini", "hello")
            assert answer.stdout.strip()
            await cli("chat", "--no-stream", "--model", "claude", "hello")
            await cli("auth", "profiles", "set-default", "k1")
            await cli("chat", "--no-stream", "--model", "gpt-4o-mini", "hello again")
            await cli("auth", "profiles", "delete", "c1")
            await cli("auth", "profiles", "delete", "c1", expect=1)
            await cli("auth", "profiles", "show", "c1", expect=1)
            assert json.loads((await cli("vault", "list", "profile:c1", "--json")).stdout) == []
            failed = await cli("chat", "--no-stream", "--model", "claude", "hello", expect=1)
            assert "credential" in failed.stderr
            await cli("vault", "rotate-key")
            await cli("chat", "--no-stream", "--model", "gpt-4o-mini", "after rotation")
    finally:
        daemon.process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(daemon.process.wait(), 20)
        await upstream.close()

    log_text = daemon.log_path.read_text()
    assert "auth_oauth_callback" in log_text and "auth_api_key_connected" in log_text
    planted = [VAULT_SECRET, OPENAI_KEY, ANTHROPIC_KEY, WRONG_KEY, ADMIN]
    planted.append(oauth_server.token_requests[0]["code_verifier"])
    for token in oauth_server.tokens:
        planted += [token.access_token, token.refresh_token or ""]
    for secret in planted:
        assert secret not in log_text, secret
        assert all(secret not in out for out in cli.outputs), secret
        if secret != ADMIN:
            assert files_holding(state_dir, secret.encode()) == [], secret
