"""Console API for models: status, discovery on demand, connection tests."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from palyra.errors import InvalidRequest
from palyra.server.keys import GATEWAY, RUNTIME


def _json(body: Any) -> web.Response:
    return web.Response(body=orjson.dumps(body), content_type="application/json")


async def _provider_id(request: web.Request) -> str | None:
    raw = await request.read()
    if not raw.strip():
        return None
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest("request body is not valid JSON", code="invalid_json") from None
    if not isinstance(body, dict) or not set(body) <= {"provider_id"}:
        raise InvalidRequest('body must be {"provider_id": optional string}', param="provider_id")
    value = body.get("provider_id")
    if value is not None and not isinstance(value, str):
        raise InvalidRequest("provider_id: must be a string", param="provider_id")
    return value


async def models_status(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    dependencies = runtime.dependencies
    worker = {"worker": runtime.worker} if runtime.worker is not None else {}
    return _json(
        {
            **request.app[GATEWAY].status(),
            "degraded": dependencies.degraded,
            "dependencies": dependencies.view(),
            # With several workers: the one that answered (the others' circuits and health
            # are shared, so they agree within about a second).
            **worker,
        }
    )


async def models_discover(request: web.Request) -> web.Response:
    results = await request.app[GATEWAY].discover(await _provider_id(request))
    return _json({"providers": results})


async def models_test_connection(request: web.Request) -> web.Response:
    results = await request.app[GATEWAY].test_connection(await _provider_id(request))
    return _json({"providers": results})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/console/v1/models/status", models_status)
    app.router.add_post("/console/v1/models/discover", models_discover)
    app.router.add_post("/console/v1/models/test-connection", models_test_connection)
