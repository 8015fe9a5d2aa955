"""Console API for the usage ledger (admin only, like every /console route).

- `GET /console/v1/usage?group_by=key|model|provider|agent|day|hour&since=&until=`: totals
  per group (requests, errors, tokens, cost) over [since, until), at most 1,000 groups (the
  busiest; for day and hour the latest), with the totals over the whole range. `since` and
  `until` are ISO 8601 times (a date, or a time with or without offset; none means UTC) or
  durations before now (`30m`, `12h`, `7d`, `2w`, `1d12h`). Defaults: the last 30 days.
- `GET /console/v1/requests?key_id=&model=&status=&limit=&before=`: the latest requests,
  newest first. `key_id=admin`: those made without a client key; `status`: ok, error or an
  HTTP status; `limit`: 1-200 (50); `before`: the previous page's `next_before` (or epoch ms).
"""

from __future__ import annotations

import datetime as dt
import re
import time
from typing import Any, cast

from aiohttp import web

from palyra.errors import InvalidRequest
from palyra.server.keys import RUNTIME
from palyra.server.runs_routes import json_response, query_int
from palyra.usage.store import (
    GROUP_BY,
    MAX_GROUPS,
    MAX_REQUESTS_LIMIT,
    Cursor,
    GroupBy,
    StatusFilter,
    UsageStore,
    next_cursor,
)

DEFAULT_RANGE_MS = 30 * 86_400_000
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 7 * 86_400_000}
_DURATION = re.compile(r"(?:[0-9]{1,6}[smhdw])+")
_DURATION_PART = re.compile(r"([0-9]+)([smhdw])")
# No range reaches before the epoch or past year 9999: both ends stay inside a BIGINT.
_MAX_MS = 253_402_300_799_999
_TIME_RULE = (
    "must be an ISO 8601 time (2026-11-01 or 2026-11-01T09:00:00Z) or a duration before now"
    " such as 30m, 12h, 7d or 2w"
)
_MAX_FILTER_CHARS = 256


def _store(request: web.Request) -> UsageStore:
    return request.app[RUNTIME].usage.store


def _one(request: web.Request, name: str) -> str | None:
    values = request.query.getall(name, [])
    if not values:
        return None
    if len(values) > 1:
        raise InvalidRequest(f"{name}: give it once", param=name)
    return values[0]


def parse_time(name: str, text: str, now_ms: int) -> int:
    """Epoch ms of an ISO 8601 time or of a duration before `now_ms`; a 400 naming `name`."""
    text = text.strip()
    if _DURATION.fullmatch(text):
        span = sum(int(n) * _UNIT_MS[unit] for n, unit in _DURATION_PART.findall(text))
        return max(now_ms - span, 0)
    try:
        if len(text) > 64:
            raise ValueError(text)
        when = dt.datetime.fromisoformat(text)
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        ms = int(when.timestamp() * 1000)
    except (ValueError, OverflowError):
        shown = text if len(text) <= 40 else text[:39] + "…"
        raise InvalidRequest(f"{name}: {shown!r} {_TIME_RULE}", param=name) from None
    if not 0 <= ms <= _MAX_MS:
        raise InvalidRequest(f"{name}: must be after 1970-01-01", param=name)
    return ms


def time_range(request: web.Request, now_ms: int) -> tuple[int, int]:
    since_text, until_text = _one(request, "since"), _one(request, "until")
    until_ms = now_ms if until_text is None else parse_time("until", until_text, now_ms)
    since_ms = (
        max(until_ms - DEFAULT_RANGE_MS, 0)
        if since_text is None
        else parse_time("since", since_text, now_ms)
    )
    if since_ms >= until_ms:
        raise InvalidRequest("since: must be before until", param="since")
    return since_ms, until_ms


async def usage_summary(request: web.Request) -> web.Response:
    group_by = _one(request, "group_by") or "model"
    if group_by not in GROUP_BY:
        raise InvalidRequest(
            f"group_by: must be one of {', '.join(GROUP_BY)}, not {group_by[:40]!r}",
            param="group_by",
        )
    since_ms, until_ms = time_range(request, int(time.time() * 1000))
    limit = query_int(request, "limit", default=MAX_GROUPS, minimum=1, maximum=MAX_GROUPS)
    offset = query_int(request, "offset", default=0, minimum=0, maximum=10**9)
    store = _store(request)
    groups = await store.summary(
        cast(GroupBy, group_by), since_ms, until_ms, limit=limit + 1, offset=offset
    )
    truncated = len(groups) > limit
    if truncated:
        # Day and hour come oldest first: the oldest is what this page leaves to the next.
        groups = groups[1:] if group_by in ("day", "hour") else groups[:limit]
    (total,) = await store.summary(None, since_ms, until_ms)
    return json_response(
        {
            "group_by": group_by,
            "since_ms": since_ms,
            "until_ms": until_ms,
            "groups": groups,
            "truncated": truncated,
            # The next page's `offset` (busiest first; day and hour: further back in time).
            "next_offset": offset + limit if truncated else None,
            "total": total,
        }
    )


def _filter(request: web.Request, name: str) -> str | None:
    value = _one(request, name)
    if value is None or value == "":
        return None
    if len(value) > _MAX_FILTER_CHARS or "\x00" in value:
        raise InvalidRequest(
            f"{name}: must be at most {_MAX_FILTER_CHARS} characters, without NUL", param=name
        )
    return value


def _status(request: web.Request) -> StatusFilter | None:
    value = _filter(request, "status")
    if value is None:
        return None
    if value in ("ok", "error"):
        return cast(StatusFilter, value)
    if re.fullmatch(r"[1-5][0-9][0-9]", value):
        return int(value)
    raise InvalidRequest(
        f"status: must be ok, error or an HTTP status such as 429, not {value[:40]!r}",
        param="status",
    )


async def list_requests(request: web.Request) -> web.Response:
    limit = query_int(request, "limit", default=50, minimum=1, maximum=MAX_REQUESTS_LIMIT)
    before: Cursor | None = None
    raw = _filter(request, "before")
    if raw is not None:
        try:
            before = Cursor.parse(raw)
        except ValueError as exc:
            raise InvalidRequest(f"before: {exc}", param="before") from None
    page = await _store(request).requests(
        key_id=_filter(request, "key_id"),
        model=_filter(request, "model"),
        status=_status(request),
        limit=limit,
        before=before,
    )
    cursor = next_cursor(page, limit)
    body: dict[str, Any] = {
        "requests": page,
        "next_before": None if cursor is None else str(cursor),
    }
    return json_response(body)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/console/v1/usage", usage_summary)
    app.router.add_get("/console/v1/requests", list_requests)
