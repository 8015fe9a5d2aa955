"""Credential resolution from auth profiles, the vault and the environment, and its cache."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from palyra.auth.profiles import AuthProfile, CredentialType, profile_ref
from palyra.auth.service import AuthService
from palyra.config import ProviderConfig, validate_config
from palyra.context import RequestContext, request_context
from palyra.credentials import MissingCredential, StoreCredentials
from palyra.state.db import SqliteDatabase
from palyra.types import ModelProviderKind
from palyra.vault import open_vault

OPENAI = ModelProviderKind.OPENAI_COMPATIBLE


@pytest.fixture
async def auth(tmp_path: Path) -> AsyncIterator[AuthService]:
    db = await SqliteDatabase.open(tmp_path / "palyra.db")
    vault = await open_vault(db, tmp_path, {"PALYRA_VAULT_KEYRING": "off"})
    service = await AuthService.open(validate_config({"version": 1}), db, vault)
    yield service
    await service.aclose()
    await db.close()


async def add_profile(auth: AuthService, pid: str, kind: ModelProviderKind, key: str) -> None:
    ref = profile_ref(pid, "api_key")
    async with auth.db.transaction() as tx:
        await auth.vault.put(ref, key, tx=tx)
        await auth.profiles.save(
            AuthProfile(pid, pid, kind, CredentialType.API_KEY, api_key_ref=str(ref)), tx
        )
    auth.changed()


def provider(**fields: Any) -> ProviderConfig:
    return ProviderConfig(
        provider_id="p",
        kind=fields.pop("kind", OPENAI),
        base_url="https://api.example.com",
        **fields,
    )


async def test_resolution_order(auth: AuthService) -> None:
    creds = StoreCredentials({"ENV_KEY": "from-env"})
    creds.attach(auth)
    await add_profile(auth, "a", OPENAI, "from-profile-a")
    await add_profile(auth, "b", OPENAI, "from-profile-b")
    await add_profile(auth, "claude", ModelProviderKind.ANTHROPIC, "from-claude")
    await auth.vault.put("global/ref", "from-vault-ref")

    assert await creds.api_key(provider(auth_profile_id="a")) == "from-profile-a"
    assert await creds.api_key(provider(api_key_vault_ref="global/ref")) == "from-vault-ref"
    assert await creds.api_key(provider(api_key_env="ENV_KEY")) == "from-env"
    with pytest.raises(MissingCredential, match="no credential"):
        await creds.api_key(provider())
    # A local server the operator allowed may take no key at all.
    local = ProviderConfig(
        provider_id="local",
        kind=OPENAI,
        base_url="http://127.0.0.1:8000/v1",
        allow_private_base_url=True,
    )
    assert await creds.api_key(local) is None
    await auth.set_default("b")
    assert await creds.api_key(provider()) == "from-profile-b"

    # The request's profile wins when its kind matches; otherwise it is ignored.
    with request_context(RequestContext(auth_profile_id="a")):
        assert await creds.api_key(provider(api_key_env="ENV_KEY")) == "from-profile-a"
        assert await creds.api_key(provider()) == "from-profile-a"
    with request_context(RequestContext(auth_profile_id="claude")):
        assert await creds.api_key(provider(api_key_env="ENV_KEY")) == "from-env"

    with pytest.raises(MissingCredential, match="does not exist"):
        await creds.api_key(provider(auth_profile_id="nope"))
    with pytest.raises(MissingCredential, match="is for anthropic"):
        await creds.api_key(provider(auth_profile_id="claude"))
    with pytest.raises(MissingCredential, match="palyra vault set global/missing"):
        await creds.api_key(provider(api_key_vault_ref="global/missing"))
    with pytest.raises(MissingCredential, match="ENV_OTHER"):
        await creds.api_key(provider(api_key_env="ENV_OTHER"))
    assert await creds.api_key(provider(kind=ModelProviderKind.DETERMINISTIC)) is None


async def test_cache_serves_steady_state_and_drops_on_change(
    auth: AuthService, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = StoreCredentials({}, ttl_s=3600)
    creds.attach(auth)
    await add_profile(auth, "a", OPENAI, "first")
    reads = {"secrets": 0, "profiles": 0}
    vault_get, profile_get = auth.vault.get_optional, auth.profiles.get

    async def counted_secret(ref: Any) -> bytes | None:
        reads["secrets"] += 1
        return await vault_get(ref)

    async def counted_profile(pid: str, **kw: Any) -> AuthProfile | None:
        reads["profiles"] += 1
        return await profile_get(pid, **kw)

    monkeypatch.setattr(auth.vault, "get_optional", counted_secret)
    monkeypatch.setattr(auth.profiles, "get", counted_profile)
    config = provider(auth_profile_id="a")
    for _ in range(50):
        assert await creds.api_key(config) == "first"
    assert reads == {"secrets": 1, "profiles": 1}

    await auth.vault.put(profile_ref("a", "api_key"), "second")  # a change in this process
    assert await creds.api_key(config) == "second"
    assert reads["secrets"] == 2


async def test_requests_read_memory_only_and_refresh_brings_other_processes_changes(
    auth: AuthService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = StoreCredentials({}, ttl_s=0.01)
    creds.attach(auth)
    await add_profile(auth, "a", OPENAI, "first")
    await auth.vault.put("global/ref", "ref-first")
    configs = [provider(auth_profile_id="a"), provider(api_key_vault_ref="global/ref")]
    await creds.warm(configs)
    # Another process (the CLI, a second daemon) writes: its own vault over the same store,
    # whose changes this process hears nothing of.
    other = await open_vault(auth.db, tmp_path, {"PALYRA_VAULT_KEYRING": "off"})
    await other.put(profile_ref("a", "api_key"), "second")
    await other.put("global/ref", "ref-second")

    reads = 0
    vault_get = auth.vault.get_optional

    async def counted(ref: Any) -> bytes | None:
        nonlocal reads
        reads += 1
        return await vault_get(ref)

    monkeypatch.setattr(auth.vault, "get_optional", counted)
    await asyncio.sleep(0.05)  # five times ttl_s: however long since the last read,
    for _ in range(20):  # memory only
        assert [await creds.api_key(c) for c in configs] == ["first", "ref-first"]
    assert reads == 0
    await creds.refresh()
    assert [await creds.api_key(c) for c in configs] == ["second", "ref-second"]
    assert reads == 2  # the refresh's, not the requests'

    # The daemon's background refresh does the same on its own, every ttl_s.
    await other.put("global/ref", "ref-third")
    creds.start()
    try:
        for _ in range(200):
            if await creds.api_key(configs[1]) == "ref-third":
                break
            await asyncio.sleep(0.01)
        assert await creds.api_key(configs[1]) == "ref-third"
    finally:
        await creds.aclose()


async def test_a_store_that_does_not_answer_leaves_the_last_values_serving(
    auth: AuthService, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = StoreCredentials({}, ttl_s=0.01)
    creds.attach(auth)
    await add_profile(auth, "a", OPENAI, "kept")
    config = provider(auth_profile_id="a")
    await creds.warm([config])
    failures = 0

    async def down(*args: Any, **kwargs: Any) -> None:
        nonlocal failures
        failures += 1
        raise ConnectionError("state store down")

    monkeypatch.setattr(auth.vault, "get_optional", down)
    monkeypatch.setattr(auth.profiles, "get", down)
    await creds.refresh()  # logged, not raised
    assert await creds.api_key(config) == "kept"
    # Warming at start does not stop the daemon for it: the provider's requests will say.
    await creds.warm([provider(api_key_vault_ref="global/unread")])
    # A first read that cannot be done is a credential error: the request fails over.
    with pytest.raises(MissingCredential, match="cannot read secret global/unread"):
        await creds.api_key(provider(api_key_vault_ref="global/unread"))
    # A provider's 401 with the store down: no retry, and the others' keys stay in memory.
    other = provider(api_key_vault_ref="global/other")
    assert not await creds.credential_rejected(other, "rejected-key")
    assert await creds.api_key(config) == "kept"
    creds.start()  # the background refresh logs and keeps going
    try:
        while failures < 4:
            await asyncio.sleep(0.01)
        assert await creds.api_key(config) == "kept"
    finally:
        await creds.aclose()


async def test_a_refresh_that_read_before_a_local_change_does_not_undo_it(
    auth: AuthService, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = StoreCredentials({})
    creds.attach(auth)
    await auth.vault.put("global/ref", "old")
    config = provider(api_key_vault_ref="global/ref")
    await creds.warm([config])
    vault_get = auth.vault.get_optional
    read_done, release = asyncio.Event(), asyncio.Event()

    async def slow(ref: Any) -> bytes | None:
        value = await vault_get(ref)
        read_done.set()
        await release.wait()
        return value

    monkeypatch.setattr(auth.vault, "get_optional", slow)
    refreshing = asyncio.create_task(creds.refresh())
    await read_done.wait()  # the refresh holds "old"
    monkeypatch.setattr(auth.vault, "get_optional", vault_get)
    await auth.vault.put("global/ref", "new")  # a change in this process
    assert await creds.api_key(config) == "new"
    release.set()
    await refreshing
    assert await creds.api_key(config) == "new"


async def test_one_entry_that_cannot_be_read_does_not_hold_back_the_others(
    auth: AuthService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = StoreCredentials({})
    creds.attach(auth)
    await auth.vault.put("global/bad", "bad-old")
    await auth.vault.put("global/good", "good-old")
    bad, good = provider(api_key_vault_ref="global/bad"), provider(api_key_vault_ref="global/good")
    await creds.warm([bad, good])
    other = await open_vault(auth.db, tmp_path, {"PALYRA_VAULT_KEYRING": "off"})
    await other.put("global/good", "good-new")
    vault_get = auth.vault.get_optional

    async def bad_fails(ref: Any) -> bytes | None:
        if str(ref) == "global/bad":
            raise ValueError("does not open")
        return await vault_get(ref)

    monkeypatch.setattr(auth.vault, "get_optional", bad_fails)
    await creds.refresh()
    assert await creds.api_key(good) == "good-new"
    assert await creds.api_key(bad) == "bad-old"  # the last value read keeps serving


async def test_a_rejected_key_another_process_replaced_is_worth_one_retry(
    auth: AuthService, tmp_path: Path
) -> None:
    creds = StoreCredentials({})
    creds.attach(auth)
    await auth.vault.put("global/ref", "sk-old")
    config = provider(api_key_vault_ref="global/ref")
    await creds.warm([config])
    assert not await creds.credential_rejected(config, "sk-old")  # nothing better to try
    other = await open_vault(auth.db, tmp_path, {"PALYRA_VAULT_KEYRING": "off"})
    await other.put("global/ref", "sk-new")  # `palyra vault set` from the CLI, say
    assert await creds.credential_rejected(config, "sk-old")
    assert await creds.api_key(config) == "sk-new"
