"""OpenAI models: `GET /v1/models` and `GET /v1/models/{id}`.

An id may hold slashes ("openai/gpt-4o"): the SDK sends them percent-encoded, curl as they
are, and the route takes the rest of the path either way.
"""

from __future__ import annotations

from aiohttp import web

from palyra.callers import CALLER
from palyra.config import ModelConfig
from palyra.dialects.base import Dialect
from palyra.dialects.common import json_response, route_headers
from palyra.errors import ModelNotFound
from palyra.keylimits import require_model
from palyra.models.openai_wire import Model, ModelList
from palyra.server.keys import GATEWAY, STARTED
from palyra.types import RouteInfo


async def list_models(request: web.Request) -> web.Response:
    router = request.app[GATEWAY].router
    key = CALLER.get().key  # a client key sees the models it may call
    listing: ModelList = {
        "object": "list",
        "data": [
            model_object(model)
            for model in router.registry.models()
            if key is None or key.allows(model.model_id)
        ],
    }
    return json_response(listing, route_headers(RouteInfo(), request[STARTED]))


async def retrieve_model(request: web.Request) -> web.Response:
    model_id = request.match_info["model_id"]
    model = request.app[GATEWAY].router.registry.get(model_id)
    if model is None:
        raise ModelNotFound(f"The model {model_id!r} does not exist", param="model")
    require_model(model_id)
    return json_response(model_object(model), route_headers(RouteInfo(), request[STARTED]))


def model_object(model: ModelConfig) -> Model:
    """A model as the API has it, with what Palyra knows of it under `palyra`."""
    return {
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


DIALECT = Dialect(
    "openai_models",
    (
        ("GET", "/v1/models", list_models),
        ("GET", "/v1/models/{model_id:.+}", retrieve_model),
    ),
)
