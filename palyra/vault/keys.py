"""Where the vault's master key lives: `PALYRA_VAULT_KEY`, else the OS keyring where one works,
else `vault.key` (0600) in the state dir, created on first use.

Each source can hold a second, "next" key while `rotate-key` runs. Both are loaded for
decryption, so a rotation interrupted at any point leaves every blob readable; the next run
picks up the same next key and carries on.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import importlib
import os
import secrets
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from palyra.vault.envelope import KEY_BYTES, VaultError, key_id

ENV_KEY = "PALYRA_VAULT_KEY"
# The key `rotate-key` moves to when the current one comes from the environment.
ENV_NEW_KEY = "PALYRA_VAULT_NEW_KEY"
# "off" keeps the OS keyring out of it (tests, containers with a half-working Secret Service).
ENV_KEYRING = "PALYRA_VAULT_KEYRING"
KEY_FILE = "vault.key"
NEXT_KEY_FILE = "vault.key.next"
KEYRING_SERVICE = "palyra-vault"


def decode_key(text: str, where: str) -> bytes:
    """Base64 (standard or URL-safe, padding optional) of exactly 32 bytes. Never echoes it."""
    cleaned = text.strip()
    padded = cleaned + "=" * (-len(cleaned) % 4)
    try:
        if "-" in cleaned or "_" in cleaned:
            raw = base64.urlsafe_b64decode(padded.encode("ascii"))
        else:
            raw = base64.b64decode(padded.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise VaultError(
            f"{where}: not valid base64 (expected base64 of 32 random bytes)"
        ) from None
    if len(raw) != KEY_BYTES:
        raise VaultError(f"{where}: decodes to {len(raw)} bytes; the master key must be 32 bytes")
    return raw


def encode_key(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii")


class KeySource(ABC):
    description: str

    @abstractmethod
    def all_keys(self) -> list[bytes]:
        """Every key this source holds: current first, then the rotation's next key."""

    @abstractmethod
    def current(self) -> bytes:
        """The current key, created on first use where the source can create one."""

    @abstractmethod
    def next_key(self) -> bytes:
        """The rotation target: the one already begun, else a new one (persisted first)."""

    @abstractmethod
    def finish_rotation(self) -> str:
        """Make the next key current. Returns what the user must still do, if anything."""


class EnvKeySource(KeySource):
    description = f"environment variable {ENV_KEY}"

    def __init__(self, env: Mapping[str, str]) -> None:
        self._key = decode_key(env[ENV_KEY], ENV_KEY)
        self._next = decode_key(env[ENV_NEW_KEY], ENV_NEW_KEY) if env.get(ENV_NEW_KEY) else None

    def all_keys(self) -> list[bytes]:
        return [self._key] + ([self._next] if self._next else [])

    def current(self) -> bytes:
        return self._key

    def next_key(self) -> bytes:
        if self._next is None:
            raise VaultError(
                f"the master key comes from {ENV_KEY}: put the new key (base64 of 32 random "
                f"bytes) in {ENV_NEW_KEY} and run rotate-key again"
            )
        return self._next

    def finish_rotation(self) -> str:
        return f"set {ENV_KEY} to the value of {ENV_NEW_KEY}, then unset {ENV_NEW_KEY}"


