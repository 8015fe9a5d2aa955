"""The vault's master key in the OS keyring, through the `keyring` library's own interface.

No OS keyring answers on a headless machine, so the backend here keeps its entries in a
dict; what is exercised is ours: detection, one entry per state dir, creation, rotation.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import keyring
import keyring.backends.fail
import pytest
from keyring.backend import KeyringBackend

from palyra.state.db import Database
from palyra.vault import open_vault
from palyra.vault.keys import KEY_FILE, KEYRING_SERVICE, KeyringKeySource, key_source
from tests.state.conftest import database

__all__ = ["database"]  # the fixture, run once per backend


class DictKeyring(KeyringBackend):
    priority = 5  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.entries: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.entries.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.entries[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        del self.entries[(service, username)]


@pytest.fixture
def os_keyring() -> Iterator[DictKeyring]:
    previous = keyring.get_keyring()
    backend = DictKeyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)


async def test_key_lives_in_the_keyring_one_entry_per_state_dir(
    os_keyring: DictKeyring, database: Database, tmp_path: Path
) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    assert isinstance(key_source(first, {}), KeyringKeySource)
    vault = await open_vault(database, first, {})
    await vault.put("global/k", "sk-in-keyring")
    assert not (first / KEY_FILE).exists()  # no key on disk
    masters = [user for service, user in os_keyring.entries if service == KEYRING_SERVICE]
    assert masters == [f"master:{first.resolve()}"]
    assert "sk-in-keyring" not in str(os_keyring.entries)
    # A new process finds the same key; another state dir gets a key of its own.
    assert await (await open_vault(database, first, {})).get("global/k") == b"sk-in-keyring"
    other = key_source(second, {})
    assert other.current() != key_source(first, {}).current()
    assert len(os_keyring.entries) == 2

    report = await vault.rotate_key()
    assert report.resealed == 1
    assert set(os_keyring.entries) == {
        (KEYRING_SERVICE, f"master:{first.resolve()}"),
        (KEYRING_SERVICE, f"master:{second.resolve()}"),
    }  # the next key became the master; its entry is gone
    assert await (await open_vault(database, first, {})).get("global/k") == b"sk-in-keyring"


def test_no_usable_keyring_or_an_existing_key_file_means_the_file(
    os_keyring: DictKeyring, tmp_path: Path
) -> None:
    assert not isinstance(key_source(tmp_path, {"PALYRA_VAULT_KEYRING": "off"}), KeyringKeySource)
    keyring.set_keyring(keyring.backends.fail.Keyring())
    assert not isinstance(key_source(tmp_path, {}), KeyringKeySource)
    keyring.set_keyring(os_keyring)
    (tmp_path / KEY_FILE).write_text("x")
    # A key file made before a keyring showed up stays in charge.
    assert not isinstance(key_source(tmp_path, {}), KeyringKeySource)
