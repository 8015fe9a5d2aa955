"""The admin token: every route but `/healthz` and the OAuth callback needs it, as a bearer
token (`Authorization: Bearer`) or as `x-api-key` (how Anthropic's clients send a key).

A client key (`pk-...`, see palyra.keys), sent the same ways, opens the inference routes
(`/v1/...`) and nothing else."""

from __future__ import annotations

import hmac
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from palyra.errors import PalyraError
from palyra.fs import atomic_write, ensure_private_dir
from palyra.keys import SECRET_PREFIX

TOKEN_FILE = "admin.token"
PUBLIC_PATHS = frozenset({"/healthz", "/console/v1/auth/providers/openai/callback"})
# The inference routes: the only ones a client key opens.
INFERENCE_PREFIX = "/v1/"


class ClientKeyNotAllowed(PalyraError):
    status = 403
    type = "permission_error"
    code = "client_key_not_allowed"


def load_or_create_admin_token(state_dir: Path, env: Mapping[str, str] | None = None) -> str:
    """`PALYRA_ADMIN_TOKEN` if set; else `admin.token` in the state dir, made 0600 on first use."""
    env = os.environ if env is None else env
    if env.get("PALYRA_ADMIN_TOKEN"):
        return env["PALYRA_ADMIN_TOKEN"]
    ensure_private_dir(state_dir)
    path = state_dir / TOKEN_FILE
    try:
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        token = ""
    if not token:
        token = "palyra-" + secrets.token_urlsafe(32)
        atomic_write(path, (token + "\n").encode(), mode=0o600)
    return token


def bearer_matches(header: str | None, token: str) -> bool:
    if not header:
        return False
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return _same(value.strip(), token)


def api_key_matches(header: str | None, token: str) -> bool:
    """`x-api-key: <token>`, as Anthropic's clients send a key."""
    if not header:
        return False
    return _same(header.strip(), token)


def _same(given: str, token: str) -> bool:
    # In constant time. surrogatepass: a header's undecodable bytes arrive as lone
    # surrogates, which the plain codec refuses to encode (a 500 for `Bearer \xff`); this
    # encodes any text, as cheaply.
    return hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), token.encode("utf-8", "surrogatepass")
    )


def presented_key(authorization: str | None, api_key: str | None) -> str | None:
    """The client key a request presents (a bearer token or x-api-key starting `pk-`)."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer" and value.startswith(SECRET_PREFIX):
            return value
    if api_key:
        api_key = api_key.strip()
        if api_key.startswith(SECRET_PREFIX):
            return api_key
    return None
