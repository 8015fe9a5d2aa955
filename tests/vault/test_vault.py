"""The vault against each real state store (SQLite, PostgreSQL) and real key files."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from palyra.redact import redact_secrets
from palyra.state.db import Database
from palyra.vault import (
    SecretNotFound,
    Vault,
    VaultDecryptError,
    VaultError,
    VaultRefError,
    open_vault,
    parse_vault_ref,
)
from palyra.vault.keys import KEY_FILE, NEXT_KEY_FILE, decode_key
from tests.state.conftest import database
from tests.support.secrets import files_holding

NO_KEYRING = {"PALYRA_VAULT_KEYRING": "off"}
__all__ = ["database"]  # the fixture, run once per backend


@pytest.fixture
async def db(database: Database) -> Database:
    # The state-store fixture: every test here runs once per backend.
    return database


@pytest.fixture
async def vault(db: Database, tmp_path: Path) -> Vault:
    return await open_vault(db, tmp_path, NO_KEYRING)


async def test_round_trip_list_delete(vault: Vault) -> None:
    meta = await vault.put("global/openai_api_key", "sk-round-trip-secret")
    assert meta.ref == "global/openai_api_key" and meta.size == 20
    assert await vault.get("GLOBAL/OpenAI_API_Key") == b"sk-round-trip-secret"
    binary = bytes(range(256)) * 256  # exactly 64 KiB
    await vault.put("profile:p1/blob", binary)
    assert await vault.get("profile:p1/blob") == binary
    listed = await vault.list("global")
    assert [m.as_dict()["ref"] for m in listed] == ["global/openai_api_key"]
    assert "sk-round-trip-secret" not in repr(listed)
    updated = await vault.put("global/openai_api_key", "sk-second-value")
    assert updated.created_at_ms == meta.created_at_ms
    assert await vault.get("global/openai_api_key") == b"sk-second-value"
    assert await vault.delete("global/openai_api_key")
    assert not await vault.delete("global/openai_api_key")
    with pytest.raises(SecretNotFound):
        await vault.get("global/openai_api_key")


async def test_limits_and_refs(vault: Vault) -> None:
    with pytest.raises(VaultError, match="at most 65536"):
        await vault.put("global/big", b"x" * (64 * 1024 + 1))
    with pytest.raises(VaultError, match="empty"):
        await vault.put("global/empty", "")
    for bad in ("global/../x", "global/a/b", "nope/x", "agent:/x", "global/", "a\x00/b", "x"):
        with pytest.raises(VaultRefError):
            parse_vault_ref(bad)
    assert str(parse_vault_ref(" Agent:Bot-1/Key.Name ")) == "agent:bot-1/key.name"


async def test_key_file_is_private_and_secrets_are_not_in_plain_text(
    vault: Vault, tmp_path: Path
) -> None:
    await vault.put("global/k", "sk-plain-text-search-me")
    key_file = tmp_path / KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(decode_key(key_file.read_text(), "k")) == 32
    assert files_holding(tmp_path, b"sk-plain-text-search-me", skip=frozenset({KEY_FILE})) == []


async def test_blob_moved_to_another_ref_fails(vault: Vault, db: Database) -> None:
    await vault.put("profile:a/api_key", "sk-moved-secret")
    await vault.put("profile:b/api_key", "sk-other-secret")
    row = await db.fetch_one("SELECT envelope FROM vault_secrets WHERE scope = 'profile:a'")
    assert row is not None
    await db.execute(
        "UPDATE vault_secrets SET envelope = ? WHERE scope = 'profile:b'", row["envelope"]
    )
    with pytest.raises(VaultDecryptError, match="copied from another ref"):
        await vault.get("profile:b/api_key")


async def test_truncated_and_garbled_blobs_fail(vault: Vault, db: Database) -> None:
    await vault.put("global/t", "sk-truncate-me-please")
    row = await db.fetch_one("SELECT envelope FROM vault_secrets")
    assert row is not None
    raw = base64.b64decode(row["envelope"])
    cases = {
        base64.b64encode(raw[:-3]).decode(): "authentication failed",
        base64.b64encode(raw[:20]).decode(): "truncated",
        "not base64 at all!": "not valid base64",
        base64.b64encode(b"\x09" + raw[1:]).decode(): "version 9",
    }
    for blob, message in cases.items():
        await db.execute("UPDATE vault_secrets SET envelope = ?", blob)
        with pytest.raises(VaultDecryptError, match=message):
            await vault.get("global/t")


async def test_wrong_master_key_fails_clearly(db: Database, tmp_path: Path) -> None:
    key_a = base64.b64encode(os.urandom(32)).decode()
    key_b = base64.b64encode(os.urandom(32)).decode()
    first = await open_vault(db, tmp_path, {"PALYRA_VAULT_KEY": key_a})
    await first.put("global/k", "sk-wrong-key-secret")
    second = await open_vault(db, tmp_path, {"PALYRA_VAULT_KEY": key_b})
    with pytest.raises(VaultDecryptError, match="wrong master key") as err:
        await second.get("global/k")
    assert key_a not in str(err.value) and key_b not in str(err.value)
    with pytest.raises(VaultError, match="wrong master key"):
        await second.put("global/other", "x")
    for bad, message in (("c2hvcnQ=", "must be 32 bytes"), ("%%%", "not valid base64")):
        with pytest.raises(VaultError, match=message):
            await open_vault(db, tmp_path, {"PALYRA_VAULT_KEY": bad})


async def test_env_key_wins_over_key_file(db: Database, tmp_path: Path) -> None:
    key = base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
    vault = await open_vault(db, tmp_path, {"PALYRA_VAULT_KEY": key, **NO_KEYRING})
    await vault.put("global/k", "v")
    assert not (tmp_path / KEY_FILE).exists()


class Interrupted(Exception):
    pass


async def test_rotate_key_survives_interruption(db: Database, tmp_path: Path) -> None:
    vault = await open_vault(db, tmp_path, NO_KEYRING)
    secrets = {f"global/s{i:02d}": f"sk-rotate-secret-{i}" for i in range(7)}
    for ref, value in secrets.items():
        await vault.put(ref, value)
    old_key = (tmp_path / KEY_FILE).read_text()

    async def crash(done: int) -> None:
        if done >= 3:
            raise Interrupted

    with pytest.raises(Interrupted):
        await vault.rotate_key(batch=3, after_batch=crash)
    assert (tmp_path / NEXT_KEY_FILE).exists()
    # A fresh process (new key ring over the same files) reads everything, mid-rotation,
    # and writes go to the new key.
    fresh = await open_vault(db, tmp_path, NO_KEYRING)
    for ref, value in secrets.items():
        assert await fresh.get(ref) == value.encode()
    await fresh.put("global/written-mid-rotation", "sk-mid")

    report = await fresh.rotate_key(batch=3)
    assert report.resealed == 4  # the 7 minus the 3 already done; the new write needed none
    assert not (tmp_path / NEXT_KEY_FILE).exists()
    assert (tmp_path / KEY_FILE).read_text() != old_key
    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600
    after = await open_vault(db, tmp_path, NO_KEYRING)
    for ref, value in {**secrets, "global/written-mid-rotation": "sk-mid"}.items():
        assert await after.get(ref) == value.encode()
    # The old key opens nothing any more.
    stale = await open_vault(db, tmp_path, {"PALYRA_VAULT_KEY": old_key})
    with pytest.raises(VaultDecryptError, match="wrong master key"):
        await stale.get("global/s00")


async def test_rotate_env_key_needs_new_key(db: Database, tmp_path: Path) -> None:
    old = base64.b64encode(os.urandom(32)).decode()
    new = base64.b64encode(os.urandom(32)).decode()
    vault = await open_vault(db, tmp_path, {"PALYRA_VAULT_KEY": old})
    await vault.put("global/k", "sk-env-rotate")
    with pytest.raises(VaultError, match="PALYRA_VAULT_NEW_KEY"):
        await vault.rotate_key()
    both = await open_vault(db, tmp_path, {"PALYRA_VAULT_KEY": old, "PALYRA_VAULT_NEW_KEY": new})
    report = await both.rotate_key()
    assert "PALYRA_VAULT_KEY" in report.todo
    switched = await open_vault(db, tmp_path, {"PALYRA_VAULT_KEY": new})
    assert await switched.get("global/k") == b"sk-env-rotate"


async def test_what_leaves_the_vault_is_scrubbed_from_redacted_text(vault: Vault) -> None:
    # An upstream may echo a key it was never sent by us (an older one, another provider's):
    # any secret read from the vault is scrubbed from then on, whatever its shape.
    secret = f"plain-looking-credential-{os.urandom(6).hex()}"  # not remembered by other tests
    await vault.put("profile:p1/access_token", secret)
    assert redact_secrets(f"bad token {secret}!") == f"bad token {secret}!"
    await vault.get("profile:p1/access_token")
    assert redact_secrets(f"bad token {secret}!") == "bad token <redacted>!"
