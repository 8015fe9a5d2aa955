"""Typed keys for what the app and each request carry."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from palyra.callers import Caller
    from palyra.gateway import Gateway
    from palyra.keyring import KeyRing
    from palyra.runtime import Runtime
    from palyra.server.sessions import Sessions
    from palyra.state.responses import ResponseStore
    from palyra.types import RouteInfo

RUNTIME: web.AppKey[Runtime] = web.AppKey("runtime")
GATEWAY: web.AppKey[Gateway] = web.AppKey("gateway")
ADMIN_TOKEN: web.AppKey[str] = web.AppKey("admin_token", str)
SESSIONS: web.AppKey[Sessions] = web.AppKey("sessions")
# Client keys as requests see them (see palyra.keys).
KEY_RING: web.AppKey[KeyRing] = web.AppKey("key_ring")
# Stored responses of `/v1/responses` (see palyra.state.responses).
RESPONSES: web.AppKey[ResponseStore] = web.AppKey("responses")
# Per request: when it arrived (perf_counter), for x-palyra-overhead-ms; and who served it.
STARTED: web.RequestKey[float] = web.RequestKey("started", float)
# Per request: its id (the client's x-request-id when it sent a usable one), sent back on its
# answer.
REQUEST_ID: web.RequestKey[str] = web.RequestKey("request_id", str)
ROUTE: web.RequestKey[RouteInfo] = web.RequestKey("route")
# Per request: who it was authenticated as (also in palyra.callers.CALLER while the handler
# runs; this outlives the handler, for what the request middleware records after it).
REQUEST_CALLER: web.RequestKey[Caller] = web.RequestKey("caller")
# Per request: the message of the error it was answered with, for its usage record.
ERROR_MESSAGE: web.RequestKey[str] = web.RequestKey("error_message", str)
