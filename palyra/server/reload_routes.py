"""`POST /console/v1/config/reload` (admin only): re-read config.toml and agents.toml now, as
SIGHUP does (palyra.reload).

200: `{"status": "reloaded", "source", "restart_required": [keys], "workers"}`; `source` is
the file read (null: built-in defaults), `restart_required` the changed settings that keep
their old values until palyrad restarts. 400 with code `invalid_config` when the new config
has problems: nothing changed, and `error.problems` lists every one (the message holds them
too, one per line after the first).
"""

from __future__ import annotations

import orjson
from aiohttp import web

from palyra.errors import PalyraError
from palyra.reload import ReloadRefused
from palyra.server.keys import ERROR_MESSAGE, RUNTIME


def refused_body(refused: ReloadRefused) -> dict[str, object]:
    where = f"{refused.source}: " if refused.source else ""
    count = len(refused.problems)
    message = "\n".join(
        [
            f"config not reloaded, the old one keeps serving; {where}"
            f"{count} problem{'' if count == 1 else 's'}:",
            *refused.problems,
        ]
    )
    return {
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "code": "invalid_config",
            "param": None,
            "problems": refused.problems,
            "source": refused.source,
        }
    }


async def reload_config(request: web.Request) -> web.Response:
    reloader = request.app[RUNTIME].reloader
    if reloader is None:
        raise PalyraError("this daemon cannot reload its config", status=409, code="no_reload")
    try:
        reloaded = await reloader.request()
    except ReloadRefused as refused:
        body = refused_body(refused)
        request[ERROR_MESSAGE] = "config not reloaded"
        return web.Response(body=orjson.dumps(body), status=400, content_type="application/json")
    return web.Response(body=orjson.dumps(reloaded.view()), content_type="application/json")


def add_routes(app: web.Application) -> None:
    app.router.add_post("/console/v1/config/reload", reload_config)
