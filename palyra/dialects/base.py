"""What a dialect is: its routes, and how its errors read."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from palyra.errors import PalyraError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# An error as this dialect's clients expect it: (HTTP status, JSON body).
ErrorRenderer = Callable[[PalyraError], tuple[int, dict[str, Any]]]


def render_openai_error(exc: PalyraError) -> tuple[int, dict[str, Any]]:
    return exc.status, exc.body()


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str
    # (method, path template, handler)
    routes: tuple[tuple[str, str, Handler], ...]
    render_error: ErrorRenderer = render_openai_error
