"""Console API for credentials: API-key connection, OpenAI OAuth, auth profiles.

The callback is the one route here that needs no bearer (the browser arriving from the
authorization server has none): the attempt's unguessable state is what authorises it.
"""

from __future__ import annotations

from typing import Any

import orjson
import structlog
from aiohttp import web

from palyra.auth.api_key import connect_anthropic_api_key, connect_openai_api_key
from palyra.auth.callback_page import CONTENT_SECURITY_POLICY, origin_of, render_callback_page
from palyra.auth.oauth import (
    OPENAI_OAUTH_CALLBACK_PATH,
    complete_openai_oauth_callback,
    start_openai_oauth_attempt,
)
from palyra.auth.profiles import check_profile_id
from palyra.auth.service import AuthService
from palyra.errors import InvalidRequest, NotFound, PalyraError
from palyra.server.keys import RUNTIME

log = structlog.get_logger("palyra.auth")

PREFIX = "/console/v1/auth"


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def _auth(request: web.Request) -> AuthService:
    return request.app[RUNTIME].auth


async def _body(request: web.Request, allowed: set[str]) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest("request body is not valid JSON", code="invalid_json") from None
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        # Names only: a value here may be a key pasted into the wrong field.
        raise InvalidRequest(
            f"unknown field(s) {', '.join(unknown)[:200]}; allowed: {', '.join(sorted(allowed))}"
        )
    return body


def _optional_str(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{name}: must be a string", param=name)
    return value


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise InvalidRequest(f"{name}: must be true or false", param=name)
    return value


_API_KEY_FIELDS = {"api_key", "profile_id", "profile_name", "set_default"}


async def _connect(request: web.Request, openai: bool) -> web.Response:
    body = await _body(request, _API_KEY_FIELDS)
    if "api_key" not in body:
        raise InvalidRequest("api_key: required", param="api_key")
    connect = connect_openai_api_key if openai else connect_anthropic_api_key
    profile = await connect(
        _auth(request),
        body["api_key"],
        profile_id=_optional_str(body, "profile_id"),
        profile_name=_optional_str(body, "profile_name"),
        set_default=_flag(body, "set_default"),
    )
    log.info("auth_api_key_connected", profile_id=profile.profile_id, kind=profile.provider_kind)
    return _json({"profile": profile.public()})


async def openai_api_key(request: web.Request) -> web.Response:
    return await _connect(request, openai=True)


async def anthropic_api_key(request: web.Request) -> web.Response:
    return await _connect(request, openai=False)


def _loopback_origin(request: web.Request) -> str:
    """The daemon's own loopback origin: the port it really listens on, not the configured
    one (tests and `--port` may differ), on 127.0.0.1 so the browser reaches it locally."""
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    port = sockname[1] if isinstance(sockname, tuple) and len(sockname) >= 2 else None
    port = port or request.app[RUNTIME].config.daemon.port
    return f"http://127.0.0.1:{port}"


async def openai_bootstrap(request: web.Request) -> web.Response:
    body = await _body(
        request,
        {"client_id", "client_secret", "scopes", "profile_id", "profile_name", "set_default"},
    )
    started = await start_openai_oauth_attempt(
        _auth(request),
        loopback_origin=_loopback_origin(request),
        client_id=_optional_str(body, "client_id"),
        client_secret=_optional_str(body, "client_secret"),
        scopes=body.get("scopes"),
        profile_id=_optional_str(body, "profile_id"),
        profile_name=_optional_str(body, "profile_name"),
        set_default=_flag(body, "set_default"),
    )
    log.info("auth_oauth_started", attempt_id=started.attempt_id, profile_id=started.profile_id)
    return _json(started.public())


async def openai_callback(request: web.Request) -> web.Response:
    params = {k: v for k, v in request.query.items() if isinstance(v, str)}
    auth = _auth(request)
    try:
        outcome = await complete_openai_oauth_callback(auth, params)
    except PalyraError as exc:
        return _page(False, exc.status, "Sign-in failed", exc.message, None, None)
    attempt = await auth.attempts.get(outcome.attempt_id) if outcome.attempt_id else None
    origin = origin_of(attempt.redirect_uri) if attempt else None
    log.info(
        "auth_oauth_callback",
        attempt_id=outcome.attempt_id,
        ok=outcome.ok,
        status=outcome.status,
        detail=None if outcome.ok else outcome.message,
    )
    return _page(
        outcome.ok, outcome.status, outcome.title, outcome.message, outcome.attempt_id, origin
    )


def _page(
    ok: bool, status: int, title: str, message: str, attempt_id: str | None, origin: str | None
) -> web.Response:
    page = render_callback_page(
        ok=ok, title=title, message=message, attempt_id=attempt_id, origin=origin
    )
    return web.Response(
        text=page,
        status=status,
        content_type="text/html",
        headers={
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
        },
    )


async def openai_callback_state(request: web.Request) -> web.Response:
    attempt_id = request.query.get("attempt_id", "")
    if not attempt_id:
        raise InvalidRequest("attempt_id: required", param="attempt_id")
    attempt = await _auth(request).attempts.get(attempt_id[:128])
    if attempt is None:
        raise NotFound(f"no sign-in attempt {attempt_id[:64]!r}", code="attempt_not_found")
    return _json(attempt.public())


async def profiles_list(request: web.Request) -> web.Response:
    profiles = await _auth(request).profiles.list_all()
    return _json({"profiles": [p.public() for p in profiles]})


def _profile_id(request: web.Request) -> str:
    return check_profile_id(request.match_info["profile_id"])


async def profile_show(request: web.Request) -> web.Response:
    profile = await _auth(request).profile(_profile_id(request))
    return _json({"profile": profile.public()})


async def profile_delete(request: web.Request) -> web.Response:
    profile_id = _profile_id(request)
    await _auth(request).delete_profile(profile_id)
    log.info("auth_profile_deleted", profile_id=profile_id)
    return _json({"deleted": profile_id})


async def profile_refresh(request: web.Request) -> web.Response:
    result = await _auth(request).refresher.refresh(_profile_id(request), force=True)
    if not result.refreshed:
        raise PalyraError(
            f"refresh failed ({result.profile.refresh_state.value}): {result.error}",
            status=409 if result.profile.refresh_state.value == "reauth_required" else 502,
            code="refresh_failed",
        )
    return _json({"profile": result.profile.public(), "refreshed": True})


async def profile_default(request: web.Request) -> web.Response:
    profile = await _auth(request).set_default(_profile_id(request))
    return _json({"profile": profile.public()})


def add_routes(app: web.Application) -> None:
    app.router.add_post(f"{PREFIX}/providers/openai/api-key", openai_api_key)
    app.router.add_post(f"{PREFIX}/providers/anthropic/api-key", anthropic_api_key)
    app.router.add_post(f"{PREFIX}/providers/openai/bootstrap", openai_bootstrap)
    app.router.add_get(OPENAI_OAUTH_CALLBACK_PATH, openai_callback)
    app.router.add_get(f"{PREFIX}/providers/openai/callback-state", openai_callback_state)
    app.router.add_get(f"{PREFIX}/profiles", profiles_list)
    app.router.add_get(f"{PREFIX}/profiles/{{profile_id}}", profile_show)
    app.router.add_delete(f"{PREFIX}/profiles/{{profile_id}}", profile_delete)
    app.router.add_post(f"{PREFIX}/profiles/{{profile_id}}/refresh", profile_refresh)
    app.router.add_post(f"{PREFIX}/profiles/{{profile_id}}/default", profile_default)
