"""What a dialect is: its routes, and how its errors read."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeAlias, cast

from aiohttp import web

from palyra.errors import PalyraError
from palyra.models import anthropic_wire, openai_wire

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# An error's body in a dialect's shape: OpenAI's, or (the Anthropic Messages API) Anthropic's.
ErrorBody: TypeAlias = openai_wire.ErrorResponse | anthropic_wire.ErrorResponse
# An error as this dialect's clients expect it: (HTTP status, JSON body).
ErrorRenderer = Callable[[PalyraError], tuple[int, ErrorBody]]


def render_openai_error(exc: PalyraError) -> tuple[int, openai_wire.ErrorResponse]:
    # `PalyraError.body()` writes this shape (palyra/errors.py), typed there as a plain dict:
    # named here, where it becomes a dialect's answer.
    return exc.status, cast(openai_wire.ErrorResponse, exc.body())


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str
    # (method, path template, handler)
    routes: tuple[tuple[str, str, Handler], ...]
    render_error: ErrorRenderer = render_openai_error
