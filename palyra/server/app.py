"""The aiohttp application: middlewares (request id, auth, errors) and the routes."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import re
import time
from collections.abc import Awaitable, Callable

import orjson
import structlog
from aiohttp import HttpVersion11, web, web_urldispatcher
from aiohttp.web_protocol import RequestPayloadError
from prometheus_client import CONTENT_TYPE_LATEST

from palyra import dialects, logs
from palyra.accounting import CLIENT_CLOSED, REQUEST, RequestTag
from palyra.callers import ADMIN, CALLER, Caller
from palyra.dialects.common import X_REQUEST_ID, random_id, route_headers
from palyra.errors import InvalidRequest, NotFound, PalyraError, ProviderError, Unauthorized
from palyra.runtime import Runtime
from palyra.server import (
    auth_routes,
    console,
    cron_routes,
    keys_routes,
    reload_routes,
    runs_routes,
    status_routes,
    usage_routes,
    web_console,
)
from palyra.server.auth import (
    INFERENCE_PREFIX,
    PUBLIC_PATHS,
    ClientKeyNotAllowed,
    api_key_matches,
    bearer_matches,
    presented_key,
)
from palyra.server.keys import (
    ADMIN_TOKEN,
    ERROR_MESSAGE,
    GATEWAY,
    KEY_RING,
    REQUEST_CALLER,
    REQUEST_ID,
    ROUTE,
    RUNTIME,
    SESSIONS,
    STARTED,
)
from palyra.server.sessions import Sessions
from palyra.telemetry import NULL_SPAN, TRACING, operation_for
from palyra.types import RouteInfo

log = structlog.get_logger("palyra.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# nginx's "client closed request": counted and logged for a client that left before its answer.
CLIENT_CLOSED_REQUEST = CLIENT_CLOSED
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


async def expect_continue(request: web.Request) -> None:
    """`Expect: 100-continue` is answered as aiohttp does; any other expectation is ignored,
    as RFC 9110 allows. aiohttp's own handler refuses it with a 417 whose text quotes the
    header, and bytes that are not UTF-8 there made building it fail: a 500 on any route,
    before authentication and outside every middleware."""
    expect = request.headers.get("Expect", "")
    if request.version == HttpVersion11 and expect.lower() == "100-continue":
        # A client gone already is no error of ours: its answer will find no one either.
        with contextlib.suppress(ConnectionError):
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0  # the answer's own body has not started


# Every route takes aiohttp's default expect handler when it is made, the routes aiohttp
# makes per request for a 404 or 405 included: replacing the default is the one place that
# covers them all (tests/server/test_app.py holds it to that).
web_urldispatcher._default_expect_handler = expect_continue


def error_response(exc: PalyraError, request: web.Request) -> web.Response:
    headers = dict(exc.headers)
    route: RouteInfo | None = request.get(ROUTE) or exc.route
    if route is not None:
        request[ROUTE] = route
    if request.path.startswith("/v1/"):
        started = request.get(STARTED, time.perf_counter())
        headers.update(route_headers(route or RouteInfo(), started))
        if isinstance(exc, ProviderError) and route is None:
            headers["x-palyra-provider-id"] = exc.provider_id
    request[ERROR_MESSAGE] = exc.message
    status, body = dialects.error_renderer(request)(exc)
    return web.Response(
        body=orjson.dumps(body),
        status=status,
        content_type="application/json",
        headers=headers,
    )


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = request[STARTED] = time.perf_counter()
    incoming = request.headers.get("x-request-id", "")
    request_id = request[REQUEST_ID] = (
        incoming if incoming and _REQUEST_ID.match(incoming) else random_id()
    )
    structlog.contextvars.bind_contextvars(request_id=request_id)
    status = 500
    inference = request.path.startswith("/v1/")
    resource = request.match_info.route.resource
    # Label by route template, never by raw path: paths are the client's to invent.
    name = resource.canonical if resource is not None else "unmatched"
    # An inference request is accounted (see palyra.accounting): by the router once it is
    # admitted, else here.
    tag: RequestTag | None = None
    tagged = None
    if inference and request.method == "POST":
        tag = RequestTag(request_id, name, int(time.time() * 1000), started)
        tagged = REQUEST.set(tag)
    operation = operation_for(name) if inference and TRACING.enabled else None
    span = TRACING.request(name, operation, None, request.headers) if operation else NULL_SPAN
    try:
        with span:
            try:
                response = await _guarded(request, handler)
                status = response.status
            finally:
                if span is not NULL_SPAN:
                    # (Before the span ends: what was tried, and what the client got.)
                    traced = request.get(ROUTE)
                    if traced is not None:
                        span.set_route(traced)
                    span.http_status(status)
        return response
    except asyncio.CancelledError:
        # aiohttp cancels the handler of a client that went away: not a failure of ours.
        status = CLIENT_CLOSED_REQUEST
        raise
    finally:
        route: RouteInfo | None = request.get(ROUTE)
        if route is None and tag is not None and tag.trying is not None and tag.trying.model_id:
            route = tag.trying  # (cut short while routed: the client left, say)
        if tagged is not None:
            REQUEST.reset(tagged)
        if inference:
            request.app[GATEWAY].metrics.count_request(
                name, route.model_id if route else "", status
            )
        # Refused on its way in (a bad body, an unknown model, a key's limit), by a caller
        # known: an unauthenticated request is no one's usage (and anyone could send them).
        caller = request.get(REQUEST_CALLER)
        if tag is not None and not tag.admitted and status >= 400 and caller is not None:
            accounting = request.app[GATEWAY].router.accounting
            if accounting is not None:
                accounting.record_refused(
                    tag,
                    route,
                    caller,
                    status=status,
                    error=request.get(ERROR_MESSAGE),
                )
        logs.access(
            request_id,
            request.method,
            request.path,
            status,
            round((time.perf_counter() - started) * 1000, 3),
            route.model_id if route else None,
            route.provider_id if route else None,
        )
        structlog.contextvars.unbind_contextvars("request_id")


def _authenticate(request: web.Request) -> Caller | None:
    """Who the request is from: ADMIN for the admin token (and for a console session and the
    public routes), a key's caller for a client key on an inference route; None for nobody
    known. A client key that cannot be used here is refused with the reason."""
    headers = request.headers
    authorization = headers.get("Authorization")
    api_key = headers.get("x-api-key")
    token = request.app[ADMIN_TOKEN]
    try:
        # The admin token first: its requests pay for nothing else.
        if bearer_matches(authorization, token) or api_key_matches(api_key, token):
            return ADMIN
        if request.path in PUBLIC_PATHS or web_console.is_public(request):
            return ADMIN
        secret = presented_key(authorization, api_key)
        if secret is not None:
            return _client_key_caller(request, secret)
        return ADMIN if web_console.check_session(request) else None
    except PalyraError:
        raise
    except Exception as exc:
        # What is checked here comes from clients not yet authenticated: should a check trip
        # over something they sent, that is a refusal and one quiet line, not a 500 and a
        # traceback per request (a way to flood the log).
        log.warning("auth_check_failed", error=type(exc).__name__, path=request.path[:200])
        return None


def _client_key_caller(request: web.Request, secret: str) -> Caller:
    """A client key's caller: one SHA-256 and a dict lookup (see palyra.keyring.KeyRing). The
    refusals name the key by its prefix and name, never by what was sent."""
    ring = request.app[KEY_RING]
    caller = ring.caller(secret)
    if caller is None or caller.key is None:
        raise Unauthorized(
            "unknown client key: this gateway never issued it, or it has been rotated "
            "(ask the admin for the current key)"
        )
    key = caller.key
    if key.revoked_at_ms is not None:
        raise Unauthorized(
            f"client key {key.prefix}... ({key.name}) was revoked at "
            f"{_utc(key.revoked_at_ms)}; ask the admin for a new key",
            code="key_revoked",
        )
    if key.expires_at_ms is not None and ring.now_ms() >= key.expires_at_ms:
        raise Unauthorized(
            f"client key {key.prefix}... ({key.name}) expired at {_utc(key.expires_at_ms)}; "
            "ask the admin for a new key",
            code="key_expired",
        )
    if not request.path.startswith(INFERENCE_PREFIX):
        raise ClientKeyNotAllowed(
            f"client keys may call the inference routes (/v1/...) only; {request.method} "
            f"{request.path[:200]} needs the daemon's admin token"
        )
    return caller


def _utc(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="seconds")


async def _guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        caller = _authenticate(request)
        if caller is None:
            raise Unauthorized(
                "missing or wrong API key: send the daemon's admin token, or a client key on "
                "the inference routes, as a bearer token (Authorization: Bearer) or as x-api-key"
            )
        request[REQUEST_CALLER] = caller
        # Set for the handler only: a connection's next request must not inherit it.
        token = CALLER.set(caller)
        try:
            return await handler(request)
        finally:
            CALLER.reset(token)
    except PalyraError as exc:
        return error_response(exc, request)
    except web.HTTPRequestEntityTooLarge as exc:
        return error_response(
            InvalidRequest(
                f"request body too large: {exc.text}", status=413, code="request_too_large"
            ),
            request,
        )
    except ConnectionError:
        # The client went away while we wrote to it; nobody is left to answer.
        log.info("client_went_away", path=request.path)
        return web.Response(status=CLIENT_CLOSED_REQUEST)
    except RequestPayloadError as exc:
        # The body is not what its headers say (a Content-Encoding it is not in, a chunked
        # encoding that breaks): the client's fault, on whichever route reads it.
        return error_response(
            InvalidRequest(f"request body cannot be read: {exc}", code="invalid_body"), request
        )
    except web.HTTPNotFound:
        return error_response(NotFound(f"no route {request.method} {request.path}"), request)
    except web.HTTPMethodNotAllowed:
        return error_response(
            InvalidRequest(
                f"method {request.method} not allowed on {request.path}",
                status=405,
                code="method_not_allowed",
            ),
            request,
        )
    except web.HTTPException:
        raise
    except Exception:
        log.exception("unhandled_error", path=request.path)
        return error_response(
            PalyraError("internal error; the daemon log has the details", code="internal_error"),
            request,
        )


async def healthz(request: web.Request) -> web.Response:
    # Liveness: 200 while the daemon serves, "degraded" when the state store or Redis does
    # not answer (requests still flow on local state). Anyone may ask, so it says which and
    # nothing more: the errors name hosts and ports, and are for the admin's status and log.
    dependencies = request.app[RUNTIME].dependencies
    status = "degraded" if dependencies.degraded else "ok"
    return web.json_response({"status": status, "dependencies": dependencies.public_view()})


async def metrics(request: web.Request) -> web.Response:
    body = request.app[GATEWAY].metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _answer_names_request(request: web.Request, response: web.StreamResponse) -> None:
    # Just before the headers leave: a stream's leave while its handler runs, before the
    # middleware has the response back.
    request_id = request.get(REQUEST_ID)
    if request_id is not None:
        response.headers[X_REQUEST_ID] = request_id


def create_app(runtime: Runtime) -> web.Application:
    app = web.Application(
        middlewares=[request_context], client_max_size=runtime.config.daemon.max_request_bytes
    )
    app[RUNTIME] = runtime
    app[GATEWAY] = runtime.gateway
    app[ADMIN_TOKEN] = runtime.admin_token
    app[SESSIONS] = Sessions(runtime.admin_token)
    app[KEY_RING] = runtime.keys
    app.on_response_prepare.append(_answer_names_request)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    dialects.add_routes(app)
    console.add_routes(app)
    cron_routes.add_routes(app)
    runs_routes.add_routes(app)
    keys_routes.add_routes(app)
    auth_routes.add_routes(app)
    usage_routes.add_routes(app)
    reload_routes.add_routes(app)
    status_routes.add_routes(app)
    web_console.add_routes(app)
    return app
