"""`GET /console/v1/status`: the daemon at a glance for `palyra status` (admin only).

Version, uptime, workers, providers counted by health state, and each dependency's state:
what a newcomer asks first ("is it up, which one is it, is anything broken?"), in one call.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from typing import Any

import orjson
from aiohttp import web

import palyra
from palyra.server.keys import GATEWAY, RUNTIME

# When this process's app was made (monotonic: a clock step must not change the uptime); the
# daemon, or each worker, builds it once at start, and a config reload keeps it.
STARTED_AT: web.AppKey[float] = web.AppKey("status_started_at", float)


def providers_at_a_glance(providers: list[dict[str, Any]]) -> dict[str, Any]:
    """How many providers, how many in each health state, and which are not `ok`."""
    states = {
        p["provider_id"]: p["health"]["state"] if p["enabled"] else "disabled" for p in providers
    }
    return {
        "count": len(states),
        "states": dict(Counter(states.values())),
        "not_ok": sorted(pid for pid, state in states.items() if state not in ("ok", "disabled")),
    }


async def status(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    dependencies = runtime.dependencies
    config = runtime.config.daemon
    body = {
        "status": "degraded" if dependencies.degraded else "ok",
        "version": palyra.__version__,
        "uptime_s": round(time.monotonic() - request.app[STARTED_AT], 3),
        "pid": os.getpid(),
        "workers": config.worker_count(),
        "worker": runtime.worker,
        "providers": providers_at_a_glance(request.app[GATEWAY].status()["providers"]),
        "degraded": dependencies.degraded,
        "dependencies": dependencies.view(),
    }
    return web.Response(body=orjson.dumps(body), content_type="application/json")


def add_routes(app: web.Application) -> None:
    app[STARTED_AT] = time.monotonic()
    app.router.add_get("/console/v1/status", status)