class FileKeySource(KeySource):
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / KEY_FILE
        self.next_path = state_dir / NEXT_KEY_FILE
        self.description = f"key file {self.path}"

    def _read(self, path: Path) -> bytes | None:
        try:
            text = path.read_text(encoding="ascii")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise VaultError(f"cannot read {path}: {type(exc).__name__}") from None
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
        return decode_key(text, str(path))

    def _create(self, path: Path) -> bytes:
        """Write a new key where none is; if another process won the race, use its key."""
        key = secrets.token_bytes(KEY_BYTES)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(encode_key(key) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            # link() refuses to replace: two first users never end up with different keys.
            os.link(tmp, path)
        except FileExistsError:
            existing = self._read(path)
            assert existing is not None
            return existing
        finally:
            Path(tmp).unlink(missing_ok=True)
        _fsync_dir(path.parent)
        return key

    def all_keys(self) -> list[bytes]:
        return [k for k in (self._read(self.path), self._read(self.next_path)) if k is not None]

    def current(self) -> bytes:
        return self._read(self.path) or self._create(self.path)

    def next_key(self) -> bytes:
        return self._read(self.next_path) or self._create(self.next_path)

    def finish_rotation(self) -> str:
        os.replace(self.next_path, self.path)
        _fsync_dir(self.path.parent)
        return ""


class KeyringKeySource(KeySource):
    """The OS keyring (Secret Service, macOS Keychain, Windows Credential Locker)."""

    def __init__(self, keyring: Any, state_dir: Path) -> None:
        self._keyring = keyring
        # One entry per state dir: two daemons with separate state must not share a key.
        self._user = f"master:{state_dir.resolve()}"
        self._next_user = f"next:{state_dir.resolve()}"
        self.description = f"OS keyring ({KEYRING_SERVICE})"

    def _get(self, user: str) -> bytes | None:
        value = self._keyring.get_password(KEYRING_SERVICE, user)
        return decode_key(value, self.description) if value else None

    def _create(self, user: str) -> bytes:
        key = secrets.token_bytes(KEY_BYTES)
        self._keyring.set_password(KEYRING_SERVICE, user, encode_key(key))
        stored = self._get(user)
        if stored is None:
            raise VaultError(f"{self.description} did not keep the new master key")
        return stored

    def all_keys(self) -> list[bytes]:
        return [k for k in (self._get(self._user), self._get(self._next_user)) if k is not None]

    def current(self) -> bytes:
        return self._get(self._user) or self._create(self._user)

    def next_key(self) -> bytes:
        return self._get(self._next_user) or self._create(self._next_user)

    def finish_rotation(self) -> str:
        new = self.next_key()
        self._keyring.set_password(KEYRING_SERVICE, self._user, encode_key(new))
        self._keyring.delete_password(KEYRING_SERVICE, self._next_user)
        return ""


def _usable_keyring(env: Mapping[str, str]) -> Any | None:
    """The keyring module when it is installed and has a real backend; None otherwise.

    Headless Linux usually has only the `fail` or `null` backends: those do not count.
    """
    if env.get(ENV_KEYRING, "").lower() in ("off", "0", "false", "no"):
        return None
    try:
        keyring = importlib.import_module("keyring")
    except ImportError:
        return None
    with contextlib.suppress(Exception):
        backend = keyring.get_keyring()
        module = type(backend).__module__
        if float(getattr(backend, "priority", 0)) >= 1 and not module.startswith(
            ("keyring.backends.fail", "keyring.backends.null", "keyrings.alt")
        ):
            return keyring
    return None


def key_source(state_dir: Path, env: Mapping[str, str]) -> KeySource:
    if env.get(ENV_KEY):
        return EnvKeySource(env)
    # An existing key file stays in charge even if a keyring shows up later.
    if not (state_dir / KEY_FILE).exists():
        keyring = _usable_keyring(env)
        if keyring is not None:
            return KeyringKeySource(keyring, state_dir)
    return FileKeySource(state_dir)


class KeyRing:
    """The master keys in memory, by key id; re-read from the source when a blob names a key
    this process has not seen (another process may have rotated)."""

    def __init__(self, source: KeySource) -> None:
        self.source = source
        self._keys: dict[str, bytes] = {}

    def reload(self) -> None:
        self._keys = {key_id(k): k for k in self.source.all_keys()}

    def current(self) -> bytes:
        key = self.source.current()
        self._keys.setdefault(key_id(key), key)
        return key

    def find(self, wanted: str) -> bytes | None:
        if wanted not in self._keys:
            self.reload()
        return self._keys.get(wanted)

    def known_ids(self) -> list[str]:
        return sorted(self._keys)

    def remember(self, key: bytes) -> None:
        self._keys[key_id(key)] = key


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
