"""OpenAI sign-in: OAuth 2.0 authorization code with PKCE (RFC 7636, S256).

Bootstrap makes the verifier and the attempt; the callback claims the attempt atomically,
exchanges the code once, checks the token against the provider, and stores tokens and profile
in one transaction.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from palyra.auth.api_key import base_url_for, check_provider_credential, check_secret_text
from palyra.auth.attempts import ATTEMPT_TTL_MS, AttemptState, OAuthAttempt, pending_ref
from palyra.auth.errors import Conflict
from palyra.auth.profiles import (
    AuthProfile,
    CredentialType,
    RefreshState,
    check_profile_id,
    clean_error,
    profile_ref,
)
from palyra.auth.service import AuthService
from palyra.auth.token_endpoint import TokenEndpointError, TokenSet, request_tokens
from palyra.errors import InvalidRequest, PalyraError
from palyra.state.db import Database
from palyra.types import ModelProviderKind
from palyra.vault import VaultRef

OPENAI_OAUTH_CALLBACK_PATH = "/console/v1/auth/providers/openai/callback"
DEFAULT_OAUTH_PROFILE_ID = "openai-oauth"
_SCOPE = re.compile(r"^[\x21\x23-\x5B\x5D-\x7E]{1,200}$")  # RFC 6749 scope-token


def new_pkce_pair() -> tuple[str, str]:
    """(verifier, S256 challenge): 32 random bytes, base64url without padding (43 chars)."""
    verifier = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode("ascii")
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
    return verifier, challenge


def _verifier_ref(attempt: OAuthAttempt) -> VaultRef:
    return pending_ref(attempt.profile_id, attempt.attempt_id, "verifier")


def _pending_secret_ref(profile_id: str, attempt_id: str) -> VaultRef:
    return pending_ref(profile_id, attempt_id, "client_secret")


@dataclass(frozen=True, slots=True)
class OAuthStart:
    attempt_id: str
    authorization_url: str
    expires_at_unix_ms: int
    profile_id: str

    def public(self) -> dict[str, Any]:
        return {
            "attempt_id": self.attempt_id,
            "authorization_url": self.authorization_url,
            "expires_at_unix_ms": self.expires_at_unix_ms,
            "profile_id": self.profile_id,
        }


def _scopes(value: Any, default: list[str]) -> list[str]:
    if value is None:
        return list(default)
    if isinstance(value, str):
        value = value.split()
    if not isinstance(value, list) or not all(
        isinstance(s, str) and _SCOPE.match(s) for s in value
    ):
        raise InvalidRequest("scopes: must be a list of OAuth scope strings", param="scopes")
    return list(dict.fromkeys(value))


async def start_openai_oauth_attempt(
    auth: AuthService,
    *,
    loopback_origin: str,
    client_id: str | None = None,
    client_secret: str | None = None,
    scopes: Any = None,
    profile_id: str | None = None,
    profile_name: str | None = None,
    set_default: bool = False,
) -> OAuthStart:
    settings = auth.config.auth.openai_oauth
    client = (client_id or settings.client_id).strip()
    if not client:
        raise InvalidRequest(
            "client_id: none given and [auth.openai_oauth] client_id is empty", param="client_id"
        )
    if len(client) > 256 or not client.isprintable():
        raise InvalidRequest("client_id: must be printable, at most 256 characters")
    secret = check_secret_text(client_secret, "client_secret") if client_secret else None
    wanted_scopes = _scopes(scopes, settings.scopes)
    pid = check_profile_id(profile_id or DEFAULT_OAUTH_PROFILE_ID)
    existing = await auth.profiles.get(pid)
    if existing is not None and existing.provider_kind is not ModelProviderKind.OPENAI_COMPATIBLE:
        raise Conflict(f"profile {pid!r} is for {existing.provider_kind.value}, not openai")
    base = auth.config.daemon.public_base_url or loopback_origin
    redirect_uri = base.rstrip("/") + OPENAI_OAUTH_CALLBACK_PATH
    verifier, challenge = new_pkce_pair()
    attempt_id = secrets.token_hex(16)
    now = int(time.time() * 1000)
    attempt = OAuthAttempt(
        attempt_id=attempt_id,
        provider="openai",
        profile_id=pid,
        profile_name=(profile_name or (existing.name if existing else pid))[:200],
        set_default=bool(set_default),
        client_id=client,
        has_client_secret=secret is not None,
        scopes=wanted_scopes,
        redirect_uri=redirect_uri,
        state=AttemptState.PENDING,
        error=None,
        created_at_ms=now,
        expires_at_ms=now + ATTEMPT_TTL_MS,
        completed_at_ms=None,
    )
    pending: dict[VaultRef, str] = {_verifier_ref(attempt): verifier}
    if secret is not None:
        pending[_pending_secret_ref(pid, attempt_id)] = secret
    async with auth.db.transaction() as tx:
        await auth.vault.put_many(pending, tx=tx)
        await auth.attempts.insert(attempt, tx)
    params = {
        "response_type": "code",
        "client_id": client,
        "redirect_uri": redirect_uri,
        "scope": " ".join(wanted_scopes),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": attempt_id,
    }
    if settings.audience:
        params["audience"] = settings.audience
    endpoint = settings.authorization_endpoint
    url = endpoint + ("&" if "?" in endpoint else "?") + urlencode(params)
    return OAuthStart(attempt_id, url, attempt.expires_at_ms, pid)


@dataclass(frozen=True, slots=True)
class CallbackOutcome:
    ok: bool
    status: int
    title: str
    message: str
    attempt_id: str | None = None


async def validate_openai_bearer_token(auth: AuthService, access_token: str) -> None:
    """The token must list models at the configured OpenAI provider, or it is useless here."""
    kind = ModelProviderKind.OPENAI_COMPATIBLE
    await check_provider_credential(auth.http, kind, base_url_for(auth, kind), access_token)


async def persist_openai_auth_profile(
    auth: AuthService,
    attempt: OAuthAttempt,
    tokens: TokenSet,
    client_secret: bytes | None,
) -> AuthProfile:
    """Tokens into the vault and the profile into the registry, in one transaction with the
    attempt's success: a crash leaves either all of it or none."""
    pid = attempt.profile_id
    refs = {
        "access_token": profile_ref(pid, "access_token"),
        "refresh_token": profile_ref(pid, "refresh_token"),
        "client_secret": profile_ref(pid, "client_secret"),
    }
    values: dict[VaultRef, bytes | str] = {refs["access_token"]: tokens.access_token}
    if tokens.refresh_token:
        values[refs["refresh_token"]] = tokens.refresh_token
    if client_secret:
        values[refs["client_secret"]] = client_secret
    now = int(time.time() * 1000)
    granted = tokens.scope.split() if tokens.scope else attempt.scopes
    async with auth.db.transaction() as tx:
        existing = await auth.profiles.get(pid, tx=tx)
        profile = AuthProfile(
            profile_id=pid,
            name=attempt.profile_name,
            provider_kind=ModelProviderKind.OPENAI_COMPATIBLE,
            credential_type=CredentialType.OAUTH,
            access_token_ref=str(refs["access_token"]),
            refresh_token_ref=str(refs["refresh_token"]) if tokens.refresh_token else None,
            client_secret_ref=str(refs["client_secret"]) if client_secret else None,
            client_id=attempt.client_id,
            scopes=granted,
            access_expires_at_ms=now + tokens.expires_in_s * 1000 if tokens.expires_in_s else None,
            refresh_state=RefreshState.OK,
            last_refresh_at_ms=now,
            created_at_ms=existing.created_at_ms if existing else now,
        )
        await auth.vault.delete_scope(refs["access_token"].scope, tx=tx)
        await auth.vault.put_many(values, tx=tx)
        await auth.profiles.save(profile, tx)
        if (
            attempt.set_default
            or await auth.profiles.default_id(profile.provider_kind, tx=tx) is None
        ):
            await auth.profiles.set_default(pid, tx)
        await auth.attempts.finish(attempt.attempt_id, AttemptState.SUCCEEDED, tx=tx)
    auth.changed()
    auth.refresher.wake()
    return await auth.profile(pid)


