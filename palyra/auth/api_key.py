"""Connecting a provider by API key: check it against the provider first, then store it.

The check is a models list (never a completion): cheap, and every key that can do anything
can list models. Nothing is stored unless the provider said yes.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson

from palyra.auth.errors import Conflict, InvalidCredential, ProviderRateLimited, ProviderUnavailable
from palyra.auth.profiles import (
    AuthProfile,
    CredentialType,
    RefreshState,
    check_profile_id,
    clean_error,
    profile_ref,
)
from palyra.auth.service import AuthService
from palyra.egress import refusal_in
from palyra.errors import InvalidRequest
from palyra.models.kinds import DEFAULT_BASE_URLS, CredentialCheck, spec_for
from palyra.types import ModelProviderKind

MAX_KEY_CHARS = 4096


def check_secret_text(value: Any, field: str) -> str:
    """A key or token that can go into a header. Errors never repeat the value."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(f"{field}: must be a non-empty string", param=field)
    text = str(value).strip()
    if len(text) > MAX_KEY_CHARS:
        raise InvalidRequest(f"{field}: longer than {MAX_KEY_CHARS} characters", param=field)
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text):
        raise InvalidRequest(f"{field}: must not contain spaces or control characters", param=field)
    return text


def credential_check(kind: ModelProviderKind) -> CredentialCheck:
    """How a key for `kind` is tried and where it is stored; a kind that takes no key is a
    clear error, not a request to some other kind's API."""
    check = spec_for(kind).credential
    if check is None:
        raise InvalidRequest(
            f"provider kind {kind.value!r} takes no credential", code="no_credential_for_kind"
        )
    return check


def _error_text(raw: bytes) -> str:
    # Only the provider's own words, when it gave them as text: str() of whatever else it
    # sent could be nested deep enough to exhaust the stack (found by the fuzz suite).
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, dict):
        for key in ("message", "type"):
            if isinstance(error.get(key), str) and error[key]:
                return str(error[key])
    if isinstance(error, str) and error:
        return error
    return raw[:200].decode("utf-8", "replace")


def base_url_for(auth: AuthService, kind: ModelProviderKind) -> str:
    """Where a credential of `kind` is tried: the base URL of the first enabled provider of
    this kind, else the public API's."""
    for provider in auth.config.model_provider.providers:
        if provider.kind is kind and provider.enabled:
            return provider.base_url
    return DEFAULT_BASE_URLS[kind]


async def check_provider_credential(
    http: aiohttp.ClientSession, kind: ModelProviderKind, base_url: str, credential: str
) -> None:
    """GET the provider's models list with the credential, as the kind's spec says; raise
    what the client should see."""
    check = credential_check(kind)
    url = base_url + check.models_path
    headers = check.headers(credential)
    try:
        async with http.get(url, headers=headers, allow_redirects=False) as response:
            status = response.status
            raw = await response.read()
            retry_after = response.headers.get("retry-after", "")
    except aiohttp.ClientError as exc:
        refused = refusal_in(exc)
        if refused is not None:
            # Not a blip to retry later: the provider's base_url reaches a private address.
            raise InvalidRequest(
                f"the provider at {base_url}: {refused}; set allow_private_base_url = true "
                "on the provider if it is meant to be on a private network; nothing was stored",
                code="provider_address_refused",
            ) from None
        raise ProviderUnavailable(
            f"cannot reach the provider at {url}: {type(exc).__name__}; nothing was stored"
        ) from None
    except TimeoutError as exc:
        raise ProviderUnavailable(
            f"cannot reach the provider at {url}: {type(exc).__name__}; nothing was stored"
        ) from None
    if 200 <= status < 300:
        return
    detail = clean_error(_error_text(raw), (credential,))
    if status in (401, 403):
        raise InvalidCredential(
            f"the provider refused the credential ({status}: {detail}); nothing was stored"
        )
    if status == 429:
        headers_out = {"Retry-After": retry_after} if retry_after.isdigit() else None
        raise ProviderRateLimited(
            f"the provider is rate limiting (429: {detail}); try again later, nothing was stored",
            headers=headers_out,
        )
    if status >= 500:
        raise ProviderUnavailable(
            f"the provider answered {status} ({detail}); try again later, nothing was stored"
        )
    raise InvalidRequest(
        f"the provider answered {status} at {url} ({detail}); check base_url, nothing was stored",
        code="credential_check_failed",
    )


async def connect_api_key(
    auth: AuthService,
    kind: ModelProviderKind,
    api_key: Any,
    *,
    profile_id: str | None = None,
    profile_name: str | None = None,
    set_default: bool = False,
) -> AuthProfile:
    check = credential_check(kind)
    key = check_secret_text(api_key, "api_key")
    pid = check_profile_id(profile_id or check.profile_id)
    existing = await auth.profiles.get(pid)
    if existing is not None and existing.provider_kind is not kind:
        raise Conflict(
            f"profile {pid!r} is for {existing.provider_kind.value}, not {kind.value}",
            param="profile_id",
        )
    await check_provider_credential(auth.http, kind, base_url_for(auth, kind), key)
    ref = profile_ref(pid, "api_key")
    profile = AuthProfile(
        profile_id=pid,
        name=(profile_name or (existing.name if existing else pid))[:200],
        provider_kind=kind,
        credential_type=CredentialType.API_KEY,
        api_key_ref=str(ref),
        refresh_state=RefreshState.NONE,
    )
    if existing is not None:
        profile.created_at_ms = existing.created_at_ms
    async with auth.db.transaction() as tx:
        # A profile that was OAuth before keeps no stale tokens.
        await auth.vault.delete_scope(ref.scope, tx=tx)
        await auth.vault.put(ref, key, tx=tx)
        await auth.profiles.save(profile, tx)
        if set_default or await auth.profiles.default_id(kind, tx=tx) is None:
            await auth.profiles.set_default(pid, tx)
    auth.changed()
    return await auth.profile(pid)


async def connect_openai_api_key(auth: AuthService, api_key: Any, **options: Any) -> AuthProfile:
    return await connect_api_key(auth, ModelProviderKind.OPENAI_COMPATIBLE, api_key, **options)


async def connect_anthropic_api_key(auth: AuthService, api_key: Any, **options: Any) -> AuthProfile:
    return await connect_api_key(auth, ModelProviderKind.ANTHROPIC, api_key, **options)
