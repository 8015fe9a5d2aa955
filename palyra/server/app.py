"""The aiohttp application: middlewares (request id, auth, errors) and the routes."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Awaitable, Callable

import orjson
import structlog
from aiohttp import web

from palyra.errors import InvalidRequest, NotFound, PalyraError, ProviderError, Unauthorized
from palyra.routing import RouteInfo, Router
from palyra.server import inference
from palyra.server.auth import PUBLIC_PATHS, bearer_matches
from palyra.server.keys import ADMIN_TOKEN, ROUTE, ROUTER, STARTED

log = structlog.get_logger("palyra.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


def error_response(exc: PalyraError, request: web.Request) -> web.Response:
    headers = dict(exc.headers)
    route: RouteInfo | None = request.get(ROUTE)
    if request.path.startswith("/v1/"):
        started = request.get(STARTED, time.perf_counter())
        headers.update(inference.route_headers(route or RouteInfo(), started))
        if isinstance(exc, ProviderError):
            headers["x-palyra-provider-id"] = exc.provider_id
    return web.Response(
        body=orjson.dumps(exc.body()),
        status=exc.status,
        content_type="application/json",
        headers=headers,
    )


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    request[STARTED] = time.perf_counter()
    incoming = request.headers.get("x-request-id", "")
    request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
    structlog.contextvars.bind_contextvars(request_id=request_id)
    status = 500
    try:
        response = await _guarded(request, handler)
        status = response.status
        response.headers["x-request-id"] = request_id
        return response
    finally:
        route: RouteInfo | None = request.get(ROUTE)
        log.info(
            "request",
            method=request.method,
            path=request.path,
            status=status,
            duration_ms=round((time.perf_counter() - request[STARTED]) * 1000, 3),
            model=route.model_id if route else None,
            provider=route.provider_id if route else None,
        )
        structlog.contextvars.unbind_contextvars("request_id")


async def _guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        if request.path not in PUBLIC_PATHS and not bearer_matches(
            request.headers.get("Authorization"), request.app[ADMIN_TOKEN]
        ):
            raise Unauthorized("missing or wrong bearer token (the daemon's admin token)")
        return await handler(request)
    except PalyraError as exc:
        return error_response(exc, request)
    except web.HTTPRequestEntityTooLarge as exc:
        return error_response(
            InvalidRequest(
                f"request body too large: {exc.text}", status=413, code="request_too_large"
            ),
            request,
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
    return web.json_response({"status": "ok"})


def create_app(router: Router, admin_token: str, *, max_request_bytes: int) -> web.Application:
    app = web.Application(middlewares=[request_context], client_max_size=max_request_bytes)
    app[ROUTER] = router
    app[ADMIN_TOKEN] = admin_token
    app.router.add_get("/healthz", healthz)
    inference.add_routes(app)
    return app
