"""OpenAI models: `GET /v1/models`."""

from __future__ import annotations

from aiohttp import web

from palyra.dialects.base import Dialect
from palyra.dialects.common import json_response, route_headers
from palyra.routing import RouteInfo
from palyra.server.keys import GATEWAY, STARTED


async def list_models(request: web.Request) -> web.Response:
    router = request.app[GATEWAY].router
    data = []
    for model in router.registry.models():
        data.append(
            {
                "id": model.model_id,
                "object": "model",
                "created": 0,
                "owned_by": model.provider_id,
                "palyra": {
                    "role": model.role.value,
                    "provider_id": model.provider_id,
                    "source": "discovered" if model.discovered else "configured",
                    "enabled": model.enabled,
                    "max_context_tokens": model.max_context_tokens,
                },
            }
        )
    return json_response(
        {"object": "list", "data": data}, route_headers(RouteInfo(), request[STARTED])
    )


DIALECT = Dialect("openai_models", (("GET", "/v1/models", list_models),))
