"""The profile registry and the refresh lease, with two "daemons" sharing one state store."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from palyra.auth.oauth import start_openai_oauth_attempt
from palyra.auth.profiles import AuthProfile, CredentialType, RefreshState, profile_ref
from palyra.auth.service import AuthService
from palyra.config import validate_config
from palyra.state.db import SqliteDatabase
from palyra.types import ModelProviderKind
from palyra.vault import SecretNotFound, open_vault
from tests.auth.oauth_server import CLIENT_ID, USER_ID, OAuthTestServer, Token
from tests.state.conftest import StoreOpener, open_store

ENV = {"PALYRA_VAULT_KEYRING": "off"}
__all__ = ["open_store"]  # the fixture, run once per backend


async def open_service(
    tmp_path: Path, open_store: StoreOpener, oauth: OAuthTestServer | None = None
) -> AuthService:
    db = await open_store()
    raw: dict[str, object] = {"version": 1}
    if oauth is not None:
        raw["auth"] = {
            "openai_oauth": {"token_endpoint": oauth.url + "/oauth/token", "client_id": CLIENT_ID}
        }
    return await AuthService.open(validate_config(raw), db, await open_vault(db, tmp_path, ENV))


@pytest.fixture
async def services(
    tmp_path: Path, oauth_server: OAuthTestServer, open_store: StoreOpener
) -> AsyncIterator[list[AuthService]]:
    # Two daemons' auth services over one store (each backend in turn).
    made = [await open_service(tmp_path, open_store, oauth_server) for _ in range(2)]
    yield made
    for service in made:
        await service.aclose()


async def add_oauth_profile(auth: AuthService, oauth: OAuthTestServer, pid: str) -> None:
    token = Token("at-" + pid + "-0123456789", "rt-" + pid + "-0123456789", CLIENT_ID, "", USER_ID)
    oauth.tokens.append(token)
    refs = {k: profile_ref(pid, k) for k in ("access_token", "refresh_token")}
    async with auth.db.transaction() as tx:
        await auth.vault.put_many(
            {
                refs["access_token"]: token.access_token,
                refs["refresh_token"]: token.refresh_token or "",
            },
            tx=tx,
        )
        await auth.profiles.save(
            AuthProfile(
                pid,
                pid,
                ModelProviderKind.OPENAI_COMPATIBLE,
                CredentialType.OAUTH,
                access_token_ref=str(refs["access_token"]),
                refresh_token_ref=str(refs["refresh_token"]),
                client_id=CLIENT_ID,
                access_expires_at_ms=int(time.time() * 1000) + 60_000,  # inside the margin
                refresh_state=RefreshState.OK,
            ),
            tx,
        )
    auth.changed()


async def test_one_refresh_across_daemons(
    services: list[AuthService], oauth_server: OAuthTestServer
) -> None:
    first, second = services
    await add_oauth_profile(first, oauth_server, "shared")
    oauth_server.token_delay_s = 0.3
    results = await asyncio.gather(
        first.refresher.refresh("shared"), second.refresher.refresh("shared")
    )
    assert len(oauth_server.token_requests) == 1
    assert sorted(r.refreshed for r in results) == [False, True]
    new = oauth_server.tokens[-1]
    assert await second.vault.get("profile:shared/access_token") == new.access_token.encode()
    assert await second.vault.get("profile:shared/refresh_token") == new.refresh_token.encode()


async def test_lease_of_a_dead_holder_expires(services: list[AuthService]) -> None:
    first, second = services
    async with first.db.transaction() as tx:
        await first.profiles.save(
            AuthProfile("p", "p", ModelProviderKind.ANTHROPIC, CredentialType.API_KEY), tx
        )
    assert await first.profiles.claim_lease("p", "dead-daemon", lease_ms=50)
    assert not await second.profiles.claim_lease("p", "live-daemon", lease_ms=50)
    await asyncio.sleep(0.08)
    assert await second.profiles.claim_lease("p", "live-daemon", lease_ms=50)


async def test_defaults_and_delete_removes_secrets(
    services: list[AuthService], oauth_server: OAuthTestServer
) -> None:
    auth = services[0]
    await add_oauth_profile(auth, oauth_server, "one")
    await add_oauth_profile(auth, oauth_server, "two")
    await auth.set_default("one")
    await auth.set_default("two")  # one default per kind: "two" replaces "one"
    flags = {p.profile_id: p.is_default for p in await auth.profiles.list_all()}
    assert flags == {"one": False, "two": True}
    await auth.delete_profile("two")
    assert await auth.profiles.default_id(ModelProviderKind.OPENAI_COMPATIBLE) is None
    assert await auth.vault.list("profile:two") == []
    with pytest.raises(SecretNotFound):
        await auth.vault.get("profile:two/access_token")
    assert len(await auth.vault.list("profile:one")) == 2


async def test_authorization_url_with_audience_and_public_base_url(tmp_path: Path) -> None:
    db = await SqliteDatabase.open(tmp_path / "palyra.db")
    config = validate_config(
        {
            "version": 1,
            "daemon": {"public_base_url": "https://palyra.example.com/"},
            "auth": {"openai_oauth": {"client_id": "cid", "audience": "https://api.example"}},
        }
    )
    auth = await AuthService.open(config, db, await open_vault(db, tmp_path, ENV))
    try:
        started = await start_openai_oauth_attempt(
            auth, loopback_origin="http://127.0.0.1:1", scopes=["openid"]
        )
        query = parse_qs(urlsplit(started.authorization_url).query)
        assert query["audience"] == ["https://api.example"]
        assert query["redirect_uri"] == [
            "https://palyra.example.com/console/v1/auth/providers/openai/callback"
        ]
        assert query["scope"] == ["openid"] and query["state"] == [started.attempt_id]
        assert started.authorization_url.startswith("https://auth.openai.com/oauth/authorize?")
    finally:
        await auth.aclose()
        await db.close()
