"""The web console at `/console/`: its page and assets (all shipped in the package), and the
session routes. The pages themselves talk to the `/console/v1/` JSON API with their cookie."""

from __future__ import annotations

import hmac
from importlib import resources
from typing import Any

import orjson
from aiohttp import web

from palyra.errors import InvalidRequest, PalyraError, Unauthorized
from palyra.server.keys import ADMIN_TOKEN, RUNTIME, SESSIONS
from palyra.server.sessions import COOKIE, CSRF_HEADER, SESSION_TTL_S, Session

STATIC = resources.files("palyra.console") / "static"
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# Everything is served from here; nothing may be fetched from elsewhere, or framed.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


class Forbidden(PalyraError):
    status = 403
    type = "permission_error"
    code = "csrf_failed"


def is_public(request: web.Request) -> bool:
    path = request.path
    if path in ("/console", "/console/") or path.startswith("/console/static/"):
        return True
    return path == "/console/session" and request.method in ("GET", "POST")


def session_of(request: web.Request) -> Session | None:
    return request.app[SESSIONS].verify(request.cookies.get(COOKIE))


def check_session(request: web.Request) -> bool:
    """A console request signed in by cookie; state-changing ones also need the CSRF token."""
    if not (request.path.startswith("/console/v1/") or request.path == "/console/session"):
        return False
    session = session_of(request)
    if session is None:
        return False
    if request.method not in ("GET", "HEAD", "OPTIONS") and not request.app[SESSIONS].csrf_ok(
        session, request.headers.get(CSRF_HEADER)
    ):
        raise Forbidden(f"missing or wrong {CSRF_HEADER} header; reload the console")
    return True


def _shipped() -> frozenset[str]:
    """The package's assets: `static/*`, and the third-party files vendored under
    `static/vendor/` (named `vendor/<file>`)."""
    names = set()
    for folder, prefix in ((STATIC, ""), (STATIC / "vendor", "vendor/")):
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            if entry.is_file() and not entry.name.startswith(".") and _suffix(entry.name) in _TYPES:
                names.add(prefix + entry.name)
    return frozenset(names)


def _suffix(name: str) -> str:
    return name[name.rfind(".") :] if "." in name else ""


# The assets are what the package ships, listed once: a name from a client is looked up
# here and never reaches the filesystem (300 characters of it were an OSError, a 500).
ASSETS = _shipped()


def _asset(name: str) -> web.Response:
    if name not in ASSETS:
        raise web.HTTPNotFound()
    return web.Response(
        body=STATIC.joinpath(*name.split("/")).read_bytes(),
        headers={
            "Content-Type": _TYPES[_suffix(name)],
            "Cache-Control": "no-cache",
            **SECURITY_HEADERS,
        },
    )


async def index(request: web.Request) -> web.StreamResponse:
    if request.path == "/console":
        raise web.HTTPFound("/console/")
    return _asset("index.html")


async def static(request: web.Request) -> web.Response:
    return _asset(request.match_info["name"])


async def vendored(request: web.Request) -> web.Response:
    return _asset("vendor/" + request.match_info["name"])


def _session_body(session: Session | None) -> dict[str, Any]:
    if session is None:
        return {"signed_in": False}
    return {"signed_in": True, "csrf_token": session.csrf_token, "expires_at": session.expires_at}


async def get_session(request: web.Request) -> web.Response:
    return web.json_response(_session_body(session_of(request)))


async def sign_in(request: web.Request) -> web.Response:
    try:
        body = orjson.loads(await request.read())
        token = body["token"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise InvalidRequest('send {"token": "<admin token>"}', param="token") from None
    if not isinstance(token, str) or not hmac.compare_digest(
        token.strip().encode(), request.app[ADMIN_TOKEN].encode()
    ):
        raise Unauthorized("that is not the daemon's admin token", param="token")
    cookie, session = request.app[SESSIONS].issue()
    response = web.json_response(_session_body(session))
    response.set_cookie(COOKIE, cookie, max_age=SESSION_TTL_S, **_cookie_attributes(request))
    return response


def _cookie_attributes(request: web.Request) -> dict[str, Any]:
    # Secure whenever the console is reached over https: directly, or through the TLS proxy
    # of docs/deployment.md, which `public_base_url` names. X-Forwarded-Proto is not trusted:
    # any client could send it.
    public_url = request.app[RUNTIME].config.daemon.public_base_url
    return {
        "path": "/console",
        "httponly": True,
        "samesite": "Strict",
        "secure": request.secure or public_url.lower().startswith("https://"),
    }


async def sign_out(request: web.Request) -> web.Response:
    session = session_of(request)
    saved = session is None or await request.app[SESSIONS].revoke(session)
    if saved:
        response = web.json_response({"signed_in": False})
    else:
        # Refused here already, and retried in the background; the others may still accept
        # a copy of the cookie until then, which whoever signed out should know.
        error = PalyraError(
            "signed out on this daemon, but the state store did not answer: other daemons "
            "may accept this session until the sign-out is written (retried in the background)",
            status=503,
            code="state_store_unavailable",
        )
        response = web.json_response(error.body(), status=error.status)
    response.del_cookie(COOKIE, **_cookie_attributes(request))
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_get("/console", index)
    app.router.add_get("/console/", index)
    app.router.add_get("/console/static/{name}", static)
    app.router.add_get("/console/static/vendor/{name}", vendored)
    app.router.add_get("/console/session", get_session)
    app.router.add_post("/console/session", sign_in)
    app.router.add_delete("/console/session", sign_out)
