"""The sealed form of one secret: a versioned envelope around AES-256-GCM.

Layout (then base64 for the TEXT column): version byte, 8-byte key id, 12-byte nonce,
ciphertext with its 16-byte tag. The associated data is the header plus the secret's ref, so
a blob copied under another ref, or with its key id edited, fails authentication.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = 1
KEY_BYTES = 32
KEY_ID_BYTES = 8
NONCE_BYTES = 12
TAG_BYTES = 16
_HEADER_BYTES = 1 + KEY_ID_BYTES + NONCE_BYTES
MAX_SECRET_BYTES = 64 * 1024


class VaultError(Exception):
    """A vault operation failed; the message never holds a secret value."""


class VaultDecryptError(VaultError):
    """A stored blob cannot be opened: wrong master key, corruption, or a moved blob."""


def key_id(master_key: bytes) -> str:
    """A public fingerprint of a master key: lets a blob say which key sealed it without
    revealing anything usable about the key (one-way, domain-separated)."""
    digest = hashlib.sha256(b"palyra-vault-key-id\x00" + master_key).digest()
    return digest[:KEY_ID_BYTES].hex()


def _aad(header: bytes, ref: str) -> bytes:
    return header + b"\x00palyra-vault\x00" + ref.encode()


def seal(master_key: bytes, ref: str, plaintext: bytes) -> str:
    if len(master_key) != KEY_BYTES:
        raise VaultError("master key must be 32 bytes")
    header = bytes([VERSION]) + bytes.fromhex(key_id(master_key)) + os.urandom(NONCE_BYTES)
    sealed = AESGCM(master_key).encrypt(header[-NONCE_BYTES:], plaintext, _aad(header, ref))
    return base64.b64encode(header + sealed).decode("ascii")


@dataclass(frozen=True, slots=True)
class Envelope:
    version: int
    key_id: str
    header: bytes
    body: bytes

    @property
    def nonce(self) -> bytes:
        return self.header[-NONCE_BYTES:]


def parse(blob: str, ref: str) -> Envelope:
    try:
        raw = base64.b64decode(blob.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise VaultDecryptError(f"secret {ref}: stored blob is not valid base64") from None
    if len(raw) < _HEADER_BYTES + TAG_BYTES:
        raise VaultDecryptError(f"secret {ref}: stored blob is truncated")
    if raw[0] != VERSION:
        raise VaultDecryptError(
            f"secret {ref}: envelope version {raw[0]} is not supported (this build reads "
            f"version {VERSION})"
        )
    kid = raw[1 : 1 + KEY_ID_BYTES].hex()
    return Envelope(raw[0], kid, raw[:_HEADER_BYTES], raw[_HEADER_BYTES:])


def open_sealed(master_key: bytes, ref: str, envelope: Envelope) -> bytes:
    try:
        return AESGCM(master_key).decrypt(envelope.nonce, envelope.body, _aad(envelope.header, ref))
    except InvalidTag:
        raise VaultDecryptError(
            f"secret {ref}: authentication failed (the blob is corrupted, truncated, or was "
            "copied from another ref)"
        ) from None
