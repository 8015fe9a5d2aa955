"""The inbound dialects, side by side: the wire formats clients speak to Palyra.

Each dialect is one module that adapts its wire format onto the one internal shape
(`palyra.types`: `ChatRequest` in, `ChatResult` or a stream of `ChatDelta` out, served by
`palyra.routing.Router`) and back, and says how its errors read. Adding a dialect is one
module and one line in `DIALECTS`.
"""

from __future__ import annotations

from aiohttp import web

from palyra.dialects import (
    anthropic_messages,
    openai_audio,
    openai_chat,
    openai_embeddings,
    openai_models,
    openai_responses,
)
from palyra.dialects.base import Dialect, ErrorRenderer, render_openai_error

__all__ = ["DIALECTS", "Dialect", "add_routes", "error_renderer"]

DIALECTS: tuple[Dialect, ...] = (
    openai_chat.DIALECT,
    openai_responses.DIALECT,
    anthropic_messages.DIALECT,
    openai_embeddings.DIALECT,
    openai_audio.DIALECT,
    openai_models.DIALECT,
)

_RENDERERS = web.AppKey("dialect_error_renderers", dict[str, ErrorRenderer])


def add_routes(app: web.Application) -> None:
    renderers: dict[str, ErrorRenderer] = {}
    for dialect in DIALECTS:
        for method, path, handler in dialect.routes:
            app.router.add_route(method, path, handler)
            renderers[path] = dialect.render_error
    app[_RENDERERS] = renderers


def error_renderer(request: web.Request) -> ErrorRenderer:
    """How an error on this request reads: in its route's dialect, or OpenAI's shape for
    any other route (and for paths no route matched)."""
    renderers = request.app.get(_RENDERERS, {})
    resource = request.match_info.route.resource
    if resource is None:
        # A method the route does not take (405) matches no resource: its path still says
        # whose route it is.
        return renderers.get(request.path, render_openai_error)
    return renderers.get(resource.canonical, render_openai_error)
