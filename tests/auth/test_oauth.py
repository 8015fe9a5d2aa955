"""OpenAI OAuth with PKCE, end to end against a real authlib authorization server on loopback:
bootstrap, authorize, callback, code exchange, validation, persistence, refresh with rotation,
invalid_grant; concurrent callbacks; a restart in the middle; secrets never shown."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from palyra.server.keys import RUNTIME
from tests.auth.conftest import Console, auth_config, start_console
from tests.auth.oauth_server import CLIENT_ID, OAuthTestServer
from tests.conftest import GatewayFactory
from tests.fakes.oauth_upstream import TokenUpstream
from tests.fakes.upstream import FakeUpstream
from tests.support.secrets import files_holding

CALLBACK = "/console/v1/auth/providers/openai/callback"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


async def sign_in(
    console: Console, http: aiohttp.ClientSession, **bootstrap: object
) -> tuple[dict[str, object], int, str]:
    status, started = await console.call(
        "POST", "/console/v1/auth/providers/openai/bootstrap", bootstrap
    )
    assert status == 200, started
    async with http.get(started["authorization_url"], allow_redirects=False) as response:
        assert response.status == 302, await response.text()
        location = response.headers["Location"]
    path = urlsplit(location)
    status, page = await console.call("GET", f"{path.path}?{path.query}", auth=False)
    return started, status, page


@pytest.fixture
async def upstream(oauth_server: OAuthTestServer) -> TokenUpstream:  # type: ignore[override]
    fake = TokenUpstream(oauth_server)
    await fake.start()
    yield fake  # type: ignore[misc]
    await fake.close()


async def test_full_flow_refresh_rotation_and_invalid_grant(
    tmp_path: Path,
    start_gateway: GatewayFactory,
    http: aiohttp.ClientSession,
    oauth_server: OAuthTestServer,
    upstream: TokenUpstream,
) -> None:
    state_dir = tmp_path / "state"
    console = await start_console(
        start_gateway, auth_config(upstream, state_dir, oauth_server), http
    )
    auth = console.server.app[RUNTIME].auth

    # Bootstrap: the URL carries everything RFC 7636 and the issue ask for.
    status, started = await console.call(
        "POST",
        "/console/v1/auth/providers/openai/bootstrap",
        {"profile_id": "oa", "profile_name": "Work", "set_default": True},
    )
    assert status == 200, started
    assert set(started) == {"attempt_id", "authorization_url", "expires_at_unix_ms", "profile_id"}
    query = {k: v[0] for k, v in parse_qs(urlsplit(started["authorization_url"]).query).items()}
    daemon_origin = str(console.server.make_url("/")).rstrip("/")
    assert query == {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "redirect_uri": daemon_origin + CALLBACK,
        "scope": "openid profile email offline_access",
        "code_challenge": query["code_challenge"],
        "code_challenge_method": "S256",
        "state": started["attempt_id"],
    }
    assert abs(started["expires_at_unix_ms"] - (time.time() * 1000 + 600_000)) < 5_000
    status, state = await console.call(
        "GET",
        f"/console/v1/auth/providers/openai/callback-state?attempt_id={started['attempt_id']}",
    )
    assert state["state"] == "pending"

    # Authorize (auto-approved), then the browser lands on our callback.
    async with http.get(started["authorization_url"], allow_redirects=False) as response:
        location = response.headers["Location"]
    assert location.startswith(daemon_origin + CALLBACK)
    path = urlsplit(location)
    status, page = await console.call("GET", f"{path.path}?{path.query}", auth=False)
    assert status == 200, page
    assert "Signed in" in page and "postMessage" in page and daemon_origin in page

    exchange = oauth_server.token_requests[0]
    verifier = exchange["code_verifier"]
    assert exchange["grant_type"] == "authorization_code" and len(verifier) == 43
    assert exchange["redirect_uri"] == daemon_origin + CALLBACK
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    assert challenge.decode() == query["code_challenge"]
    first = oauth_server.tokens[0]
    assert upstream.requests_to("/v1/models")[-1].headers["authorization"] == (
        f"Bearer {first.access_token}"
    )

    status, state = await console.call(
        "GET",
        f"/console/v1/auth/providers/openai/callback-state?attempt_id={started['attempt_id']}",
    )
    assert state["state"] == "succeeded"
    status, body = await console.call("GET", "/console/v1/auth/profiles/oa")
    profile = body["profile"]
    assert profile["credential_type"] == "oauth" and profile["is_default"] is True
    assert profile["refresh_state"] == "ok" and profile["name"] == "Work"
    assert profile["access_expires_at_ms"] > time.time() * 1000 + 3_000_000
    assert set(profile["vault_refs"]) == {"access_token", "refresh_token"}

    # The provider (no credential of its own) uses the default profile's token.
    status, answer = await console.call("POST", "/v1/chat/completions", CHAT)
    assert status == 200, answer

    # Forced refresh: the server rotates the refresh token; both are stored together.
    status, body = await console.call("POST", "/console/v1/auth/profiles/oa/refresh")
    assert status == 200, body
    refresh_request = oauth_server.token_requests[-1]
    assert refresh_request["grant_type"] == "refresh_token"
    assert refresh_request["refresh_token"] == first.refresh_token
    second = oauth_server.tokens[-1]
    assert second.refresh_token != first.refresh_token and first.revoked
    assert await auth.vault.get("profile:oa/refresh_token") == second.refresh_token.encode()
    assert await auth.vault.get("profile:oa/access_token") == second.access_token.encode()

    # The provider only takes the newest token now: no restart needed.
    upstream.min_index = len(oauth_server.tokens) - 1
    status, answer = await console.call("POST", "/v1/chat/completions", CHAT)
    assert status == 200, answer

    # The provider refuses the current token: one refresh, one retry, success.
    upstream.min_index = len(oauth_server.tokens)
    before = len(oauth_server.token_requests)
    status, answer = await console.call("POST", "/v1/chat/completions", CHAT)
    assert status == 200, answer
    assert len(oauth_server.token_requests) == before + 1

    # Refreshing a profile that does not exist is a prompt 404, not a wait for its lease.
    status, body = await console.call("POST", "/console/v1/auth/profiles/ghost/refresh")
    assert status == 404 and body["error"]["code"] == "profile_not_found"

    # The grant is revoked: invalid_grant marks the profile and retries stop.
    oauth_server.revoke_everything()
    status, body = await console.call("POST", "/console/v1/auth/profiles/oa/refresh")
    assert status == 409 and body["error"]["code"] == "refresh_failed"
    assert "invalid_grant" in body["error"]["message"]
    status, body = await console.call("GET", "/console/v1/auth/profiles/oa")
    assert body["profile"]["refresh_state"] == "reauth_required"
    assert "invalid_grant" in body["profile"]["last_error"]
    requests_now = len(oauth_server.token_requests)
    auth.refresher.margin_s = 10_000.0  # everything is "due" now
    await auth.refresher.refresh_due()
    upstream.min_index = len(oauth_server.tokens)
    status, answer = await console.call("POST", "/v1/chat/completions", CHAT)
    assert status == 502 and answer["error"]["code"] == "upstream_auth_failed"
    assert len(oauth_server.token_requests) == requests_now

    secrets = [verifier]
    for token in oauth_server.tokens:
        secrets += [token.access_token, token.refresh_token or ""]
    for secret in secrets:
        assert all(secret not in text for text in console.bodies), secret
        assert files_holding(state_dir, secret.encode()) == []


async def test_background_refresh_and_backoff(
    tmp_path: Path,
    start_gateway: GatewayFactory,
    http: aiohttp.ClientSession,
    oauth_server: OAuthTestServer,
    upstream: TokenUpstream,
) -> None:
    console = await start_console(
        start_gateway, auth_config(upstream, tmp_path / "s", oauth_server), http
    )
    auth = console.server.app[RUNTIME].auth
    auth.refresher.interval_s = 0.05
    _, status, page = await sign_in(console, http)
    assert status == 200, page

    # Inside the margin: the background task refreshes by itself.
    auth.refresher.margin_s = 3_700.0
    auth.refresher.wake()
    for _ in range(100):
        if auth.refresher.refreshes:
            break
        await asyncio.sleep(0.02)
    assert auth.refresher.refreshes >= 1
    auth.refresher.margin_s = 300.0
    await asyncio.sleep(0.1)
    assert oauth_server.token_requests[1]["grant_type"] == "refresh_token"

    # A passing failure backs off, doubling.
    oauth_server.fail_with_status = 500
    delays = []
    for _ in range(2):
        status, body = await console.call("POST", "/console/v1/auth/profiles/openai-oauth/refresh")
        assert status == 502, body
        _, shown = await console.call("GET", "/console/v1/auth/profiles/openai-oauth")
        profile = shown["profile"]
        assert profile["refresh_state"] == "backoff"
        delays.append(profile["next_refresh_at_ms"] - time.time() * 1000)
    assert profile["refresh_failures"] == 2
    assert 8_000 < delays[1] <= 10_000 and 3_000 < delays[0] <= 5_000
    oauth_server.fail_with_status = 0
    status, body = await console.call("POST", "/console/v1/auth/profiles/openai-oauth/refresh")
    assert status == 200 and body["profile"]["refresh_state"] == "ok"


async def test_two_concurrent_callbacks_exchange_once(
    tmp_path: Path,
    start_gateway: GatewayFactory,
    http: aiohttp.ClientSession,
    oauth_server: OAuthTestServer,
    upstream: TokenUpstream,
) -> None:
    console = await start_console(
        start_gateway, auth_config(upstream, tmp_path / "s", oauth_server), http
    )
    _, started = await console.call("POST", "/console/v1/auth/providers/openai/bootstrap", {})
    async with http.get(started["authorization_url"], allow_redirects=False) as response:
        path = urlsplit(response.headers["Location"])
    oauth_server.token_delay_s = 0.3
    results = await asyncio.gather(
        *(console.call("GET", f"{path.path}?{path.query}", auth=False) for _ in range(2))
    )
    assert sorted(status for status, _ in results) == [200, 409]
    assert len(oauth_server.token_requests) == 1
    # And the used state cannot be replayed.
    status, page = await console.call("GET", f"{path.path}?{path.query}", auth=False)
    assert status == 409 and "already used" in page


async def test_restart_keeps_pending_attempt(
    tmp_path: Path,
    start_gateway: GatewayFactory,
    http: aiohttp.ClientSession,
    oauth_server: OAuthTestServer,
    upstream: TokenUpstream,
) -> None:
    config = auth_config(upstream, tmp_path / "s", oauth_server)
    first = await start_console(start_gateway, config, http)
    _, started = await first.call("POST", "/console/v1/auth/providers/openai/bootstrap", {})
    await first.server.close()

    second = await start_console(start_gateway, config, http)
    state_path = (
        f"/console/v1/auth/providers/openai/callback-state?attempt_id={started['attempt_id']}"
    )
    _, state = await second.call("GET", state_path)
    assert state["state"] == "pending"
    async with http.get(started["authorization_url"], allow_redirects=False) as response:
        path = urlsplit(response.headers["Location"])
    # The browser comes back to the restarted daemon (here on another port).
    status, page = await second.call("GET", f"{path.path}?{path.query}", auth=False)
    assert status == 200, page
    _, state = await second.call("GET", state_path)
    assert state["state"] == "succeeded"


async def test_callback_errors_are_escaped_and_final(
    tmp_path: Path,
    start_gateway: GatewayFactory,
    http: aiohttp.ClientSession,
    oauth_server: OAuthTestServer,
    upstream: TokenUpstream,
) -> None:
    console = await start_console(
        start_gateway, auth_config(upstream, tmp_path / "s", oauth_server), http
    )
    bootstrap = "/console/v1/auth/providers/openai/bootstrap"
    _, started = await console.call("POST", bootstrap, {})
    status, page = await console.call(
        "GET",
        f"{CALLBACK}?state={started['attempt_id']}&error=access_denied"
        "&error_description=%3Cscript%3Ealert(1)%3C%2Fscript%3E",
        auth=False,
    )
    assert status == 400 and "<script>alert" not in page and "&lt;script&gt;" in page
    _, state = await console.call(
        "GET",
        f"/console/v1/auth/providers/openai/callback-state?attempt_id={started['attempt_id']}",
    )
    assert state["state"] == "failed" and "access_denied" in state["error"]

    status, page = await console.call("GET", f"{CALLBACK}?state=nope&code=x", auth=False)
    assert status == 400 and "unknown" in page
    status, page = await console.call("GET", f"{CALLBACK}?state=%3Cb%3E&code=x", auth=False)
    assert "<b>" not in page

    # Expired before the browser came back.
    _, late = await console.call("POST", bootstrap, {})
    await console.server.app[RUNTIME].db.execute(
        "UPDATE oauth_attempts SET expires_at_ms = 1 WHERE attempt_id = ?", late["attempt_id"]
    )
    status, page = await console.call(
        "GET", f"{CALLBACK}?state={late['attempt_id']}&code=whatever", auth=False
    )
    assert status == 400 and "expired" in page

    # Abandoned (the browser never came back): the loop fails it and drops its verifier.
    auth = console.server.app[RUNTIME].auth
    _, gone = await console.call("POST", bootstrap, {"profile_id": "abandoned"})
    assert len(await auth.vault.list("profile:abandoned")) == 1
    await auth.db.execute(
        "UPDATE oauth_attempts SET expires_at_ms = 1 WHERE attempt_id = ?", gone["attempt_id"]
    )
    await auth.expire_attempts()
    assert await auth.vault.list("profile:abandoned") == []
    _, state = await console.call(
        "GET", f"/console/v1/auth/providers/openai/callback-state?attempt_id={gone['attempt_id']}"
    )
    assert state["state"] == "failed" and "expired" in state["error"]

    # The provider refuses the new token: the attempt fails, nothing is kept.
    upstream.min_index = 10_000
    _, started, page = await sign_in(console, http, profile_id="refused")
    assert started == 400 and "did not work" in page
    status, _ = await console.call("GET", "/console/v1/auth/profiles/refused")
    assert status == 404

    # Bad bootstrap bodies.
    for body in ({"scopes": "bad scope\x00"}, {"client_id": 5}, {"profile_id": "a/b"}, {"x": 1}):
        status, _ = await console.call("POST", bootstrap, body)
        assert status == 400, body


async def test_server_enforces_pkce(
    oauth_server: OAuthTestServer, http: aiohttp.ClientSession
) -> None:
    base = f"{oauth_server.url}/oauth/authorize?response_type=code&client_id={CLIENT_ID}"
    redirect = "&redirect_uri=http://127.0.0.1:1/cb&state=s"
    for extra in ("", "&code_challenge=" + "a" * 43 + "&code_challenge_method=plain"):
        async with http.get(base + redirect + extra, allow_redirects=False) as response:
            assert "error=invalid_request" in response.headers.get("Location", "")


async def test_bootstrap_needs_a_client_id(
    tmp_path: Path, start_gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    async with FakeUpstream() as upstream:
        console = await start_console(start_gateway, auth_config(upstream, tmp_path / "s"), http)
        status, body = await console.call("POST", "/console/v1/auth/providers/openai/bootstrap", {})
        assert status == 400 and "client_id" in body["error"]["message"]