async def _fail(
    auth: AuthService, attempt: OAuthAttempt, message: str, status: int = 400
) -> CallbackOutcome:
    async with auth.db.transaction() as tx:
        await _drop_pending(auth, attempt, tx)
        await auth.attempts.finish(attempt.attempt_id, AttemptState.FAILED, message, tx=tx)
    return CallbackOutcome(False, status, "Sign-in failed", message, attempt.attempt_id)


async def _drop_pending(auth: AuthService, attempt: OAuthAttempt, tx: Database) -> None:
    await auth.vault.delete(_verifier_ref(attempt), tx=tx)
    await auth.vault.delete(_pending_secret_ref(attempt.profile_id, attempt.attempt_id), tx=tx)


async def complete_openai_oauth_callback(
    auth: AuthService, params: Mapping[str, str]
) -> CallbackOutcome:
    state = params.get("state", "")
    attempt = await auth.attempts.get(state) if state and len(state) <= 128 else None
    if attempt is None:
        return CallbackOutcome(
            False, 400, "Unknown sign-in", "This sign-in link is unknown. Start again."
        )
    now = int(time.time() * 1000)
    if not await auth.attempts.claim(attempt.attempt_id, now):
        fresh = await auth.attempts.get(attempt.attempt_id)
        if fresh is not None and fresh.state is AttemptState.PENDING:
            return await _fail(auth, fresh, "the sign-in attempt expired; start again")
        return CallbackOutcome(
            False,
            409,
            "Already used",
            "This sign-in link was already used. Start again if sign-in did not finish.",
            attempt.attempt_id,
        )
    if params.get("error"):
        error = clean_error(params["error"])[:80]
        description = clean_error(params.get("error_description", ""))
        text = f"the authorization server answered {error}"
        return await _fail(auth, attempt, f"{text}: {description}" if description else text)
    code = params.get("code", "")
    if not code or len(code) > 4096:
        return await _fail(auth, attempt, "the callback carried no authorization code")
    try:
        verifier = (await auth.vault.get(_verifier_ref(attempt))).decode()
        secret = None
        if attempt.has_client_secret:
            secret = await auth.vault.get(
                _pending_secret_ref(attempt.profile_id, attempt.attempt_id)
            )
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": attempt.redirect_uri,
            "client_id": attempt.client_id,
            "code_verifier": verifier,
        }
        if secret is not None:
            form["client_secret"] = secret.decode()
        tokens = await request_tokens(auth.http, auth.config.auth.openai_oauth.token_endpoint, form)
        await validate_openai_bearer_token(auth, tokens.access_token)
    except TokenEndpointError as exc:
        return await _fail(auth, attempt, f"code exchange failed: {exc.summary}", 502)
    except PalyraError as exc:
        return await _fail(
            auth, attempt, f"the token did not work at the provider: {exc.message}", exc.status
        )
    except Exception as exc:
        await _fail(auth, attempt, f"sign-in failed: {type(exc).__name__}", 500)
        raise
    profile = await persist_openai_auth_profile(auth, attempt, tokens, secret)
    async with auth.db.transaction() as tx:
        await _drop_pending(auth, attempt, tx)
    return CallbackOutcome(
        True,
        200,
        "Signed in",
        f"OpenAI is connected as profile {profile.profile_id}. You can close this window.",
        attempt.attempt_id,
    )
