"""Console API for agents and their runs.

- `GET /console/v1/agents`, `GET /console/v1/agents/{agent_id}`
- `POST /console/v1/runs` `{"agent_id", "input", "stream", "background"}`: with `stream: true`
  the answer is SSE, one `data: {event}` per run event and `data: [DONE]` at the end; otherwise
  the finished run. A client that goes away mid-run cancels it. With `background: true` the
  answer is 202 and the run as it started, and the run goes on whatever the client does (the
  web console starts runs so, and follows them on the run's page, which a reload keeps).
- `GET /console/v1/runs?agent_id=&source=cli|cron|console&status=&limit=&before=`: the run
  history, newest first, input and output cut short; `limit`: 1-200 (50); `before`: the
  previous page's `next_before` (or epoch ms).
- `GET /console/v1/runs/{run_id}?after_seq=N` (status, events after N, usage, output, error),
  `POST /console/v1/runs/{run_id}/cancel`
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from palyra.agents.registry import DEFAULT_AGENT_ID
from palyra.agents.service import ActiveRun, AgentService
from palyra.agents.store import (
    MAX_LIST_LIMIT,
    SOURCES,
    STATUSES,
    RunCursor,
    RunFilter,
    origins_of,
    run_view,
)
from palyra.context import Origin
from palyra.errors import InvalidRequest, NotFound
from palyra.server.keys import RUNTIME
from palyra.sse import DONE, encode_data

MAX_INPUT_CHARS = 100_000
MAX_AGENT_ID_CHARS = 64  # the agents.toml rule for an agent id
MAX_SESSION_ID_CHARS = 128
_RUN_FIELDS = {"agent_id", "input", "stream", "origin", "session_id", "background"}
MAX_EVENT_SEQ = 10**15
# A query integer is plain ASCII decimal: str.isdigit() also takes "²" and "١", which int()
# then rejects or reads as something the client did not write. 18 digits keep int() cheap.
_DECIMAL = re.compile(r"[0-9]{1,18}")
# What an id in a path can look like. Anything else names nothing, and is answered 404
# without a query: a NUL byte, for one, is an error in PostgreSQL, not a miss.
_PATH_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


async def read_object(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError:
        raise InvalidRequest("request body is not valid JSON", code="invalid_json") from None
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object", code="invalid_json")
    return body


def query_int(request: web.Request, name: str, *, default: int, minimum: int, maximum: int) -> int:
    """The query parameter `name` as an integer in [minimum, maximum]; a 400 naming it and
    the rule when it is anything else, or given twice."""
    values = request.query.getall(name, [])
    if not values:
        return default
    rule = f"{name}: must be a decimal integer from {minimum} to {maximum}"
    if len(values) > 1:
        raise InvalidRequest(f"{rule}, given once", param=name)
    raw = values[0]
    if not _DECIMAL.fullmatch(raw) or not minimum <= int(raw) <= maximum:
        raise InvalidRequest(rule, param=name)
    return int(raw)


def path_id(request: web.Request, name: str, what: str) -> str:
    """The id `name` from the path; 404 "no <what>" for a value no id can have."""
    value = request.match_info[name]
    if not _PATH_ID.fullmatch(value):
        shown = value if len(value) <= 64 else value[:63] + "…"
        raise NotFound(f"no {what} {shown!r}", param=name)
    return value


def _text_problem(value: str) -> str | None:
    # PostgreSQL text cannot hold NUL: refused here rather than as a failed INSERT (a 500).
    return "must not contain NUL (\\u0000) characters" if "\x00" in value else None


def _agents(request: web.Request) -> AgentService:
    return request.app[RUNTIME].agents


async def list_agents(request: web.Request) -> web.Response:
    registry = _agents(request).registry
    return json_response(
        {
            "agents": [agent.view() for agent in registry.all()],
            "source": str(registry.source) if registry.source else None,
        }
    )


async def get_agent(request: web.Request) -> web.Response:
    return json_response(_agents(request).agent(request.match_info["agent_id"]).view())


@dataclass(frozen=True, slots=True)
class RunRequest:
    agent_id: str
    input: str
    stream: bool
    background: bool
    origin: Origin
    session_id: str | None


def _run_request(body: dict[str, Any]) -> RunRequest:
    unknown = set(body) - _RUN_FIELDS
    if unknown:
        field = sorted(unknown)[0]
        raise InvalidRequest(f"{field}: unknown field", param=field)
    agent_id = body.get("agent_id", DEFAULT_AGENT_ID)
    if not isinstance(agent_id, str) or not agent_id:
        raise InvalidRequest("agent_id: must be a non-empty string", param="agent_id")
    if len(agent_id) > MAX_AGENT_ID_CHARS:
        raise InvalidRequest(
            f"agent_id: must be at most {MAX_AGENT_ID_CHARS} characters", param="agent_id"
        )
    text = body.get("input")
    if not isinstance(text, str) or not text.strip():
        raise InvalidRequest("input: required, a non-empty string", param="input")
    if len(text) > MAX_INPUT_CHARS:
        raise InvalidRequest(f"input: longer than {MAX_INPUT_CHARS} characters", param="input")
    if problem := _text_problem(text):
        raise InvalidRequest(f"input: {problem}", param="input")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequest("stream: must be true or false", param="stream")
    background = body.get("background", False)
    if not isinstance(background, bool):
        raise InvalidRequest("background: must be true or false", param="background")
    if background and stream:
        raise InvalidRequest(
            "background: a background run is not streamed; follow it with"
            " GET /console/v1/runs/{run_id}?after_seq=N",
            param="background",
        )
    origin = body.get("origin", "api")
    # `cron` is the scheduler's alone: a client cannot pass its runs off as scheduled ones.
    if origin not in ("api", "cli"):
        raise InvalidRequest("origin: must be api or cli", param="origin")
    session_id = body.get("session_id")
    if session_id is not None and (
        not isinstance(session_id, str)
        or len(session_id) > MAX_SESSION_ID_CHARS
        or _text_problem(session_id)
    ):
        raise InvalidRequest(
            f"session_id: must be a string of at most {MAX_SESSION_ID_CHARS} characters,"
            " without NUL",
            param="session_id",
        )
    return RunRequest(agent_id, text, stream, background, origin, session_id)


async def create_run(request: web.Request) -> web.StreamResponse:
    wanted = _run_request(await read_object(request))
    service = _agents(request)
    active = await service.start_run(
        wanted.agent_id, wanted.input, origin=wanted.origin, session_id=wanted.session_id
    )
    if wanted.background:
        return await _run_response(service, active.run_id, 202)
    try:
        if wanted.stream:
            return await _stream(request, active)
        assert active.task is not None
        await asyncio.shield(active.task)
    finally:
        # Reached early only when the client went away (the handler was cancelled).
        if active.outcome is None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(service.cancel(active.run_id, "the client went away"))
    return await _run_response(service, active.run_id, 200)


async def _stream(request: web.Request, active: ActiveRun) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            "x-palyra-run-id": active.run_id,
        }
    )
    await response.prepare(request)
    async for event in active.follow():
        await response.write(encode_data(event))
    await response.write(DONE)
    await response.write_eof()
    return response


async def _run_response(
    service: AgentService, run_id: str, status: int, after_seq: int = 0
) -> web.Response:
    row = await service.store.get(run_id)
    if row is None:
        raise NotFound(f"no run {run_id!r}", param="run_id")
    return json_response(run_view(row, await service.store.events(run_id, after_seq)), status)


async def get_run(request: web.Request) -> web.Response:
    run_id = path_id(request, "run_id", "run")
    after = query_int(request, "after_seq", default=0, minimum=0, maximum=MAX_EVENT_SEQ)
    return await _run_response(_agents(request), run_id, 200, after)


def _choice(request: web.Request, name: str, allowed: tuple[str, ...]) -> str | None:
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise InvalidRequest(f"{name}: give it once", param=name)
    if not values or values[0] == "":
        return None
    if values[0] not in allowed:
        shown = values[0] if len(values[0]) <= 40 else values[0][:39] + "…"
        raise InvalidRequest(
            f"{name}: must be one of {', '.join(allowed)}, not {shown!r}", param=name
        )
    return values[0]


async def list_runs(request: web.Request) -> web.Response:
    limit = query_int(request, "limit", default=50, minimum=1, maximum=MAX_LIST_LIMIT)
    agent_values = request.query.getall("agent_id", [])
    if len(agent_values) > 1:
        raise InvalidRequest("agent_id: give it once", param="agent_id")
    agent_id = agent_values[0] if agent_values and agent_values[0] else None
    if agent_id is not None and (len(agent_id) > MAX_AGENT_ID_CHARS or _text_problem(agent_id)):
        raise InvalidRequest(
            f"agent_id: must be at most {MAX_AGENT_ID_CHARS} characters, without NUL",
            param="agent_id",
        )
    source = _choice(request, "source", SOURCES)
    status = _choice(request, "status", STATUSES)
    before: RunCursor | None = None
    before_values = request.query.getall("before", [])
    if len(before_values) > 1:
        raise InvalidRequest("before: give it once", param="before")
    if before_values and before_values[0]:
        try:
            before = RunCursor.parse(before_values[0])
        except ValueError as exc:
            raise InvalidRequest(f"before: {exc}", param="before") from None
    where = RunFilter(agent_id, origins_of(source) if source else (), status)
    runs = await _agents(request).store.list_runs(where, limit=limit, before=before)
    last = runs[-1] if len(runs) == limit else None
    return json_response(
        {
            "runs": runs,
            "next_before": None
            if last is None
            else str(RunCursor(last["started_at_ms"], last["run_id"])),
        }
    )


async def cancel_run(request: web.Request) -> web.Response:
    service = _agents(request)
    run_id = path_id(request, "run_id", "run")
    if not await service.cancel(run_id, "cancelled by request"):
        row = await service.store.get(run_id)
        if row is None:
            raise NotFound(f"no run {run_id!r}", param="run_id")
        if row["status"] == "running":
            raise InvalidRequest(
                f"run {run_id!r} is running on another daemon; cancel it there",
                status=409,
                code="run_not_local",
            )
    return await _run_response(service, run_id, 200)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/console/v1/agents", list_agents)
    app.router.add_get("/console/v1/agents/{agent_id}", get_agent)
    app.router.add_get("/console/v1/runs", list_runs)
    app.router.add_post("/console/v1/runs", create_run)
    app.router.add_get("/console/v1/runs/{run_id}", get_run)
    app.router.add_post("/console/v1/runs/{run_id}/cancel", cancel_run)
